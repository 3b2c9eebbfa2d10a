"""C-FIND (PS3.4 C.4.1): queries over a :class:`~dicomtrolley.dimse.link.Link`,
and searching deeper levels.

C-FIND is hierarchical (PS3.4 C.4.1.2.2): a SERIES-level query names one study
by its UID, an IMAGE-level query one series. To find the series of the studies
that match patient or study criteria, :func:`hierarchical_find` asks for the
studies first and then, per study, for its series (and per series for its
instances), each query holding only the keys of its own level. Relational
queries (PS3.4 C.4.1.2.3) do it in one go; SCPs that support them say so in
SOP class extended negotiation (:func:`relational_requested`). Orthanc does
not say so, but answers relational queries anyway: ``relational=True`` uses
them without asking.

Matches come as the peer sends them (:meth:`FindAssociation.matches`). A
caller that stops early (``break``, ``close()``, an exception, Ctrl-C) has the
request cancelled (C-CANCEL-FIND-RQ, PS3.7 9.3.2.3): the
peer gets a C-CANCEL, its final response is awaited for at most
:data:`STOP_WAIT` seconds, then the association is released, or aborted when
the peer does not answer in that time. Timeouts are the Link's: ``idle``
between any two PDUs, ``total`` for each C-FIND request.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from dicomtrolley.dimse.contexts import proposal, qr_model
from dicomtrolley.dimse.errors import (
    DIMSEError,
    ServiceNotSupportedError,
    describe_status,
    status_error,
)
from dicomtrolley.dimse.link import Link
from dicomtrolley.dimse.messages import (
    Command,
    MessageReader,
    decode_identifier,
    encode_identifier,
    transfer_syntax,
)
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.fields import InstanceLevel, SeriesLevel, SeriesLevelPromotable
from dicomtrolley.formats import dimse_commands, dul
from dicomtrolley.formats.association import ExtendedNegotiation
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("dimse")

PATIENT, STUDY, SERIES, IMAGE = "PATIENT", "STUDY", "SERIES", "IMAGE"
LEVELS = (PATIENT, STUDY, SERIES, IMAGE)
UNIQUE_KEYS = {
    PATIENT: "PatientID",
    STUDY: "StudyInstanceUID",
    SERIES: "SeriesInstanceUID",
    IMAGE: "SOPInstanceUID",
}
#: PS3.4 C.6.1.1.2 patient level keys (Patient Root) and C.6.2.1.2 (Study Root).
PATIENT_KEYS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "IssuerOfPatientID",
        "OtherPatientIDs",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    }
)
SERIES_KEYS = frozenset(SeriesLevel.fields | SeriesLevelPromotable.fields)
IMAGE_KEYS = frozenset(InstanceLevel.fields)
#: Attributes every response carries that are not keys of any level.
NOT_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})

#: PS3.4 C.4.1.1.4 / D.3.3.4: byte 0 of the extended negotiation = relational queries.
RELATIONAL_QUERIES = b"\x01"

OPERATION = "C-FIND"
#: Seconds a caller that stopped early waits, at most, for the peer's answers
#: to the C-CANCEL and to the A-RELEASE-RQ together (Ctrl-C ends within 1 s).
STOP_WAIT = 0.6


def level_of(keyword: str) -> str:
    """The query level an attribute belongs to (Study Root: patient ones are STUDY)."""
    if keyword in PATIENT_KEYS:
        return PATIENT
    if keyword in SERIES_KEYS:
        return SERIES
    if keyword in IMAGE_KEYS:
        return IMAGE
    return STUDY


def relational_requested(model_uid: str) -> ExtendedNegotiation:
    """The extended negotiation item that asks for relational queries."""
    return ExtendedNegotiation(str(model_uid), RELATIONAL_QUERIES)


def relational_accepted(link: Link, model_uid: str) -> bool:
    """True when the peer agreed to relational queries for model_uid."""
    info = link.extended.get(str(model_uid), b"")
    return len(info) > 0 and info[0] & 1 == 1


def set_value(dataset: Dataset, keyword: str, value: object) -> None:
    """Set keyword (empty value: a return key). Non-ASCII text switches the
    identifier to UTF-8 (ISO_IR 192)."""
    if value is None:
        value = ""
    if isinstance(value, str) and not value.isascii():
        dataset.SpecificCharacterSet = "ISO_IR 192"
    if dictionary_VR(keyword) == "SQ":
        value = [] if value == "" else value
    setattr(dataset, keyword, value)


class FindAssociation:
    """C-FIND requests, one after the other, over one association (a Link).

    Use as a context manager (or call :meth:`close`): the association is
    released at the end, quickly when a request was stopped early.
    ``relational`` says whether the peer accepted relational queries.
    """

    def __init__(self, link: Link, model_uid: str) -> None:
        context = link.context_for(model_uid)
        if context is None:
            raise ServiceNotSupportedError(
                f"the peer does not support {getattr(model_uid, 'name', model_uid)} "
                f"({model_uid})",
                peer=link.peer,
                operation=OPERATION,
            )
        self.link = link
        self.model_uid = str(model_uid)
        self.context_id = context.context_id
        self.syntax = transfer_syntax(link, self.context_id)
        self.relational = relational_accepted(link, self.model_uid)
        self._stop_deadline: float | None = None
        # 1, 2, ... per association, and round again after 65535 (a deep
        # hierarchical search may send more C-FINDs than that on one)
        self._message_ids = itertools.cycle(range(1, 65536))

    @classmethod
    def open(
        cls,
        peer: Peer,
        model_uid: str,
        *,
        timeouts: DIMSETimeouts,
        ask_relational: bool = False,
        operation: str = OPERATION,
    ) -> FindAssociation:
        """Associate with peer for model_uid (asking for relational queries
        in extended negotiation with ``ask_relational``).

        Raises the errors of :meth:`Link.connect
        <dicomtrolley.dimse.link.Link.connect>`, and ServiceNotSupportedError
        when the peer did not accept the model.
        """
        extended = [relational_requested(model_uid)] if ask_relational else []
        link = Link.connect(
            peer,
            [proposal(model_uid)],
            operation=operation,
            timeouts=timeouts,
            extended=extended,
        )
        try:
            return cls(link, model_uid)
        except BaseException:
            link.release()
            raise

    def __enter__(self) -> FindAssociation:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the association (abort it when the peer does not answer)."""
        timeout = None
        if self._stop_deadline is not None:  # what is left of STOP_WAIT
            timeout = max(0.1, self._stop_deadline - time.monotonic())
        self.link.release(timeout)

    def find(self, identifier: Dataset) -> list[Dataset]:
        """Every match of one C-FIND request (see :meth:`matches`)."""
        return list(self.matches(identifier))

    def matches(self, identifier: Dataset) -> Generator[Dataset, None, None]:
        """The matches of one C-FIND request, as they arrive.

        Closing the iterator before the end cancels the request (C-CANCEL);
        the association stays usable when the peer answers in time, else it is
        aborted.

        Raises
        ------
        DIMSEStatusError, DIMSEOutOfResourcesError
            For a failure status (with its meaning and the peer's error comment).
        DIMSETimeoutError, AssociationAbortedError
            When the peer goes silent, time runs out or the association breaks.
        """
        link = self.link
        msg_id = next(self._message_ids)
        self._stop_deadline = None
        total = link.timeouts.total
        reader = MessageReader(
            link, self.context_id, time.monotonic() + total if total else None
        )
        command = dimse_commands.c_find_rq(msg_id, self.model_uid)
        link.send(self.context_id, command, encode_identifier(identifier, self.syntax))
        count = 0
        final: Command | None = None
        try:
            while final is None:
                response, data = reader.next()
                status = self._status(response, msg_id)
                if not dimse_commands.is_pending(status):
                    final = response
                elif data is not None:
                    count += 1
                    yield decode_identifier(data, self.syntax, link)
        except GeneratorExit:
            self._cancel(reader, msg_id, count)
            raise
        except BaseException:
            link.abort()
            raise
        self._final(final, count)

    def _status(self, response: Command, msg_id: int) -> int:
        """The status of a C-FIND response to msg_id (else a protocol error)."""
        field = dul.command_int(response, dul.COMMAND_FIELD)
        if field != dul.C_FIND_RSP:
            raise self.link.fail(
                f"protocol error: unexpected DIMSE command 0x{field:04X}"
            )
        answered = dul.command_int(response, dul.MESSAGE_ID_BEING_RESPONDED_TO)
        if answered != msg_id:
            raise self.link.fail(
                f"protocol error: a C-FIND response to message {answered}, not {msg_id}"
            )
        if dul.STATUS not in response:
            raise self.link.fail("protocol error: a C-FIND response without status")
        return dul.command_int(response, dul.STATUS)

    def _final(self, response: Command, count: int) -> None:
        code = dul.command_int(response, dul.STATUS)
        if code == dimse_commands.CANCEL:
            logger.warning(
                "C-FIND with %s stopped after %d matches (%s): the PACS limits the "
                "number of results; narrow the search to see all",
                self.link.peer,
                count,
                describe_status(code, OPERATION),
            )
        elif code != 0x0000 and code & 0xF000 != 0xB000:
            raise status_error(
                code,
                peer=self.link.peer,
                operation=OPERATION,
                comment=dul.command_str(response, dul.ERROR_COMMENT),
            )

    def _cancel(self, reader: MessageReader, msg_id: int, count: int) -> None:
        """Cancel request msg_id and wait (briefly) for its final response;
        abort the association when that does not come."""
        link = self.link
        deadline = time.monotonic() + STOP_WAIT
        self._stop_deadline = deadline
        if not link.open:
            return
        logger.debug(
            "C-FIND with %s: caller stopped after %d matches; cancelling",
            link.peer,
            count,
        )
        reader.deadline = min(reader.deadline or deadline, deadline)
        try:
            link.send(self.context_id, dimse_commands.c_cancel_rq(msg_id), None)
            while dimse_commands.is_pending(self._status(reader.next()[0], msg_id)):
                pass
        except DIMSEError:
            logger.debug("C-FIND cancel with %s: no final answer", link.peer)
        except BaseException:
            link.abort()
            raise


