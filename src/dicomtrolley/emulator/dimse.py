"""DIMSE on a port of its own: C-ECHO, C-FIND, C-GET and C-MOVE (PS3.4 annex C).

A pynetdicom application entity that answers from the emulator's index. It is
not started by default (an extra open port would surprise): serve it with
``Emulator(data, services=[*default_services(), DimseService()])`` or
``dicomtrolley serve --dimse-port N``.

Models: Patient Root and Study Root Query/Retrieve (FIND, GET, MOVE), and the
Verification SOP class (C-ECHO).

C-FIND (PS3.4 C.4.1): levels PATIENT (Patient Root only), STUDY, SERIES and
IMAGE. Matching follows :mod:`~dicomtrolley.emulator.matching` (single values,
``*`` and ``?`` wildcards, backslash-separated UID lists, ``from-to`` date and
time ranges, universal matching). One Pending response per match, holding the
keys that were asked for and nothing else, plus Query/Retrieve Level, the
unique key of the query level when the request left it out, and Specific
Character Set ``ISO_IR 192`` when a value is not ASCII. Keys the SCU asks for
that the emulator does not know come back empty. C-CANCEL stops the answers
with status Cancel (0xFE00).

Tolerance, like Orthanc's: queries are also answered relationally (the
extended behaviour of PS3.4 C.4.1.3.2) even without extended negotiation, not
only hierarchically (the baseline of C.4.1.3.1). At SERIES and IMAGE level the
unique keys of the levels above may be left out, and keys of the levels above
may be matched and returned. Relational queries and retrievals are also
accepted in SOP Class Extended Negotiation when an SCU asks for them.
Sequence keys and keys the emulator does not index are not matched (they are
returned). What is refused:

- 0xA900 (Identifier does not match SOP class): Query/Retrieve Level missing or
  not a level of the model, a key with a value below the query level (such as
  Modality in a STUDY query), a retrieve without the unique key of its level,
  wildcards in a retrieve key;
- 0xC000 (Unable to process): an identifier that cannot be decoded, a value
  that cannot be matched (a malformed date range, for example).

C-GET (PS3.4 C.4.3): the matching instances go back over the same association
as C-STORE sub-operations, so the SCU must have proposed storage contexts with
the SCP role (SCP/SCU role selection). C-MOVE (PS3.4 C.4.2): the instances go
to the AE title of the request, looked up in ``move_destinations``; unknown
titles are answered 0xA801 (Move Destination Unknown), and so are
destinations that refuse the association. Both answer Pending
with the sub-operation counts after each instance, then Success, or Warning
(0xB000) with the Failed SOP Instance UID List when some sub-operations
failed (0xA702 when all of them did), or Cancel after a C-CANCEL.

Each instance is sent in its stored transfer syntax when the peer accepted it,
else in another uncompressed one (pynetdicom converts between those), else,
for compressed files such as RLE, decompressed by pydicom when the peer only
accepted uncompressed syntaxes. The files are read one at a time, while
sending; pixel data is not decoded unless it has to be decompressed.

Two consequences of pynetdicom's query/retrieve service class, which drives the
handlers here: it takes datasets, not file paths (so a file is read into memory
before it is sent), and it wants the sub-operation count (C-GET), and for C-MOVE
the destination, before any status. So a C-GET refused with 0xA900 also
reports one failed sub-operation, and a C-MOVE refused with 0xA900 first opens
(and releases) an association with the destination, proposing Verification
only.

Associations run in threads of their own (pynetdicom's); the index is
thread-safe. Nagle's algorithm is turned off (TCP_NODELAY) on every connection,
accepted or opened to a move destination: a DIMSE message is several small
writes, and without it each C-STORE waits for delayed ACKs (~40 ms). Everything logs to ``trolley.emulator.dimse``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_context,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

from dicomtrolley.emulator.attributes import (
    SERIES_UID,
    SOP_CLASS_UID,
    SOP_UID,
    STUDY_UID,
    TRANSFER_SYNTAX_UID,
    JsonDataset,
    Level,
    first_value,
    keyword_of,
    level_of,
    tag_of,
    vr_of,
)
from dicomtrolley.emulator.index import DicomIndex, InstanceRecord, StudyRecord
from dicomtrolley.emulator.matching import (
    Condition,
    MatchingError,
    StudyMatch,
    make_condition,
    search,
)
from dicomtrolley.emulator.service import Service

if TYPE_CHECKING:
    from dicomtrolley.dimse.tls import DIMSETLS
    from dicomtrolley.emulator.app import Emulator

logger = logging.getLogger("trolley.emulator.dimse")

DEFAULT_AE_TITLE = "DICOMTROLLEY-EMU"

VERIFICATION = UID("1.2.840.10008.1.1")
PATIENT, STUDY, SERIES, IMAGE = "PATIENT", "STUDY", "SERIES", "IMAGE"
LEVELS = (PATIENT, STUDY, SERIES, IMAGE)


@dataclass(frozen=True)
class Model:
    """A query/retrieve information model (PS3.4 C.6): its name and levels."""

    name: str
    operation: str  # "find", "get" or "move"
    levels: tuple[str, ...]

    @property
    def patient_root(self) -> bool:
        return self.levels[0] == PATIENT


_PATIENT_LEVELS = LEVELS
_STUDY_LEVELS = LEVELS[1:]
#: The SOP classes of the models served, by UID.
MODELS: Mapping[str, Model] = {
    "1.2.840.10008.5.1.4.1.2.1.1": Model("Patient Root", "find", _PATIENT_LEVELS),
    "1.2.840.10008.5.1.4.1.2.1.2": Model("Patient Root", "move", _PATIENT_LEVELS),
    "1.2.840.10008.5.1.4.1.2.1.3": Model("Patient Root", "get", _PATIENT_LEVELS),
    "1.2.840.10008.5.1.4.1.2.2.1": Model("Study Root", "find", _STUDY_LEVELS),
    "1.2.840.10008.5.1.4.1.2.2.2": Model("Study Root", "move", _STUDY_LEVELS),
    "1.2.840.10008.5.1.4.1.2.2.3": Model("Study Root", "get", _STUDY_LEVELS),
}

# Statuses (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; PS3.7 annex C).
SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
NOT_AUTHORISED = 0x0124

QR_LEVEL = "00080052"
CHARSET = "00080005"
RETRIEVE_AE_TITLE = "00080054"
AVAILABLE_SYNTAXES = "00083002"
PATIENT_ID = "00100020"

#: Patient-level attributes (PS3.4 C.6.1.1.2) that the index holds.
PATIENT_TAGS = frozenset(
    tag
    for keyword in (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "OtherPatientIDsSequence",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
    )
    if (tag := tag_of(keyword)) is not None
)
_PATIENT_STUDIES = "00201200"
_PATIENT_SERIES = "00201202"
_PATIENT_INSTANCES = "00201204"
_STUDY_SERIES = "00201206"
_STUDY_INSTANCES = "00201208"
#: The unique key of each level (PS3.4 C.6.1.1, C.6.2.1).
UNIQUE_KEYS = {
    PATIENT: PATIENT_ID,
    STUDY: STUDY_UID,
    SERIES: SERIES_UID,
    IMAGE: SOP_UID,
}
_INDEX_LEVELS = {STUDY: Level.STUDY, SERIES: Level.SERIES, IMAGE: Level.INSTANCE}
_QR_LEVELS = {Level.STUDY: STUDY, Level.SERIES: SERIES, Level.INSTANCE: IMAGE}

#: Transfer syntaxes pynetdicom can convert between (no pixel data changes).
NATIVE_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
#: What the emulator accepts in storage contexts (C-GET), best first: one
#: context gets one syntax, and an uncompressed one can carry every file that is
#: not compressed.
STORAGE_SYNTAXES = [
    *NATIVE_SYNTAXES,
    *(UID(ts) for ts in ALL_TRANSFER_SYNTAXES if ts not in NATIVE_SYNTAXES),
]
MAX_CONTEXTS = 128


class IdentifierError(Exception):
    """A C-FIND, C-GET or C-MOVE identifier that cannot be answered."""

    def __init__(self, status: int, comment: str, offending: int | None = None):
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.offending = offending

    def status_dataset(self) -> Dataset:
        """The Status, Error Comment (at most 64 characters) and Offending Element."""
        status = Dataset()
        status.Status = self.status
        status.ErrorComment = self.comment[:64]
        if self.offending is not None:
            status.OffendingElement = [self.offending]
        return status


# -- reading identifiers -------------------------------------------------------


@dataclass(frozen=True)
class ReturnKey:
    """An attribute the SCU asked for, and the VR it used."""

    tag: str
    vr: str


@dataclass(frozen=True)
class FindQuery:
    """A parsed C-FIND identifier."""

    level: str
    conditions: tuple[Condition, ...]
    keys: tuple[ReturnKey, ...]


@dataclass(frozen=True)
class RetrieveQuery:
    """A parsed C-GET or C-MOVE identifier: UIDs (or patient IDs) per level."""

    level: str
    uids: Mapping[str, tuple[str, ...]]  # level -> unique key values given


def _name(tag: str) -> str:
    return keyword_of(tag) or f"({tag[:4]},{tag[4:]})"


def _query_level(identifier: Dataset, model: Model) -> str:
    element = identifier.get(0x00080052)
    value = _text(element) if isinstance(element, DataElement) else ""
    value = (value or "").strip().upper()
    if not value:
        raise IdentifierError(
            IDENTIFIER_DOES_NOT_MATCH,
            "QueryRetrieveLevel (0008,0052) is missing",
            0x00080052,
        )
    if value not in model.levels:
        raise IdentifierError(
            IDENTIFIER_DOES_NOT_MATCH,
            f"level {value[:16]} is not one of {'/'.join(model.levels)}",
            0x00080052,
        )
    return value


def _text(element: DataElement) -> str | None:
    """The value of a key as matching text ("" for universal); None if binary."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(item) for item in value)
    return str(value)


