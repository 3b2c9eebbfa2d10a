"""DICOM query/retrieve without a network: queries, contexts, errors, bookkeeping.

The parts of dicomtrolley.dicom_qr and dicomtrolley.dimse that decide what to
send and what an answer means are tested here on plain objects; the exchanges
with a real PACS are in tests/orthanc/test_dimse.py.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import threading
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    RLELossless,
)

from dicomtrolley.core import (
    Instance,
    InstanceReference,
    Query,
    QueryLevels,
    Series,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.dicom_qr import (
    DICOMQR,
    DICOMQRGet,
    DICOMQRMove,
    DICOMQuery,
    QueryRetrieveLevels,
)
from dicomtrolley.dimse import contexts, errors, find
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
    SubOperationError,
    describe_status,
    status_error,
)
from dicomtrolley.dimse.find import FindRequest, hierarchical_find
from dicomtrolley.dimse.link import rejection_error
from dicomtrolley.dimse.move import destination_hint
from dicomtrolley.dimse.retrieve import (
    MAX_UIDS_PER_REQUEST,
    Receiver,
    RetrieveUnit,
    Tally,
    adopt_file,
    check_outcome,
    disk_sink,
    plan_units,
)
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.download import DownloadReport, NullProgress
from dicomtrolley.exceptions import (
    DICOMTrolleyConnectionError,
    DICOMTrolleyTimeoutError,
    PermanentError,
    StorageError,
    TransientError,
    UnSupportedParameterError,
)
from dicomtrolley.formats.association import AssociateRJ
from dicomtrolley.storage import StorageDir
from dicomtrolley.transport import Timeout
from tests.fakes import dicom_file, tree

PEER = Peer("pacs.example", 104, "ME", "PACS")
STUDY = "1.2.826.0.1.3680043.8.498.500"
SERIES = f"{STUDY}.1"


# -- DICOMQuery and QueryRetrieveLevels ----------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (QueryLevels.STUDY, "STUDY"),
        (QueryLevels.SERIES, "SERIES"),
        (QueryLevels.INSTANCE, "IMAGE"),
        ("INSTANCE", "IMAGE"),
        ("IMAGE", "IMAGE"),
        ("series", "SERIES"),
    ],
)
def test_query_retrieve_level_translation(level: Any, expected: str) -> None:
    assert QueryRetrieveLevels.translate(level) == expected


def test_query_retrieve_levels_4_1_0_names() -> None:
    assert {"STUDY", "SERIES", "IMAGE"} == QueryRetrieveLevels.ALL
    with pytest.raises(ValueError, match="unknown query level"):
        QueryRetrieveLevels.translate("PATIENTS")


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (datetime(2020, 1, 2), datetime(2021, 3, 4), "20200102-20210304"),
        (datetime(2020, 1, 2), None, "20200102-"),
        (None, datetime(2021, 3, 4), "-20210304"),
        (None, None, None),
        (datetime(2020, 1, 2), datetime(2020, 1, 2), "20200102-20200102"),
    ],
)
def test_study_date_ranges_may_be_one_sided(
    low: datetime | None, high: datetime | None, expected: str | None
) -> None:
    query = DICOMQuery(min_study_date=low, max_study_date=high)
    assert query.as_parameters()["StudyDate"] == expected
    dataset = query.as_dataset()
    if expected is None:
        assert "StudyDate" not in dataset
    else:
        assert dataset.StudyDate == expected


def test_as_parameters_per_4_1_0() -> None:
    query = DICOMQuery(
        PatientID="P1",
        Modality="CT",
        ProtocolName="Head*",
        StudyID="42",
        PatientBirthDate=date(1970, 1, 2),
        query_level="INSTANCE",
        include_fields=["PatientName", "StudyInstanceUID"],
    )
    parameters = query.as_parameters()
    assert parameters["QueryRetrieveLevel"] == "IMAGE"
    assert "query_level" not in parameters
    assert "min_study_date" not in parameters
    assert parameters["PatientBirthDate"] == "19700102"
    assert parameters["include_fields"] == [
        "PatientName",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    ]
    assert parameters["Modality"] == "CT"
    assert parameters["ProtocolName"] == "Head*"
    assert parameters["StudyID"] == "42"


def test_as_dataset_has_return_keys_and_values() -> None:
    query = DICOMQuery(
        PatientName="Doe*", query_level="SERIES", include_fields=["StudyDescription"]
    )
    dataset = query.as_dataset()
    assert dataset.QueryRetrieveLevel == "SERIES"
    assert dataset.PatientName == "Doe*"
    for keyword in ("StudyDescription", "StudyInstanceUID", "SeriesInstanceUID"):
        assert dataset[keyword].value in ("", None), keyword
    assert "SOPInstanceUID" not in dataset
    assert "SpecificCharacterSet" not in dataset


def test_non_ascii_values_set_utf8() -> None:
    dataset = DICOMQuery(PatientName="Müller*").as_dataset()
    assert dataset.SpecificCharacterSet == "ISO_IR 192"
    assert str(dataset.PatientName) == "Müller*"


def test_default_include_fields() -> None:
    assert DICOMQuery.get_default_include_fields("STUDY") == ["StudyInstanceUID"]
    assert DICOMQuery.get_default_include_fields(QueryLevels.INSTANCE) == [
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    ]


def test_plain_query_converts_and_unknown_parameters_are_refused() -> None:
    query = DICOMQuery.init_from_query(
        Query(PatientID="P1", ModalitiesInStudy="CT", query_level="SERIES")
    )
    assert isinstance(query, DICOMQuery)
    assert query.matching_keys() == {"PatientID": "P1", "ModalitiesInStudy": "CT"}
    with pytest.raises(UnSupportedParameterError):  # Query has no Modality
        Query.init_from_query(DICOMQuery(Modality="CT"))
    with pytest.raises(ValueError):
        DICOMQuery(Unknown="x")  # type: ignore[call-arg]


# -- splitting a query by level -----------------------------------------------------


def test_find_request_splits_keys_by_level() -> None:
    request = FindRequest(
        keys={
            "PatientID": "P1",
            "StudyDate": "20200101-",
            "Modality": "MR",
            "SeriesDescription": "T1*",
        },
        return_keys=["StudyInstanceUID", "SeriesInstanceUID", "InstanceNumber"],
    )
    study = request.identifier("STUDY", {})
    assert study.QueryRetrieveLevel == "STUDY"
    assert study.PatientID == "P1" and study.StudyDate == "20200101-"
    assert "Modality" not in study and "SeriesInstanceUID" not in study
    series = request.identifier("SERIES", {"StudyInstanceUID": STUDY})
    assert series.StudyInstanceUID == STUDY
    assert series.Modality == "MR" and series.SeriesDescription == "T1*"
    assert "PatientID" not in series
    image = request.identifier(
        "IMAGE", {"StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES}
    )
    assert image.SeriesInstanceUID == SERIES and "InstanceNumber" in image
    assert image.SOPInstanceUID in ("", None)
    assert request.has_criteria("SERIES") and not request.has_criteria("IMAGE")
    relational = request.relational_identifier("SERIES")
    assert relational.PatientID == "P1" and relational.Modality == "MR"
    assert "InstanceNumber" not in relational


def test_patient_root_puts_patient_keys_on_the_patient_level() -> None:
    request = FindRequest(keys={"PatientName": "Doe*"}, patient_root=True)
    patient = request.identifier("PATIENT", {})
    assert patient.QueryRetrieveLevel == "PATIENT"
    assert patient.PatientName == "Doe*" and patient.PatientID in ("", None)
    study = request.identifier("STUDY", {"PatientID": "P1"})
    assert study.PatientID == "P1" and "PatientName" not in study


def _ds(**values: str) -> Dataset:
    dataset = Dataset()
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    return dataset


class FakeArchive:
    """Answers C-FIND identifiers from a list of instances, level by level."""

    def __init__(self) -> None:
        self.rows = [
            dict(PatientID="P1", StudyInstanceUID="1", SeriesInstanceUID="1.1",
                 SOPInstanceUID="1.1.1", Modality="CT"),
            dict(PatientID="P1", StudyInstanceUID="1", SeriesInstanceUID="1.2",
                 SOPInstanceUID="1.2.1", Modality="MR"),
            dict(PatientID="P2", StudyInstanceUID="2", SeriesInstanceUID="2.1",
                 SOPInstanceUID="2.1.1", Modality="CT"),
        ]  # fmt: skip
        self.asked: list[Dataset] = []

    def __call__(self, identifier: Dataset) -> list[Dataset]:
        self.asked.append(identifier)
        level = identifier.QueryRetrieveLevel
        keys = {
            "PATIENT": ["PatientID"],
            "STUDY": ["PatientID", "StudyInstanceUID"],
            "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality"],
            "IMAGE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        }[level]
        found: dict[tuple[str, ...], Dataset] = {}
        for row in self.rows:
            if all(
                not identifier.get(k)
                or fnmatch.fnmatchcase(row[k], str(identifier.get(k)))
                for k in row
                if k in identifier
            ):
                found.setdefault(
                    tuple(row[k] for k in keys), _ds(**{k: row[k] for k in keys})
                )
        return list(found.values())


def test_hierarchical_find_goes_level_by_level() -> None:
    archive = FakeArchive()
    request = FindRequest(keys={"PatientID": "P1", "Modality": "MR"})
    datasets = hierarchical_find(archive, request, "SERIES")
    assert [d.QueryRetrieveLevel for d in archive.asked] == ["STUDY", "SERIES"]
    assert archive.asked[1].StudyInstanceUID == "1"
    assert [d.get("SeriesInstanceUID") for d in datasets] == [None, "1.2"]


def test_hierarchical_find_drops_studies_without_a_match_below() -> None:
    archive = FakeArchive()
    request = FindRequest(keys={"Modality": "MR"})
    datasets = hierarchical_find(archive, request, "STUDY")
    assert [d.StudyInstanceUID for d in datasets] == ["1"]  # study 2 holds only CT
    assert all("SeriesInstanceUID" not in d for d in datasets)


def test_hierarchical_find_at_image_level() -> None:
    archive = FakeArchive()
    datasets = hierarchical_find(archive, FindRequest(keys={}), "IMAGE")
    levels = [d.QueryRetrieveLevel for d in archive.asked]
    assert levels.count("STUDY") == 1 and levels.count("SERIES") == 2
    assert levels.count("IMAGE") == 3
    assert sorted(
        str(d.get("SOPInstanceUID")) for d in datasets if "SOPInstanceUID" in d
    ) == [
        "1.1.1",
        "1.2.1",
        "2.1.1",
    ]


def test_hierarchical_find_patient_root_asks_for_patients_first() -> None:
    archive = FakeArchive()
    request = FindRequest(keys={"PatientID": "P*"}, patient_root=True)
    hierarchical_find(archive, request, "STUDY")
    assert [d.QueryRetrieveLevel for d in archive.asked] == [
        "PATIENT",
        "STUDY",
        "STUDY",
    ]
    assert [d.PatientID for d in archive.asked[1:]] == ["P1", "P2"]


# -- presentation contexts and roles ------------------------------------------------


def test_default_storage_contexts_fit_in_one_association() -> None:
    storage = contexts.storage_contexts()
    assert len(storage) == contexts.MAX_CONTEXTS - 1
    classes = {str(cx.abstract_syntax) for cx in storage}
    assert classes == {str(uid) for uid in contexts.COMMON_STORAGE_CLASSES}
    ct = [
        cx.transfer_syntaxes for cx in storage if cx.abstract_syntax == CTImageStorage
    ]
    assert ct[0] == (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    assert len(ct) > 1  # and compressed ones, as far as room allows


def test_known_classes_get_every_syntax() -> None:
    storage = contexts.storage_contexts([CTImageStorage])
    syntaxes = [cx.transfer_syntaxes for cx in storage]
    assert syntaxes[0] == contexts.UNCOMPRESSED
    assert [s[0] for s in syntaxes[1:]] == list(contexts.COMPRESSED)
    assert (RLELossless,) in syntaxes and (JPEGLosslessSV1,) in syntaxes


def test_classes_without_pixels_get_only_uncompressed() -> None:
    sr = "1.2.840.10008.5.1.4.1.1.88.33"
    storage = contexts.storage_contexts([sr, CTImageStorage])
    assert [cx.transfer_syntaxes for cx in storage if cx.abstract_syntax == sr] == [
        contexts.UNCOMPRESSED
    ]
    assert contexts.has_pixel_data("1.2.840.10008.5.1.4.1.1.66.4")  # segmentation


def test_too_many_classes_are_cut_to_the_budget() -> None:
    classes = [f"1.2.3.{n}" for n in range(200)]
    storage = contexts.storage_contexts(classes, budget=127)
    assert len(storage) == 127
    assert all(cx.transfer_syntaxes == contexts.UNCOMPRESSED for cx in storage)
    assert len(contexts.storage_contexts(classes[:50], budget=127)) == 127


def test_get_contexts_and_roles() -> None:
    from dicomtrolley.dimse.get import get_contexts

    proposed = get_contexts("study", [CTImageStorage, CTImageStorage])
    assert proposed[0].abstract_syntax == contexts.qr_model("study", "get")
    assert len(proposed) <= contexts.MAX_CONTEXTS
    roles = contexts.scp_roles(proposed[1:])
    assert [r.sop_class_uid for r in roles] == [CTImageStorage]
    assert roles[0].scp is True and not roles[0].scu


def test_qr_models() -> None:
    assert contexts.qr_model("patient", "find") == "1.2.840.10008.5.1.4.1.2.1.1"
    assert contexts.qr_model("study", "move") == "1.2.840.10008.5.1.4.1.2.2.2"
    with pytest.raises(ValueError, match="unknown query/retrieve model"):
        contexts.qr_model("worklist", "find")
    with pytest.raises(ValueError, match="model must be one of"):
        DICOMQR("pacs", 104, model="worklist")


def _study(
    sop_classes: str | None = None, instance_classes: list[str] | None = None
) -> Study:
    data = Dataset()
    if sop_classes:
        data.SOPClassesInStudy = sop_classes
    study = Study(uid=STUDY, data=data, series=[])
    series = Series(uid=SERIES, data=Dataset(), parent=study, instances=[])
    instances = []
    for n, uid in enumerate(instance_classes or []):
        instance_data = Dataset()
        instance_data.SOPClassUID = uid
        instances.append(
            Instance(uid=f"{SERIES}.{n}", data=instance_data, parent=series)
        )
    series.instances = instances
    study.series = [series] if instance_classes is not None else []
    return study


def test_sop_classes_from_the_search() -> None:
    mr = "1.2.840.10008.5.1.4.1.1.4"
    assert contexts.sop_classes_of([_study(f"{CTImageStorage}\\{mr}")]) == [
        CTImageStorage,
        mr,
    ]
    assert contexts.sop_classes_of([_study(instance_classes=[mr, mr])]) == [mr]
    assert contexts.sop_classes_of([_study(), _study(mr)]) == []  # one unknown
    assert contexts.sop_classes_of([StudyReference(STUDY)]) == []


# -- statuses and errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "operation", "meaning"),
    [
        (0xA700, "C-FIND", "Out of resources"),
        (0xA801, "C-MOVE", "Move destination unknown"),
        (0xA900, "C-GET", "Identifier does not match SOP class"),
        (0xC000, "C-FIND", "Unable to"),
        (0xC123, "C-GET", "Unable to process"),
        (0xA7FF, "C-GET", "Out of resources"),
        (0xFE00, "C-FIND", "Cancel"),
        (0x1234, "", "unknown status"),
    ],
)
def test_status_meanings(code: int, operation: str, meaning: str) -> None:
    text = describe_status(code, operation)
    assert text.startswith(f"0x{code:04X} (")
    assert meaning.lower() in text.lower()


def test_status_errors_name_peer_and_status() -> None:
    error = status_error(0xC000, peer=PEER, operation="C-FIND", comment="bad key")
    assert type(error) is DIMSEStatusError
    assert isinstance(error, PermanentError)
    assert error.status == 0xC000 and error.peer == PEER
    text = str(error)
    for part in ("C-FIND", "PACS", "pacs.example:104", "ME", "0xC000", "bad key"):
        assert part in text
    assert (error.host, error.port, error.calling_aet, error.called_aet) == (
        "pacs.example",
        104,
        "ME",
        "PACS",
    )
    busy = status_error(0xA702, peer=PEER, operation="C-MOVE")
    assert isinstance(busy, DIMSEOutOfResourcesError)
    assert isinstance(busy, TransientError)
    move = status_error(0xA801, peer=PEER, operation="C-MOVE", hint="register X")
    assert isinstance(move, MoveDestinationUnknownError)
    assert "register X" in str(move)


def test_destination_hints() -> None:
    definite = destination_hint(0xA801, "STORE", "10.0.0.5", 11112)
    assert (
        "does not know" in definite and "AE title STORE at 10.0.0.5:11112" in definite
    )
    maybe = destination_hint(0xC000, "STORE", "10.0.0.5", 11112)
    assert maybe.startswith("If the PACS does not know the move destination STORE")


def _dimse_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in ("dicomtrolley.dicom_qr", "dicomtrolley.dimse.errors"):
        for _, obj in inspect.getmembers(
            importlib.import_module(name), inspect.isclass
        ):
            if issubclass(obj, BaseException) and obj.__module__.startswith(
                "dicomtrolley.dimse"
            ):
                found[obj.__qualname__] = obj
    return [found[key] for key in sorted(found)]


@pytest.mark.parametrize(
    "cls", _dimse_exception_classes(), ids=lambda c: c.__qualname__
)
def test_dimse_errors_sit_in_one_branch(cls: type[BaseException]) -> None:
    assert issubclass(cls, DIMSEError)
    if cls is DIMSEError:  # like HTTPStatusError: in no branch, catch it for all
        assert not issubclass(cls, TransientError | PermanentError)
        return
    assert issubclass(cls, TransientError) != issubclass(cls, PermanentError)
    assert cls.__name__ in (errors.__doc__ or ""), "missing from the tree"


def test_timeouts_are_connection_errors() -> None:
    assert issubclass(DIMSETimeoutError, DICOMTrolleyTimeoutError)
    assert issubclass(AssociationAbortedError, DICOMTrolleyConnectionError)
    assert issubclass(DIMSEConnectionError, DICOMTrolleyConnectionError)


def test_rejections_are_explained() -> None:
    # rejected-permanent by the service user: called AE title not recognized
    error = rejection_error(AssociateRJ(1, 1, 7), PEER, "C-FIND")
    assert isinstance(error, AssociationRejectedError)
    text = str(error)
    assert "rejected permanently" in text
    assert "called AE title not recognized" in text
    assert "'ME'" in text and "'PACS'" in text and "pacs.example:104" in text
    # rejected-transient by the service provider (presentation): congestion
    busy = rejection_error(AssociateRJ(2, 3, 1), PEER, "C-FIND")
    assert isinstance(busy, AssociationBusyError)
    assert "temporary congestion" in str(busy)


def test_timeouts_value_object() -> None:
    assert DIMSETimeouts.coerce(None) == DIMSETimeouts()
    assert DIMSETimeouts.coerce(5).idle == 5
    assert DIMSETimeouts.coerce(Timeout(connect=3, read=30)) == DIMSETimeouts(3, 30)
    with pytest.raises(ValueError):
        DIMSETimeouts(idle=0)
    with pytest.raises(ValueError):
        DIMSETimeouts(total=-1)
    with pytest.raises(TypeError):
        DIMSETimeouts.coerce("soon")


def test_peer_validates_ae_titles() -> None:
    assert str(PEER) == "PACS at pacs.example:104 (calling AE ME)"
    with pytest.raises(ValueError, match="1 to 16"):
        Peer("h", 104, aet="A" * 17)
    with pytest.raises(ValueError, match="printable ASCII"):
        Peer("h", 104, aec="BACK\\SLASH")
    with pytest.raises(ValueError, match="port"):
        Peer("h", 0)
    with pytest.raises(ValueError, match="move destination"):
        DICOMQRMove("h", 104, store_aet="X" * 20)


# -- planning requests ---------------------------------------------------------------


def _tree(series_instances: dict[str, list[str]]) -> Study:
    study = Study(uid=STUDY, data=Dataset(), series=[])
    series_list = []
    for series_uid, instance_uids in series_instances.items():
        series = Series(uid=series_uid, data=Dataset(), parent=study, instances=[])
        series.instances = [
            Instance(uid=uid, data=Dataset(), parent=series) for uid in instance_uids
        ]
        series_list.append(series)
    study.series = series_list
    return study


def test_plan_units_per_level() -> None:
    units = plan_units(
        [
            StudyReference(STUDY),
            SeriesReference(STUDY, SERIES),
            InstanceReference(STUDY, SERIES, f"{SERIES}.1"),
            InstanceReference(STUDY, SERIES, f"{SERIES}.2"),
        ]
    )
    assert [(u.level, u.series_uid, u.instance_uids) for u in units] == [
        ("STUDY", "", ()),
        ("SERIES", SERIES, ()),
        ("IMAGE", SERIES, (f"{SERIES}.1", f"{SERIES}.2")),
    ]
    identifier = units[2].identifier()
    assert identifier.QueryRetrieveLevel == "IMAGE"
    assert list(identifier.SOPInstanceUID) == [f"{SERIES}.1", f"{SERIES}.2"]
    assert units[0].identifier(patient_root=True).PatientID in ("", None)


def test_plan_units_uses_what_the_search_found() -> None:
    study = _tree({f"{STUDY}.1": ["a.1", "a.2"], f"{STUDY}.2": []})
    units = plan_units([study])
    assert [(u.level, u.series_uid) for u in units] == [
        ("SERIES", f"{STUDY}.1"),
        ("SERIES", f"{STUDY}.2"),
    ]
    assert [r.instance_uid for r in units[0].expected or ()] == ["a.1", "a.2"]
    assert units[1].expected is None


def test_plan_units_asks_only_for_missing_instances() -> None:
    study = _tree({f"{STUDY}.1": ["a.1", "a.2", "a.3"], f"{STUDY}.2": ["b.1"]})
    units = plan_units([study], present=lambda ref: ref.instance_uid in ("a.2", "b.1"))
    assert [(u.level, u.instance_uids) for u in units] == [
        ("IMAGE", ("a.1", "a.3")),
    ]


def test_plan_units_chunks_long_uid_lists() -> None:
    refs = [InstanceReference(STUDY, SERIES, f"{SERIES}.{n}") for n in range(450)]
    units = plan_units(refs)
    assert [len(u.instance_uids) for u in units] == [
        MAX_UIDS_PER_REQUEST,
        MAX_UIDS_PER_REQUEST,
        50,
    ]


# -- receiving and checking what arrived -----------------------------------------------


def _received(tmp_path: Path, sop_uid: str, *, series: str = SERIES) -> Path:
    path = tmp_path / f"pynetdicom-{sop_uid}.dcm"
    path.write_bytes(dicom_file(STUDY, series, sop_uid))
    return path


def test_receiver_moves_the_received_file_into_storage(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = DownloadReport()
    receiver = Receiver(
        disk_sink(StorageDir(out), out, report, NullProgress()), report, NullProgress()
    )
    tally = Tally(RetrieveUnit("SERIES", STUDY, SERIES))
    received = _received(tmp_path, f"{SERIES}.7")
    assert receiver.store(f"{SERIES}.7", tally, lambda: received) == 0x0000
    assert not received.exists()  # moved, not copied
    saved = (
        out
        / STUDY.replace(".", "_")
        / SERIES.replace(".", "_")
        / f"{SERIES}.7".replace(".", "_")
    )
    assert report.saved == [saved]
    assert pydicom.dcmread(saved).SOPInstanceUID == f"{SERIES}.7"
    assert tally.received == {f"{SERIES}.7"}
    assert not list(out.rglob(".dicomtrolley-*"))


def test_receiver_refuses_what_it_cannot_save(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = DownloadReport()
    receiver = Receiver(
        disk_sink(StorageDir(out), out, report, NullProgress()), report, NullProgress()
    )
    tally = Tally(RetrieveUnit("STUDY", STUDY))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not dicom at all")
    assert receiver.store("1.2.3.4", tally, lambda: broken) == 0xC000
    wrong = _received(tmp_path, "1.2.3.5")
    assert receiver.store("1.2.3.6", tally, lambda: wrong) == 0xC000  # UID mismatch
    assert tally.failed == {"1.2.3.4", "1.2.3.6"} and not tally.received
    assert {"1.2.3.4", "1.2.3.6"} <= set(report.failed_uids)
    assert "" not in report.failed_uids
    assert not broken.exists() and not wrong.exists()
    assert not [p for p in tree(out) if p.is_file()]


def test_receiver_finds_the_c_move_an_instance_belongs_to() -> None:
    receiver = Receiver(lambda *a: 0, DownloadReport(), NullProgress())
    first, second = Tally(RetrieveUnit("STUDY", "1")), Tally(RetrieveUnit("STUDY", "2"))
    listed = Tally(
        RetrieveUnit(
            "SERIES", "3", "3.1", expected=(InstanceReference("3", "3.1", "3.1.1"),)
        )
    )
    receiver.register(7, first)
    assert receiver.tally_for(None, "1.1") is first  # the only one waiting
    assert receiver.tally_for(9, "1.1") is None  # another request's message ID
    receiver.register(8, second)
    receiver.register(10, listed)
    assert receiver.tally_for(8, "1.1") is second
    assert receiver.tally_for(None, "3.1.1") is listed  # by its listed UID
    assert receiver.tally_for(None, "1.1") is None  # several wait: no guess
    for msg_id in (7, 8, 10):
        receiver.unregister(msg_id)
    assert receiver.tally_for(8, "1.1") is None


def test_a_failed_save_is_never_success(tmp_path: Path) -> None:
    def full_disk(path: Path, sop_uid: str, tally: Tally) -> int:
        raise StorageError("disk full", uids=[sop_uid])

    report = DownloadReport()
    receiver = Receiver(full_disk, report, NullProgress())
    tally = Tally(RetrieveUnit("STUDY", STUDY))
    received = _received(tmp_path, "1.2.3.7")
    assert receiver.store("1.2.3.7", tally, lambda: received) == 0xA700
    assert tally.failed == {"1.2.3.7"} and not received.exists()

    def unwritable() -> Path:
        raise StorageError("cannot write received instance 1.2.3.8", uids=["1.2.3.8"])

    assert receiver.store("1.2.3.8", tally, unwritable) == 0xA700
    assert report.failed_uids.count("1.2.3.8") == 1


def test_cancelled_receiver_is_visible() -> None:
    flag = threading.Event()
    receiver = Receiver(
        lambda *a: 0, DownloadReport(), NullProgress(), cancelled=flag.is_set
    )
    assert not receiver.cancelled()
    flag.set()
    assert receiver.cancelled()


def _final(
    status: int, completed: int = 0, failed: int = 0, warning: int = 0
) -> Dataset:
    final = Dataset()
    final.Status = status
    final.NumberOfCompletedSuboperations = completed
    final.NumberOfFailedSuboperations = failed
    final.NumberOfWarningSuboperations = warning
    return final


def _expected_unit(*uids: str) -> RetrieveUnit:
    refs = tuple(InstanceReference(STUDY, SERIES, uid) for uid in uids)
    return RetrieveUnit("SERIES", STUDY, SERIES, (), refs)


def test_outcome_all_arrived() -> None:
    report = DownloadReport()
    tally = Tally(_expected_unit("a", "b"), received={"a", "b"})
    check_outcome(
        _final(0, 2), None, tally, peer=PEER, operation="C-GET", report=report
    )
    assert not report.failures


def test_outcome_names_missing_instances() -> None:
    report = DownloadReport()
    tally = Tally(_expected_unit("a", "b", "c"), received={"a"})
    check_outcome(
        _final(0xB000, 1, 2), None, tally, peer=PEER, operation="C-GET", report=report
    )
    assert report.failed_uids.count("b") == 1 and "c" in report.failed_uids
    assert all(isinstance(f.error, SubOperationError) for f in report.failures)
    assert "0xB000" in str(report.failures[0])


def test_outcome_failed_list_and_counts_without_expectations() -> None:
    report = DownloadReport()
    identifier = Dataset()
    identifier.FailedSOPInstanceUIDList = ["1.9.1", "1.9.2"]
    tally = Tally(RetrieveUnit("STUDY", STUDY), received={"1.9.3"})
    check_outcome(
        _final(0xB000, 2, 3), identifier, tally, peer=PEER, operation="C-MOVE",
        report=report,
    )  # fmt: skip
    uids = report.failed_uids
    assert "1.9.1" in uids and "1.9.2" in uids
    messages = " ".join(str(f) for f in report.failures)
    assert "1 instance(s) failed on the PACS" in messages
    assert "1 instance(s) reported sent never arrived" in messages


def test_outcome_failure_with_nothing_raises() -> None:
    tally = Tally(RetrieveUnit("STUDY", STUDY))
    with pytest.raises(MoveDestinationUnknownError, match="register"):
        check_outcome(
            _final(0xA801), None, tally, peer=PEER, operation="C-MOVE",
            report=DownloadReport(), hint="register it",
        )  # fmt: skip
    with pytest.raises(DIMSEStatusError) as caught:
        check_outcome(
            _final(0xC000), None, tally, peer=PEER, operation="C-GET",
            report=DownloadReport(),
        )  # fmt: skip
    assert caught.value.uids == (STUDY,)


def test_downloaders_accept_every_level() -> None:
    getter = DICOMQRGet("pacs", 104, "ME", "PACS", timeout=3)
    getter.check_references([StudyReference(STUDY), SeriesReference(STUDY, SERIES)])
    assert getter.timeouts.idle == 3
    assert "PACS at pacs:104" in str(getter)
    mover = DICOMQRMove("pacs", 104, "ME", "PACS", store_port=11113)
    assert (mover.store_aet, mover.store_port) == ("ME", 11113)


def test_dicom_qr_exports() -> None:
    module = importlib.import_module("dicomtrolley.dicom_qr")
    for name in module.__all__:
        assert hasattr(module, name), name
    assert find.level_of("Modality") == "SERIES"
    assert find.level_of("PatientName") == "PATIENT"
    assert find.level_of("StudyDate") == "STUDY"


def test_received_file_is_copied_across_file_systems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    out = tmp_path / "out"
    writer = StorageDir(out).open_writer(out, expected=None)
    received = _received(tmp_path, f"{SERIES}.8")
    size = received.stat().st_size

    def no_rename(source: Any, target: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", no_rename)
        assert adopt_file(writer, received) == size
    saved = writer.commit()
    assert pydicom.dcmread(saved).SOPInstanceUID == f"{SERIES}.8"


def test_storage_scp_listens_where_the_pacs_can_reach_it() -> None:
    from dicomtrolley.dimse.storage_scp import StoreSCP, default_bind_address

    assert default_bind_address("127.0.0.1") == "127.0.0.1"
    assert default_bind_address("localhost") == "127.0.0.1"
    assert default_bind_address("192.0.2.10") == "0.0.0.0"
    receiver = Receiver(lambda *a: 0, DownloadReport(), NullProgress())
    local = StoreSCP("STORE", 11112, pacs=Peer("127.0.0.1", 104), receiver=receiver,
                     timeouts=DIMSETimeouts())  # fmt: skip
    assert local.bind_address == "127.0.0.1"
    assert local.accept_from is not None and "127.0.0.1" in local.accept_from
    anyone = StoreSCP("STORE", 11112, pacs=PEER, receiver=receiver,
                      timeouts=DIMSETimeouts(), accept_from=None)  # fmt: skip
    assert anyone.accept_from is None and str(anyone).startswith("storage SCP STORE")
    listed = StoreSCP("STORE", 11112, pacs=PEER, receiver=receiver,
                      timeouts=DIMSETimeouts(), accept_from="192.0.2.7")  # fmt: skip
    assert listed.accept_from == {"192.0.2.7"}
    # the address is vetted before anything is stored (see tests/unit/test_store_scp.py)
