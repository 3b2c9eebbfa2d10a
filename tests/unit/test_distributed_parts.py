"""The parts of dicomtrolley.distributed that need no cluster: the folder's index
written by several processes, manifest shards, pacing, the plan, the connector
of the command line, the emulator's concurrency counter, Dask missing."""

from __future__ import annotations

import builtins
import json
import multiprocessing
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dicomtrolley.catalog import Catalog
from dicomtrolley.cli.batch_dask import CommandConnector, worker_secrets
from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.cli.dimse import DIMSESettings
from dicomtrolley.cli.main import main
from dicomtrolley.cli.transfer import TransferOptions
from dicomtrolley.credentials import MissingSecretError
from dicomtrolley.distributed import BatchPlan, DaskUnavailableError, StudyTask
from dicomtrolley.distributed.cluster import require_dask
from dicomtrolley.distributed.worker import Pacer
from dicomtrolley.emulator.server import ConcurrencyCounter
from dicomtrolley.exceptions import PermanentError
from dicomtrolley.manifest import (
    Manifest,
    read_folder_manifest,
    summarize,
)
from dicomtrolley.storage import StorageDir
from tests.conftest import StudyFactory

# -- the index from several processes ------------------------------------------------


def _record_rows(folder: str, worker: int, count: int) -> None:
    catalog = Catalog.for_folder(folder)
    for n in range(count):
        uid = f"1.2.{worker}.{n}"
        catalog.record(
            instance_uid=uid,
            study_uid="1.2",
            series_uid=f"1.2.{worker}",
            path=f"{worker}/{n}.dcm",
            size=n,
            checksum=None,
        )


def test_processes_that_open_a_new_index_at_once_lose_no_row(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_record_rows, args=(str(tmp_path), worker, 150))
        for worker in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    rows = {entry.instance_uid for entry in Catalog(tmp_path).entries()}
    assert rows == {f"1.2.{w}.{n}" for w in range(4) for n in range(150)}


def test_a_scan_keeps_the_rows_another_process_wrote_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = Catalog(tmp_path)
    other = Catalog(tmp_path)  # its own connection, as another process has
    catalog.record(
        instance_uid="1.9.1", study_uid="1.9", series_uid="1.9.0",
        path="old.dcm", size=3, checksum=None, layout="x",
    )  # fmt: skip

    def scan() -> Any:
        other.record(
            instance_uid="1.9.2", study_uid="1.9", series_uid="1.9.0",
            path="new.dcm", size=5, checksum="crc32:00000001", layout="x",
        )  # fmt: skip
        return iter(())

    monkeypatch.setattr(catalog, "_scan_files", scan)
    time.sleep(0.01)  # rows are timed to the millisecond
    catalog.rebuild()
    kept = {entry.instance_uid: entry for entry in catalog.entries()}
    assert set(kept) == {"1.9.2"}  # the old row's file is not there: dropped
    assert kept["1.9.2"].checksum == "crc32:00000001"


# -- manifest shards ------------------------------------------------------------------


def _line(time: str, status: str, uid: str, **extra: Any) -> dict[str, Any]:
    return {
        "time": time, "run": "r1", "status": status, "study_uid": "1.2",
        "series_uid": "1.2.3", "instance_uid": uid, "uids": [uid], "size": 10,
        "error": "refused" if status == "failed" else None, **extra,
    }  # fmt: skip


def test_shards_are_read_with_the_manifest_merged_by_time(tmp_path: Path) -> None:
    main_file = Manifest.in_folder(tmp_path)
    one = Manifest.shard(tmp_path, "host-1")
    two = Manifest.shard(tmp_path, "host/2")  # made safe as a file name
    main_file.write(_line("2026-01-01T00:00:01", "saved", "1.2.3.1"))
    two.write(_line("2026-01-01T00:00:02", "failed", "1.2.3.2"))
    one.write(_line("2026-01-01T00:00:03", "saved", "1.2.3.2"))
    two.write(_line("2026-01-01T00:00:04", "failed", "1.2.3.3"))
    for manifest in (main_file, one, two):
        manifest.close()
    assert two.path == tmp_path / "manifest.d" / "host_2.jsonl"
    times = [r["time"][-2:] for r in read_folder_manifest(tmp_path)]
    assert times == ["01", "02", "03", "04"]
    assert [r["time"][-2:] for r in main_file.records()] == times
    summary = summarize(tmp_path)
    assert (summary.runs, summary.saved, summary.failed) == (1, 2, 2)
    # 1.2.3.2 failed in one shard and was saved later in another: not open
    assert [f["uids"] for f in summary.failures] == [["1.2.3.3"]]
    table = tmp_path / "out.csv"
    assert main_file.write_csv(table) == 4


