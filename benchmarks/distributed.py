"""A cohort pull on Dask: 1,000 small studies, 1 vs 2 vs 4 process workers.

1. Writes 1,000 one-instance studies (:func:`dicomtrolley.synthetic.cohort_studies`)
   and serves them with the emulator in this process (loopback).
2. Searches them once (QIDO-RS), as ``batch --dask`` does on the client.
3. Baseline: the same studies downloaded by one process with a thread pool
   (what ``dicomtrolley batch`` does without ``--dask``), --limit threads.
4. For 1, 2 and 4 workers: a LocalCluster of process workers (2 threads each),
   :func:`dicomtrolley.distributed.run_batch` into an empty folder with a
   cluster-wide limit of --limit transfers. Prints the wall time (cluster
   start apart), studies a second, the speed-up against 1 worker and against
   the baseline.
5. The scheduler's overhead per task: 1,000 tasks that do nothing, on the
   4-worker cluster, and the mean time our tasks spent on the worker against
   the wall time each took as seen from the client.

    bash scripts/loopback-only.sh .venv/bin/python benchmarks/distributed.py
        [--studies 1000] [--limit 8]

Everything shares this machine's cores: the emulator (a threaded server in this
process), the scheduler, the client and the workers. On 2 cores the speed-up
cannot pass 2, and the emulator's own work takes part of the same cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
# this file's folder comes first on sys.path, and this file is named like
# Dask's package: take the folder off so that "import distributed" finds Dask
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT / "src"))

from distributed import Client, LocalCluster  # noqa: E402

from dicomtrolley.config_model import BasicAuthConfig, Profile  # noqa: E402
from dicomtrolley.distributed import (  # noqa: E402
    BatchPlan,
    ProfileConnector,
    run_batch,
)
from dicomtrolley.emulator import Emulator  # noqa: E402
from dicomtrolley.query import Query  # noqa: E402
from dicomtrolley.storage import StorageDir  # noqa: E402
from dicomtrolley.synthetic import cohort_studies, write_studies  # noqa: E402

USER = PASSWORD = "trolley"


def _nothing(n: int) -> int:
    return n


def baseline(profile: Profile, studies: list, out: Path, threads: int) -> float:  # type: ignore[type-arg]
    """One process, a thread pool over the studies (the single-machine batch)."""
    trolley = profile.trolley(storage=StorageDir(out))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda study: trolley.download([study], out), studies))
    return time.perf_counter() - started


def on_cluster(
    plan: BatchPlan, workers: int, overhead: bool
) -> tuple[float, float, dict[str, float]]:
    """(cluster start s, run s, overhead figures) for a LocalCluster of workers."""
    started = time.perf_counter()
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        env={"DICOMTROLLEY_PASSWORD": PASSWORD},
    )
    figures: dict[str, float] = {}
    try:
        with Client(cluster) as client:
            client.wait_for_workers(workers)
            start_s = time.perf_counter() - started
            began = time.perf_counter()
            outcome = run_batch(plan, client)
            run_s = time.perf_counter() - began
            failed = outcome.failed
            if failed or outcome.saved != len(plan.tasks):
                sys.exit(f"{len(failed)} tasks failed: {failed[:2]}")
            figures["task_on_worker_ms"] = 1000 * mean(
                r.elapsed - r.waited for r in outcome.results
            )
            if overhead:
                began = time.perf_counter()
                client.gather(client.map(_nothing, range(len(plan.tasks)), pure=False))
                figures["noop_ms"] = (
                    1000 * (time.perf_counter() - began) / len(plan.tasks)
                )
    finally:
        cluster.close()
    return start_s, run_s, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=8)
    args = parser.parse_args()
    os.environ["DICOMTROLLEY_PASSWORD"] = PASSWORD
    with tempfile.TemporaryDirectory(prefix="dicomtrolley-dask-bench-") as temp:
        base = Path(temp)
        write_studies(base / "data", cohort_studies(args.studies, instances=1))
        with Emulator(base / "data") as emulator:
            profile = Profile(
                name="bench",
                url=emulator.dicomweb_url,
                auth=BasicAuthConfig(type="basic", user=USER),
                workers=args.limit,
            )
            studies = profile.searcher().find_studies(Query())
            print(
                f"{len(studies)} studies of 1 instance, limit {args.limit} transfers"
                f" at once, {os.cpu_count()} CPU(s)"
            )
            alone = baseline(profile, studies, base / "baseline", args.limit)
            print(
                f"  one process, {args.limit} threads: {alone:6.2f} s "
                f"{len(studies) / alone:7.1f} studies/s (baseline)"
            )
            first: float | None = None
            noop = None
            for workers in (1, 2, 4):
                out = base / f"out-{workers}"
                plan = BatchPlan.from_studies(
                    studies, ProfileConnector(profile), out, StorageDir(out)
                )
                start_s, run_s, figures = on_cluster(plan, workers, workers == 4)
                first = first or run_s
                noop = figures.get("noop_ms", noop)
                print(
                    f"  {workers} worker(s) x 2 threads: {run_s:6.2f} s "
                    f"{len(studies) / run_s:7.1f} studies/s, speed-up "
                    f"{first / run_s:4.2f}x vs 1 worker, {alone / run_s:4.2f}x vs "
                    f"baseline (cluster start {start_s:.1f} s; a task "
                    f"{figures['task_on_worker_ms']:.1f} ms on its worker)"
                )
                shutil.rmtree(out)
            print(
                f"  scheduler overhead: {noop:.2f} ms per task doing nothing (4 workers)"
            )


if __name__ == "__main__":
    main()