@dataclass
class FindRequest:
    """A query split by level: the keys to match and the attributes to return.

    ``keys`` maps keywords to values to match, ``return_keys`` lists attributes
    to return. :meth:`identifier` builds the identifier of one level, with the
    unique keys of the levels above it filled in (hierarchical search);
    :meth:`relational_identifier` one with the keys of all levels.
    """

    keys: dict[str, object]
    return_keys: Sequence[str] = ()
    patient_root: bool = False
    by_level: dict[str, dict[str, object]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_level = {level: {} for level in LEVELS}
        for keyword, value in self.keys.items():
            if value not in (None, ""):
                self.by_level[self._level(keyword)][keyword] = value
        for keyword in self.return_keys:
            self.by_level[self._level(keyword)].setdefault(keyword, "")

    def _level(self, keyword: str) -> str:
        level = level_of(keyword)
        if level == PATIENT and not self.patient_root:
            return STUDY
        return level

    def has_criteria(self, level: str) -> bool:
        """True when a level has keys to match (values, not return keys)."""
        return any(value != "" for value in self.by_level[level].values())

    def identifier(self, level: str, parents: dict[str, str]) -> Dataset:
        """The identifier for a query at level: the level's own keys, its unique
        key, and the unique keys (given in parents) of the levels above it."""
        dataset = Dataset()
        dataset.QueryRetrieveLevel = level
        for keyword, uid in parents.items():
            set_value(dataset, keyword, uid)
        set_value(
            dataset,
            UNIQUE_KEYS[level],
            self.by_level[level].get(UNIQUE_KEYS[level], ""),
        )
        for keyword, value in self.by_level[level].items():
            set_value(dataset, keyword, value)
        return dataset

    def relational_identifier(self, level: str) -> Dataset:
        """One identifier with the keys of every level down to level."""
        dataset = Dataset()
        dataset.QueryRetrieveLevel = level
        start = 0 if self.patient_root else 1
        for current in LEVELS[start : LEVELS.index(level) + 1]:
            set_value(dataset, UNIQUE_KEYS[current], "")
            for keyword, value in self.by_level[current].items():
                set_value(dataset, keyword, value)
        return dataset


def _uid(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return str(value).strip() if value else ""


def hierarchical_find(
    find: Callable[[Dataset], list[Dataset]], request: FindRequest, level: str
) -> list[Dataset]:
    """All datasets for a query at level, found level by level.

    Returns the study datasets (only studies with a match at level), then the
    series and instance datasets, ready for
    :func:`~dicomtrolley.parsing.studies_from_datasets`.
    """
    return [dataset for found in by_study(find, request, level) for dataset in found]


def by_study(
    find: Callable[[Dataset], list[Dataset]], request: FindRequest, level: str
) -> Iterator[list[Dataset]]:
    """The datasets of :func:`hierarchical_find`, one study at a time: its
    dataset, then (below STUDY level) its series and instances."""
    patients: list[tuple[dict[str, str], Dataset | None]] = [({}, None)]
    if request.patient_root:
        patients = [
            ({"PatientID": _uid(patient, "PatientID")}, patient)
            for patient in find(request.identifier(PATIENT, {}))
            if _uid(patient, "PatientID")
        ]
    studies: list[tuple[dict[str, str], Dataset]] = []
    for parents, patient in patients:
        for study in find(request.identifier(STUDY, parents)):
            uid = _uid(study, "StudyInstanceUID")
            if not uid:
                continue
            if patient is not None:  # patient attributes onto each of its studies
                for element in patient:
                    if element.tag not in study and element.keyword not in NOT_KEYS:
                        study.add(element)
            studies.append(({**parents, "StudyInstanceUID": uid}, study))
    deeper = level != STUDY or request.has_criteria(SERIES)
    if not deeper:
        yield from ([study] for _, study in studies)
        return
    for parents, study in studies:
        below = _below(find, request, level, parents)
        if not below:
            continue  # no match at the query level in this study
        yield [study, *below] if level != STUDY else [study]


def _below(
    find: Callable[[Dataset], list[Dataset]],
    request: FindRequest,
    level: str,
    parents: dict[str, str],
) -> list[Dataset]:
    """The series of one study and, at IMAGE level, their instances (only
    series with instances that match)."""
    below: list[Dataset] = []
    for series in find(request.identifier(SERIES, parents)):
        if level != IMAGE:
            below.append(series)
            continue
        series_uid = _uid(series, "SeriesInstanceUID")
        if not series_uid:
            continue
        images = find(
            request.identifier(IMAGE, {**parents, "SeriesInstanceUID": series_uid})
        )
        if images:
            below.append(series)
            below.extend(images)
    return below


def search_iter(
    peer: Peer,
    request: FindRequest,
    level: str,
    *,
    model: str,
    timeouts: DIMSETimeouts,
    relational: bool | None = None,
) -> Generator[Dataset, None, None]:
    """Every dataset for a query at level, over one association, as found.

    One relational query when ``relational`` is True, or None and the peer
    accepts relational queries; else level by level (:func:`hierarchical_find`,
    yielding a study's datasets when the study is complete). A STUDY-level
    query without series keys is one query either way (in the Patient Root
    model, hierarchical search asks for the patients first). Closing the
    iterator early cancels the request under way (see
    :meth:`FindAssociation.matches`) and releases the association.
    """
    model_uid = qr_model(model, "find")
    with FindAssociation.open(
        peer, model_uid, timeouts=timeouts, ask_relational=relational is None
    ) as association:
        if relational is None:
            relational = association.relational
        simple = level == STUDY and not request.has_criteria(SERIES)
        if relational or (simple and not request.patient_root):
            yield from association.matches(request.relational_identifier(level))
            return
        for found in by_study(association.find, request, level):
            yield from found


def search(
    peer: Peer,
    request: FindRequest,
    level: str,
    *,
    model: str,
    timeouts: DIMSETimeouts,
    relational: bool | None = None,
) -> list[Dataset]:
    """Every dataset for a query at level (see :func:`search_iter`)."""
    return list(
        search_iter(
            peer, request, level, model=model, timeouts=timeouts, relational=relational
        )
    )
