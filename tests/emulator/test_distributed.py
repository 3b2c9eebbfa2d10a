"""Batches on a Dask LocalCluster of 3 process workers against the emulator (issue 13).

Same files and manifest as the single-machine run; a re-run fetches nothing; the
server-wide limit measured at the server (the emulator counts each client's
requests in progress); the rate limit; a worker killed with SIGKILL in the middle
of a study (nothing lost, nothing saved twice, no temporary file); a large study
split by series.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from distributed import Client

from dicomtrolley.cli.main import main
from dicomtrolley.config_model import BasicAuthConfig, Profile
from dicomtrolley.distributed import (
    BatchOutcome,
    BatchPlan,
    ProfileConnector,
    run_batch,
)
from dicomtrolley.emulator import Emulator
from dicomtrolley.query import Query
from dicomtrolley.synthetic import cohort_studies, write_studies
from tests.dask_cluster import local_cluster, manifest_facts, saved_per_instance
from tests.emulator.conftest import USER, DemoData
from tests.emulator.transfer_helpers import (
    ENV,
    RequestLog,
    assert_complete,
    counting_emulator,
    dicom_files,
    is_retrieve,
)

#: Seconds each request of a "slow" emulator lasts at least.
SLOW = 0.02


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 studies of 4 small instances (accession numbers A00001..A00006)."""
    root = tmp_path_factory.mktemp("dask-cohort")
    write_studies(root, cohort_studies(6, instances=4, key="dask"))
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    """3 process workers of 2 threads, with the emulator's password."""
    with local_cluster(workers=3, threads=2, env=ENV) as client:
        yield client


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client searches with the emulator's password (from the environment)."""
    monkeypatch.setenv("DICOMTROLLEY_PASSWORD", ENV["DICOMTROLLEY_PASSWORD"])


@pytest.fixture
def slow_emulator() -> Iterator[Callable[[Path], tuple[Emulator, RequestLog]]]:
    """make(root) -> an emulator whose requests each last SLOW seconds at least,
    and the log of its request lines."""
    with contextlib.ExitStack() as stack:

        def make(root: Path) -> tuple[Emulator, RequestLog]:
            emulator, log = stack.enter_context(counting_emulator(root))
            log.on_request = lambda line, count: time.sleep(SLOW)
            return emulator, log

        yield make


def profile_of(emulator: Emulator, workers: int, protocol: str = "wado-uri") -> Profile:
    return Profile(
        name=f"emulator-{emulator.port}",
        url=emulator.dicomweb_url,
        auth=BasicAuthConfig(type="basic", user=USER),
        download=(protocol,),  # type: ignore[arg-type]
        workers=workers,
    )


def plan_all(
    emulator: Emulator, out: Path, workers: int, **kwargs: object
) -> BatchPlan:
    profile = profile_of(emulator, workers)
    studies = profile.searcher().find_studies(Query())
    return BatchPlan.from_studies(studies, ProfileConnector(profile), out, **kwargs)  # type: ignore[arg-type]


def cli(emulator: Emulator, *args: str) -> Result:
    return CliRunner().invoke(
        main, [*args, "--url", emulator.dicomweb_url, "--user", USER], env=ENV
    )


# -- the command line ---------------------------------------------------------------------


def test_batch_on_dask_makes_the_files_and_manifest_of_a_single_machine_run(
    cohort: Path, tmp_path: Path
) -> None:
    batch_file = tmp_path / "cohort.csv"
    batch_file.write_text(
        "AccessionNumber\n" + "".join(f"A{n:05d}\n" for n in range(1, 7))
    )
    single, spread = tmp_path / "single", tmp_path / "spread"
    with counting_emulator(cohort) as (emulator, log):
        alone = cli(emulator, "batch", str(batch_file), "-o", str(single))
        assert alone.exit_code == 0, alone.output
        log.clear()
        result = cli(
            emulator, "batch", str(batch_file), "-o", str(spread), "--dask", "local:3"
        )
        assert result.exit_code == 0, result.output
        assert "Dask: 6 tasks on local:3" in result.output
        assert sum(1 for line in log.lines if is_retrieve(line)) == 6
        files = dicom_files(single)
        assert len(files) == 24
        assert dicom_files(spread) == files
        layout = {p.relative_to(single) for p in single.rglob("*.dcm")}
        assert {p.relative_to(spread) for p in spread.rglob("*.dcm")} == layout
        assert manifest_facts(spread) == manifest_facts(single)
        shards = list((spread / "manifest.d").glob("*.jsonl"))
        assert shards  # the workers wrote their own
        assert len({json.loads(line)["run"] for s in shards for line in s.open()}) == 1

        log.clear()
        again = cli(
            emulator, "batch", str(batch_file), "-o", str(spread), "--dask", "local:3"
        )
        assert again.exit_code == 0, again.output
        assert not [line for line in log.lines if is_retrieve(line)]
    assert_complete(spread, files)
    assert set(saved_per_instance(spread).values()) == {1}
    report = CliRunner().invoke(main, ["report", str(spread), "--json"])
    summary = json.loads(report.output)
    assert (summary["runs"], summary["saved"], summary["skipped"]) == (2, 24, 24)


