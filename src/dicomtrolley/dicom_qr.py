"""DICOM query/retrieve over DIMSE (PS3.4 annex C): C-FIND search, C-GET and C-MOVE download.

The dicomtrolley 4.1.0 names stay: :class:`DICOMQR` (the C-FIND searcher),
:class:`DICOMQuery` and :class:`QueryRetrieveLevels`. New are the downloaders
:class:`DICOMQRGet` and :class:`DICOMQRMove`, and :class:`DIMSETimeouts`::

    searcher = DICOMQR("pacs", 104, aet="ME", aec="PACS")
    downloader = DICOMQRGet("pacs", 104, aet="ME", aec="PACS")
    trolley = Trolley(downloader, searcher)
    trolley.download(trolley.find_studies(Query(PatientID="123")), "out")

Searching below STUDY level goes level by level (studies, then the series of
each, then their instances), each query holding only its own level's keys, as
PS3.4 C.4.1.2.2 requires; relational queries are used when the PACS accepts
them (or ``relational=True``). Downloads write each received instance straight
to disk, fragment by fragment into a temporary file in the output folder, which
the storage verifies and renames into place; C-MOVE's storage SCP does the same
on the associations the PACS opens to it. Timeouts (:class:`DIMSETimeouts`) are
for connecting, for silence of the peer (idle) and for a whole operation
(total); Ctrl-C aborts the associations under way at once.

A retrieve broken off by a transient error (A-ABORT, a lost connection, a
timeout, a busy peer) is resumed on a new association under the downloader's
:class:`~dicomtrolley.transport.Retry` (``retry=``, the HTTP default unless
given): only the instances that did not arrive are asked for again, by SOP
Instance UID, and each file is saved and reported once
(:mod:`dicomtrolley.dimse.resume`). A study still incomplete after the retries
is a failure in the report, with its UID and those of the missing instances;
the other studies go on.

The work happens in :mod:`dicomtrolley.dimse`: associations and timeouts,
presentation contexts, C-FIND level by level, C-GET, C-MOVE and its storage
SCP, resuming broken retrieves. Errors are
:class:`~dicomtrolley.dimse.errors.DIMSEError` subclasses that name host, port,
both AE titles and the status.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from dicomtrolley.core import (
    DICOMDownloadable,
    Downloader,
    ExtendedQuery,
    InstanceReference,
    Query,
    QueryLevels,
    Searcher,
    Study,
)
from dicomtrolley.credentials import ConfigError
from dicomtrolley.dimse import trace
from dicomtrolley.dimse.contexts import MODELS, sop_classes_of
from dicomtrolley.dimse.errors import (
    AssociationAbortedError,
    AssociationBusyError,
    AssociationRejectedError,
    DIMSEConnectionError,
    DIMSEError,
    DIMSEOutOfResourcesError,
    DIMSEStatusError,
    DIMSETimeoutError,
    MoveDestinationUnknownError,
    ServiceNotSupportedError,
    StoreSCPError,
    SubOperationError,
)
from dicomtrolley.dimse.find import FindRequest, search_iter, set_value
from dicomtrolley.dimse.get import GetSession, get_contexts
from dicomtrolley.dimse.memory import stream_datasets
from dicomtrolley.dimse.move import MoveSession
from dicomtrolley.dimse.resume import Arrivals, Resume, find_instances
from dicomtrolley.dimse.retrieve import (
    Receiver,
    RetrieveUnit,
    Sink,
    disk_sink,
    plan_units,
)
from dicomtrolley.dimse.sessions import SessionPool, run_stoppable
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer, check_ae_title
from dicomtrolley.dimse.storage_scp import StoreSCP
from dicomtrolley.dimse.tls import DIMSETLS, DIMSETLSError
from dicomtrolley.download import (
    DownloadReport,
    NullProgress,
    Progress,
    SaveJob,
    run_transfers,
)

# DICOMTrolleyError and DICOMParseTree: re-exported, as 4.1.0 had them here
from dicomtrolley.exceptions import DICOMTrolleyError as DICOMTrolleyError
from dicomtrolley.logs import get_module_logger
from dicomtrolley.parsing import DICOMParseTree as DICOMParseTree
from dicomtrolley.parsing import studies_from_datasets
from dicomtrolley.transport import DEFAULT_RETRY, Retry

logger = get_module_logger("dicom_qr")

__all__ = [
    "DICOMQR",
    "DIMSETLS",
    "AssociationAbortedError",
    "AssociationBusyError",
    "AssociationRejectedError",
    "DICOMQRGet",
    "DICOMQRMove",
    "DICOMQuery",
    "DIMSEConnectionError",
    "DIMSEError",
    "DIMSEOutOfResourcesError",
    "DIMSEStatusError",
    "DIMSETLSError",
    "DIMSETimeoutError",
    "DIMSETimeouts",
    "MoveDestinationUnknownError",
    "QueryRetrieveLevels",
    "ServiceNotSupportedError",
    "StoreSCPError",
    "SubOperationError",
]


class QueryRetrieveLevels:
    """Query/Retrieve Level values (0008,0052). DICOM calls instances IMAGE."""

    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    ALL = frozenset({STUDY, SERIES, IMAGE})

    @classmethod
    def translate(cls, value: QueryLevels | str) -> str:
        """The Query/Retrieve Level for a query level (INSTANCE -> IMAGE).

        Raises ValueError for anything that is not a level.
        """
        text = str(getattr(value, "value", value)).upper()
        if text in ("INSTANCE", cls.IMAGE):
            return cls.IMAGE
        if text not in cls.ALL:
            raise ValueError(
                f"unknown query level {value!r}: use STUDY, SERIES or INSTANCE"
            )
        return text


class DICOMQuery(ExtendedQuery):
    """What C-FIND can search for: ExtendedQuery plus Modality, ProtocolName, StudyID.

    Dates may be open on one side: only ``min_study_date`` gives
    ``StudyDate=YYYYMMDD-`` (that day or later), only ``max_study_date``
    ``-YYYYMMDD`` (PS3.4 C.2.2.2.5 range matching). ``*`` and ``?`` are wildcards.
    """

    Modality: str = ""
    ProtocolName: str = ""
    StudyID: str = ""

    @staticmethod
    def get_default_include_fields(query_level: QueryLevels | str) -> list[str]:
        """The UIDs every result at this level should carry."""
        level = QueryRetrieveLevels.translate(query_level)
        fields = ["StudyInstanceUID"]
        if level in (QueryRetrieveLevels.SERIES, QueryRetrieveLevels.IMAGE):
            fields.append("SeriesInstanceUID")
        if level == QueryRetrieveLevels.IMAGE:
            fields.append("SOPInstanceUID")
        return fields

    @staticmethod
    def parse_date(date: date | datetime | None) -> str:
        """``YYYYMMDD`` (DICOM DA), or '' for None."""
        return date.strftime("%Y%m%d") if date else ""

    @classmethod
    def get_study_date(
        cls, min_study_date: datetime | None, max_study_date: datetime | None
    ) -> str | None:
        """StudyDate for a range: ``min-max``, ``min-``, ``-max``; None for no dates."""
        low, high = cls.parse_date(min_study_date), cls.parse_date(max_study_date)
        return f"{low}-{high}" if low or high else None

    def as_parameters(self) -> dict[str, Any]:
        """The query as C-FIND parameters: DICOM keywords, plus ``include_fields``.

        ``StudyDate`` replaces the two dates, ``QueryRetrieveLevel`` the query
        level, and the include fields get the level's UIDs added.
        """
        parameters = self.model_dump()
        parameters["StudyDate"] = self.get_study_date(
            parameters.pop("min_study_date"), parameters.pop("max_study_date")
        )
        parameters["PatientBirthDate"] = self.parse_date(parameters["PatientBirthDate"])
        parameters["QueryRetrieveLevel"] = QueryRetrieveLevels.translate(
            parameters.pop("query_level")
        )
        defaults = self.get_default_include_fields(self.query_level)
        parameters["include_fields"] = list(
            dict.fromkeys([*(parameters["include_fields"] or []), *defaults])
        )
        return parameters

    def matching_keys(self) -> dict[str, str]:
        """The matching keys that are set, by DICOM keyword."""
        parameters = self.as_parameters()
        parameters.pop("include_fields")
        parameters.pop("QueryRetrieveLevel")
        return {key: str(value) for key, value in parameters.items() if value}

    def as_dataset(self) -> Dataset:
        """One C-FIND identifier: include fields as empty return keys, then the
        set parameters (non-ASCII values switch it to ISO_IR 192)."""
        parameters = self.as_parameters()
        dataset = Dataset()
        for keyword in parameters.pop("include_fields"):
            set_value(dataset, keyword, "")
        for keyword, value in parameters.items():
            if value:
                set_value(dataset, keyword, value)
        return dataset


def _check_model(model: str) -> str:
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, not {model!r}")
    return model


class DICOMQR(Searcher):
    """Search a PACS with C-FIND.

    Parameters
    ----------
    host, port:
        The PACS's DICOM address.
    aet, aec:
        Our (calling) and the PACS's (called) AE title.
    debug:
        Log the protocol trace (:mod:`~dicomtrolley.dimse.trace`): PDU
        types, negotiated contexts, DIMSE command fields and statuses, never
        data set contents or credentials; through the ``trolley.dimse``
        logger at DEBUG, to stderr when the application set up no logging.
    model:
        ``"study"`` (Study Root, default) or ``"patient"`` (Patient Root).
    timeout:
        :class:`DIMSETimeouts`, or one number for the idle timeout.
    relational:
        How to search below STUDY level without the parents' UIDs: True sends
        one relational query (PS3.4 C.4.1.2.3), False goes level by level
        (hierarchical), None (default) uses relational queries when the PACS
        accepts them in extended negotiation.
    tls:
        Connect over TLS (:class:`DIMSETLS`: CA, our certificate, verification
        on by default); None: plain TCP.
    """

    def __init__(
        self,
        host: str,
        port: int,
        aet: str = "DICOMTROLLEY",
        aec: str = "ANY-SCP",
        debug: bool = False,
        *,
        model: str = "study",
        timeout: DIMSETimeouts | float | None = None,
        relational: bool | None = None,
        tls: DIMSETLS | None = None,
    ) -> None:
        self.host, self.port, self.aet, self.aec = host, port, aet, aec
        self.tls = tls
        self.peer = Peer(host, port, aet, aec, tls=tls)
        self.debug = debug
        self.model = _check_model(model)
        self.timeouts = DIMSETimeouts.coerce(timeout)
        self.relational = relational
        if debug:
            trace.enable()

    def __str__(self) -> str:
        return f"DICOMQR C-FIND at {self.peer}"

    def find_studies(self, query: Query) -> list[Study]:
        """Studies (with series and instances down to the query level) for query."""
        return self.parse_c_find_response(
            self.send_c_find(DICOMQuery.init_from_query(query))
        )

    @staticmethod
    def parse_c_find_response(responses: Iterable[Dataset]) -> list[Study]:
        """C-FIND matches (study, series and instance datasets) as a tree."""
        return studies_from_datasets(responses)

    def send_c_find(self, query: DICOMQuery) -> list[Dataset]:
        """Every dataset C-FIND returns for query, over one association."""
        return list(self.iter_c_find(query))

    def iter_c_find(self, query: DICOMQuery) -> Generator[Dataset, None, None]:
        """The datasets of :meth:`send_c_find` as they arrive.

        Stopping early (``break``, ``close()``, an exception in the loop)
        cancels the query under way with a C-CANCEL and releases the
        association; to stop at once whatever holds a reference to the
        iterator, use ``contextlib.closing(searcher.iter_c_find(query))``.
        """
        level = QueryRetrieveLevels.translate(query.query_level)
        patient_root = self.model == "patient"
        request = FindRequest(
            keys=dict(query.matching_keys()),
            return_keys=query.as_parameters()["include_fields"],
            patient_root=patient_root,
        )
        return search_iter(
            self.peer,
            request,
            level,
            model=self.model,
            timeouts=self.timeouts,
            relational=self.relational,
        )


class _Retriever(Downloader):
    """What C-GET and C-MOVE downloaders share: planning, sinks, concurrency."""

    operation = ""

    def __init__(
        self,
        host: str,
        port: int,
        aet: str = "DICOMTROLLEY",
        aec: str = "ANY-SCP",
        *,
        model: str = "study",
        timeout: DIMSETimeouts | float | None = None,
        max_workers: int | None = None,
        debug: bool = False,
        retry: Retry | None = None,
        tls: DIMSETLS | None = None,
    ) -> None:
        self.host, self.port, self.aet, self.aec = host, port, aet, aec
        self.tls = tls
        self.peer = Peer(host, port, aet, aec, tls=tls)
        self.model = _check_model(model)
        self.timeouts = DIMSETimeouts.coerce(timeout)
        self.max_workers = max_workers
        self.retry = DEFAULT_RETRY if retry is None else retry
        if debug:
            trace.enable()

    def __str__(self) -> str:
        return f"{type(self).__name__} {self.operation} from {self.peer}"

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        """Nothing to check: C-GET and C-MOVE take studies, series and instances."""

    # -- save_all (the template of Downloader) --------------------------------
    # Each instance is written to disk as it arrives; instances already there
    # (when known) are skipped. With several workers, several associations run
    # at once (one per series when the search found the series, else one per
    # study). A request broken off by a transient error is resumed under
    # ``self.retry``; what still fails is in the report.

    failures_per_unit = True

    def plan_saves(self, job: SaveJob) -> list[RetrieveUnit]:
        return plan_units(job.objects, present=lambda ref: job.skip_if_present([ref]))

    def save_workers(self, job: SaveJob) -> int:
        if job.max_workers and job.max_workers > 1:
            return job.max_workers
        return self.max_workers or 1

    def save_units(self, job: SaveJob, units: Sequence[Any], workers: int) -> None:
        """The units over workers associations at once (:meth:`_run`)."""
        self._run(
            units,
            disk_sink(job.storage, job.output_dir, job.report, job.progress),
            job.report,
            job.progress,
            sop_classes_of(job.objects),
            workers,
            spool=Path(job.output_dir),
        )

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        """Every instance as a Dataset in memory, in the order they arrive.

        The transfer runs in a background thread a few instances ahead; when the
        caller stops early, the association is aborted. Broken requests are
        resumed as in :meth:`save_all` (no dataset comes twice); instances that
        did not arrive raise DownloadIncompleteError at the end.
        """
        items = [objects] if isinstance(objects, DICOMDownloadable) else list(objects)

        def transfer(
            sink: Sink, report: DownloadReport, cancelled: Callable[[], bool]
        ) -> None:
            units = plan_units(items)
            classes = sop_classes_of(items)
            self._run(units, sink, report, NullProgress(), classes, 1, cancelled)

        return stream_datasets(transfer, join_timeout=self.timeouts.connect + 5)

    def _run(
        self,
        units: Sequence[RetrieveUnit],
        sink: Sink,
        report: DownloadReport,
        progress: Progress,
        sop_classes: Sequence[str],
        workers: int,
        cancelled: Callable[[], bool] | None = None,
        spool: Path | None = None,
    ) -> None:
        """Fetch units, workers at a time, each worker over its own association.

        ``spool``: where received instances are written before the sink takes
        them (the output folder, so that the sink's rename is on one file system;
        None: the system temporary folder). Ctrl-C or ``cancelled()`` abort the
        associations under way within a fraction of a second."""
        stop = threading.Event()
        outer = cancelled or stop.is_set

        def stopped() -> bool:
            return stop.is_set() or outer()

        arrivals = Arrivals()
        receiver = Receiver(arrivals.wrap(sink), report, progress, cancelled=stopped)
        for unit in units:
            if unit.expected is not None:
                progress.add_total(instances=len(unit.expected))
        with self._sessions(receiver, report, progress, sop_classes, spool) as pool:
            resume = Resume(
                pool.retrieve,
                pool.reset,
                arrivals,
                self.retry,
                operation=self.operation,
                list_instances=self._list_instances,
                cancelled=receiver.cancelled,
            )
            run_stoppable(
                lambda: run_transfers(
                    units,
                    resume.retrieve,
                    report,
                    workers=workers,
                    uids_of=RetrieveUnit.uids,
                ),
                stop,
                workers,
            )

    def _list_instances(self, unit: RetrieveUnit) -> list[InstanceReference]:
        """The instances of a study or series, by C-FIND (to resume it)."""
        return find_instances(self.peer, unit, model=self.model, timeouts=self.timeouts)

    def _sessions(
        self,
        receiver: Receiver,
        report: DownloadReport,
        progress: Progress,
        sop_classes: Sequence[str],
        spool: Path | None,
    ) -> AbstractContextManager[SessionPool]:
        raise NotImplementedError()


class DICOMQRGet(_Retriever):
    """Download with C-GET: the PACS sends instances back over our association.

    Needs no configuration on the PACS beyond allowing C-GET from our AE title.
    Parameters as for :class:`DICOMQR`, plus ``max_workers`` (associations at
    once in :meth:`save_all` when the Trolley passes none) and ``retry``: the
    :class:`~dicomtrolley.transport.Retry` for requests broken off by a
    transient error (default ``transport.DEFAULT_RETRY``; ``Retry(total=0)``:
    none), each retry asking only for the instances still missing. ``tls``
    as for :class:`DICOMQR`.
    """

    operation = "C-GET"

    @contextlib.contextmanager
    def _sessions(
        self,
        receiver: Receiver,
        report: DownloadReport,
        progress: Progress,
        sop_classes: Sequence[str],
        spool: Path | None,
    ) -> Iterator[SessionPool]:
        contexts = get_contexts(self.model, sop_classes)

        def session() -> GetSession:
            return GetSession(
                self.peer,
                receiver,
                model=self.model,
                timeouts=self.timeouts,
                report=report,
                progress=progress,
                contexts=contexts,
                spool=spool,
            )

        with SessionPool(session) as pool:
            yield pool


class DICOMQRMove(_Retriever):
    """Download with C-MOVE to a storage SCP that this downloader runs meanwhile.

    The PACS must know the move destination: AE title ``store_aet`` (default: our
    ``aet``) at this machine's address and ``store_port``. The SCP binds
    ``store_bind`` (default: 127.0.0.1 when the PACS is on this machine, else
    every interface) and only accepts associations from the PACS's address
    (``accept_from``: other addresses, or None for any) and, when
    ``accept_aets`` is given, with one of those calling AE titles. ``retry`` as
    for :class:`DICOMQRGet`, ``tls`` as for :class:`DICOMQR`.

    ``store_tls``: how the storage SCP secures the PACS's connections. None
    (default): as ``tls`` says (its certificate is then the SCP's, and with
    ``verify`` the PACS must show one too); False: plain TCP even when
    ``tls`` is set; or a :class:`DIMSETLS` of its own. The PACS must be told
    to use TLS for the move destination.
    """

    operation = "C-MOVE"

    def __init__(
        self,
        host: str,
        port: int,
        aet: str = "DICOMTROLLEY",
        aec: str = "ANY-SCP",
        store_aet: str | None = None,
        store_port: int = 11112,
        *,
        store_bind: str | None = None,
        accept_from: Iterable[str] | str | None = "pacs",
        accept_aets: Iterable[str] | None = None,
        model: str = "study",
        timeout: DIMSETimeouts | float | None = None,
        max_workers: int | None = None,
        debug: bool = False,
        retry: Retry | None = None,
        tls: DIMSETLS | None = None,
        store_tls: DIMSETLS | bool | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            aet,
            aec,
            model=model,
            timeout=timeout,
            max_workers=max_workers,
            debug=debug,
            retry=retry,
            tls=tls,
        )
        if store_tls is True:
            raise ConfigError("store_tls: give a DIMSETLS, None (as tls) or False")
        self.store_tls = tls if store_tls is None else (store_tls or None)
        self.store_aet = check_ae_title(store_aet or aet, "move destination AE title")
        self.store_port = int(store_port)
        self.store_bind = store_bind
        self.accept_from = accept_from
        self.accept_aets = None if accept_aets is None else list(accept_aets)

    @contextlib.contextmanager
    def _sessions(
        self,
        receiver: Receiver,
        report: DownloadReport,
        progress: Progress,
        sop_classes: Sequence[str],
        spool: Path | None,
    ) -> Iterator[SessionPool]:
        scp = StoreSCP(
            self.store_aet,
            self.store_port,
            pacs=self.peer,
            receiver=receiver,
            timeouts=self.timeouts,
            bind_address=self.store_bind,
            accept_from=self.accept_from,
            accept_aets=self.accept_aets,
            spool=spool,
            tls=self.store_tls,
        )

        def session() -> MoveSession:
            return MoveSession(
                self.peer,
                receiver,
                model=self.model,
                timeouts=self.timeouts,
                report=report,
                progress=progress,
                scp=scp,
            )

        with scp, SessionPool(session) as pool:
            yield pool
