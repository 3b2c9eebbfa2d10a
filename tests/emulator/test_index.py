"""The index of the data folder: what it reads, skips and notices while running."""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley.emulator import DicomIndex, Emulator
from dicomtrolley.emulator.scan import summarise
from dicomtrolley.synthetic import (
    SeriesSpec,
    StudySpec,
    instance_specs,
    make_dataset,
    synthetic_uid,
    write_dataset,
    write_studies,
)
from tests.emulator.conftest import PASSWORD, USER, DemoData

AUTH = (USER, PASSWORD)


def small_study(key: str, count: int = 3, patient_id: str = "IDX1") -> StudySpec:
    series = SeriesSpec(synthetic_uid("idx-series", key), 1, "CT", "Axial", count)
    return StudySpec(
        patient_id=patient_id,
        patient_name="Index^Test",
        study_uid=synthetic_uid("idx-study", key),
        description=f"Study {key}",
        series=(series,),
    )


def instance_count(emulator: Emulator) -> int:
    response = requests.get(f"{emulator.dicomweb_url}/instances", auth=AUTH)
    return 0 if response.status_code == 204 else len(response.json())


def test_index_of_the_demo_data(demo: DemoData) -> None:
    index = DicomIndex(demo.root)
    report = index.refresh()
    assert report is not None
    assert (report.added, report.changed, report.removed, report.skipped) == (
        105,
        0,
        0,
        0,
    )
    stats = index.stats()
    assert (stats.patients, stats.studies, stats.series, stats.instances) == (
        4,
        5,
        11,
        105,
    )
    assert index.refresh() is None  # throttled: walked less than a second ago
    assert index.refresh(force=True) == type(report)()  # nothing changed
    uid, path = next(iter(demo.by_uid.items()))
    record = index.instance(uid)
    assert record is not None
    assert record.path == path.resolve()
    assert record.size == path.stat().st_size
    assert record.transfer_syntax == pydicom.dcmread(path).file_meta.TransferSyntaxUID
    assert index.instance("1.2.3") is None
    index.close()


def test_new_changed_and_deleted_files_are_noticed(
    tmp_path: Path, make_emulator: Callable[..., Emulator]
) -> None:
    first = small_study("a")
    paths = write_studies(tmp_path, [first])
    emulator = make_emulator(tmp_path, rescan_interval=0)
    assert instance_count(emulator) == 3

    second = small_study("b", count=2, patient_id="IDX2")
    new_paths = write_studies(tmp_path / "elsewhere" / "deeper", [second])
    assert instance_count(emulator) == 5
    uid = next(instance_specs([second])).sop_instance_uid
    response = requests.get(
        emulator.wado_uri_url,
        params={
            "requestType": "WADO",
            "studyUID": second.study_uid,
            "seriesUID": second.series[0].series_uid,
            "objectUID": uid,
            "contentType": "application/dicom",
        },
        auth=AUTH,
    )
    assert response.content == new_paths[0].read_bytes()

    paths[0].unlink()
    assert instance_count(emulator) == 4
    shutil.rmtree(tmp_path / "elsewhere")
    assert instance_count(emulator) == 2

    # a changed file: its study gets a new MINT version and the new values
    dataset = pydicom.dcmread(paths[1])
    dataset.StudyDescription = "Changed description"
    write_dataset(paths[1], dataset)
    mint = requests.get(
        f"{emulator.mint_url}/studies",
        params={"QueryLevel": "STUDY", "IncludeFields": "StudyDescription"},
        auth=AUTH,
    )
    assert b'version="3"' in mint.content  # 1, then a file removed, then one changed
    assert b'val="Changed description"' in mint.content


def test_rescans_are_throttled(
    tmp_path: Path, make_emulator: Callable[..., Emulator]
) -> None:
    write_studies(tmp_path, [small_study("a")])
    emulator = make_emulator(tmp_path, rescan_interval=None)
    write_studies(tmp_path, [small_study("b", patient_id="IDX2")])
    assert instance_count(emulator) == 3  # not rescanned
    emulator.index.refresh(force=True)
    assert instance_count(emulator) == 6


