"""C-FIND, C-GET and C-MOVE against a real Orthanc, checked against DCMTK's getscu.

The session ``orthanc`` answers the searches and C-GETs. C-MOVE needs a move
destination in Orthanc's configuration, and the rejection test needs Orthanc to
check the called AE title: ``move_orthanc`` is one more Orthanc for this module
with both. A pynetdicom SCP that accepts associations and then never answers
stands in for a hung PACS.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner, Result
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from dicomtrolley import synthetic
from dicomtrolley.cli.main import main
from dicomtrolley.core import (
    InstanceReference,
    Query,
    QueryLevels,
    SeriesReference,
    StudyReference,
)
from dicomtrolley.dicom_qr import (
    DICOMQR,
    AssociationRejectedError,
    DICOMQRGet,
    DICOMQRMove,
    DICOMQuery,
    DIMSEConnectionError,
    DIMSEStatusError,
    DIMSETimeouts,
)
from dicomtrolley.exceptions import DownloadIncompleteError
from dicomtrolley.storage import StorageDir, TemplateStorage
from dicomtrolley.transport import NO_RETRY, Retry
from dicomtrolley.trolley import Trolley
from tests.fakes import tree
from tests.orthanc.conftest import SKIP_VARIABLE
from tests.orthanc_server import GeneratedStudies, OrthancServer, free_port

GETSCU = "/usr/bin/getscu"
STORE_AET = "TROLLEYSTORE"
COMPARED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "Rows", "Columns")


# -- helpers and fixtures ----------------------------------------------------------


def spec_of(studies: GeneratedStudies, key: str) -> synthetic.StudySpec:
    """The study of patient ``key`` (patient ID) and modality, e.g. DTR001/MR."""
    patient, _, modality = key.partition("/")
    return next(
        s
        for s in studies.studies
        if s.patient_id == patient and (not modality or s.modality == modality)
    )


def uids_in(
    studies: GeneratedStudies, study: synthetic.StudySpec, series: int | None = None
) -> set[str]:
    return {
        spec.sop_instance_uid
        for spec in studies.instances.values()
        if spec.study is study
        and (series is None or spec.series is study.series[series])
    }


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in tree(folder) if p.is_file())


def datasets_by_uid(folder: Path) -> dict[str, Dataset]:
    found = {}
    for path in files_in(folder):
        dataset = pydicom.dcmread(path)
        found[str(dataset.SOPInstanceUID)] = dataset
    return found


def assert_same_instances(ours: dict[str, Dataset], theirs: dict[str, Dataset]) -> None:
    """Same SOP instances, same pixels (decoded when the syntaxes differ), same keys."""
    assert set(ours) == set(theirs)
    for uid, mine in ours.items():
        other = theirs[uid]
        for keyword in COMPARED:
            assert mine.get(keyword) == other.get(keyword), (uid, keyword)
        if mine.file_meta.TransferSyntaxUID == other.file_meta.TransferSyntaxUID:
            assert mine.PixelData == other.PixelData, uid
        else:
            assert np.array_equal(mine.pixel_array, other.pixel_array), uid


def getscu(orthanc: OrthancServer, out: Path, **keys: str) -> dict[str, Dataset]:
    """What DCMTK's getscu retrieves for keys (Study Root), by SOP Instance UID."""
    out.mkdir(parents=True, exist_ok=True)
    command = [GETSCU, "-S", "-aec", orthanc.aet, "-od", str(out), "-q"]
    for keyword, value in keys.items():
        command += ["-k", f"{keyword}={value}"]
    subprocess.run(
        [*command, orthanc.host, str(orthanc.dicom_port)],
        check=True,
        env=dict(os.environ, TCP_NODELAY="1"),
        timeout=60,
    )
    return datasets_by_uid(out)


@pytest.fixture
def qr(orthanc: OrthancServer) -> DICOMQR:
    return DICOMQR(orthanc.host, orthanc.dicom_port, aec=orthanc.aet, timeout=20)


@pytest.fixture
def getter(orthanc: OrthancServer) -> DICOMQRGet:
    return DICOMQRGet(orthanc.host, orthanc.dicom_port, aec=orthanc.aet, timeout=20)