def test_rate_without_dask_and_c_move_on_dask_are_refused(
    cohort: Path, tmp_path: Path
) -> None:
    batch_file = tmp_path / "cohort.csv"
    batch_file.write_text("AccessionNumber\nA00001\n")
    out = str(tmp_path / "out")
    with Emulator(cohort) as emulator:
        rate = cli(emulator, "batch", str(batch_file), "-o", out, "--rate", "5")
        move = cli(
            emulator, "batch", str(batch_file), "-o", out, "--dask", "local:1",
            "--protocol", "c-move", "--host", "127.0.0.1", "--port", "1",
        )  # fmt: skip
    assert rate.exit_code == 2 and "--rate paces the workers of --dask" in rate.output
    assert move.exit_code == 2 and "--dask cannot use C-MOVE" in move.output


# -- limits ---------------------------------------------------------------------------------


def test_the_server_sees_no_more_transfers_than_the_limit_from_the_whole_cluster(
    cohort: Path,
    tmp_path: Path,
    cluster: Client,
    slow_emulator: Callable[[Path], tuple[Emulator, RequestLog]],
) -> None:
    emulator, _ = slow_emulator(cohort)
    limited = plan_all(emulator, tmp_path / "two", workers=2)
    emulator.concurrency.reset()
    outcome = run_batch(limited, cluster)
    assert [r for r in outcome.results if not r.ok] == []
    assert outcome.saved == 24
    # 6 threads on 3 processes wanted 6 at once: the semaphore let 2 through
    assert emulator.concurrency.peak("127.0.0.1") == 2

    wider = plan_all(emulator, tmp_path / "five", workers=5)
    emulator.concurrency.reset()
    assert run_batch(wider, cluster).saved == 24
    assert emulator.concurrency.peak("127.0.0.1") > 2  # the counter sees overlap


def test_the_rate_limit_spaces_the_requests_of_the_whole_cluster(
    cohort: Path,
    tmp_path: Path,
    cluster: Client,
    slow_emulator: Callable[[Path], tuple[Emulator, RequestLog]],
) -> None:
    emulator, log = slow_emulator(cohort)
    plan = plan_all(emulator, tmp_path / "paced", workers=3, rate=25.0)
    times: list[float] = []
    log.on_request = lambda line, count: times.append(time.monotonic())
    outcome = run_batch(plan, cluster)
    assert outcome.saved == 24
    # 6 instance lists and 24 instances: 30 requests at 25 a second, of which
    # the first 3 (one per lease) may go at once
    assert len(times) == 30
    assert times[-1] - times[0] >= (30 - 3) / 25 * 0.9


# -- failures -------------------------------------------------------------------------------


def _run_in_thread(
    plan: BatchPlan, client: Client
) -> tuple[threading.Thread, list[BatchOutcome]]:
    done: list[BatchOutcome] = []
    thread = threading.Thread(target=lambda: done.append(run_batch(plan, client)))
    thread.start()
    return thread, done


def _first_saving_shard(folder: Path, study_uid: str, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for shard in (folder / "manifest.d").glob("*.jsonl"):
            lines = [json.loads(line) for line in shard.read_text().splitlines()]
            if any(
                r["status"] == "saved" and r["study_uid"] == study_uid for r in lines
            ):
                return shard
        time.sleep(0.02)
    raise AssertionError(f"no worker saved a file of {study_uid} in {timeout} s")


def test_a_worker_killed_mid_study_leaves_no_partial_or_doubled_file(
    tmp_path: Path,
    cluster: Client,
    slow_emulator: Callable[[Path], tuple[Emulator, RequestLog]],
) -> None:
    root = tmp_path / "data"
    big = cohort_studies(1, instances=40, size=32, key="killed")[0]
    write_studies(root, [big, *cohort_studies(2, instances=3, key="calm")])
    emulator, _ = slow_emulator(root)
    out = tmp_path / "out"
    plan = plan_all(emulator, out, workers=2)
    thread, done = _run_in_thread(plan, cluster)
    shard = _first_saving_shard(out, big.study_uid, timeout=30)
    killed_pid = int(shard.stem.rsplit("-", 1)[1])
    os.kill(killed_pid, signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive()
    outcome = done[0]
    assert [r for r in outcome.results if not r.ok] == []
    (again,) = [r for r in outcome.results if r.study_uid == big.study_uid]
    assert again.worker != shard.stem  # it ran again elsewhere ...
    assert again.skipped > 0  # ... and kept what the dead worker had saved
    assert_complete(out, dicom_files(root))
    assert set(saved_per_instance(out).values()) == {1}
    assert len(saved_per_instance(out)) == 46


def test_a_large_study_is_one_task_per_series(
    emulator: Emulator,
    demo: DemoData,
    tmp_path: Path,
    cluster: Client,
) -> None:
    spec = max(demo.studies, key=lambda study: len(study.series))
    profile = profile_of(emulator, workers=3, protocol="wado-rs")
    searcher = profile.searcher()
    study = searcher.find_study(Query(StudyInstanceUID=spec.study_uid))
    plan = BatchPlan.from_studies(
        [study], ProfileConnector(profile), tmp_path, searcher=searcher, split_above=1
    )
    assert len(plan.tasks) == len(spec.series) > 1
    outcome = run_batch(plan, cluster)
    assert len(outcome.results) == len(spec.series)
    assert_complete(tmp_path, demo.files_of(spec.study_uid))