def qr_level(tag: str, patient_root: bool) -> str | None:
    """The query/retrieve level of an attribute, None if the emulator does not
    index it. Patient attributes are STUDY level in the Study Root model."""
    if tag in PATIENT_TAGS or tag in (
        _PATIENT_STUDIES,
        _PATIENT_SERIES,
        _PATIENT_INSTANCES,
    ):
        return PATIENT if patient_root else STUDY
    if tag == AVAILABLE_SYNTAXES:
        return IMAGE
    level = level_of(tag)
    return None if level is None else _QR_LEVELS[level]


def parse_find(identifier: Dataset, model: Model) -> FindQuery:
    """The matching and return keys of a C-FIND identifier.

    Raises IdentifierError (0xA900 for keys that do not fit the level, 0xC000
    for values that cannot be matched). Decoding errors of the identifier
    propagate (pydicom decodes values when they are first read).
    """
    level = _query_level(identifier, model)
    depth = LEVELS.index(level)
    conditions: list[Condition] = []
    keys: list[ReturnKey] = []
    for element in identifier:
        tag = f"{int(element.tag):08X}"
        if element.tag.group in (0x0000, 0x0002) or tag in (QR_LEVEL, CHARSET):
            continue
        keys.append(ReturnKey(tag, element.VR))
        text = _text(element)
        if not text or element.VR == "SQ":
            continue  # universal matching, binary values, sequences
        key_level = qr_level(tag, model.patient_root)
        if key_level is None:
            logger.debug("Not matching on %s: the emulator does not index it", tag)
            continue
        try:
            condition = make_condition(tag, text)
        except MatchingError as error:
            raise IdentifierError(
                UNABLE_TO_PROCESS, str(error), int(element.tag)
            ) from None
        if condition is None:
            continue
        if LEVELS.index(key_level) > depth:
            raise IdentifierError(
                IDENTIFIER_DOES_NOT_MATCH,
                f"{_name(tag)} is a {key_level} key, below level {level}",
                int(element.tag),
            )
        conditions.append(condition)
    return FindQuery(level, tuple(conditions), tuple(keys))


