"""Resume against a real PACS: C-GET from Orthanc, study-level search results,
the CLI's default layout (``{PatientID}/...``).

What Orthanc sends over C-GET is what dicomtrolley writes, so ``report.saved``
counts the instances that came: a re-run must get exactly the missing ones.
The same holds for ``dicomtrolley batch`` (issue 11): batch files of each kind
then a re-run that saves nothing, a batch stopped with SIGKILL or SIGINT then
run again (the manifest's ``saved`` lines count what came), and WADO-RS
refused for good falling back to C-GET.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from dicomtrolley.core import Query
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet
from dicomtrolley.files import is_temp_name
from dicomtrolley.manifest import read_manifest
from dicomtrolley.storage import TemplateStorage, verify_dicom_file
from dicomtrolley.trolley import Trolley
from tests.emulator.transfer_helpers import (
    ENV,
    cli_command,
    run_cli,
    temp_files,
    wait_for_lines,
)
from tests.fakes import tree
from tests.orthanc_server import GeneratedStudies, OrthancServer

LAYOUT = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"


def on_disk(folder: Path) -> dict[str, Path]:
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
        for p in tree(folder)
        if p.is_file() and not is_temp_name(p.name)
    }


def test_c_get_rerun_fetches_only_what_is_missing(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, tmp_path: Path
) -> None:
    qr = DICOMQR(orthanc.host, orthanc.dicom_port, aec=orthanc.aet, timeout=20)
    getter = DICOMQRGet(orthanc.host, orthanc.dicom_port, aec=orthanc.aet, timeout=20)
    trolley = Trolley(getter, qr, storage=TemplateStorage(tmp_path, LAYOUT))
    studies = trolley.find_studies(Query(PatientID="DTR001"))
    assert studies and all(not study.series for study in studies)  # study level
    first = trolley.download(studies, tmp_path, use_async=True, max_workers=2)
    files = on_disk(tmp_path)
    assert len(first.saved) == len(files) > 20
    expected = set(files)

    again = trolley.download(studies, tmp_path, use_async=True, max_workers=2)
    assert not again.saved and len(again.skipped) == len(expected)

    rng = random.Random(5)
    gone = sorted(rng.sample(sorted(files), 6))
    for uid in gone[:5]:
        files[uid].unlink()
    files[gone[5]].write_bytes(files[gone[5]].read_bytes()[:-64])  # truncated
    third = trolley.download(studies, tmp_path, use_async=True, max_workers=2)
    assert (
        sorted(
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in third.saved
        )
        == gone
    )
    assert len(third.skipped) == len(expected) - len(gone)
    final = on_disk(tmp_path)
    assert set(final) == expected
    for path in final.values():
        verify_dicom_file(path)
    assert not [p for p in tree(tmp_path) if is_temp_name(p.name)]
    assert {uid for uid in final} <= set(orthanc_studies.by_uid)


# -- dicomtrolley batch against Orthanc ---------------------------------------------


def _batch(
    orthanc: OrthancServer, path: Path, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        cli_command(
            "batch",
            str(path),
            "--url",
            orthanc.dicomweb_url,
            "-o",
            str(out),
            "--no-progress",
            *extra,
        )
    )


def _saved(out: Path) -> Counter[str]:
    return Counter(
        str(r["instance_uid"])
        for r in read_manifest(out / "manifest.jsonl")
        if r["status"] == "saved"
    )


def _uids_of(orthanc_studies: GeneratedStudies, *study_uids: str) -> set[str]:
    return {
        uid
        for uid, spec in orthanc_studies.instances.items()
        if spec.study.study_uid in study_uids
    }


def test_batch_files_of_each_kind_then_a_rerun_fetches_nothing(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, tmp_path: Path
) -> None:
    studies = orthanc_studies.studies
    out = tmp_path / "out"
    # CSV with Excel's semicolons, a modality column and an unknown accession
    csv_file = tmp_path / "cohort.csv"
    csv_file.write_text(
        "Accession No;Modality\n"
        f"{studies[0].accession_number};{studies[0].modalities[0]}\n"
        "NOPE;\n",
        encoding="utf-8-sig",
    )
    first = _batch(orthanc, csv_file, out)
    assert first.returncode == 1  # NOPE
    assert "row 2 (line 3): accession number NOPE: no study found" in first.stderr
    # TSV of patient IDs with a date range; one study UID a line
    tsv_file = tmp_path / "patients.tsv"
    tsv_file.write_text(f"PatientID\tStudyDate\n{studies[1].patient_id}\t19000101-\n")
    assert _batch(orthanc, tsv_file, out).returncode == 0
    lines_file = tmp_path / "uids.txt"
    lines_file.write_text(f"{studies[-1].study_uid}\n")
    dry = _batch(orthanc, lines_file, out, "--dry-run", "--format", "json")
    assert dry.returncode == 0, dry.stderr
    (row,) = json.loads(dry.stdout)
    assert row["study_uids"] == [studies[-1].study_uid] and row["instances"] > 0
    assert _batch(orthanc, lines_file, out).returncode == 0

    patients = {studies[1].patient_id}
    wanted = {studies[0].study_uid, studies[-1].study_uid} | {
        s.study_uid for s in studies if s.patient_id in patients
    }
    expected = _uids_of(orthanc_studies, *wanted)
    files = on_disk(out)
    assert set(files) == expected
    for file in files.values():
        verify_dicom_file(file)
    assert set(_saved(out).values()) == {1}
    for path in (csv_file, tsv_file, lines_file):
        again = _batch(orthanc, path, out)
        assert "Saved 0 files" in again.stdout, again.stdout
    assert set(_saved(out).values()) == {1}


@pytest.mark.parametrize(("sig", "seed"), [(signal.SIGKILL, 21), (signal.SIGINT, 22)])
def test_batch_stopped_then_rerun_against_orthanc(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    tmp_path: Path,
    sig: signal.Signals,
    seed: int,
) -> None:
    """Stopped after a seeded random number of saved files, then run again:
    every instance there and whole, the re-run saving only what was missing
    (what Orthanc sends over WADO-RS is what is written), no temporary file."""
    rng = random.Random(seed)
    path = tmp_path / "cohort.csv"
    path.write_text(
        "AccessionNumber\n"
        + "".join(f"{s.accession_number}\n" for s in orthanc_studies.studies)
    )
    out = tmp_path / "out"
    command = cli_command(
        "batch", str(path), "--url", orthanc.dicomweb_url, "-o", str(out),
        "--workers", "1", "--protocol", rng.choice(["wado-rs", "wado-uri"]),
    )  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
    )
    try:
        wait_for_lines(out / "manifest.jsonl", rng.randint(3, 60), process)
        if process.poll() is None:
            process.send_signal(sig)
        process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode in (0, 130 if sig == signal.SIGINT else -sig)
    before = on_disk(out)
    for file in before.values():
        verify_dicom_file(file)
    saved_before = set(_saved(out))
    again = run_cli(command)
    assert again.returncode == 0, again.stderr
    every = set(orthanc_studies.instances)
    files = on_disk(out)
    assert set(files) == every
    for file in files.values():
        verify_dicom_file(file)
    rerun_saved = set(_saved(out)) - saved_before
    assert rerun_saved == every - set(before)  # only the missing ones came
    assert set(_saved(out).values()) == {1}
    assert not temp_files(out)


def test_batch_falls_back_to_c_get_when_wado_rs_is_refused(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, tmp_path: Path
) -> None:
    """WADO-RS at a root where Orthanc answers 404 (refused for good): each
    study comes over C-GET, and the manifest says so."""
    study = orthanc_studies.studies[0]
    path = tmp_path / "one.csv"
    path.write_text(f"StudyInstanceUID\n{study.study_uid}\n")
    out = tmp_path / "out"
    result = run_cli(
        cli_command(
            "batch",
            str(path),
            "--qido-url",
            orthanc.dicomweb_url,
            "--url",
            f"{orthanc.http_url}/no-such-root",
            "-o",
            str(out),
            "--protocol",
            "wado-rs",
            "--protocol",
            "c-get",
            "--host",
            orthanc.host,
            "--port",
            str(orthanc.dicom_port),
            "--aec",
            orthanc.aet,
            "--no-progress",
        )
    )
    assert result.returncode == 0, result.stderr
    assert f"Study {study.study_uid} came over C-GET" in result.stderr
    saved = [r for r in read_manifest(out / "manifest.jsonl") if r["status"] == "saved"]
    assert {r["protocol"] for r in saved} == {"C-GET"}
    assert {r["instance_uid"] for r in saved} == _uids_of(
        orthanc_studies, study.study_uid
    )
