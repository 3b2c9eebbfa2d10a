"""The ``dicomtrolley`` command line against a real Orthanc holding the demo studies."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner, Result

from dicomtrolley import synthetic
from dicomtrolley.cli.main import main
from tests.fakes import tree
from tests.orthanc_server import GeneratedStudies, OrthancServer

pytestmark = pytest.mark.orthanc

DEFAULT_LAYOUT = (
    "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
)


def run(*args: str, **env: str) -> Result:
    """Invoke the CLI in-process, without secrets from the outer environment."""
    environment: dict[str, str | None] = {
        "DICOMTROLLEY_PASSWORD": None,
        "DICOMTROLLEY_TOKEN": None,
        **env,
    }
    return CliRunner().invoke(main, list(args), env=environment)


def study_of(studies: GeneratedStudies, patient_id: str) -> synthetic.StudySpec:
    return next(s for s in studies.studies if s.patient_id == patient_id)


def instances_of(
    studies: GeneratedStudies, study_uid: str, series_uid: str | None = None
) -> list[synthetic.InstanceSpec]:
    return [
        spec
        for spec in studies.instances.values()
        if spec.study.study_uid == study_uid
        and (series_uid is None or spec.series.series_uid == series_uid)
    ]


def files_in(folder: Path) -> list[Path]:
    return sorted(path for path in tree(folder) if path.is_file())


def test_search_json_lists_every_study(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies
) -> None:
    result = run("search", "--url", orthanc.dicomweb_url, "--json")
    assert result.exit_code == 0, result.output
    found = {row["StudyInstanceUID"]: row for row in json.loads(result.stdout)}
    assert set(found) == {spec.study_uid for spec in orthanc_studies.studies}
    for spec in orthanc_studies.studies:
        row = found[spec.study_uid]
        assert row["PatientID"] == spec.patient_id
        assert row["StudyDate"] == spec.study_date
        assert row["StudyDescription"] == spec.description
        assert sorted(row["ModalitiesInStudy"]) == list(spec.modalities)
        assert row["NumberOfStudyRelatedInstances"] == spec.instance_count
    yamada = study_of(orthanc_studies, "DTR003")
    assert found[yamada.study_uid]["PatientName"] == yamada.patient_name


@pytest.mark.parametrize(
    ("options", "patients"),
    [
        (["--patient-id", "DTR001"], ["DTR001", "DTR001"]),
        (["--modalities", "MR"], ["DTR001", "DTR002"]),
        (["--modalities", "mr,OT"], ["DTR001", "DTR001", "DTR002"]),
        (
            ["--min-date", "2022-01-01", "--max-date", "20231231"],
            ["DTR001", "DTR002", "DTR003"],
        ),
        (["--patient-name", "Smith*"], ["DTR004"]),
    ],
)
def test_search_filters(
    orthanc: OrthancServer, options: list[str], patients: list[str]
) -> None:
    result = run("search", "--url", orthanc.dicomweb_url, "--csv", *options)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(row["PatientID"] for row in rows) == patients


def test_search_series_of_a_study(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies
) -> None:
    spec = study_of(orthanc_studies, "DTR001")
    result = run(
        "search", "--url", orthanc.dicomweb_url, "--study-uid", spec.study_uid,
        "--level", "series", "--csv",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    by_uid = {row["SeriesInstanceUID"]: row for row in rows}
    assert set(by_uid) == {series.series_uid for series in spec.series}
    for series in spec.series:
        row = by_uid[series.series_uid]
        assert row["Modality"] == series.modality
        assert row["SeriesDescription"] == series.description
        assert int(row["NumberOfSeriesRelatedInstances"]) == series.instance_count
        assert row["PatientID"] == "DTR001"


@pytest.mark.parametrize("protocol", ["wado-rs", "wado-uri"])
@pytest.mark.parametrize("patient_id", ["DTR004", "DTR003"])
def test_download_a_study(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    tmp_path: Path,
    protocol: str,
    patient_id: str,
) -> None:
    spec = study_of(orthanc_studies, patient_id)
    out = tmp_path / "out"
    result = run(
        "download", "--url", orthanc.dicomweb_url, "--study-uid", spec.study_uid,
        "-o", str(out), "--protocol", protocol, "--workers", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = instances_of(orthanc_studies, spec.study_uid)
    files = files_in(out)
    assert len(files) == spec.instance_count == len(expected)
    assert set(files) == {out / instance.relative_path for instance in expected}
    for instance in expected:
        path = out / instance.relative_path
        dataset = pydicom.dcmread(path)
        assert dataset.SOPInstanceUID == instance.sop_instance_uid
        assert dataset.StudyInstanceUID == spec.study_uid
        assert dataset.SeriesInstanceUID == instance.series.series_uid
        # transfer-syntax=* and WADO-URI answer the stored file byte for byte
        original = orthanc_studies.by_uid[instance.sop_instance_uid]
        assert path.read_bytes() == original.read_bytes()
    assert f"Saved {spec.instance_count} files" in result.stdout


def test_download_one_series_with_wado_uri_and_a_template(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, tmp_path: Path
) -> None:
    spec = study_of(orthanc_studies, "DTR001")
    series = spec.series[1]
    result = run(
        "download", "--url", orthanc.dicomweb_url, "--study-uid", spec.study_uid,
        "--series-uid", series.series_uid, "--level", "series", "-o", str(tmp_path),
        "--protocol", "wado-uri", "--wado-uri-url", orthanc.wado_url,
        "--layout", "{Modality}/{SeriesNumber}/{SOPInstanceUID}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = instances_of(orthanc_studies, spec.study_uid, series.series_uid)
    assert set(files_in(tmp_path)) == {
        tmp_path / series.modality / str(series.series_number) / i.sop_instance_uid
        for i in expected
    }


def test_download_again_with_uid_layout_skips_what_is_there(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, tmp_path: Path
) -> None:
    spec = study_of(orthanc_studies, "DTR004")
    args = [
        "download", "--url", orthanc.dicomweb_url, "--study-uid", spec.study_uid,
        "-o", str(tmp_path), "--protocol", "wado-uri", "--layout", "study",
    ]  # fmt: skip
    first = run(*args)
    assert first.exit_code == 0, first.output
    second = run(*args)
    assert second.exit_code == 0, second.output
    assert "Saved 0 files" in second.stdout
    assert f"skipped {spec.instance_count} already present" in second.stdout
    assert len(files_in(tmp_path)) == spec.instance_count


def test_download_needs_a_query_or_all(orthanc: OrthancServer, tmp_path: Path) -> None:
    result = run("download", "--url", orthanc.dicomweb_url, "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "--all" in result.stderr
    assert files_in(tmp_path) == []


def test_basic_auth(
    orthanc_factory: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    server = orthanc_factory(users={"alice": "wonder-land"})
    refused = run("search", "--url", server.dicomweb_url, "--csv")
    assert refused.exit_code == 1
    assert "401" in refused.stderr
    accepted = run(
        "search", "--url", server.dicomweb_url, "--csv", "--user", "alice",
        DICOMTROLLEY_PASSWORD="wonder-land",
    )  # fmt: skip
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout.startswith("PatientID,")
    assert "wonder-land" not in accepted.output


def _script() -> Path:
    return Path(sys.executable).parent / "dicomtrolley"


def test_module_entry_point() -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "dicomtrolley.cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    assert "download" in answer.stdout and "search" in answer.stdout


def test_console_script_searches_orthanc(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies
) -> None:
    script = _script()
    if not script.exists():
        pytest.skip(f"console script not installed at {script}")
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("DICOMTROLLEY_")
    }
    answer = subprocess.run(
        [str(script), "search", "--url", orthanc.dicomweb_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )
    assert answer.returncode == 0, answer.stderr
    uids = {row["StudyInstanceUID"] for row in json.loads(answer.stdout)}
    assert uids == {spec.study_uid for spec in orthanc_studies.studies}
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0
    assert "dicomtrolley" in version.stdout