def parse_retrieve(identifier: Dataset, model: Model) -> RetrieveQuery:
    """The unique keys of a C-GET or C-MOVE identifier (PS3.4 C.4.2, C.4.3).

    The unique key of the retrieve level is required; those of the levels
    above are optional (relational retrieval, always allowed). Other keys are
    ignored.
    """
    level = _query_level(identifier, model)
    uids: dict[str, tuple[str, ...]] = {}
    for current in model.levels[: model.levels.index(level) + 1]:
        tag = UNIQUE_KEYS[current]
        element = identifier.get(int(tag, 16))
        text = _text(element) if isinstance(element, DataElement) else ""
        values = tuple(v.strip() for v in (text or "").split("\\") if v.strip())
        if any(c in value for value in values for c in "*?"):
            raise IdentifierError(
                IDENTIFIER_DOES_NOT_MATCH,
                f"no wildcards in {_name(tag)} in a retrieve",
                int(tag, 16),
            )
        if values:
            uids[current] = values
        elif current == level:
            raise IdentifierError(
                IDENTIFIER_DOES_NOT_MATCH,
                f"{_name(tag)} is required at level {level}",
                int(tag, 16),
            )
    return RetrieveQuery(level, uids)


# -- answering from the index --------------------------------------------------

#: One C-FIND match: the attributes of its level and of the levels above,
#: most specific first.
Row = list[JsonDataset]


