"""De-identified batches on a Dask LocalCluster of process workers, against the emulator.

``batch --dask local:3 --deidentify basic`` writes byte for byte the files,
paths and mapping of the single-machine run with the same key; a folder of
another key is refused before any worker starts; a worker killed with SIGKILL
mid-study leaves no identified byte and no file twice; a worker without the
key, or with another, stops the run with one error and writes nothing.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from distributed import Client

from dicomtrolley.catalog import STATE_FOLDER
from dicomtrolley.cli.main import main
from dicomtrolley.deid import KEY_ENV, Deidentifier, read_folder_state
from dicomtrolley.deid_records import read_flags
from dicomtrolley.distributed import BatchPlan, ProfileConnector, run_batch
from dicomtrolley.emulator import Emulator
from dicomtrolley.query import Query
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.synthetic import instance_specs, phi_studies, write_studies
from tests.dask_cluster import local_cluster, saved_per_instance
from tests.deid_checks import (
    KEY,
    LAYOUT,
    OTHER_KEY,
    assert_no_source_data,
    expected_flags,
    flagged,
    mapping,
    output_files,
    source_markers,
)
from tests.emulator import test_distributed
from tests.emulator.conftest import USER
from tests.emulator.test_distributed import (
    _first_saving_shard,
    _run_in_thread,
    profile_of,
)
from tests.emulator.transfer_helpers import ENV, RequestLog, dicom_files, temp_files

STUDIES = phi_studies(3, 2, key="dask-phi")
BIG = phi_studies(1, 12, key="dask-killed")
slow_emulator = test_distributed.slow_emulator  # the fixture


@pytest.fixture(scope="module")
def phi_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dask-phi")
    write_studies(root, STUDIES)
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    """2 process workers of 2 threads, with the password and the key."""
    with local_cluster(workers=2, threads=2, env={**ENV, KEY_ENV: KEY}) as client:
        yield client


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client searches with the emulator's password (from the environment)."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def cli(emulator: Emulator, key: str, *args: str) -> Result:
    return CliRunner().invoke(
        main,
        [*args, "--url", emulator.dicomweb_url, "--user", USER],
        env={**ENV, KEY_ENV: key},
    )


def _facts(out: Path) -> tuple[dict[str, bytes], set[Path], list[object], set[str]]:
    flags = {f"{f['instance_uid']} {f['path']} {f['reason']}" for f in read_flags(out)}
    return (
        dicom_files(out),
        {path.relative_to(out) for path in output_files(out)},
        sorted(mapping(out), key=str),
        flags,
    )


def test_dask_deidentifies_as_a_single_machine_does(
    phi_data: Path, tmp_path: Path
) -> None:
    batch_file = tmp_path / "studies.csv"
    batch_file.write_text(
        "StudyInstanceUID\n" + "".join(f"{s.study_uid}\n" for s in STUDIES)
    )
    single, spread = tmp_path / "single", tmp_path / "spread"
    with Emulator(phi_data) as emulator:
        args = ("batch", str(batch_file), "--deidentify", "basic", "-o")
        alone = cli(emulator, KEY, *args, str(single))
        assert alone.exit_code == 0, alone.output
        result = cli(emulator, KEY, *args, str(spread), "--dask", "local:3")
        assert result.exit_code == 0, result.output
        assert "Dask: 3 tasks on local:3" in result.output
        # another key: refused before a worker starts, nothing written
        other = cli(emulator, OTHER_KEY, *args, str(spread), "--dask", "local:3")
    assert other.exit_code == 2 and "another key" in other.output
    assert "Dask:" not in other.output
    instances = len(list(instance_specs(STUDIES)))
    assert len(dicom_files(single)) == instances
    assert _facts(spread) == _facts(single)
    assert_no_source_data(spread, STUDIES)
    shards = list((spread / STATE_FOLDER / "deid-map.d").glob("*.jsonl"))
    assert shards  # the workers wrote their own
    assert not (spread / STATE_FOLDER / "deid-map.jsonl").exists()
    assert read_folder_state(spread) == read_folder_state(single)
    assert flagged(spread) == expected_flags(spread) != set()
    assert set(saved_per_instance(spread).values()) == {1}
    reports = [
        json.loads(CliRunner().invoke(main, ["report", str(out), "--json"]).output)
        for out in (single, spread)
    ]
    assert reports[0]["deid"] == reports[1]["deid"]
    assert reports[1]["deid"]["patients"] == len(STUDIES)
    assert reports[1]["deid"]["flagged"] == len(expected_flags(spread))
    text = CliRunner().invoke(main, ["report", str(spread)]).output
    assert f"de-identified (basic): {len(STUDIES)} patient(s)" in text


def _plan(emulator: Emulator, out: Path, deid: Deidentifier) -> BatchPlan:
    profile = profile_of(emulator, workers=2, protocol="wado-rs")
    studies = profile.searcher().find_studies(Query())
    storage = TemplateStorage(out, LAYOUT, transform=deid)
    return BatchPlan.from_studies(studies, ProfileConnector(profile), out, storage)


def _identified(out: Path) -> list[str]:
    """Files under out (temporary ones included; the records, which keep source
    UIDs by design, left out) holding a source value."""
    markers = source_markers(STUDIES + BIG)
    found = []
    for path in out.rglob("*"):
        parts = path.relative_to(out).parts
        if not path.is_file() or STATE_FOLDER in parts or parts[0].startswith("manif"):
            continue
        data = path.read_bytes() + str(path.relative_to(out)).encode()
        found += [f"{path}: {m!r}" for m in markers if m in data]
    return found


def test_a_worker_killed_mid_study_leaves_nothing_identified_or_doubled(
    tmp_path: Path,
    cluster: Client,
    slow_emulator: Callable[[Path], tuple[Emulator, RequestLog]],
) -> None:
    root = tmp_path / "data"
    write_studies(root, [*BIG, *STUDIES])
    emulator, _ = slow_emulator(root)
    out = tmp_path / "out"
    plan = _plan(emulator, out, Deidentifier(KEY))
    thread, done = _run_in_thread(plan, cluster)
    shard = _first_saving_shard(out, BIG[0].study_uid, timeout=60)
    os.kill(int(shard.stem.rsplit("-", 1)[1]), signal.SIGKILL)
    assert _identified(out) == []  # what the dead worker left (a .part file)
    thread.join(timeout=120)
    assert not thread.is_alive()
    outcome = done[0]
    assert [r for r in outcome.results if not r.ok] == []
    assert _identified(out) == [] and not temp_files(out)
    total = len(list(instance_specs([*BIG, *STUDIES])))
    assert len(output_files(out)) == total
    assert set(saved_per_instance(out).values()) == {1}
    assert len(saved_per_instance(out)) == total
    deid = Deidentifier(KEY)
    pairs = {r["source"]: r["mapped"] for r in mapping(out) if r["type"] == "uid"}
    for spec in instance_specs([*BIG, *STUDIES]):
        assert pairs[spec.sop_instance_uid] == deid.map_uid(spec.sop_instance_uid)
    assert flagged(out) == expected_flags(out)


def _set_key(value: str | None) -> None:
    if value is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = value


@pytest.mark.parametrize(
    ("key", "error"),
    [(None, f"set {KEY_ENV}"), (OTHER_KEY, "is not the client's")],
)
def test_a_worker_without_the_key_or_with_another_stops_the_run(
    phi_data: Path,
    tmp_path: Path,
    cluster: Client,
    key: str | None,
    error: str,
) -> None:
    odd = sorted(cluster.scheduler_info()["workers"])[0]
    cluster.run(_set_key, key, workers=[odd])
    try:
        with Emulator(phi_data) as emulator:
            outcome = run_batch(_plan(emulator, tmp_path, Deidentifier(KEY)), cluster)
    finally:
        cluster.run(_set_key, KEY, workers=[odd])
    assert outcome.stopped is not None
    assert error in outcome.stopped and "worker" in outcome.stopped
    refused = [r for r in outcome.results if r.error and error in r.error]
    assert refused and all(r.fatal and r.saved == 0 for r in refused)
    assert _identified(tmp_path) == []


def test_the_command_stops_with_one_error_when_the_workers_lack_the_key(
    phi_data: Path, tmp_path: Path, cluster: Client
) -> None:
    batch_file = tmp_path / "studies.csv"
    batch_file.write_text(f"StudyInstanceUID\n{STUDIES[0].study_uid}\n")
    address = str(cluster.scheduler_info()["address"])
    out = tmp_path / "out"
    cluster.run(_set_key, None)
    try:
        with Emulator(phi_data) as emulator:
            args = ("batch", str(batch_file), "--deidentify", "basic")
            result = cli(emulator, KEY, *args, "-o", str(out), "--dask", address)
    finally:
        cluster.run(_set_key, KEY)
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if "stopped" in line]
    assert f"set {KEY_ENV}" in line and "environment of every worker" in line
    assert output_files(out) == []
