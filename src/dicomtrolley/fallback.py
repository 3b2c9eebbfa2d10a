"""FallbackDownloader: per study, the next protocol when one fails for good.

A PACS may hold a study and still refuse to send it one way: WADO-RS answers
404 for studies in a near-line archive, C-GET is not allowed for some SOP
classes, C-MOVE needs a destination the PACS knows. Given downloaders in order
of preference, :class:`FallbackDownloader` downloads every study with the first;
each study that fails with a :class:`~dicomtrolley.exceptions.PermanentError`
(refused, not found, not supported; not a local :class:`StorageError`) is tried
again, whole, with the next, and so on. Transient errors are retried by each
downloader's own policy first and do not switch protocols::

    downloader = FallbackDownloader(
        [WadoRS(session, url), DICOMQRGet(host, port, aet, aec)], searcher=qido
    )
    trolley = Trolley(downloader, qido)
    trolley.download(studies, "out")
    downloader.delivered_by        # study UID -> "wado-rs" or "c-get"

The searcher fills in deeper references when a later downloader needs them
(WADO-URI needs instances); without one, such a downloader fails those studies.
What each study went through is kept in :attr:`FallbackDownloader.attempts`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from dicomtrolley.core import (
    DICOMDownloadable,
    Downloader,
    NonInstanceParameterError,
    NonSeriesParameterError,
    Query,
    Searcher,
    Study,
)
from dicomtrolley.credentials import ConfigError
from dicomtrolley.download import (
    DownloadReport,
    Failure,
    NullProgress,
    Progress,
    current_listener,
    one_line,
)
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    DownloadIncompleteError,
    PermanentError,
    StorageError,
)
from dicomtrolley.logs import get_module_logger
from dicomtrolley.storage import DICOMDiskStorage
from dicomtrolley.trolley import Trolley

logger = get_module_logger("fallback")

__all__ = ["Attempt", "FallbackDownloader", "protocol_name"]

_NAMES = {
    "WadoRS": "wado-rs",
    "WadoURI": "wado-uri",
    "Rad69": "rad69",
    "DICOMQRGet": "c-get",
    "DICOMQRMove": "c-move",
}


def protocol_name(downloader: Downloader) -> str:
    """``wado-rs``, ``c-get`` ... for a downloader (its class name otherwise)."""
    for cls in type(downloader).__mro__:
        if cls.__name__ in _NAMES:
            return _NAMES[cls.__name__]
    return type(downloader).__name__.lower()


def falls_back(error: DICOMTrolleyError) -> bool:
    """True for an error after which another protocol may succeed."""
    return isinstance(error, PermanentError) and not isinstance(error, StorageError)


@dataclass(frozen=True)
class Attempt:
    """One protocol's try at one study: the protocol, and its error if it failed."""

    protocol: str
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return not self.error


class _NoSearcher(Searcher):
    """Stands in when no searcher was given: deeper references cannot be found."""

    def find_studies(self, query: Query) -> Sequence[Study]:
        raise PermanentError(
            "FallbackDownloader has no searcher to find the references this "
            "protocol needs"
        )