def find_rows(index: DicomIndex, query: FindQuery) -> list[Row]:
    """The matches of a C-FIND query, in the index's stable order."""
    if query.level == PATIENT:
        return _patient_rows(search(index, query.conditions, Level.STUDY))
    matches = search(index, query.conditions, _INDEX_LEVELS[query.level])
    rows: list[Row] = []
    for study in matches:
        if query.level == STUDY:
            rows.append([study.record.attrs])
            continue
        for series in study.series:
            if query.level == SERIES:
                rows.append([series.record.attrs, study.record.attrs])
                continue
            rows.extend(
                [instance.attrs, series.record.attrs, study.record.attrs]
                for instance in series.instances
            )
    return rows


def _patient_rows(matches: Sequence[StudyMatch]) -> list[Row]:
    """One row per Patient ID, with its NumberOfPatientRelated... counts."""
    patients: dict[str, list[StudyRecord]] = {}
    for match in matches:
        patient_id = str(first_value(match.record.attrs, PATIENT_ID) or "")
        patients.setdefault(patient_id, []).append(match.record)
    rows: list[Row] = []
    for studies in patients.values():
        attrs: JsonDataset = {}
        for study in studies:
            for tag, element in study.attrs.items():
                if tag in PATIENT_TAGS:
                    attrs.setdefault(tag, element)

        def total(tag: str, records: list[StudyRecord] = studies) -> int:
            return sum(int(first_value(s.attrs, tag) or 0) for s in records)

        attrs[_PATIENT_STUDIES] = {"vr": "IS", "Value": [len(studies)]}
        attrs[_PATIENT_SERIES] = {"vr": "IS", "Value": [total(_STUDY_SERIES)]}
        attrs[_PATIENT_INSTANCES] = {"vr": "IS", "Value": [total(_STUDY_INSTANCES)]}
        rows.append([attrs])
    return rows