@pytest.fixture(scope="module")
def store_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def move_orthanc(
    orthanc_studies: GeneratedStudies, store_port: int
) -> Iterator[OrthancServer]:
    """An Orthanc that knows TROLLEYSTORE at 127.0.0.1:store_port and checks
    the called AE title."""
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"Orthanc tests skipped: {SKIP_VARIABLE}=1")
    server = OrthancServer(
        modalities={"TROLLEY": [STORE_AET, "127.0.0.1", store_port]},
        extra_config={"DicomCheckCalledAet": True},
    )
    try:
        server.start()
        server.upload(orthanc_studies.paths)
        yield server
    finally:
        server.stop()


def mover(server: OrthancServer, port: int, **options: Any) -> DICOMQRMove:
    return DICOMQRMove(
        server.host,
        server.dicom_port,
        aec=server.aet,
        store_aet=STORE_AET,
        store_port=port,
        timeout=20,
        **options,
    )


# -- C-FIND -------------------------------------------------------------------------


def test_c_find_study_level_finds_every_study(
    qr: DICOMQR, orthanc_studies: GeneratedStudies
) -> None:
    studies = qr.find_studies(
        Query(PatientName="*", include_fields=["StudyDescription", "PatientID"])
    )
    assert {s.uid for s in studies} == {s.study_uid for s in orthanc_studies.studies}
    for study in studies:
        spec = next(s for s in orthanc_studies.studies if s.study_uid == study.uid)
        assert study.data.PatientID == spec.patient_id
        assert study.data.StudyDescription == spec.description
        assert not study.series


@pytest.mark.parametrize("model", ["study", "patient"])
@pytest.mark.parametrize("relational", [None, True, False])
@pytest.mark.parametrize("level", [QueryLevels.SERIES, QueryLevels.INSTANCE])
def test_c_find_deeper_levels_each_model(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    model: str,
    relational: bool | None,
    level: QueryLevels,
) -> None:
    searcher = DICOMQR(
        orthanc.host,
        orthanc.dicom_port,
        aec=orthanc.aet,
        model=model,
        relational=relational,
    )
    studies = searcher.find_studies(Query(PatientID="DTR001", query_level=level))
    expected = [s for s in orthanc_studies.studies if s.patient_id == "DTR001"]
    assert {s.uid for s in studies} == {s.study_uid for s in expected}
    for study in studies:
        spec = next(s for s in expected if s.study_uid == study.uid)
        assert {se.uid for se in study.series} == {se.series_uid for se in spec.series}
        if level == QueryLevels.INSTANCE:
            assert {i.uid for i in study.all_instances()} == uids_in(
                orthanc_studies, spec
            )
        else:
            assert not study.all_instances()
        assert study.data.get("PatientID") == "DTR001"


@pytest.mark.parametrize(
    ("low", "high", "dates"),
    [
        (
            datetime(2022, 1, 1),
            datetime(2023, 12, 31),
            {"20220701", "20230120", "20231105"},
        ),
        (datetime(2023, 1, 20), None, {"20230120", "20231105", "20240229"}),
        (None, datetime(2022, 7, 1), {"20210315", "20220701"}),
    ],
)
def test_c_find_date_ranges(
    qr: DICOMQR,
    orthanc_studies: GeneratedStudies,
    low: datetime | None,
    high: datetime | None,
    dates: set[str],
) -> None:
    studies = qr.find_studies(
        DICOMQuery(
            min_study_date=low, max_study_date=high, include_fields=["StudyDate"]
        )
    )
    assert {str(s.data.StudyDate) for s in studies} == dates
    assert len(studies) == len(dates)


@pytest.mark.parametrize(
    ("criteria", "patients"),
    [
        ({"PatientName": "Doe*"}, {"DTR001"}),
        ({"PatientName": "Sm?th^Anna"}, {"DTR004"}),
        ({"PatientID": "DTR00?"}, {"DTR001", "DTR002", "DTR003", "DTR004"}),
        ({"PatientName": "Müller*"}, {"DTR002"}),
        ({"ModalitiesInStudy": "MR"}, {"DTR001", "DTR002"}),
    ],
)
def test_c_find_wildcards_and_text(
    qr: DICOMQR, criteria: dict[str, str], patients: set[str]
) -> None:
    studies = qr.find_studies(Query(**criteria, include_fields=["PatientID"]))  # type: ignore[arg-type]
    assert {str(s.data.PatientID) for s in studies} == patients