def test_a_shard_of_a_run_carries_the_run(tmp_path: Path) -> None:
    shard = Manifest.shard(tmp_path, "w", run="abc", run_started="then")
    shard.write({"x": 1})
    shard.close()
    assert (shard.run, shard.run_started) == ("abc", "then")
    report = CliRunner().invoke(main, ["report", str(tmp_path), "--json"])
    assert json.loads(report.output)["runs"] == 1


# -- pacing ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_each_lease_held_allows_its_share_of_the_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, 4, clock=clock, sleep=clock.sleep)  # 10/s for 4 leases
    with pacer.lease():
        for _ in range(3):
            pacer.wait()
    assert clock.slept == [0.4, 0.4]  # one lease of four: 2.5 requests a second
    clock.slept.clear()
    with pacer.lease(), pacer.lease():
        pacer.wait()
        pacer.wait()
    assert clock.slept == [0.4, 0.2]  # the slot booked before, then 5 a second


def test_no_rate_never_waits() -> None:
    clock = FakeClock()
    pacer = Pacer(None, 2, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        pacer.wait()
    assert clock.slept == []


# -- the plan -------------------------------------------------------------------------


class _NoConnector:
    server, limit = "pacs:wado-rs", 2

    def open(self, pool_size: int) -> Any:
        raise AssertionError("not opened on the client")


def test_plan_pickles_with_its_studies_once_each(
    make_study: StudyFactory, tmp_path: Path
) -> None:
    studies = [make_study("1.1", {"1.1.1": ["1.1.1.1"]}), make_study("1.2", {})]
    plan = BatchPlan.from_studies(
        [*studies, studies[0]], _NoConnector(), tmp_path, StorageDir(tmp_path)
    )
    assert [task.key for task in plan.tasks] == ["1.1", "1.2"]
    copy = pickle.loads(pickle.dumps(plan))
    assert copy.tasks[0].target == studies[0]
    series = StudyTask(studies[0].series[0], row=3)
    assert (series.key, series.study_uid) == ("1.1/1.1.1", "1.1")


# -- the command's connector ----------------------------------------------------------


def _transfer(tmp_path: Path) -> TransferOptions:
    return TransferOptions(
        url="http://127.0.0.1:9/dicom-web", qido_url=None, output=tmp_path,
        layout="study", protocols=("wado-rs",), dimse=DIMSESettings(),
        wado_uri_url=None, workers=6, show_progress=None,
    )  # fmt: skip


def test_the_connector_carries_no_secret_and_reads_it_on_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = ConnectionSettings(user="alice", password="s3cret-pw")
    connector = CommandConnector.of(_transfer(tmp_path), connection, "http://pacs")
    data = pickle.dumps(connector)
    assert b"s3cret-pw" not in data
    assert (connector.limit, connector.transfer.workers) == (6, 1)
    assert worker_secrets(connector, connection) == {
        "DICOMTROLLEY_PASSWORD": "s3cret-pw"
    }
    monkeypatch.delenv("DICOMTROLLEY_PASSWORD", raising=False)
    with pytest.raises(MissingSecretError, match="DICOMTROLLEY_PASSWORD"):
        pickle.loads(data).open(pool_size=1)
    monkeypatch.setenv("DICOMTROLLEY_PASSWORD", "from-env")
    _, _, session = pickle.loads(data).open(pool_size=1)
    assert session.auth.password == "from-env"  # type: ignore[union-attr]


# -- the emulator's counter -----------------------------------------------------------


def test_the_counter_keeps_the_most_requests_of_each_client_at_once() -> None:
    counter = ConcurrencyCounter()
    with counter.request("a"), counter.request("a"), counter.request("b"):
        assert counter.active("a") == 2
    with counter.request("a"):
        pass
    assert counter.peaks() == {"a": 2, "b": 1}
    assert counter.peak() == 2
    counter.reset()
    assert counter.peak("a") == 0
    entered = threading.Barrier(3)
    release = threading.Event()

    def hold() -> None:
        with counter.request("c"):
            entered.wait()
            release.wait()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    entered.wait()
    assert counter.peak("c") == 2
    release.set()
    for thread in threads:
        thread.join()


# -- without Dask ---------------------------------------------------------------------


def test_without_dask_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_import = builtins.__import__

    def no_dask(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(DaskUnavailableError, match=r"dicomtrolley\[dask\]") as caught:
        require_dask()
    assert isinstance(caught.value, PermanentError)
    batch_file = tmp_path / "rows.txt"
    batch_file.write_text("1.2.3\n")
    result = CliRunner().invoke(
        main,
        ["batch", str(batch_file), "-o", str(tmp_path / "out"), "--dask", "local:2",
         "--url", "http://127.0.0.1:9/dicom-web"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "pip install 'dicomtrolley[dask]'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:notaport", "nonsense://x"])
def test_an_address_dask_cannot_parse_is_a_cluster_error(address: str) -> None:
    from dicomtrolley.distributed.cluster import ClusterError, open_client

    with (
        pytest.raises(ClusterError, match="cannot reach the Dask scheduler"),
        open_client(address),
    ):
        pass