def find_response(row: Row, query: FindQuery, ae_title: str) -> Dataset:
    """The identifier of one Pending C-FIND response."""
    out: JsonDataset = {}
    for key in query.keys:
        out[key.tag] = _lookup(row, key.tag, key.vr, ae_title)
    unique = UNIQUE_KEYS[query.level]
    if unique not in out:
        out[unique] = _lookup(row, unique, vr_of(unique), ae_title)
    out[QR_LEVEL] = {"vr": "CS", "Value": [query.level]}
    dataset = Dataset.from_json(out)
    if not json.dumps(out, ensure_ascii=False).isascii():
        dataset.SpecificCharacterSet = "ISO_IR 192"
    return dataset


def _lookup(row: Row, tag: str, vr: str, ae_title: str) -> dict[str, Any]:
    """The DICOM JSON attribute for a return key: from the most specific layer
    that holds it, else empty."""
    if tag == RETRIEVE_AE_TITLE:
        return {"vr": "AE", "Value": [ae_title]}
    source = TRANSFER_SYNTAX_UID if tag == AVAILABLE_SYNTAXES else tag
    for layer in row:
        element = layer.get(source)
        if element is not None:
            return {**element, "vr": "UI"} if source != tag else dict(element)
    if vr == "UN" or " or " in vr:
        vr = vr_of(tag)
    return {"vr": vr}


def retrieve_instances(index: DicomIndex, query: RetrieveQuery) -> list[InstanceRecord]:
    """The instances a C-GET or C-MOVE asks for, in the index's order."""
    studies: Sequence[str] | None = query.uids.get(STUDY)
    patients = query.uids.get(PATIENT)
    if patients is not None and studies is None:
        wanted = set(patients)
        studies = [
            study.uid
            for study in index.studies()
            if str(first_value(study.attrs, PATIENT_ID) or "") in wanted
        ]
    return index.instances(studies, query.uids.get(SERIES), query.uids.get(IMAGE))


def storage_contexts(instances: Iterable[InstanceRecord]) -> list[PresentationContext]:
    """Contexts to propose to a move destination: for each SOP class, one per
    stored transfer syntax (so that the destination can take the files as
    they are), then one with the uncompressed syntaxes to fall back on; at
    most 128 in all."""
    exact: dict[tuple[str, str], None] = {}
    for record in instances:
        sop_class = str(first_value(record.attrs, SOP_CLASS_UID) or "")
        if sop_class:
            exact[(sop_class, record.transfer_syntax or ImplicitVRLittleEndian)] = None
    fallback: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    wanted = [build_context(sop, [syntax]) for sop, syntax in exact]
    wanted += [
        build_context(sop, fallback) for sop in dict.fromkeys(s for s, _ in exact)
    ]
    if len(wanted) > MAX_CONTEXTS:
        logger.warning(
            "C-MOVE needs %d presentation contexts; proposing the first %d",
            len(wanted),
            MAX_CONTEXTS,
        )
    return wanted[:MAX_CONTEXTS]


def accepted_syntaxes(assoc: Association | None) -> dict[str, set[str]]:
    """SOP class -> transfer syntaxes accepted on an association."""
    accepted: dict[str, set[str]] = {}
    if assoc is None:
        return accepted
    for context in assoc.accepted_contexts:
        accepted.setdefault(str(context.abstract_syntax), set()).update(
            str(ts) for ts in context.transfer_syntax
        )
    return accepted