def test_c_find_series_criteria(qr: DICOMQR, orthanc_studies: GeneratedStudies) -> None:
    series = qr.find_studies(
        DICOMQuery(Modality="MR", query_level="SERIES", include_fields=["Modality"])
    )
    mr_series = {
        se.series_uid
        for s in orthanc_studies.studies
        for se in s.series
        if se.modality == "MR"
    }
    assert {se.uid for s in series for se in s.series} == mr_series
    assert all(se.data.Modality == "MR" for s in series for se in s.series)
    # a STUDY-level search by a series attribute: studies holding such a series
    scout = qr.find_studies(DICOMQuery(SeriesDescription="Scout"))
    assert [s.uid for s in scout] == [spec_of(orthanc_studies, "DTR001/CT").study_uid]
    assert not scout[0].series


def test_c_find_nothing_and_find_study(
    qr: DICOMQR, orthanc_studies: GeneratedStudies
) -> None:
    assert qr.find_studies(Query(PatientID="NOBODY")) == []
    spec = spec_of(orthanc_studies, "DTR004")
    study = qr.find_study_by_id(spec.study_uid, query_level=QueryLevels.SERIES)
    assert {se.uid for se in study.series} == {se.series_uid for se in spec.series}


# -- C-GET --------------------------------------------------------------------------


def test_c_get_study_equals_getscu(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    getter: DICOMQRGet,
    tmp_path: Path,
) -> None:
    spec = spec_of(orthanc_studies, "DTR001/MR")  # explicit VR and RLE series
    report = getter.save_all(
        [StudyReference(spec.study_uid)],
        StorageDir(tmp_path / "ours"),
        tmp_path / "ours",
    )
    assert not report.failures
    ours = datasets_by_uid(tmp_path / "ours")
    theirs = getscu(
        orthanc,
        tmp_path / "dcmtk",
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID=spec.study_uid,
    )
    assert set(ours) == uids_in(orthanc_studies, spec)
    assert_same_instances(ours, theirs)
    # sent as stored: same transfer syntax and data set as the uploaded files
    for uid, dataset in ours.items():
        original = pydicom.dcmread(orthanc_studies.by_uid[uid])
        assert (
            dataset.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        )
        assert dataset == original, uid
    assert len(report.saved) == len(ours)
    assert report.bytes_written == sum(p.stat().st_size for p in report.saved)


def test_c_get_series_and_instances(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    getter: DICOMQRGet,
    tmp_path: Path,
) -> None:
    spec = spec_of(orthanc_studies, "DTR003")
    series = spec.series[1]  # RLE
    out = tmp_path / "series"
    getter.save_all(
        [SeriesReference(spec.study_uid, series.series_uid)], StorageDir(out), out
    )
    ours = datasets_by_uid(out)
    assert set(ours) == uids_in(orthanc_studies, spec, 1)
    theirs = getscu(
        orthanc,
        tmp_path / "dcmtk",
        QueryRetrieveLevel="SERIES",
        StudyInstanceUID=spec.study_uid,
        SeriesInstanceUID=series.series_uid,
    )
    assert_same_instances(ours, theirs)
    wanted = sorted(uids_in(orthanc_studies, spec, 0))[:3]
    out = tmp_path / "instances"
    report = getter.save_all(
        [
            InstanceReference(spec.study_uid, spec.series[0].series_uid, uid)
            for uid in wanted
        ],
        StorageDir(out),
        out,
    )
    assert sorted(datasets_by_uid(out)) == wanted
    assert not report.failures


