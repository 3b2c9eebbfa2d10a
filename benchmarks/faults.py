"""A long fault campaign: every protocol pair through a fault-injecting proxy.

The CI runs a short seeded campaign (tests/faults, about 200 faults); this
runs the same rounds (tests/faults/campaign.py) for longer, 2,000 faults by
default, with a new random seed each time (printed first; ``--seed`` repeats a
run). It starts the emulator (HTTP and DIMSE) itself over 12 synthetic
instances, and with ``--orthanc`` an Orthanc too.

Prints a markdown table per protocol pair: faults by kind, downloads that
raised, instances lost after the clean re-run, partial files and raw
exceptions (all three must be 0), wall time; then every violation. Exits 1
when there was any.

    .venv/bin/python benchmarks/faults.py [--faults 2000] [--seed N] [--orthanc]
        [--pairs RAD-69 --pairs C-GET]

Run it in the loopback-only namespace with ``--orthanc``, as Orthanc binds
every interface: ``bash scripts/loopback-only.sh .venv/bin/python
benchmarks/faults.py --orthanc``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.campaign import (  # noqa: E402
    Pair,
    Result,
    Settings,
    emulator_pairs,
    markdown_table,
    orthanc_pairs,
    run_campaign,
    running_emulator,
    running_orthanc,
    write_campaign_data,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=2000, help="faults in all")
    parser.add_argument("--seed", type=int, help="repeat a run (default: random)")
    parser.add_argument("--orthanc", action="store_true", help="also against Orthanc")
    parser.add_argument(
        "--pairs",
        action="append",
        default=[],
        help="only pairs whose name contains this (repeatable)",
    )
    parser.add_argument(
        "--budget", type=float, default=1800.0, help="seconds at most per pair"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    seed = (
        args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    )
    print(f"seed {seed}  (repeat with --seed {seed})", flush=True)
    if not args.verbose:
        logging.getLogger().addHandler(logging.NullHandler())
        logging.getLogger().setLevel(logging.CRITICAL)
        threading.excepthook = lambda args: None  # counted by the campaign
    work = Path(tempfile.mkdtemp(prefix="dicomtrolley-faults-"))
    results: list[Result] = []
    started = time.monotonic()
    try:
        data = write_campaign_data(work / "data")
        with contextlib.ExitStack() as stack:
            emulator = stack.enter_context(running_emulator(data))
            pairs: list[Pair] = emulator_pairs(emulator)
            if args.orthanc:
                orthanc = stack.enter_context(running_orthanc(data))
                pairs += orthanc_pairs(orthanc)
            if args.pairs:
                pairs = [p for p in pairs if any(text in p.name for text in args.pairs)]
            if not pairs:
                print("no protocol pair selected", file=sys.stderr)
                return 2
            share = math.ceil(args.faults / len(pairs))
            for pair in pairs:
                settings = Settings(
                    seed,
                    target_faults=share,
                    max_rounds=100_000,
                    budget_seconds=args.budget,
                )
                folder = work / "campaigns" / pair.name.replace(" ", "_")
                result = run_campaign(pair, data, folder, settings)
                results.append(result)
                print(
                    f"{pair.name}: {result.total_faults} faults, {result.rounds} "
                    f"rounds, {len(result.violations)} violation(s), "
                    f"{result.wall:.1f} s",
                    flush=True,
                )
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"## Fault campaign, seed {seed}")
    print()
    print(markdown_table(results))
    print(f"\nwall time {time.monotonic() - started:.1f} s in all")
    violations = [text for result in results for text in result.violations]
    if violations:
        print(f"\n### {len(violations)} violation(s)\n")
        for result in results:
            if result.violations:
                print(result.summary())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
