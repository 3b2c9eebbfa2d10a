"""``batch --dask local:3`` against a real Orthanc: the files and manifest of the
single-machine run, WADO-RS and C-GET (issue 13), and de-identified (issue 14)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dicomtrolley.cli.main import main
from dicomtrolley.deid import KEY_ENV
from dicomtrolley.synthetic import phi_studies, write_studies
from tests.dask_cluster import manifest_facts, saved_per_instance
from tests.deid_checks import KEY, assert_no_source_data, flagged, mapping, output_files
from tests.emulator.transfer_helpers import dicom_files, temp_files
from tests.orthanc_server import GeneratedStudies, OrthancServer

pytestmark = pytest.mark.orthanc

PHI = phi_studies(2, 2, key="dask-orthanc")


def run(*args: str) -> Result:
    return CliRunner().invoke(
        main,
        list(args),
        env={"DICOMTROLLEY_PASSWORD": None, "DICOMTROLLEY_TOKEN": None},
    )


@pytest.mark.parametrize("protocol", ["wado-rs", "c-get"])
def test_batch_on_three_dask_workers_matches_one_machine(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    tmp_path: Path,
    protocol: str,
) -> None:
    studies = orthanc_studies.studies[:4]
    batch_file = tmp_path / "cohort.txt"
    batch_file.write_text("".join(f"{s.study_uid}\n" for s in studies))
    if protocol == "c-get":
        where = ["--host", orthanc.host, "--port", str(orthanc.dicom_port)]
        where += ["--aec", orthanc.aet]
    else:
        where = ["--url", orthanc.dicomweb_url]
    options = ["--protocol", protocol, *where]
    single, spread = tmp_path / "single", tmp_path / "spread"
    alone = run("batch", str(batch_file), "-o", str(single), *options)
    assert alone.exit_code == 0, alone.output
    result = run(
        "batch", str(batch_file), "-o", str(spread), *options, "--dask", "local:3"
    )
    assert result.exit_code == 0, result.output
    files = dicom_files(single)
    expected = {uid for s in studies for uid in orthanc_studies.instances
                if orthanc_studies.instances[uid].study.study_uid == s.study_uid}  # fmt: skip
    assert set(files) == expected
    assert dicom_files(spread) == files
    assert manifest_facts(spread) == manifest_facts(single)
    assert set(saved_per_instance(spread).values()) == {1}
    assert not temp_files(spread)


def test_deidentified_batch_on_three_dask_workers_matches_one_machine(
    orthanc_factory: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    """C-GET, whose workers receive into memory: the single machine's files,
    paths and mapping, nothing identified on disk."""
    orthanc = orthanc_factory()
    answers = orthanc.upload(write_studies(tmp_path / "source", PHI))
    assert all(a.get("Status") == "Success" for a in answers), answers[:2]
    batch_file = tmp_path / "cohort.txt"
    batch_file.write_text("".join(f"{s.study_uid}\n" for s in PHI))
    options = ["--protocol", "c-get", "--host", orthanc.host, "--aec", orthanc.aet]
    options += ["--port", str(orthanc.dicom_port), "--deidentify", "basic"]
    outs = [tmp_path / "single", tmp_path / "spread"]
    for out, dask in zip(outs, [[], ["--dask", "local:3"]], strict=True):
        result = CliRunner().invoke(
            main,
            ["batch", str(batch_file), "-o", str(out), *options, *dask],
            env={KEY_ENV: KEY},
        )
        assert result.exit_code == 0, result.output
        assert_no_source_data(out, PHI)
    single, spread = outs
    assert len(dicom_files(single)) == sum(s.instance_count for s in PHI)
    assert dicom_files(spread) == dicom_files(single)
    assert output_files(spread) == [
        spread / p.relative_to(single) for p in output_files(single)
    ]
    assert sorted(mapping(spread), key=str) == sorted(mapping(single), key=str)
    assert flagged(spread) == flagged(single) != set()
    assert not temp_files(spread)