class FallbackDownloader(Downloader):
    """Downloaders in order of preference; per study, the next after a permanent failure.

    Parameters
    ----------
    downloaders:
        Downloaders, or (name, downloader) pairs, first choice first.
    searcher:
        Finds deeper references for a downloader that needs them.
    """

    def __init__(
        self,
        downloaders: Sequence[Downloader | tuple[str, Downloader]],
        searcher: Searcher | None = None,
    ) -> None:
        named: list[tuple[str, Downloader]] = []
        for item in downloaders:
            if isinstance(item, tuple):
                named.append(item)
            else:
                named.append((protocol_name(item), item))
        if not named:
            raise ConfigError("FallbackDownloader needs at least one downloader")
        self.downloaders = named
        self.searcher = searcher
        self._lock = threading.Lock()
        #: study UID -> the protocol that delivered it
        self.delivered_by: dict[str, str] = {}
        #: study UID -> every protocol tried for it, in order, with its error
        self.attempts: dict[str, list[Attempt]] = {}

    def __str__(self) -> str:
        return "FallbackDownloader(" + ", ".join(n for n, _ in self.downloaders) + ")"

    # -- bookkeeping ------------------------------------------------------------

    def _record(self, study_uid: str, protocol: str, error: str = "") -> None:
        with self._lock:
            self.attempts.setdefault(study_uid, []).append(Attempt(protocol, error))
            if not error:
                self.delivered_by[study_uid] = protocol

    def _trolley_for(
        self, downloader: Downloader, storage: DICOMDiskStorage | None
    ) -> Trolley:
        return Trolley(
            downloader,
            self.searcher or _NoSearcher(),
            storage=storage,
            query_missing=self.searcher is not None,
        )

    # -- Downloader -------------------------------------------------------------

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        """What the first downloader needs; later ones find their own references."""
        self.downloaders[0][1].check_references(objects)

    def save_all(
        self,
        objects: Sequence[DICOMDownloadable],
        storage: DICOMDiskStorage,
        output_dir: str | Path,
        *,
        max_workers: int | None = None,
        progress: Progress | None = None,
    ) -> DownloadReport:
        """Save objects with the first downloader; failed studies with the next."""
        final = DownloadReport()
        progress = progress or NullProgress()
        pending = list(objects)
        last = len(self.downloaders) - 1
        for index, (name, downloader) in enumerate(self.downloaders):
            if not pending:
                break
            report = self._save_with(
                index, downloader, pending, storage, output_dir, max_workers, progress
            )
            by_study, unattributed = _failures_by_study(pending, report.failures)
            final.merge(_without_failures(report))
            for failure in unattributed:
                final.failures.append(failure)
            retry: list[DICOMDownloadable] = []
            for study_uid in dict.fromkeys(_study_uid(o) for o in pending):
                failures = by_study.get(study_uid)
                if not failures:
                    self._record(study_uid, name)
                    continue
                reason = "; ".join(str(f.error) for f in failures[:3])
                self._record(study_uid, name, reason)
                if index < last and all(falls_back(f.error) for f in failures):
                    following = self.downloaders[index + 1][0]
                    logger.warning(
                        "%s; trying %s",
                        one_line(f"study {study_uid}: {name}", failures[0].error),
                        following,
                    )
                    retry.extend(o for o in pending if _study_uid(o) == study_uid)
                else:
                    final.failures.extend(failures)
            pending = retry
        return final

    def _save_with(
        self,
        index: int,
        downloader: Downloader,
        objects: Sequence[DICOMDownloadable],
        storage: DICOMDiskStorage,
        output_dir: str | Path,
        max_workers: int | None,
        progress: Progress,
    ) -> DownloadReport:
        """One downloader's report for objects (a later one via a Trolley).

        An outcome listener of the download (the manifest) that records a
        protocol is told this downloader's name while it runs.
        """
        listener = current_listener.get()
        token = None
        if dataclasses.is_dataclass(listener) and hasattr(listener, "protocol"):
            name = self.downloaders[index][0]
            token = current_listener.set(
                dataclasses.replace(listener, protocol=name.upper())
            )
        try:
            return self._run(
                index, downloader, objects, storage, output_dir, max_workers, progress
            )
        finally:
            if token is not None:
                current_listener.reset(token)

    def _run(
        self,
        index: int,
        downloader: Downloader,
        objects: Sequence[DICOMDownloadable],
        storage: DICOMDiskStorage,
        output_dir: str | Path,
        max_workers: int | None,
        progress: Progress,
    ) -> DownloadReport:
        if index == 0:
            return downloader.save_all(
                objects,
                storage,
                output_dir,
                max_workers=max_workers,
                progress=progress,
            )
        trolley = self._trolley_for(downloader, storage)
        workers = max_workers or 1
        listener = current_listener.get()
        try:
            report: DownloadReport = trolley.download(
                objects,
                output_dir,
                use_async=workers > 1,
                max_workers=workers,
                progress=progress,
                manifest=getattr(listener, "manifest", None),
                row=getattr(listener, "row", None),
                query=getattr(listener, "query", None),
            )
            return report
        except DownloadIncompleteError as error:
            if isinstance(error.report, DownloadReport):
                return error.report
            return _all_failed(objects, error)
        except (NonInstanceParameterError, NonSeriesParameterError) as error:
            return _all_failed(objects, error)

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        """Every instance of objects; per object, the next protocol after a
        permanent failure (instances already given are not given twice)."""
        items = [objects] if isinstance(objects, DICOMDownloadable) else list(objects)
        for obj in items:
            yield from self._datasets_of(obj)

    def _datasets_of(self, obj: DICOMDownloadable) -> Iterator[Dataset]:
        study_uid = _study_uid(obj)
        given: set[str] = set()
        errors: list[str] = []
        for name, downloader in self.downloaders:
            trolley = self._trolley_for(downloader, None)
            try:
                for dataset in trolley.fetch_all_datasets([obj]):
                    uid = str(dataset.get("SOPInstanceUID", ""))
                    if uid and uid in given:
                        continue
                    given.add(uid)
                    yield dataset
            except DICOMTrolleyError as error:
                self._record(study_uid, name, str(error))
                errors.append(f"{name}: {error}")
                if falls_back(error):
                    continue
                raise
            self._record(study_uid, name)
            return
        raise DownloadIncompleteError(
            f"no protocol delivered {obj}: " + "; ".join(errors),
            uids=obj.reference().uids(),
        )


def _study_uid(obj: DICOMDownloadable) -> str:
    return obj.reference().study_uid


def _uids_by_study(objects: Sequence[DICOMDownloadable]) -> dict[str, str]:
    """Every UID known in objects -> the study it belongs to."""
    owner: dict[str, str] = {}
    for obj in objects:
        study_uid = _study_uid(obj)
        for uid in obj.reference().uids():
            owner.setdefault(uid, study_uid)
        if isinstance(obj, Study):
            for series in obj.series:
                owner.setdefault(series.uid, study_uid)
                for instance in series.instances:
                    owner.setdefault(instance.uid, study_uid)
    return owner


def _failures_by_study(
    objects: Sequence[DICOMDownloadable], failures: Sequence[Failure]
) -> tuple[dict[str, list[Failure]], list[Failure]]:
    """failures grouped by the study they concern, and those of no known study."""
    owner = _uids_by_study(objects)
    grouped: dict[str, list[Failure]] = {}
    unattributed: list[Failure] = []
    for failure in failures:
        uids = (*failure.uids, *failure.error.uids)
        study_uid = next((owner[uid] for uid in uids if uid in owner), None)
        if study_uid is None:
            unattributed.append(failure)
        else:
            grouped.setdefault(study_uid, []).append(failure)
    return grouped, unattributed


def _without_failures(report: DownloadReport) -> DownloadReport:
    copy = DownloadReport()
    copy.saved.extend(report.saved)
    copy.skipped.extend(report.skipped)
    copy.bytes_written = report.bytes_written
    return copy


def _all_failed(
    objects: Sequence[DICOMDownloadable], error: DICOMTrolleyError
) -> DownloadReport:
    """A report in which every study of objects failed with error."""
    report = DownloadReport()
    for study_uid in dict.fromkeys(_study_uid(o) for o in objects):
        report.failures.append(
            Failure(what=f"study {study_uid}", uids=(study_uid,), error=error)
        )
    return report