def load_for_sending(
    record: InstanceRecord, accepted: Mapping[str, set[str]]
) -> Dataset:
    """The dataset of an instance, ready for a C-STORE sub-operation.

    Compressed files are decompressed only when the peer accepted no context
    with the stored syntax but an uncompressed one. A file that cannot be read
    gives a dataset without SOP Class UID: its sub-operation fails, and its SOP
    Instance UID goes into the Failed SOP Instance UID List.
    """
    try:
        dataset = dcmread(record.path)
        stored = str(dataset.file_meta.TransferSyntaxUID)
    except Exception as error:  # damaged, removed or replaced meanwhile
        logger.warning("Cannot send %s from %s: %s", record.uid, record.path, error)
        unsendable = Dataset()
        unsendable.SOPInstanceUID = record.uid
        return unsendable
    syntaxes = accepted.get(str(dataset.get("SOPClassUID", "")), set())
    if (
        syntaxes
        and stored not in syntaxes
        and stored not in NATIVE_SYNTAXES
        and syntaxes & set(NATIVE_SYNTAXES)
    ):
        try:
            dataset.decompress(generate_instance_uid=False)
            logger.info("Sending %s decompressed (peer refused %s)", record.uid, stored)
        except Exception as error:
            logger.warning("Cannot decompress %s (%s): %s", record.uid, stored, error)
    return dataset


# -- the service -----------------------------------------------------------------

_Yield = Any  # what pynetdicom's query/retrieve handlers yield (see its docs)


