"""Resume: a second download into the same folder fetches only what is missing.

Against the emulator, counting on the server side what was retrieved: the
WADO-RS/WADO-URI requests (from the emulator's request log) and the instances
each C-GET sent (a DIMSE service that keeps them). Library and CLI, the
default layout (``{PatientID}/...``), study-level search results, a damaged
file, a deleted index, and ``dicomtrolley download`` subprocesses stopped with
SIGINT or SIGKILL at seeded random points, then run again.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from dicomtrolley.catalog import STATE_FOLDER, Catalog
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet
from dicomtrolley.emulator import Emulator
from dicomtrolley.manifest import Manifest, read_manifest
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import (
    StorageDir,
    TemplateStorage,
)
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.emulator.conftest import PASSWORD, USER, DemoData
from tests.emulator.transfer_helpers import (
    CountingDimse,
    RequestLog,
    assert_complete,
    cli_command,
    counting_emulator,
    on_disk,
    run_cli,
    stop_at_retrieve,
)

HOST = "127.0.0.1"
LAYOUT = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"


@pytest.fixture(scope="module")
def served(demo: DemoData) -> Iterator[tuple[Emulator, RequestLog]]:
    with counting_emulator(demo.root) as running:
        yield running


@pytest.fixture
def emulator(served: tuple[Emulator, RequestLog]) -> Emulator:
    return served[0]


@pytest.fixture
def log(served: tuple[Emulator, RequestLog]) -> RequestLog:
    served[1].clear()
    return served[1]


@pytest.fixture
def session(emulator: Emulator) -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.auth = (USER, PASSWORD)
        yield http


def study_uids(demo: DemoData, *patients: str) -> list[str]:
    return [s.study_uid for s in demo.studies if s.patient_id in patients]


def expected_files(demo: DemoData, *patients: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for uid in study_uids(demo, *patients):
        found.update(demo.files_of(uid))
    return found


def wado_trolley(session: requests.Session, emulator: Emulator, out: Path) -> Trolley:
    return Trolley(
        WadoRS(session, emulator.dicomweb_url),
        QidoRS(session, emulator.dicomweb_url),
        storage=TemplateStorage(out, LAYOUT),
    )


# --------------------------------------------------------------------------- #
# Library
# --------------------------------------------------------------------------- #


def test_study_level_results_rerun_fetches_nothing(
    session: requests.Session,
    emulator: Emulator,
    demo: DemoData,
    log: RequestLog,
    tmp_path: Path,
) -> None:
    trolley = wado_trolley(session, emulator, tmp_path)
    studies = trolley.find_studies(Query(PatientID="DTR001"))
    assert all(not study.series for study in studies)  # study level only
    expected = expected_files(demo, "DTR001")
    first = trolley.download(studies, tmp_path, use_async=True, max_workers=3)
    assert len(first.saved) == len(expected) and not first.skipped
    assert sorted(log.retrieved(demo)) == sorted(expected)
    log.clear()
    manifest = Manifest.in_folder(tmp_path)
    again = trolley.download(
        studies, tmp_path, use_async=True, manifest=manifest, row={"line": 7}
    )
    assert log.retrieved(demo) == []  # only the instance lists were searched
    assert not again.saved and len(again.skipped) == len(expected)
    assert_complete(tmp_path, expected)
    lines = list(read_manifest(manifest.path))
    assert {line["status"] for line in lines} == {"skipped"}
    assert {line["instance_uid"] for line in lines} == set(expected)
    assert all(line["row"] == {"line": 7} for line in lines)
    assert all(line["protocol"] == "WADO-RS" for line in lines)


def test_partly_present_study_fetches_the_missing_and_damaged_only(
    session: requests.Session,
    emulator: Emulator,
    demo: DemoData,
    log: RequestLog,
    tmp_path: Path,
) -> None:
    trolley = wado_trolley(session, emulator, tmp_path)
    studies = trolley.find_studies(Query(PatientID="DTR002"))
    expected = expected_files(demo, "DTR002")
    trolley.download(studies, tmp_path)
    files = on_disk(tmp_path)
    rng = random.Random(11)
    removed = rng.sample(sorted(files), 5)
    for uid in removed[:4]:
        files[uid].unlink()
    damaged = files[removed[4]]
    damaged.write_bytes(damaged.read_bytes()[:-200])  # truncated
    log.clear()
    report = trolley.download(studies, tmp_path)
    assert sorted(log.retrieved(demo)) == sorted(removed)  # each once
    assert len(report.saved) == 5 and len(report.skipped) == len(expected) - 5
    assert_complete(tmp_path, expected)


def test_deleted_index_is_rebuilt_and_nothing_fetched(
    session: requests.Session,
    emulator: Emulator,
    demo: DemoData,
    log: RequestLog,
    tmp_path: Path,
) -> None:
    trolley = wado_trolley(session, emulator, tmp_path)
    studies = trolley.find_studies(Query(PatientID="DTR004"))
    trolley.download(studies, tmp_path)
    Catalog.for_folder(tmp_path).close()
    for path in (tmp_path / STATE_FOLDER).iterdir():
        path.unlink()
    log.clear()
    report = trolley.download(studies, tmp_path)
    assert log.retrieved(demo) == [] and not report.saved
    assert len(report.skipped) == len(expected_files(demo, "DTR004"))


def test_wado_uri_rerun_with_the_default_layout(
    session: requests.Session,
    emulator: Emulator,
    demo: DemoData,
    log: RequestLog,
    tmp_path: Path,
) -> None:
    trolley = Trolley(
        WadoURI(session, emulator.wado_uri_url),
        QidoRS(session, emulator.dicomweb_url),
        storage=TemplateStorage(tmp_path, LAYOUT),
    )
    studies = trolley.find_studies(Query(PatientID="DTR004"))
    trolley.download(studies, tmp_path, use_async=True)
    expected = expected_files(demo, "DTR004")
    assert sorted(log.retrieved(demo)) == sorted(expected)
    log.clear()
    report = trolley.download(studies, tmp_path, use_async=True)
    assert log.retrieved(demo) == [] and len(report.skipped) == len(expected)


def test_c_get_study_level_rerun_asks_only_for_missing_instances(
    emulator: Emulator, demo: DemoData, tmp_path: Path
) -> None:
    service = emulator.dimse
    assert isinstance(service, CountingDimse)
    searcher = DICOMQR(HOST, service.port, "TROLLEY", service.ae_title)
    trolley = Trolley(
        DICOMQRGet(HOST, service.port, "TROLLEY", service.ae_title),
        searcher,
        storage=TemplateStorage(tmp_path, LAYOUT),
    )
    studies = trolley.find_studies(Query(PatientID="DTR003"))
    expected = expected_files(demo, "DTR003")
    service.sent.clear()
    trolley.download(studies, tmp_path)
    assert sorted(service.sent) == sorted(expected)
    files = on_disk(tmp_path)
    gone = sorted(files)[:3]
    for uid in gone:
        files[uid].unlink()
    service.sent.clear()
    report = trolley.download(studies, tmp_path)
    assert sorted(service.sent) == gone
    assert len(report.skipped) == len(expected) - 3
    service.sent.clear()
    assert not trolley.download(studies, tmp_path).saved
    assert service.sent == []
    assert_complete(tmp_path, expected, exact=False)


def test_another_layout_in_the_same_folder_saves_its_own_copy(
    session: requests.Session,
    emulator: Emulator,
    demo: DemoData,
    tmp_path: Path,
) -> None:
    studies = wado_trolley(session, emulator, tmp_path).find_studies(
        Query(PatientID="DTR004", query_level=QueryLevels.INSTANCE)
    )
    wado_trolley(session, emulator, tmp_path).download(studies, tmp_path)
    flat = Trolley(
        WadoRS(session, emulator.dicomweb_url),
        QidoRS(session, emulator.dicomweb_url),
        storage=TemplateStorage(tmp_path, "flat/{SOPInstanceUID}.dcm"),
    )
    report = flat.download(studies, tmp_path)
    assert len(report.saved) == len(expected_files(demo, "DTR004"))
    assert not flat.download(studies, tmp_path).saved


# --------------------------------------------------------------------------- #
# CLI, and stopping it
# --------------------------------------------------------------------------- #


def cli(emulator: Emulator, out: Path, *extra: str) -> list[str]:
    return cli_command(
        "download",
        "--url",
        emulator.dicomweb_url,
        "--user",
        USER,
        "--patient-id",
        "DTR001",
        "--patient-id",
        "DTR002",
        "-o",
        str(out),
        "--no-progress",
        *extra,
    )


def test_cli_rerun_with_the_default_layout_fetches_nothing(
    emulator: Emulator, demo: DemoData, log: RequestLog, tmp_path: Path
) -> None:
    expected = expected_files(demo, "DTR001", "DTR002")
    first = run_cli(cli(emulator, tmp_path, "--manifest-csv", str(tmp_path / "m.csv")))
    assert first.returncode == 0, first.stderr
    assert sorted(log.retrieved(demo)) == sorted(expected)
    log.clear()
    second = run_cli(cli(emulator, tmp_path))
    assert second.returncode == 0, second.stderr
    assert log.retrieved(demo) == []
    assert f"skipped {len(expected)} already present" in second.stdout
    assert_complete(tmp_path, expected)
    lines = list(read_manifest(tmp_path / "manifest.jsonl"))
    assert [line["status"] for line in lines].count("saved") == len(expected)
    assert [line["status"] for line in lines].count("skipped") == len(expected)
    assert (tmp_path / "m.csv").read_text().count("\n") == len(expected) + 1
    report = run_cli(cli_command("report", str(tmp_path), "--json"))
    summary = json.loads(report.stdout)
    assert summary["instances"] == len(expected) and summary["studies"] == 3
    assert summary["saved"] == summary["skipped"] == len(expected)
    assert summary["failures"] == [] and report.returncode == 0


@pytest.mark.parametrize(
    ("sig", "seed"),
    [
        (signal.SIGKILL, 1),
        (signal.SIGKILL, 2),
        (signal.SIGKILL, 3),
        (signal.SIGINT, 4),
        (signal.SIGINT, 5),
        (signal.SIGINT, 6),
    ],
)
def test_stopped_download_then_rerun(
    emulator: Emulator,
    demo: DemoData,
    log: RequestLog,
    tmp_path: Path,
    sig: signal.Signals,
    seed: int,
) -> None:
    """Stopped at a seeded random point of the transfers, then run again: every
    instance present and intact, none saved before the stop fetched again,
    no temporary file left."""
    expected = expected_files(demo, "DTR001", "DTR002")
    rng = random.Random(seed)
    protocol = rng.choice(["wado-rs", "wado-uri"])
    # retrieve requests before the signal: WADO-RS asks per series (8 here),
    # WADO-URI per instance
    stop_after = rng.randint(1, 6 if protocol == "wado-rs" else 60)
    delay = rng.uniform(0.0, 0.05)
    args = cli(emulator, tmp_path, "--protocol", protocol, "--workers", "2")
    process, fired = stop_at_retrieve(args, log, sig, stop_after, delay)
    assert fired
    # 0: a late signal found every transfer done (after SIGINT those under way end)
    assert process.returncode in (0, 130 if sig == signal.SIGINT else -sig)
    time.sleep(0.05)
    before = on_disk(tmp_path)
    for uid, path in before.items():
        assert path.read_bytes() == expected[uid]  # what is there is complete
    # (after SIGINT the transfers under way end: a late signal may find all done)
    log.clear()
    again = run_cli(cli(emulator, tmp_path, "--protocol", protocol))
    assert again.returncode == 0, again.stderr
    fetched = log.retrieved(demo)
    assert not set(fetched) & set(before), "an instance saved before was fetched again"
    assert len(fetched) == len(set(fetched))
    assert sorted(fetched) == sorted(set(expected) - set(before))
    assert_complete(tmp_path, expected)


class Stamping(StorageDir):
    """A 4.1.0-style subclass: changes each dataset in save()."""

    def save(self, dataset: Any, path: str | Path | None = None) -> Path:
        dataset.InstitutionName = "Stamped"
        return super().save(dataset, path)


def test_a_4_1_0_storage_subclass_resumes_too(
    session: requests.Session,
    emulator: Emulator,
    demo: DemoData,
    log: RequestLog,
    tmp_path: Path,
) -> None:
    trolley = Trolley(
        WadoRS(session, emulator.dicomweb_url),
        QidoRS(session, emulator.dicomweb_url),
        storage=Stamping(tmp_path),
    )
    studies = trolley.find_studies(Query(PatientID="DTR004"))
    expected = expected_files(demo, "DTR004")
    assert len(trolley.download(studies, tmp_path).saved) == len(expected)
    files = on_disk(tmp_path)
    assert {str(pydicom.dcmread(p).InstitutionName) for p in files.values()} == {
        "Stamped"
    }
    gone = sorted(files)[0]
    files[gone].unlink()
    log.clear()
    report = trolley.download(studies, tmp_path)
    assert log.retrieved(demo) == [gone]
    assert len(report.skipped) == len(expected) - 1


def test_a_study_the_index_proves_complete_is_not_searched_again(
    session: requests.Session,
    emulator: Emulator,
    demo: DemoData,
    log: RequestLog,
    tmp_path: Path,
) -> None:
    """Study-level results say how many instances each study has; when the index
    holds that many (this layout), the re-run sends no instance-level search.
    A count that differs (the study changed on the server) is searched again,
    and a file gone from disk is still fetched again."""
    trolley = wado_trolley(session, emulator, tmp_path)
    studies = trolley.find_studies(Query(PatientID="DTR001"))
    assert all(s.data.get("NumberOfStudyRelatedInstances") for s in studies)
    expected = expected_files(demo, "DTR001")
    trolley.download(studies, tmp_path)
    log.clear()
    again = trolley.download(studies, tmp_path)
    assert log.lines == []  # not one request
    assert not again.saved and len(again.skipped) == len(expected)

    grown = studies[0].model_copy(deep=True)
    count = int(grown.data.NumberOfStudyRelatedInstances)
    grown.data.NumberOfStudyRelatedInstances = count + 1
    log.clear()
    assert not trolley.download([grown], tmp_path).saved
    assert len(log.lines) == 1 and grown.uid in log.lines[0]  # its instance list
    assert log.retrieved(demo) == []

    files = on_disk(tmp_path)
    gone = sorted(files)[0]
    files[gone].unlink()
    log.clear()
    report = trolley.download(studies, tmp_path)
    assert log.retrieved(demo) == [gone]
    assert len(report.saved) == 1
    assert_complete(tmp_path, expected)