def test_c_get_through_the_trolley_with_workers(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    qr: DICOMQR,
    getter: DICOMQRGet,
    tmp_path: Path,
) -> None:
    trolley = Trolley(getter, qr, storage=TemplateStorage(tmp_path, "{SOPInstanceUID}"))
    studies = trolley.find_studies(Query(PatientName="*", query_level="INSTANCE"))
    report = trolley.download(studies, tmp_path, use_async=True, max_workers=3)
    assert {p.name for p in report.saved} == set(orthanc_studies.by_uid)
    again = trolley.download(studies, tmp_path, use_async=True, max_workers=3)
    assert not again.saved and len(again.skipped) == len(orthanc_studies.by_uid)


def test_c_get_datasets_in_memory(
    orthanc_studies: GeneratedStudies, getter: DICOMQRGet
) -> None:
    spec = spec_of(orthanc_studies, "DTR004")
    datasets = list(getter.datasets([StudyReference(spec.study_uid)]))
    assert {str(d.SOPInstanceUID) for d in datasets} == uids_in(orthanc_studies, spec)
    one = sorted(uids_in(orthanc_studies, spec))[0]
    dataset = getter.get_dataset(
        InstanceReference(spec.study_uid, spec.series[0].series_uid, one)
        if one in uids_in(orthanc_studies, spec, 0)
        else InstanceReference(spec.study_uid, spec.series[1].series_uid, one)
    )
    assert dataset.SOPInstanceUID == one
    stream = getter.datasets([StudyReference(spec.study_uid)])
    next(stream)
    stream.close()  # stopping early aborts the transfer


def test_c_get_of_a_missing_instance_names_it(
    orthanc_studies: GeneratedStudies, getter: DICOMQRGet, tmp_path: Path
) -> None:
    spec = spec_of(orthanc_studies, "DTR004")
    series = spec.series[0].series_uid
    present = sorted(uids_in(orthanc_studies, spec, 0))[0]
    missing = "1.2.826.0.1.3680043.8.498.999999"
    trolley = Trolley(getter, DICOMQR("127.0.0.1", 1))
    with pytest.raises(DownloadIncompleteError) as caught:
        trolley.download(
            [
                InstanceReference(spec.study_uid, series, present),
                InstanceReference(spec.study_uid, series, missing),
            ],
            tmp_path,
        )
    assert missing in caught.value.uids and present not in caught.value.uids
    assert [p.name for p in caught.value.report.saved] == [present.replace(".", "_")]