def _no_delay(event: Event) -> None:
    """Turn Nagle's algorithm off on a new connection: a DIMSE message is
    several small writes (PDUs), and waiting for each ACK costs ~40 ms."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _check_ae_title(title: str, what: str) -> str:
    text = title.strip()
    if not text or len(text) > 16 or not text.isascii() or "\\" in text:
        raise ValueError(f"{what} must be 1 to 16 ASCII characters, not {title!r}")
    return text


class DimseService(Service):
    """The emulator as a DICOM query/retrieve SCP (see the module docstring).

    Parameters
    ----------
    port:
        The port to listen on; 0 picks a free one (see :attr:`port` once started).
    ae_title:
        The emulator's AE title (at most 16 characters).
    move_destinations:
        AE title -> (host, port) of the C-MOVE destinations the emulator knows.
    require_called_ae:
        Reject associations whose called AE title is not ``ae_title``
        (reason 7, "called AE title not recognised").
    allowed_calling_aes:
        When given, reject associations from other AE titles (reason 3,
        "calling AE title not recognised").
    host:
        The address to bind; default the emulator's host (loopback).
    max_associations:
        Associations served at once (each in a thread); more are rejected
        (transient, "local limit exceeded").
    tls:
        Serve DICOM over TLS (PS3.15 B) with ``tls.cert_file`` and
        ``tls.key_file``; with ``tls.verify`` an SCU must present a certificate
        the CAs vouch for. C-MOVE sub-operations then go over TLS too, verifying
        the destination's certificate and host name as ``tls`` says.

    ``move_destinations`` may be changed while the service runs.
    ``cancelled_finds`` lists (calling AE title, message ID) of every C-FIND
    stopped by a C-CANCEL, for tests.
    """

    name = "dimse"

    def __init__(
        self,
        port: int = 0,
        ae_title: str = DEFAULT_AE_TITLE,
        *,
        move_destinations: Mapping[str, tuple[str, int]] | None = None,
        require_called_ae: bool = False,
        allowed_calling_aes: Iterable[str] | None = None,
        host: str | None = None,
        max_associations: int = 16,
        tls: DIMSETLS | None = None,
    ) -> None:
        self.requested_port = port
        self.tls = tls
        self.ae_title = _check_ae_title(ae_title, "AE title")
        self.move_destinations = {
            _check_ae_title(title, "move destination"): (address[0], int(address[1]))
            for title, address in (move_destinations or {}).items()
        }
        self.require_called_ae = require_called_ae
        self.allowed_calling_aes = (
            None
            if allowed_calling_aes is None
            else {_check_ae_title(t, "calling AE title") for t in allowed_calling_aes}
        )
        self.host = host
        self.max_associations = max_associations
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self.cancelled_finds: list[tuple[str, int]] = []

    # -- lifecycle --------------------------------------------------------------

    def start(self, emulator: Emulator) -> None:
        super().start(emulator)
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = self.require_called_ae
        if self.allowed_calling_aes is not None:
            ae.require_calling_aet = sorted(self.allowed_calling_aes)
        ae.maximum_associations = self.max_associations
        ae.connection_timeout = 10
        ae.add_supported_context(VERIFICATION)
        for uid in MODELS:
            ae.add_supported_context(uid)
        storage = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
        storage |= self._indexed_sop_classes()
        for uid in sorted(storage):
            # Any role the SCU proposes: C-GET needs it to be the storage SCP.
            ae.add_supported_context(
                uid, STORAGE_SYNTAXES, scu_role=True, scp_role=True
            )
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, _no_delay),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_SOP_EXTENDED, self._on_extended),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        host = self.host or self.emulator.host
        self._server = ae.start_server(
            (host, self.requested_port),
            block=False,
            evt_handlers=handlers,
            ssl_context=None if self.tls is None else self.tls.server_context(),
        )
        self._ae = ae
        logger.info(
            "DIMSE serving AE %s at %s:%d%s",
            self.ae_title,
            host,
            self.port,
            "" if self.tls is None else " over TLS",
        )

    def stop(self) -> None:
        ae, self._ae, self._server = self._ae, None, None
        if ae is not None:
            ae.shutdown()
            logger.info("DIMSE stopped")
        super().stop()

    def _indexed_sop_classes(self) -> set[str]:
        """SOP classes of the indexed studies (private ones too)."""
        classes: set[str] = set()
        for study in self.emulator.index.studies():
            element = study.attrs.get(tag_of("SOPClassesInStudy") or "")
            if isinstance(element, Mapping):
                classes.update(str(v) for v in element.get("Value") or ())
        return classes

    @property
    def port(self) -> int:
        """The port listened on (the one picked when 0 was asked for)."""
        if self._server is None:
            return self.requested_port
        return int(self._server.server_address[1])

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) listened on; only known once started."""
        if self._server is None:
            raise RuntimeError("the DIMSE service is not running")
        return str(self._server.server_address[0]), self.port

    def __repr__(self) -> str:
        return f"<DimseService {self.ae_title} port {self.port}>"

    # -- handlers (run in pynetdicom's association threads) -------------------

    @staticmethod
    def _peer(event: Event) -> str:
        requestor = event.assoc.requestor
        return f"{requestor.ae_title}@{requestor.address}"

    def _on_echo(self, event: Event) -> int:
        logger.debug("C-ECHO from %s", self._peer(event))
        return SUCCESS

    def _on_store(self, event: Event) -> int:
        logger.warning(
            "Refused C-STORE from %s: the emulator serves its data folder "
            "read-only (put files there instead)",
            self._peer(event),
        )
        return NOT_AUTHORISED

    def _on_rejected(self, event: Event) -> None:
        logger.warning("Rejected an association from %s", self._peer(event))

    def _on_extended(self, event: Event) -> dict[UID, bytes]:
        """SOP Class Extended Negotiation (PS3.4 C.5.1 to C.5.3): byte 0,
        relational queries or retrievals, is granted; the other options not."""
        reply: dict[UID, bytes] = {}
        requested: Mapping[str, bytes] = getattr(event, "app_info", None) or {}
        for uid, info in requested.items():
            if str(uid) in MODELS and info:
                reply[UID(uid)] = bytes([info[0] & 1]) + bytes(len(info) - 1)
        return reply

    def _model(self, event: Event) -> Model:
        return MODELS[str(event.context.abstract_syntax)]

    def _identifier(self, event: Event) -> Dataset:
        try:
            identifier = event.identifier
            for element in identifier:  # pydicom decodes lazily: decode now
                _ = element.value
        except Exception as error:
            raise IdentifierError(
                UNABLE_TO_PROCESS, f"cannot decode the identifier: {error}"
            ) from error
        return identifier

    def _on_find(self, event: Event) -> Iterator[_Yield]:
        model = self._model(event)
        try:
            query = parse_find(self._identifier(event), model)
            self.emulator.index.refresh()
            rows = find_rows(self.emulator.index, query)
        except IdentifierError as error:
            logger.info("C-FIND from %s refused: %s", self._peer(event), error)
            yield error.status_dataset(), None
            return
        logger.info(
            "C-FIND %s %s from %s: %d matches",
            model.name,
            query.level,
            self._peer(event),
            len(rows),
        )
        for row in rows:
            if event.is_cancelled:
                logger.info("C-FIND from %s cancelled", self._peer(event))
                request = getattr(event, "request", None)
                self.cancelled_finds.append(
                    (
                        str(event.assoc.requestor.ae_title).strip(),
                        int(getattr(request, "MessageID", 0) or 0),
                    )
                )
                yield CANCEL, None
                return
            yield PENDING, find_response(row, query, self.ae_title)

    def _instances(self, event: Event) -> tuple[Model, list[InstanceRecord]]:
        model = self._model(event)
        query = parse_retrieve(self._identifier(event), model)
        self.emulator.index.refresh()
        return model, retrieve_instances(self.emulator.index, query)

    def _send(
        self,
        event: Event,
        instances: list[InstanceRecord],
        accepted: Callable[[], Mapping[str, set[str]]],
    ) -> Iterator[_Yield]:
        for record in instances:
            if event.is_cancelled:
                logger.info("Retrieve from %s cancelled", self._peer(event))
                yield CANCEL, None
                return
            yield PENDING, load_for_sending(record, accepted())

    def _on_get(self, event: Event) -> Iterator[_Yield]:
        try:
            model, instances = self._instances(event)
        except IdentifierError as error:
            logger.info("C-GET from %s refused: %s", self._peer(event), error)
            # pynetdicom wants a sub-operation count before any status.
            yield 1
            yield error.status_dataset(), None
            return
        logger.info(
            "C-GET %s from %s: %d instances",
            model.name,
            self._peer(event),
            len(instances),
        )
        yield len(instances)
        accepted = accepted_syntaxes(event.assoc)
        yield from self._send(event, instances, lambda: accepted)

    def _on_move(self, event: Event) -> Iterator[_Yield]:
        title = str(event.move_destination or "").strip()
        destination = self.move_destinations.get(title)
        if destination is None:
            logger.warning(
                "C-MOVE from %s to unknown destination %r (known: %s)",
                self._peer(event),
                title,
                ", ".join(sorted(self.move_destinations)) or "none",
            )
            yield None, None
            return
        host, port = destination
        try:
            model, instances = self._instances(event)
        except IdentifierError as error:
            logger.info("C-MOVE from %s refused: %s", self._peer(event), error)
            # pynetdicom wants the destination (it associates with it, here
            # for Verification only) and a count before any status.
            yield host, port, {"contexts": [build_context(VERIFICATION)]}
            yield 1
            yield error.status_dataset(), None
            return
        logger.info(
            "C-MOVE %s from %s to %s at %s:%d: %d instances",
            model.name,
            self._peer(event),
            title,
            host,
            port,
            len(instances),
        )
        established: list[Association] = []

        def remember(store_event: Event) -> None:
            established.append(store_event.assoc)

        options = {
            "contexts": storage_contexts(instances) or [build_context(VERIFICATION)],
            "evt_handlers": [
                (evt.EVT_CONN_OPEN, _no_delay),
                (evt.EVT_ESTABLISHED, remember),
            ],
        }
        if self.tls is not None:
            context = self.tls.client_context()
            options["tls_args"] = (context, host if context.check_hostname else None)
        yield host, port, options
        yield len(instances)
        accepted: dict[str, set[str]] = {}

        def syntaxes() -> Mapping[str, set[str]]:
            if not accepted and established:
                accepted.update(accepted_syntaxes(established[0]))
            return accepted

        yield from self._send(event, instances, syntaxes)