def test_non_dicom_files_are_skipped_with_one_warning(
    tmp_path: Path,
    make_emulator: Callable[..., Emulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_studies(tmp_path, [small_study("a")])
    (tmp_path / "notes.txt").write_text("not DICOM")
    (tmp_path / "truncated.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    (tmp_path / ".hidden.dcm.tmp").write_bytes(b"whatever")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "object").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="trolley.emulator"):
        emulator = make_emulator(tmp_path, rescan_interval=0)
        assert instance_count(emulator) == 3
        assert instance_count(emulator) == 3
    skipped = [r.getMessage() for r in caplog.records if "Skipped" in r.getMessage()]
    assert len(skipped) == 2, skipped
    assert any("notes.txt: not a DICOM file" in message for message in skipped)
    assert any("truncated.dcm" in message for message in skipped)
    assert not any(".hidden" in message or ".git" in message for message in skipped)


def test_files_without_uids_or_with_bad_uids_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    instance = next(instance_specs([small_study("a")]))
    dataset = make_dataset(instance)
    del dataset.SeriesInstanceUID
    write_dataset(tmp_path / "no-series.dcm", dataset)
    dataset = make_dataset(instance)
    with warnings.catch_warnings():  # pydicom warns about the invalid UID
        warnings.simplefilter("ignore")
        dataset.StudyInstanceUID = "1.2.abc"
        write_dataset(tmp_path / "bad-study.dcm", dataset)
    index = DicomIndex(tmp_path)
    with caplog.at_level(logging.WARNING, logger="trolley.emulator"):
        report = index.refresh()
    assert report is not None and report.skipped == 2
    assert "no Series Instance UID" in caplog.text
    assert "'1.2.abc' is not digits and dots" in caplog.text
    assert index.stats().instances == 0


def test_duplicate_sop_instance_uids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (path, *_) = write_studies(tmp_path / "a", [small_study("a")])
    shutil.copy(path, tmp_path / "copy.dcm")
    index = DicomIndex(tmp_path)
    with caplog.at_level(logging.WARNING, logger="trolley.emulator"):
        index.refresh()
    assert index.stats().instances == 3
    assert "is already indexed from" in caplog.text


def test_a_file_changed_behind_the_index_is_503_then_served(
    tmp_path: Path, make_emulator: Callable[..., Emulator]
) -> None:
    study = small_study("a")
    (path, *_) = write_studies(tmp_path, [study])
    emulator = make_emulator(tmp_path, rescan_interval=None)
    with path.open("ab") as stream:
        stream.write(b"\0\0")  # one more (empty) byte pair: a different size
    params = {
        "requestType": "WADO",
        "studyUID": study.study_uid,
        "seriesUID": study.series[0].series_uid,
        "objectUID": next(instance_specs([study])).sop_instance_uid,
        "contentType": "application/dicom",
    }
    stale = requests.get(emulator.wado_uri_url, params=params, auth=AUTH)
    assert stale.status_code == 503
    assert stale.headers["Retry-After"] == "1"
    fresh = requests.get(emulator.wado_uri_url, params=params, auth=AUTH)
    assert fresh.status_code == 200
    assert fresh.content == path.read_bytes()


def test_missing_folder_is_an_empty_index(tmp_path: Path) -> None:
    index = DicomIndex(tmp_path / "missing")
    index.refresh()
    assert index.stats().instances == 0


def test_summaries() -> None:
    def header(series: str, modality: str, manufacturer: str) -> dict[str, object]:
        return {
            "0020000E": {"vr": "UI", "Value": [series]},
            "00080060": {"vr": "CS", "Value": [modality]},
            "00080070": {"vr": "LO", "Value": [manufacturer]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]},
            "00100030": {"vr": "DA"},
        }

    study, series = summarise(
        [
            ("1.1", header("1.1", "CT", "X")),
            ("1.1", header("1.1", "CT", "X")),
            ("1.2", header("1.2", "MR", "X")),
            ("1.2", header("1.2", "MR", "Y")),
        ]
    )
    assert study["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert study["00201206"]["Value"] == [2]
    assert study["00201208"]["Value"] == [4]
    assert study["00100030"] == {"vr": "DA"}  # present without a value
    assert "00080060" not in study
    assert series["1.1"]["00080070"]["Value"] == ["X"]  # all agree: promoted
    assert "00080070" not in series["1.2"]  # they differ: not promoted
    assert series["1.2"]["00201209"]["Value"] == [2]


def test_requests_do_not_wait_for_a_walk_under_way(demo: DemoData) -> None:
    index = DicomIndex(demo.root, rescan_interval=0)
    index.refresh()
    with index._scan_lock:  # as if another thread were walking the folder
        assert index.refresh() is None
    assert index.refresh() is not None