class CuttingProxy:
    """Relays connections to Orthanc; the first one is cut after ``cut_after``
    bytes from Orthanc (a connection lost mid-transfer), the others pass."""

    def __init__(self, orthanc: OrthancServer, cut_after: int) -> None:
        self.upstream = (orthanc.host, orthanc.dicom_port)
        self.cut_after = cut_after
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.upstream)
                limit = self.cut_after if self.connections == 0 else None
                self.connections += 1
                pair = (client, upstream)
                for args in (
                    (client, upstream, None, pair),
                    (upstream, client, limit, pair),
                ):
                    threading.Thread(target=self._relay, args=args, daemon=True).start()

    @staticmethod
    def _relay(
        source: socket.socket,
        target: socket.socket,
        limit: int | None,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while limit is None or sent < limit:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None:
                    data = data[: limit - sent]
                target.sendall(data)
                sent += len(data)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.server.close()


def test_c_get_cut_mid_study_is_resumed_on_a_new_association(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, tmp_path: Path
) -> None:
    spec = spec_of(orthanc_studies, "DTR001/MR")
    wanted = uids_in(orthanc_studies, spec)
    size = sum(orthanc_studies.by_uid[uid].stat().st_size for uid in wanted)
    proxy = CuttingProxy(orthanc, cut_after=size // 2)
    try:
        getter = DICOMQRGet(
            "127.0.0.1",
            proxy.port,
            aec=orthanc.aet,
            timeout=20,
            retry=Retry(total=2, backoff_factor=0),
        )
        report = getter.save_all(
            [StudyReference(spec.study_uid)], StorageDir(tmp_path), tmp_path
        )
    finally:
        proxy.close()
    assert not report.failures
    ours = datasets_by_uid(tmp_path)
    assert set(ours) == wanted
    for uid, dataset in ours.items():
        assert dataset == pydicom.dcmread(orthanc_studies.by_uid[uid]), uid
    assert len(report.saved) == len(set(report.saved)) == len(wanted)
    assert len(files_in(tmp_path)) == len(wanted)  # no temporary files left
    assert proxy.connections == 3  # cut C-GET, C-FIND listing, C-GET of the rest


# -- C-MOVE -------------------------------------------------------------------------


def test_c_move_study_and_series(
    move_orthanc: OrthancServer,
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    store_port: int,
    tmp_path: Path,
) -> None:
    spec = spec_of(orthanc_studies, "DTR001/CT")
    downloader = mover(move_orthanc, store_port)
    report = downloader.save_all(
        [StudyReference(spec.study_uid), SeriesReference(
            spec_of(orthanc_studies, "DTR002").study_uid,
            spec_of(orthanc_studies, "DTR002").series[1].series_uid,
        )],
        StorageDir(tmp_path / "moved"),
        tmp_path / "moved",
        max_workers=2,
    )  # fmt: skip
    assert not report.failures
    ours = datasets_by_uid(tmp_path / "moved")
    expected = uids_in(orthanc_studies, spec) | uids_in(
        orthanc_studies, spec_of(orthanc_studies, "DTR002"), 1
    )
    assert set(ours) == expected
    theirs = getscu(
        orthanc,
        tmp_path / "dcmtk",
        QueryRetrieveLevel="STUDY",
        StudyInstanceUID=spec.study_uid,
    )
    assert_same_instances({u: d for u, d in ours.items() if u in theirs}, theirs)


@pytest.mark.parametrize("allowed", [True, False])
def test_c_move_storage_scp_checks_the_calling_ae_title(
    move_orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    store_port: int,
    tmp_path: Path,
    allowed: bool,
) -> None:
    """Orthanc stores with its own AE title; our SCP takes only listed ones."""
    spec = spec_of(orthanc_studies, "DTR004")
    titles = [move_orthanc.aet] if allowed else ["SOME-OTHER-PACS"]
    downloader = mover(move_orthanc, store_port, accept_aets=titles)
    report = downloader.save_all(
        [StudyReference(spec.study_uid)], StorageDir(tmp_path), tmp_path
    )
    if allowed:
        assert not report.failures
        assert set(datasets_by_uid(tmp_path)) == uids_in(orthanc_studies, spec)
        return
    assert report.failures and not report.saved
    assert spec.study_uid in report.failed_uids
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_c_move_unknown_destination_explains_what_to_do(
    move_orthanc: OrthancServer, orthanc_studies: GeneratedStudies, tmp_path: Path
) -> None:
    port = free_port()
    downloader = DICOMQRMove(
        move_orthanc.host,
        move_orthanc.dicom_port,
        aec=move_orthanc.aet,
        store_aet="NOWHERE",
        store_port=port,
    )
    study = spec_of(orthanc_studies, "DTR004").study_uid
    report = downloader.save_all(
        [StudyReference(study)], StorageDir(tmp_path), tmp_path
    )
    [failure] = report.failures
    assert isinstance(failure.error, DIMSEStatusError)
    text = str(failure.error)
    assert f"register AE title NOWHERE at 127.0.0.1:{port} on the PACS" in text
    assert "0xC000" in text and study in failure.uids


def test_wrong_called_ae_title_is_rejected_with_both_titles(
    move_orthanc: OrthancServer,
) -> None:
    searcher = DICOMQR(
        move_orthanc.host, move_orthanc.dicom_port, aet="TROLLEYTEST", aec="NOT-ORTHANC"
    )
    with pytest.raises(AssociationRejectedError) as caught:
        searcher.find_studies(Query())
    text = str(caught.value)
    assert "'TROLLEYTEST'" in text and "'NOT-ORTHANC'" in text
    assert f"{move_orthanc.host}:{move_orthanc.dicom_port}" in text
    assert "rejected permanent" in text and "called AE title not recognized" in text


# -- peers that refuse or hang ------------------------------------------------------


def test_refused_connection(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(DIMSEConnectionError, match=f"127.0.0.1:{port}"):
        DICOMQR("127.0.0.1", port, aec="NOBODY").find_studies(Query())
    assert time.monotonic() - started < 5


@pytest.fixture
def hung_pacs() -> Iterator[int]:
    """A pynetdicom SCP that accepts associations, then never answers C-FIND/C-GET."""
    release = threading.Event()

    def hang(event: Any) -> Iterator[Any]:
        release.wait(60)
        yield 0xC000, None

    scp = AE("HUNG")
    scp.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    scp.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    scp.add_supported_context("1.2.840.10008.5.1.4.1.1.2", scp_role=True, scu_role=True)
    server = scp.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_FIND, hang), (evt.EVT_C_GET, hang)],
    )
    try:
        yield int(server.server_address[1])
    finally:
        release.set()
        server.shutdown()


