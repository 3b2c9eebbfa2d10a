"""C-FIND (PS3.4 C.4.1): one query over an association, and searching deeper levels.

C-FIND is hierarchical (PS3.4 C.4.1.2.2): a SERIES-level query names one study
by its UID, an IMAGE-level query one series. To find the series of the studies
that match patient or study criteria, :func:`hierarchical_find` asks for the
studies first and then, per study, for its series (and per series for its
instances), each query holding only the keys of its own level. Relational
queries (PS3.4 C.4.1.2.3) do it in one go; SCPs that support them say so in
SOP class extended negotiation (:func:`relational_requested`). Orthanc does
not say so, but answers relational queries anyway: ``relational=True`` uses
them without asking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from dicomtrolley.dimse.associations import (
    Watchdog,
    ended,
    ended_before_sending,
    open_association,
    require_context,
)
from dicomtrolley.dimse.contexts import UNCOMPRESSED, qr_model
from dicomtrolley.dimse.errors import describe_status, status_error
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.fields import InstanceLevel, SeriesLevel, SeriesLevelPromotable
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

PENDING = (0xFF00, 0xFF01)
CANCEL = 0xFE00


def level_of(keyword: str) -> str:
    """The query level an attribute belongs to (Study Root: patient ones are STUDY)."""
    if keyword in PATIENT_KEYS:
        return PATIENT
    if keyword in SERIES_KEYS:
        return SERIES
    if keyword in IMAGE_KEYS:
        return IMAGE
    return STUDY


def relational_requested(model_uid: str) -> SOPClassExtendedNegotiation:
    """The extended negotiation item that asks for relational queries."""
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = model_uid
    item.service_class_application_information = RELATIONAL_QUERIES
    return item


def relational_accepted(assoc: Association, model_uid: str) -> bool:
    """True when the peer agreed to relational queries for model_uid."""
    info = assoc.acceptor.sop_class_extended.get(UID(model_uid))
    return info is not None and len(info) > 0 and info[0] & 1 == 1


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


def c_find(
    assoc: Association,
    identifier: Dataset,
    model_uid: str,
    *,
    peer: Peer,
    timeouts: DIMSETimeouts,
    msg_id: int = 1,
) -> list[Dataset]:
    """Every match of one C-FIND request.

    Raises
    ------
    DIMSEStatusError
        For a failure status (with its meaning and the peer's error comment).
    DIMSETimeoutError, AssociationAbortedError
        When the peer goes silent, time runs out or the association breaks.
    """
    matches: list[Dataset] = []
    final: Dataset | None = None
    with Watchdog(assoc, timeouts) as watchdog, ended_before_sending(assoc):
        for status, match in assoc.send_c_find(identifier, model_uid, msg_id=msg_id):
            code = status.get("Status")
            if code is None:
                break
            if code in PENDING:
                if match is not None:
                    matches.append(match)
                continue
            final = status
            break
    if final is None:
        raise watchdog.error(peer, "C-FIND")
    code = int(final.Status)
    if code == CANCEL:
        logger.warning(
            "C-FIND with %s stopped after %d matches (%s): the PACS limits the "
            "number of results; narrow the search to see all",
            peer,
            len(matches),
            describe_status(code, "C-FIND"),
        )
    elif code != 0x0000 and code & 0xF000 != 0xB000:
        raise status_error(
            code,
            peer=peer,
            operation="C-FIND",
            comment=str(final.get("ErrorComment", "") or ""),
        )
    return matches


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
        return [study for _, study in studies]
    results: list[Dataset] = []
    for parents, study in studies:
        series_list = find(request.identifier(SERIES, parents))
        below: list[Dataset] = []
        for series in series_list:
            series_uid = _uid(series, "SeriesInstanceUID")
            if level != IMAGE:
                below.append(series)
                continue
            if not series_uid:
                continue
            images = find(
                request.identifier(IMAGE, {**parents, "SeriesInstanceUID": series_uid})
            )
            if images:
                below.append(series)
                below.extend(images)
        if not below:
            continue  # no match at the query level in this study
        results.append(study)
        if level != STUDY:
            results.extend(below)
    return results


def search(
    peer: Peer,
    request: FindRequest,
    level: str,
    *,
    model: str,
    timeouts: DIMSETimeouts,
    relational: bool | None = None,
) -> list[Dataset]:
    """Every dataset for a query at level, over one association.

    One relational query when ``relational`` is True, or None and the peer
    accepts relational queries; else level by level (:func:`hierarchical_find`).
    A STUDY-level query without series keys is one query either way (in the
    Patient Root model, hierarchical search asks for the patients first).
    """
    model_uid = qr_model(model, "find")
    ext_neg = [relational_requested(model_uid)] if relational is None else []
    assoc = open_association(
        peer,
        [build_context(model_uid, list(UNCOMPRESSED))],
        operation="C-FIND",
        timeouts=timeouts,
        ext_neg=ext_neg,
    )
    with ended(assoc):
        require_context(assoc.accepted_contexts, model_uid, peer, "C-FIND")
        message_ids = iter(range(1, 65536))

        def find(identifier: Dataset) -> list[Dataset]:
            return c_find(
                assoc,
                identifier,
                model_uid,
                peer=peer,
                timeouts=timeouts,
                msg_id=next(message_ids),
            )

        if relational is None:
            relational = relational_accepted(assoc, model_uid)
        simple = level == STUDY and not request.has_criteria(SERIES)
        if relational or (simple and not request.patient_root):
            return find(request.relational_identifier(level))
        return hierarchical_find(find, request, level)
