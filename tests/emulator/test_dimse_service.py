"""The emulator's DIMSE service: C-ECHO, C-FIND, C-GET and C-MOVE.

Two independent clients check it: DCMTK's command line tools (``/usr/bin/...``
by absolute path, since the venv has pynetdicom scripts of the same names,
with TCP_NODELAY=1 as Debian's DCMTK needs) and raw pynetdicom associations.
Everything runs on 127.0.0.1. A last test goes through dicomtrolley's own
DIMSE client, when it is there.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from dicomtrolley.emulator import (
    DEFAULT_AE_TITLE,
    DimseService,
    Emulator,
    default_services,
)
from dicomtrolley.emulator.dimse import MODELS
from dicomtrolley.synthetic import StudySpec
from tests.emulator.conftest import DemoData
from tests.fakes import tree

TOOLS = {
    name: Path("/usr/bin") / name
    for name in ("echoscu", "findscu", "getscu", "movescu", "storescp")
}
needs_dcmtk = pytest.mark.skipif(
    not all(path.exists() for path in TOOLS.values()), reason="DCMTK is not installed"
)
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
HOST = "127.0.0.1"

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
VERIFICATION = "1.2.840.10008.1.1"
CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7.3"  # multi-frame grayscale word SC
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
PENDING, SUCCESS, WARNING, CANCEL = 0xFF00, 0x0000, 0xB000, 0xFE00


# -- fixtures and helpers -------------------------------------------------------


@pytest.fixture(scope="module")
def emulator(demo: DemoData) -> Iterator[Emulator]:
    """One emulator over the demo data with a DIMSE service (free port)."""
    services = [*default_services(), DimseService()]
    with Emulator(demo.root, services=services, rescan_interval=None) as running:
        yield running


@pytest.fixture
def dimse(emulator: Emulator) -> DimseService:
    return emulator.dimse


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def dcmtk(
    tool: str, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TOOLS[tool]), *args],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=timeout,
        check=False,
    )


@contextmanager
def associate(
    service: DimseService,
    contexts: list[Any],
    *,
    ae_title: str = "TESTSCU",
    called: str | None = None,
    ext_neg: list[Any] | None = None,
    handlers: list[Any] | None = None,
) -> Iterator[Association]:
    """An established association with the service, released at the end."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate(
        HOST,
        service.port,
        contexts=contexts,
        ae_title=called or service.ae_title,
        ext_neg=ext_neg,
        evt_handlers=handlers,
    )
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()
        ae.shutdown()