def test_a_silent_peer_hits_the_idle_timeout(hung_pacs: int, tmp_path: Path) -> None:
    idle = 1.0
    started = time.monotonic()
    with pytest.raises(DIMSEConnectionError, match="idle timeout") as caught:
        DICOMQR("127.0.0.1", hung_pacs, aec="HUNG", timeout=idle).find_studies(Query())
    assert idle * 0.9 < time.monotonic() - started < idle * 2 + 1
    assert "HUNG at 127.0.0.1" in str(caught.value)

    started = time.monotonic()
    downloader = DICOMQRGet(
        "127.0.0.1",
        hung_pacs,
        aec="HUNG",
        timeout=DIMSETimeouts(idle=idle, total=30),
        retry=NO_RETRY,  # one try: the time of one idle timeout
    )
    report = downloader.save_all(
        [StudyReference("1.2.3.4")], StorageDir(tmp_path), tmp_path
    )
    assert idle * 0.9 < time.monotonic() - started < idle * 2 + 1
    [failure] = report.failures
    assert "idle timeout" in str(failure.error) and failure.uids == ("1.2.3.4",)


def test_total_timeout(hung_pacs: int) -> None:
    started = time.monotonic()
    with pytest.raises(DIMSEConnectionError, match="total timeout"):
        DICOMQR(
            "127.0.0.1", hung_pacs, aec="HUNG", timeout=DIMSETimeouts(idle=30, total=1)
        ).find_studies(Query())
    assert time.monotonic() - started < 3


# -- the command line ---------------------------------------------------------------


def run(*args: str) -> Result:
    return CliRunner().invoke(
        main,
        list(args),
        env={"DICOMTROLLEY_PASSWORD": None, "DICOMTROLLEY_TOKEN": None},
    )


def test_cli_search_with_c_find(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies
) -> None:
    result = run(
        "search", "--protocol", "c-find", "--host", orthanc.host,
        "--port", str(orthanc.dicom_port), "--aec", orthanc.aet,
        "--patient-id", "DTR001", "--level", "series", "--csv",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    expected = [s for s in orthanc_studies.studies if s.patient_id == "DTR001"]
    assert {r["SeriesInstanceUID"] for r in rows} == {
        se.series_uid for s in expected for se in s.series
    }
    assert {r["PatientID"] for r in rows} == {"DTR001"}
    assert all(r["StudyDate"] and r["Modality"] for r in rows)


@pytest.mark.parametrize("protocol", ["c-get", "c-move"])
def test_cli_download(
    protocol: str,
    orthanc: OrthancServer,
    move_orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    store_port: int,
    tmp_path: Path,
) -> None:
    server = move_orthanc if protocol == "c-move" else orthanc
    spec = spec_of(orthanc_studies, "DTR003")
    result = run(
        "download", "--protocol", protocol, "--host", server.host,
        "--port", str(server.dicom_port), "--aec", server.aet,
        "--store-aet", STORE_AET, "--store-port", str(store_port),
        "--study-uid", spec.study_uid, "--layout", "flat", "-o", str(tmp_path),
        "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {p.name for p in files_in(tmp_path)} == {
        uid.replace(".", "_") for uid in uids_in(orthanc_studies, spec)
    }


def test_cli_dimse_needs_host_and_port(tmp_path: Path) -> None:
    result = run("search", "--protocol", "c-find", "--port", "104")
    assert result.exit_code == 2 and "--host" in result.output
    result = run(
        "download", "--protocol", "c-get", "--study-uid", "1.2", "-o", str(tmp_path)
    )
    assert result.exit_code == 2 and "--host and --port" in result.output
