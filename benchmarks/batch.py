"""A cohort pull: ``dicomtrolley batch`` of 500 small studies, then the same again.

1. Writes 500 one-instance studies (:func:`dicomtrolley.synthetic.cohort_studies`)
   and a CSV of their accession numbers, and serves them with the emulator
   (in this process, loopback).
2. Runs ``dicomtrolley batch cohort.csv --url ... -o out`` as a child process
   (the real command, interpreter start included) into an empty folder.
3. Runs the same command again: everything is there, nothing should be fetched.

Prints both wall times, the instances saved and skipped (from ``manifest.jsonl``),
the requests each run made, and the ratio re-run / first run (the issue's
target: under 5 %), with and without the start-up of the process (Python and
the imports, measured with ``batch --help``).

    bash scripts/loopback-only.sh .venv/bin/python benchmarks/batch.py
        [--studies 500] [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicomtrolley.emulator import Emulator  # noqa: E402
from dicomtrolley.emulator.server import Request  # noqa: E402
from dicomtrolley.manifest import read_manifest  # noqa: E402
from dicomtrolley.synthetic import cohort_studies, write_studies  # noqa: E402

USER = PASSWORD = "trolley"


class RequestCounter:
    """Counts the emulator's requests by kind (QIDO-RS, WADO-RS)."""

    def __init__(self, emulator: Emulator) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = emulator._server  # the benchmark looks inside on purpose
        assert server is not None
        router = server.router
        dispatch = router.dispatch

        def counting(request: Request) -> object:
            path = request.path.rstrip("/")
            searches = ("/studies", "/series", "/instances")
            kind = "QIDO-RS" if path.endswith(searches) else "WADO-RS"
            with self._lock:
                self.counts[kind] += 1
            return dispatch(request)

        router.dispatch = counting  # type: ignore[method-assign]

    def take(self) -> Counter[str]:
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts


def run_batch(command: list[str]) -> float:
    env = {**os.environ, "DICOMTROLLEY_PASSWORD": PASSWORD}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"batch failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


def startup_seconds() -> float:
    """Best of three: the interpreter start and imports of the command alone."""
    command = [sys.executable, "-m", "dicomtrolley.cli.main", "batch", "--help"]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dicomtrolley-batch-bench-") as temp:
        root = Path(temp)
        studies = cohort_studies(args.studies, key="bench")
        write_studies(root / "data", studies)
        cohort = root / "cohort.csv"
        cohort.write_text(
            "AccessionNumber\n" + "".join(f"{s.accession_number}\n" for s in studies)
        )
        out = root / "out"
        with Emulator(root / "data", rescan_interval=None) as emulator:
            counter = RequestCounter(emulator)
            command = [
                sys.executable,
                "-m",
                "dicomtrolley.cli.main",
                "batch",
                str(cohort),
                "--url",
                emulator.dicomweb_url,
                "--user",
                USER,
                "-o",
                str(out),
                "--workers",
                str(args.workers),
                "--quiet",
            ]
            first = run_batch(command)
            first_requests = counter.take()
            first_records = Counter(
                r["status"] for r in read_manifest(out / "manifest.jsonl")
            )
            again = run_batch(command)
            again_requests = counter.take()
        records = Counter(r["status"] for r in read_manifest(out / "manifest.jsonl"))
        rerun_records = records - first_records

    print(f"batch of {args.studies} one-instance studies, {args.workers} workers")
    print(
        f"  first run: {first:6.2f} s  saved {first_records['saved']}, "
        f"requests {dict(first_requests)}"
    )
    print(
        f"  re-run:    {again:6.2f} s  saved {rerun_records['saved']}, skipped "
        f"{rerun_records['skipped']}, requests {dict(again_requests)}"
    )
    startup = startup_seconds()
    print(f"  re-run / first run: {again / first:.1%}  (target: under 5 %)")
    print(
        f"  of which starting Python and importing: {startup:.2f} s; without it "
        f"{max(0.0, again - startup) / max(1e-9, first - startup):.1%}"
    )


if __name__ == "__main__":
    main()
