"""save_all over many small instances: WADO-RS, WADO-URI and RAD-69, two trees.

Serves a folder of small synthetic studies with the in-process emulator
(loopback) and times ``save_all`` of each HTTP downloader in a child process,
once with the dicomtrolley being benchmarked and once with a baseline tree
given by ``--baseline-src`` (e.g. a ``git archive`` of an earlier commit),
alternating, best of ``--repeat``. Prints both times and the ratio
baseline / this tree (above 1: this tree is faster). Many small files make
the per-instance work of the download (planning, skipping, reporting, one
file per part) show (the second run of each, "resume", finds every file on
disk; WADO-RS, given series references, fetches them again), where the large-study benchmarks (wado_rs.py, rad69.py)
measure the byte path.

    bash scripts/loopback-only.sh .venv/bin/python benchmarks/save_all.py \\
        --baseline-src /tmp/base/src [--studies 8] [--instances 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dicomtrolley import synthetic
from dicomtrolley.emulator import Emulator

CHILD = r"""
import json, sys, time
import requests
from dicomtrolley.core import InstanceReference, SeriesReference
from dicomtrolley.rad69 import Rad69
from dicomtrolley.storage import StorageDir
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI

protocol, base, refs_file, out, workers = sys.argv[1:6]
with open(refs_file) as listing:
    instances = [InstanceReference(*uids) for uids in json.load(listing)]
session = requests.Session()
session.auth = ("trolley", "trolley")
if protocol == "wado-rs":
    downloader = WadoRS(session, base + "/dicom-web")
    refs = list(dict.fromkeys(SeriesReference(r.study_uid, r.series_uid) for r in instances))
elif protocol == "wado-uri":
    downloader = WadoURI(session, base + "/wado")
    refs = instances
else:
    downloader = Rad69(session, base + "/rad69", transfer_syntax_list=["1.2.840.10008.1.2.1"])
    refs = instances
start = time.perf_counter()
report = downloader.save_all(refs, StorageDir(out), out, max_workers=int(workers))
elapsed = time.perf_counter() - start
report.raise_for_failures()
# a second run finds everything on disk: the resume path
start = time.perf_counter()
again = downloader.save_all(refs, StorageDir(out), out, max_workers=int(workers))
resumed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "resume": resumed, "files": len(report.saved),
                  "skipped": len(again.skipped)}))
"""


def run_child(
    src: Path | None, protocol: str, base: str, refs: Path, out: Path, workers: int
) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            protocol,
            base,
            str(refs),
            str(out),
            str(workers),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{protocol} child failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--instances", type=int, default=50, help="per study")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-save-all-"))
    try:
        studies = synthetic.cohort_studies(args.studies, args.instances, size=32)
        paths = synthetic.write_studies(work / "data", studies)
        refs = work / "refs.json"
        refs.write_text(
            json.dumps(
                [
                    [s.study.study_uid, s.series.series_uid, s.sop_instance_uid]
                    for s in synthetic.instance_specs(studies)
                ]
            )
        )
        print(f"{len(paths)} instances in {args.studies} studies")
        print(
            f"{'protocol':>9} {'baseline s':>11} {'this s':>8} {'ratio':>6} "
            f"{'resume base':>12} {'resume this':>12} {'ratio':>6}"
        )
        with Emulator(work / "data", rescan_interval=None) as emulator:
            for protocol in ("wado-rs", "wado-uri", "rad69"):
                best: dict[str, list[float]] = {"base": [], "this": []}
                resume: dict[str, list[float]] = {"base": [], "this": []}
                for attempt in range(args.repeat):
                    for name, src in (("base", args.baseline_src), ("this", None)):
                        out = work / f"{protocol}-{name}-{attempt}"
                        got = run_child(
                            src, protocol, emulator.base_url, refs, out, args.workers
                        )
                        shutil.rmtree(out)
                        # series references cannot be checked on disk before
                        # the answer: WADO-RS fetches them again
                        skips = 0 if protocol == "wado-rs" else len(paths)
                        if got["files"] != len(paths) or got["skipped"] != skips:
                            raise SystemExit(f"{protocol} {name}: {got}")
                        best[name].append(got["seconds"])
                        resume[name].append(got["resume"])
                base, this = min(best["base"]), min(best["this"])
                rbase, rthis = min(resume["base"]), min(resume["this"])
                print(
                    f"{protocol:>9} {base:11.3f} {this:8.3f} {base / this:6.2f} "
                    f"{rbase:12.3f} {rthis:12.3f} {rbase / rthis:6.2f}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