def identifier(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find(
    service: DimseService, query: Dataset, model: str = STUDY_FIND
) -> tuple[int, list[Dataset], Dataset]:
    """(final status, matches, final status dataset) of one C-FIND."""
    with associate(service, [build_context(model)]) as assoc:
        matches: list[Dataset] = []
        for status, match in assoc.send_c_find(query, model):
            assert "Status" in status, "no answer"
            if status.Status in (PENDING, 0xFF01):
                matches.append(match)
                continue
            return int(status.Status), matches, status
    raise AssertionError("no final status")


def study_find(service: DimseService, **keys: Any) -> list[Dataset]:
    status, matches, _ = find(service, identifier(QueryRetrieveLevel="STUDY", **keys))
    assert status == SUCCESS
    return matches


def keywords(ds: Dataset) -> set[str]:
    return {element.keyword for element in ds}


def study(demo: DemoData, patient_id: str, description: str = "") -> StudySpec:
    return demo.study(patient_id, description)


def stored(demo: DemoData, sop_uid: str) -> Dataset:
    return pydicom.dcmread(demo.by_uid[sop_uid])


def assert_same_instance(
    received: Dataset, demo: DemoData, same_syntax: bool = False
) -> None:
    original = stored(demo, str(received.SOPInstanceUID))
    assert received.SOPInstanceUID == original.SOPInstanceUID
    assert received.PixelData == original.PixelData
    assert received == original
    if same_syntax:
        syntax = original.file_meta.TransferSyntaxUID
        assert received.file_meta.TransferSyntaxUID == syntax


class StoreSCP:
    """A pynetdicom storage SCP on a free port, keeping what it receives."""

    def __init__(
        self, ae_title: str = "STORE-SCP", syntaxes: tuple[str, ...] = ()
    ) -> None:
        self.received: list[Dataset] = []
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(VERIFICATION)
        for sop_class in (CT, MR, SC):
            self.ae.add_supported_context(
                sop_class, list(syntaxes) or [*UNCOMPRESSED, RLELossless]
            )
        self.server = self.ae.start_server(
            (HOST, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        self.port = int(self.server.server_address[1])

    def _store(self, event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        self.received.append(dataset)
        return 0

    def stop(self) -> None:
        self.ae.shutdown()


@pytest.fixture
def store_scp() -> Iterator[StoreSCP]:
    scp = StoreSCP()
    yield scp
    scp.stop()


# -- C-ECHO and associations ------------------------------------------------------


@needs_dcmtk
def test_echoscu(dimse: DimseService) -> None:
    result = dcmtk("echoscu", "-aec", dimse.ae_title, HOST, str(dimse.port))
    assert result.returncode == 0, result.stderr


def test_echo_with_pynetdicom(dimse: DimseService) -> None:
    with associate(dimse, [build_context(VERIFICATION)]) as assoc:
        assert assoc.send_c_echo().Status == SUCCESS


def test_not_served_unless_asked_for(
    make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emulator = make_emulator(tmp_path)
    with pytest.raises(LookupError, match="DimseService"):
        _ = emulator.dimse
    assert all(service.name != "dimse" for service in default_services())


@needs_dcmtk
def test_wrong_called_ae_is_rejected(
    demo: DemoData, make_emulator: Callable[..., Emulator]
) -> None:
    service = DimseService(ae_title="STRICT-EMU", require_called_ae=True)
    make_emulator(demo.root, services=[service])
    port = str(service.port)
    wrong = dcmtk("echoscu", "-v", "-aec", "SOMEONE-ELSE", HOST, port)
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stdout + wrong.stderr
    right = dcmtk("echoscu", "-aec", "STRICT-EMU", HOST, port)
    assert right.returncode == 0, right.stderr


def test_calling_ae_not_allowed_is_rejected(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = DimseService(allowed_calling_aes={"FRIEND"}, require_called_ae=True)
    make_emulator(demo.root, services=[service])
    ae = AE(ae_title="STRANGER")
    assoc = ae.associate(
        HOST, service.port, [build_context(VERIFICATION)], ae_title=service.ae_title
    )
    assert assoc.is_rejected
    assert "Calling AE title not recognised" in caplog.text
    ae.shutdown()
    with associate(service, [build_context(VERIFICATION)], ae_title="FRIEND") as ok:
        assert ok.send_c_echo().Status == SUCCESS
    # Without require_called_ae any called AE title is fine.
    make_emulator(demo.root, services=[lenient := DimseService()])
    with associate(lenient, [build_context(VERIFICATION)], called="ANY-SCP") as any_:
        assert any_.send_c_echo().Status == SUCCESS


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="16"):
        DimseService(ae_title="SEVENTEEN-CHARS-X")
    with pytest.raises(ValueError, match="move destination"):
        DimseService(move_destinations={"": ("127.0.0.1", 104)})
    assert DimseService().ae_title == DEFAULT_AE_TITLE


def test_relational_queries_accepted_in_extended_negotiation(
    dimse: DimseService,
) -> None:
    items = []
    for model in (STUDY_FIND, STUDY_GET):
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = model
        item.service_class_application_information = b"\x01\x01"
        items.append(item)
    contexts = [build_context(STUDY_FIND), build_context(STUDY_GET)]
    with associate(dimse, contexts, ext_neg=items) as assoc:
        accepted = assoc.acceptor.sop_class_extended
        # Relational: yes; combined date-time / enhanced conversion: no.
        assert accepted[STUDY_FIND] == b"\x01\x00"
        assert accepted[STUDY_GET] == b"\x01\x00"


# -- C-FIND with DCMTK ------------------------------------------------------------


def findscu(
    service: DimseService, tmp_path: Path, model: str, *keys: str
) -> list[Dataset]:
    """The responses of findscu -S/-P with -k keys, read back from the -X files."""
    out = tmp_path / f"find-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    args = [model, "-X", "-od", str(out), "-aec", service.ae_title]
    for key in keys:
        args += ["-k", key]
    result = dcmtk("findscu", *args, HOST, str(service.port))
    assert result.returncode == 0, result.stdout + result.stderr
    return [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


@needs_dcmtk
def test_findscu_study_root_levels(
    dimse: DimseService, demo: DemoData, tmp_path: Path
) -> None:
    doe_ct = study(demo, "DTR001", "CT")
    studies = findscu(
        dimse,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientID=DTR001",
        "StudyInstanceUID",
        "StudyDate",
        "ModalitiesInStudy",
    )
    assert sorted(s.StudyDate for s in studies) == ["20210315", "20231105"]
    assert keywords(studies[0]) == {
        "QueryRetrieveLevel",
        "PatientID",
        "StudyInstanceUID",
        "StudyDate",
        "ModalitiesInStudy",
    }
    series = findscu(
        dimse,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={doe_ct.study_uid}",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
    )
    assert [(s.Modality, s.SeriesNumber) for s in series] == [
        ("CT", 1),
        ("CT", 2),
        ("OT", 3),
    ]
    images = findscu(
        dimse,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={doe_ct.study_uid}",
        f"SeriesInstanceUID={doe_ct.series[0].series_uid}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    assert [i.InstanceNumber for i in images] == list(range(1, 21))
    assert {i.SOPInstanceUID for i in images} == {
        doe_ct.series[0].instance_uid(n) for n in range(20)
    }


@needs_dcmtk
def test_findscu_patient_root_levels(
    dimse: DimseService, demo: DemoData, tmp_path: Path
) -> None:
    patients = findscu(
        dimse,
        tmp_path,
        "-P",
        "QueryRetrieveLevel=PATIENT",
        "PatientID=DTR00*",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedInstances",
    )
    counts = {
        p.PatientID: (
            p.NumberOfPatientRelatedStudies,
            p.NumberOfPatientRelatedInstances,
        )
        for p in patients
    }
    assert counts == {
        "DTR001": (2, 39),
        "DTR002": (1, 32),
        "DTR003": (1, 22),
        "DTR004": (1, 12),
    }
    studies = findscu(
        dimse,
        tmp_path,
        "-P",
        "QueryRetrieveLevel=STUDY",
        "PatientID=DTR004",
        "StudyInstanceUID",
        "StudyDescription",
    )
    smith = study(demo, "DTR004")
    assert [(s.StudyInstanceUID, s.StudyDescription) for s in studies] == [
        (smith.study_uid, "CT Head")
    ]
    series = findscu(
        dimse,
        tmp_path,
        "-P",
        "QueryRetrieveLevel=SERIES",
        "PatientID=DTR004",
        f"StudyInstanceUID={smith.study_uid}",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
    )
    assert [s.NumberOfSeriesRelatedInstances for s in series] == [6, 6]
    images = findscu(
        dimse,
        tmp_path,
        "-P",
        "QueryRetrieveLevel=IMAGE",
        "PatientID=DTR004",
        f"StudyInstanceUID={smith.study_uid}",
        f"SeriesInstanceUID={smith.series[1].series_uid}",
        "SOPInstanceUID",
        "SOPClassUID",
    )
    assert len(images) == 6
    assert {i.SOPClassUID for i in images} == {CT}


@needs_dcmtk
def test_findscu_non_ascii_name(dimse: DimseService, tmp_path: Path) -> None:
    (match,) = findscu(
        dimse,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientID=DTR003",
        "PatientName",
    )
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert str(match.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"


# -- C-FIND with pynetdicom ------------------------------------------------------


def test_find_returns_requested_keys_only(dimse: DimseService, demo: DemoData) -> None:
    status, matches, _ = find(
        dimse,
        identifier(
            QueryRetrieveLevel="STUDY",
            PatientID="DTR004",
            StudyDescription="",
            PatientAge="",  # known to DICOM, not indexed: returned empty
            ReferencedStudySequence=[],
            RetrieveAETitle="",
        ),
    )
    assert status == SUCCESS
    (match,) = matches
    assert keywords(match) == {
        "QueryRetrieveLevel",
        "PatientID",
        "StudyDescription",
        "PatientAge",
        "ReferencedStudySequence",
        "RetrieveAETitle",
        "StudyInstanceUID",  # the unique key of the level, always there
    }
    assert match.StudyInstanceUID == study(demo, "DTR004").study_uid
    assert match.PatientAge == ""
    assert match.RetrieveAETitle == dimse.ae_title
    assert "SpecificCharacterSet" not in match  # ASCII values only


@pytest.mark.parametrize(
    ("dates", "patients"),
    [
        ("20220101-20231231", ["DTR001", "DTR002", "DTR003"]),
        ("-20211231", ["DTR001"]),
        ("20240101-", ["DTR004"]),
        ("20240229", ["DTR004"]),
        ("19990101-20001231", []),
    ],
)
def test_find_date_ranges(dimse: DimseService, dates: str, patients: list[str]) -> None:
    matches = study_find(dimse, StudyDate=dates, PatientID="")
    assert sorted(m.PatientID for m in matches) == patients


def test_find_time_range(dimse: DimseService) -> None:
    matches = study_find(dimse, StudyTime="0800-1000", PatientID="")
    assert sorted(m.PatientID for m in matches) == ["DTR001", "DTR002"]


@pytest.mark.parametrize(
    ("keys", "patients"),
    [
        ({"PatientName": "Sm?th*"}, ["DTR004"]),
        ({"PatientName": "*^J*"}, ["DTR001", "DTR001", "DTR002"]),
        ({"PatientName": "doe^john"}, ["DTR001", "DTR001"]),  # PN: any case
        (
            {"AccessionNumber": "ACC000?"},
            ["DTR001", "DTR001", "DTR002", "DTR003", "DTR004"],
        ),
        ({"StudyDescription": "MR*"}, ["DTR001", "DTR002"]),
        ({"ModalitiesInStudy": "OT"}, ["DTR001"]),
        ({"ModalitiesInStudy": "OT\\MR"}, ["DTR001", "DTR001", "DTR002"]),
        ({"PatientName": "*", "PatientSex": "F"}, ["DTR004"]),
    ],
)
def test_find_wildcards_and_lists(
    dimse: DimseService, keys: dict[str, str], patients: list[str]
) -> None:
    matches = study_find(dimse, PatientID="", **keys)
    assert sorted(m.PatientID for m in matches) == patients


def test_find_uid_list(dimse: DimseService, demo: DemoData) -> None:
    uids = [study(demo, "DTR002").study_uid, study(demo, "DTR004").study_uid]
    matches = study_find(dimse, StudyInstanceUID=uids)
    assert sorted(m.StudyInstanceUID for m in matches) == sorted(uids)


def test_find_non_ascii_names(dimse: DimseService) -> None:
    query = identifier(
        QueryRetrieveLevel="STUDY",
        SpecificCharacterSet="ISO_IR 192",
        PatientName="Müller*",
        ReferringPhysicianName="",
        InstitutionName="",
    )
    status, (match,), _ = find(dimse, query)
    assert status == SUCCESS
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert str(match.PatientName) == "Müller^Jürgen"
    assert str(match.ReferringPhysicianName) == "Schäfer^Björn"
    assert match.InstitutionName == "Klinikum Süd"
    (yamada,) = study_find(  # matches the ideographic group
        dimse, SpecificCharacterSet="ISO_IR 192", PatientName="山田*"
    )
    assert yamada.PatientName.ideographic == "山田^太郎"


def test_find_patient_root_patient_level(dimse: DimseService) -> None:
    status, matches, _ = find(
        dimse,
        identifier(
            QueryRetrieveLevel="PATIENT",
            PatientName="Doe*",
            PatientBirthDate="",
            NumberOfPatientRelatedSeries="",
        ),
        PATIENT_FIND,
    )
    assert status == SUCCESS
    (doe,) = matches
    assert (doe.PatientID, doe.PatientBirthDate) == ("DTR001", "19700101")
    assert doe.NumberOfPatientRelatedSeries == 5


def test_find_relational_series_and_images(dimse: DimseService, demo: DemoData) -> None:
    """No Study Instance UID at SERIES and IMAGE level, study keys matched."""
    status, series, _ = find(
        dimse,
        identifier(
            QueryRetrieveLevel="SERIES",
            Modality="MR",
            PatientID="DTR001",
            SeriesDescription="",
            StudyInstanceUID="",
        ),
    )
    assert status == SUCCESS
    assert [s.SeriesDescription for s in series] == ["T1 sag", "PD cor"]
    assert {s.StudyInstanceUID for s in series} == {
        study(demo, "DTR001", "MR").study_uid
    }
    target = study(demo, "DTR002").series[1]
    status, images, _ = find(
        dimse,
        identifier(
            QueryRetrieveLevel="IMAGE",
            SeriesInstanceUID=target.series_uid,
            InstanceNumber="",
            AvailableTransferSyntaxUID="",
        ),
    )
    assert status == SUCCESS
    assert len(images) == 16
    assert {i.AvailableTransferSyntaxUID for i in images} == {RLELossless}
    assert {i.SOPInstanceUID for i in images} == {
        target.instance_uid(n) for n in range(16)
    }


def test_find_no_match_is_plain_success(dimse: DimseService) -> None:
    assert study_find(dimse, PatientID="NOBODY") == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize(
    ("model", "keys", "status", "offending"),
    [
        (STUDY_FIND, {"PatientID": "DTR001"}, 0xA900, 0x00080052),
        (STUDY_FIND, {"QueryRetrieveLevel": "PATIENT"}, 0xA900, 0x00080052),
        (PATIENT_FIND, {"QueryRetrieveLevel": "FRAME"}, 0xA900, 0x00080052),
        (
            STUDY_FIND,
            {"QueryRetrieveLevel": "STUDY", "Modality": "CT"},
            0xA900,
            0x00080060,
        ),
        (
            PATIENT_FIND,
            {"QueryRetrieveLevel": "PATIENT", "StudyDate": "20200101"},
            0xA900,
            0x00080020,
        ),
        (
            STUDY_FIND,
            {"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-01-01"},
            0xC000,
            0x00080020,
        ),
        (
            STUDY_FIND,
            {"QueryRetrieveLevel": "STUDY", "StudyDate": "yesterday"},
            0xC000,
            0x00080020,
        ),
    ],
)
def test_find_refuses_invalid_identifiers(
    dimse: DimseService, model: str, keys: dict[str, str], status: int, offending: int
) -> None:
    final, matches, status_ds = find(dimse, identifier(**keys), model)
    assert (final, matches) == (status, [])
    assert status_ds.OffendingElement == offending
    assert status_ds.ErrorComment


def test_find_universal_keys_below_the_level_come_back_empty(
    dimse: DimseService,
) -> None:
    (match,) = study_find(dimse, PatientID="DTR004", Modality="", SOPInstanceUID="")
    assert match.Modality == "" and match.SOPInstanceUID == ""


def test_find_odd_keys(dimse: DimseService, demo: DemoData) -> None:
    """Private tags and sequences with sub-keys come back; numbers match."""
    query = identifier(
        QueryRetrieveLevel="SERIES",
        StudyInstanceUID=study(demo, "DTR004").study_uid,
        SeriesNumber="2",
        SeriesDescription="",
        RequestAttributesSequence=[identifier(RequestedProcedureID="")],
    )
    query.add_new(0x00091001, "LO", "")
    status, matches, _ = find(dimse, query)
    assert status == SUCCESS
    (match,) = matches
    assert match.SeriesDescription == "Head bone"
    assert match[0x00091001].value in ("", None, b"")
    assert "RequestAttributesSequence" in match


def fake_event(model: str, query: Dataset, cancel_after: int) -> Any:
    """What pynetdicom hands a handler, with a C-CANCEL after some responses."""
    asked = {"count": 0}

    def is_cancelled() -> bool:
        asked["count"] += 1
        return asked["count"] > cancel_after

    class FakeEvent(SimpleNamespace):
        @property
        def is_cancelled(self) -> bool:
            return is_cancelled()

    requestor = SimpleNamespace(ae_title="TESTSCU", address=HOST)
    return FakeEvent(
        context=SimpleNamespace(abstract_syntax=model),
        identifier=query,
        assoc=SimpleNamespace(requestor=requestor, accepted_contexts=[]),
    )


def test_find_honours_cancel(dimse: DimseService) -> None:
    event = fake_event(STUDY_FIND, identifier(QueryRetrieveLevel="STUDY"), 2)
    statuses = [status for status, _ in dimse._on_find(event)]
    assert statuses == [PENDING, PENDING, CANCEL]


def test_get_honours_cancel(dimse: DimseService, demo: DemoData) -> None:
    query = identifier(
        QueryRetrieveLevel="STUDY", StudyInstanceUID=study(demo, "DTR004").study_uid
    )
    answers = list(dimse._on_get(fake_event(STUDY_GET, query, 3)))
    assert answers[0] == 12  # the number of sub-operations comes first
    assert [status for status, _ in answers[1:]] == [PENDING] * 3 + [CANCEL]


def test_concurrent_associations(dimse: DimseService) -> None:
    results: queue.Queue[int] = queue.Queue()

    def worker() -> None:
        for _ in range(2):
            status, matches, _ = find(
                dimse, identifier(QueryRetrieveLevel="IMAGE", PatientID="DTR002")
            )
            results.put(len(matches) if status == SUCCESS else -1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [results.get_nowait() for _ in range(8)] == [32] * 8


# -- C-GET ------------------------------------------------------------------------


def get(
    service: DimseService,
    query: Dataset,
    storage: list[Any],
    model: str = STUDY_GET,
) -> tuple[Dataset, list[Dataset], list[Dataset], Dataset | None]:
    """(final status, pending statuses, received datasets, final identifier)."""
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received.append(dataset)
        return 0

    contexts = [build_context(model), *storage]
    roles = [
        build_role(uid, scp_role=True)
        for uid in {str(c.abstract_syntax) for c in storage}
    ]
    pending: list[Dataset] = []
    with associate(
        service, contexts, ext_neg=roles, handlers=[(evt.EVT_C_STORE, on_store)]
    ) as assoc:
        for status, answer in assoc.send_c_get(query, model):
            if status.Status == PENDING:
                pending.append(status)
                continue
            return status, pending, received, answer
    raise AssertionError("no final status")


def all_storage() -> list[Any]:
    """One context per storage class and syntax, so the SCP can keep each."""
    return [
        build_context(uid, syntax)
        for uid in (CT, MR, SC)
        for syntax in (*UNCOMPRESSED, RLELossless)
    ]


def test_get_study_sends_the_stored_datasets(
    dimse: DimseService, demo: DemoData
) -> None:
    doe = study(demo, "DTR001", "CT")
    final, pending, received, _ = get(
        dimse,
        identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=doe.study_uid),
        all_storage(),
    )
    assert final.Status == SUCCESS
    assert final.NumberOfCompletedSuboperations == 23
    assert final.NumberOfFailedSuboperations == 0
    assert [p.NumberOfRemainingSuboperations for p in pending] == list(
        range(22, -1, -1)
    )
    assert len(received) == 23
    for dataset in received:
        assert_same_instance(dataset, demo, same_syntax=True)
    # Stored transfer syntaxes were kept (explicit and implicit VR instances).
    assert {str(d.file_meta.TransferSyntaxUID) for d in received} == set(UNCOMPRESSED)


def test_get_keeps_rle_when_accepted_else_decompresses(
    dimse: DimseService, demo: DemoData
) -> None:
    rle_series = study(demo, "DTR003").series[1]
    query = identifier(
        QueryRetrieveLevel="SERIES",
        StudyInstanceUID=study(demo, "DTR003").study_uid,
        SeriesInstanceUID=rle_series.series_uid,
    )
    final, _, as_stored, _ = get(dimse, query, all_storage())
    assert final.Status == SUCCESS and len(as_stored) == 10
    for dataset in as_stored:
        assert dataset.file_meta.TransferSyntaxUID == RLELossless
        assert_same_instance(dataset, demo)
    final, _, decompressed, _ = get(dimse, query, [build_context(CT, UNCOMPRESSED)])
    assert final.Status == SUCCESS and len(decompressed) == 10
    for dataset in decompressed:
        assert dataset.file_meta.TransferSyntaxUID in UNCOMPRESSED
        original = stored(demo, str(dataset.SOPInstanceUID))
        assert (dataset.pixel_array == original.pixel_array).all()


def test_get_reports_failed_sub_operations(dimse: DimseService, demo: DemoData) -> None:
    """No storage context for the secondary capture: Warning, with its UID."""
    doe = study(demo, "DTR001", "CT")
    final, _, received, failed = get(
        dimse,
        identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=doe.study_uid),
        [build_context(CT, UNCOMPRESSED)],
    )
    assert final.Status == WARNING
    assert (
        final.NumberOfCompletedSuboperations,
        final.NumberOfFailedSuboperations,
    ) == (
        22,
        1,
    )
    assert len(received) == 22
    assert failed is not None
    assert failed.FailedSOPInstanceUIDList == doe.series[2].instance_uid(0)


def test_get_patient_root_instance_level_and_patient_level(
    dimse: DimseService, demo: DemoData
) -> None:
    smith = study(demo, "DTR004")
    wanted = [smith.series[0].instance_uid(n) for n in (0, 5)]
    final, _, received, _ = get(
        dimse,
        identifier(QueryRetrieveLevel="IMAGE", SOPInstanceUID=wanted),
        all_storage(),
        PATIENT_GET,
    )
    assert final.Status == SUCCESS
    assert sorted(d.SOPInstanceUID for d in received) == sorted(wanted)
    final, _, received, _ = get(
        dimse,
        identifier(QueryRetrieveLevel="PATIENT", PatientID="DTR004"),
        all_storage(),
        PATIENT_GET,
    )
    assert final.Status == SUCCESS and len(received) == 12


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize(
    "keys",
    [
        {"QueryRetrieveLevel": "STUDY"},
        {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "1.2.*"},
        {"StudyInstanceUID": "1.2.3"},
    ],
)
def test_get_refuses_invalid_identifiers(
    dimse: DimseService, keys: dict[str, str]
) -> None:
    final, pending, received, _ = get(dimse, identifier(**keys), all_storage())
    assert final.Status == 0xA900
    assert (pending, received) == ([], [])


# -- C-MOVE -----------------------------------------------------------------------


def move(service: DimseService, query: Dataset, destination: str) -> Dataset:
    with associate(service, [build_context(STUDY_MOVE)]) as assoc:
        for status, _ in assoc.send_c_move(query, destination, STUDY_MOVE):
            if status.Status != PENDING:
                return status
    raise AssertionError("no final status")


def test_move_to_a_known_destination(
    dimse: DimseService, demo: DemoData, store_scp: StoreSCP
) -> None:
    dimse.move_destinations["STORE-SCP"] = (HOST, store_scp.port)
    mueller = study(demo, "DTR002")
    final = move(
        dimse,
        identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=mueller.study_uid),
        "STORE-SCP",
    )
    assert final.Status == SUCCESS
    assert final.NumberOfCompletedSuboperations == 32
    assert len(store_scp.received) == 32
    for dataset in store_scp.received:
        assert_same_instance(dataset, demo, same_syntax=True)
    assert {str(d.file_meta.TransferSyntaxUID) for d in store_scp.received} == {
        ExplicitVRLittleEndian,
        RLELossless,
    }


def test_move_decompresses_for_a_destination_without_rle(
    dimse: DimseService, demo: DemoData
) -> None:
    scp = StoreSCP("PLAIN-SCP", (ImplicitVRLittleEndian,))
    try:
        dimse.move_destinations["PLAIN-SCP"] = (HOST, scp.port)
        yamada = study(demo, "DTR003")
        query = identifier(
            QueryRetrieveLevel="SERIES",
            StudyInstanceUID=yamada.study_uid,
            SeriesInstanceUID=yamada.series[1].series_uid,
        )
        assert move(dimse, query, "PLAIN-SCP").Status == SUCCESS
    finally:
        scp.stop()
    assert len(scp.received) == 10
    for dataset in scp.received:
        assert dataset.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        original = stored(demo, str(dataset.SOPInstanceUID))
        assert (dataset.pixel_array == original.pixel_array).all()


def test_move_refuses_invalid_identifiers(
    dimse: DimseService, store_scp: StoreSCP
) -> None:
    dimse.move_destinations["STORE-SCP"] = (HOST, store_scp.port)
    final = move(dimse, identifier(QueryRetrieveLevel="SERIES"), "STORE-SCP")
    assert final.Status == 0xA900
    assert store_scp.received == []


def test_move_to_an_unknown_destination(dimse: DimseService, demo: DemoData) -> None:
    final = move(
        dimse,
        identifier(
            QueryRetrieveLevel="STUDY", StudyInstanceUID=study(demo, "DTR004").study_uid
        ),
        "NOWHERE",
    )
    assert final.Status == 0xA801


@needs_dcmtk
def test_getscu(dimse: DimseService, demo: DemoData, tmp_path: Path) -> None:
    smith = study(demo, "DTR004")
    result = dcmtk(
        "getscu",
        "-S",
        "-aec",
        dimse.ae_title,
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={smith.study_uid}",
        HOST,
        str(dimse.port),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = list(tmp_path.iterdir())
    assert len(files) == 12
    for path in files:
        assert_same_instance(pydicom.dcmread(path), demo)


@needs_dcmtk
def test_movescu_to_storescp(
    dimse: DimseService, demo: DemoData, tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen(
        [
            str(TOOLS["storescp"]),
            "-aet",
            "DCMTK-STORE",
            "+xa",
            "-od",
            str(out),
            str(port),
        ],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while dcmtk("echoscu", "-aec", "DCMTK-STORE", HOST, str(port)).returncode:
            assert time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.05)
        dimse.move_destinations["DCMTK-STORE"] = (HOST, port)
        doe = study(demo, "DTR001", "MR")
        result = dcmtk(
            "movescu",
            "-S",
            "-aec",
            dimse.ae_title,
            "-aem",
            "DCMTK-STORE",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={doe.study_uid}",
            "-k",
            f"SeriesInstanceUID={doe.series[1].series_uid}",
            HOST,
            str(dimse.port),
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        scp.terminate()
        scp.wait(10)
    files = list(out.iterdir())
    assert len(files) == 8
    for path in files:
        assert_same_instance(pydicom.dcmread(path), demo)


# -- dicomtrolley serve --dimse-port -------------------------------------------------


@needs_dcmtk
def test_serve_with_dimse(demo: DemoData) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dicomtrolley.cli.main",
            "serve",
            "--data",
            str(demo.root),
            "--port",
            "0",
            "--dimse-port",
            "0",
            "--dimse-aet",
            "SERVED-EMU",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        found = None
        deadline = time.monotonic() + 20
        while found is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            found = re.search(r"DIMSE\s+AE (\S+) at 127\.0\.0\.1 port (\d+)", line)
        assert found, "no DIMSE line printed"
        assert found.group(1) == "SERVED-EMU"
        result = dcmtk("echoscu", "-aec", "SERVED-EMU", HOST, found.group(2))
        assert result.returncode == 0, result.stderr
    finally:
        process.terminate()
        process.communicate(timeout=20)
    assert process.returncode == 0


# -- round trip through dicomtrolley's own DIMSE client ------------------------------


@pytest.mark.parametrize(
    ("operation", "model", "relational"),
    [("get", "study", None), ("move", "study", False), ("get", "patient", False)],
)
def test_trolley_round_trip(
    dimse: DimseService,
    demo: DemoData,
    tmp_path: Path,
    operation: str,
    model: str,
    relational: bool | None,
) -> None:
    """Search at INSTANCE level and download with dicomtrolley's own client."""
    dicom_qr = pytest.importorskip("dicomtrolley.dicom_qr")
    from dicomtrolley.core import Query
    from dicomtrolley.trolley import Trolley

    options: dict[str, Any] = {"aet": "TROLLEY", "aec": dimse.ae_title, "model": model}
    if operation == "get":
        downloader = dicom_qr.DICOMQRGet(HOST, dimse.port, **options)
    else:
        port = free_port()
        dimse.move_destinations["TROLLEY-STORE"] = (HOST, port)
        downloader = dicom_qr.DICOMQRMove(
            HOST, dimse.port, store_aet="TROLLEY-STORE", store_port=port, **options
        )
    searcher = dicom_qr.DICOMQR(HOST, dimse.port, relational=relational, **options)
    trolley = Trolley(searcher=searcher, downloader=downloader)
    yamada = study(demo, "DTR003")
    studies = trolley.find_studies(Query(PatientID="DTR003", query_level="INSTANCE"))
    assert [s.uid for s in studies] == [yamada.study_uid]
    assert [len(series.instances) for series in studies[0].series] == [12, 10]
    trolley.download(studies, tmp_path)
    files = [path for path in tree(tmp_path) if path.is_file()]
    assert len(files) == 22
    for path in files:
        assert_same_instance(pydicom.dcmread(path), demo)


def test_models_served() -> None:
    assert {model.operation for model in MODELS.values()} == {"find", "get", "move"}
