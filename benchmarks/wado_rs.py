"""WADO-RS download speed and memory: dicomtrolley against curl, same Orthanc, one run.

For a large study (default 1 GiB, instances of 105 MiB) and one 4x smaller:

1. curl downloads the study's multipart answer and writes the raw bytes to a file
   (the baseline: no parsing, no per-instance files);
2. dicomtrolley (WadoRS + TemplateStorage, in a child process so that its peak
   RSS is its own) downloads the same study into one verified file per instance.

Prints throughput of each, the ratio, and dicomtrolley's peak RSS. Targets from
issue 2: ratio >= 0.9, peak RSS <= 120 MB, and no growth with study size.

Usage: python benchmarks/wado_rs.py [--gib 1.0] [--repeat 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicomtrolley import synthetic  # noqa: E402
from tests.orthanc_server import OrthancServer  # noqa: E402

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'

CHILD = r"""
import json, sys, time
import requests

def peak_rss_kib():
    # VmHWM is this process's own high-water mark; ru_maxrss would include the
    # parent's peak, inherited across fork and exec on Linux.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")

from dicomtrolley.core import StudyReference
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.wado_rs import WadoRS
url, study_uid, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fsync = sys.argv[5] == "1"
storage = TemplateStorage(out, "{StudyInstanceUID}/{SOPInstanceUID}.dcm", fsync=fsync)
downloader = WadoRS(requests.Session(), url, request_per_series=False)
start = time.perf_counter()
report = downloader.save_all([StudyReference(study_uid)], storage, out, max_workers=workers)
elapsed = time.perf_counter() - start
report.raise_for_failures()
print(json.dumps({
    "seconds": elapsed,
    "bytes": report.bytes_written,
    "files": len(report.saved),
    "peak_rss_kib": peak_rss_kib(),
}))
"""


def curl_download(url: str, target: Path) -> tuple[float, int]:
    start = time.perf_counter()
    subprocess.run(
        ["curl", "-s", "-f", "-H", f"Accept: {ACCEPT}", "-o", str(target), url],
        check=True,
    )
    return time.perf_counter() - start, target.stat().st_size


def trolley_download(
    base_url: str, study_uid: str, out: Path, fsync: bool = False
) -> dict[str, float]:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            base_url,
            study_uid,
            str(out),
            "1",
            str(int(fsync)),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def bench(
    server: OrthancServer, study_uid: str, work: Path, repeat: int
) -> dict[str, float]:
    url = f"{server.dicomweb_url}/studies/{study_uid}"
    best_curl = best_ours = float("inf")
    size = 0
    peak = 0.0
    for attempt in range(repeat):
        raw = work / f"curl-{attempt}.bin"
        seconds, size = curl_download(url, raw)
        raw.unlink()
        best_curl = min(best_curl, seconds)
        out = work / f"trolley-{attempt}"
        result = trolley_download(server.dicomweb_url, study_uid, out)
        shutil.rmtree(out)
        best_ours = min(best_ours, result["seconds"])
        peak = max(peak, result["peak_rss_kib"] / 1024)
    out = work / "trolley-fsync"
    with_fsync = trolley_download(server.dicomweb_url, study_uid, out, fsync=True)
    shutil.rmtree(out)
    return {
        "bytes": size,
        "fsync_mb_s": size / with_fsync["seconds"] / 1e6,
        "curl_mb_s": size / best_curl / 1e6,
        "trolley_mb_s": size / best_ours / 1e6,
        "ratio": best_curl / best_ours,
        "peak_rss_mb": peak,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="large study size")
    parser.add_argument("--repeat", type=int, default=3, help="runs; best counts")
    parser.add_argument("--keep", type=Path, help="work folder (default: temporary)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dicomtrolley-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    large = int(args.gib * 1024**3)
    sizes = {"large": large, "quarter": large // 4}
    print(f"generating studies of {large / 1e9:.2f} GB and {large / 4e9:.2f} GB ...")
    studies = {}
    for name, size in sizes.items():
        paths = synthetic.large_study(work / name, size, key=f"bench-{name}")
        studies[name] = (paths, str(_study_uid(paths[0])))
    results = {}
    with OrthancServer() as server:
        for name, (paths, study_uid) in studies.items():
            server.upload(paths)
            for path in paths:
                path.unlink()
            results[name] = bench(server, study_uid, work, args.repeat)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{'study':>8} {'MB':>8} {'curl MB/s':>10} {'trolley MB/s':>13} {'ratio':>6} "
        f"{'peak RSS MB':>12} {'fsync MB/s':>11}"
    )
    for name, r in results.items():
        print(
            f"{name:>8} {r['bytes'] / 1e6:8.0f} {r['curl_mb_s']:10.0f} "
            f"{r['trolley_mb_s']:13.0f} {r['ratio']:6.2f} {r['peak_rss_mb']:12.0f} "
            f"{r['fsync_mb_s']:11.0f}"
        )
    growth = results["large"]["peak_rss_mb"] / results["quarter"]["peak_rss_mb"]
    print(f"peak RSS growth for 4x the data: {growth:.2f}x")
    return 0


def _study_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


if __name__ == "__main__":
    os.environ.setdefault("TCP_NODELAY", "1")
    sys.exit(main())
