"""RAD-69 download speed and memory: dicomtrolley's Rad69 against the emulator.

For a large study (default about 420 MB in instances of 105 MiB) and one 4x
smaller, served by an in-process :class:`~dicomtrolley.emulator.Emulator`:

1. curl posts the same SOAP request and writes the raw MTOM answer to a file
   (the baseline: no parsing, no per-instance files);
2. dicomtrolley (Rad69 + TemplateStorage, in a child process so that its peak
   RSS is its own) downloads every instance of the study into its own verified
   file, one request for the whole series.

Prints throughput of each, the ratio, and dicomtrolley's peak RSS. Memory must
stay bounded: the same peak for 4x the data and for instances of 100 MB and more.

Usage: python benchmarks/rad69.py [--mb 420] [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicomtrolley import synthetic  # noqa: E402
from dicomtrolley.core import InstanceReference  # noqa: E402
from dicomtrolley.emulator import Emulator  # noqa: E402
from dicomtrolley.formats.soap import SOAP_CONTENT_TYPE, build_request  # noqa: E402

USER, PASSWORD = "trolley", "trolley"
INSTANCE_BYTES = 105 * 1024**2

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

from dicomtrolley.core import InstanceReference
from dicomtrolley.rad69 import Rad69
from dicomtrolley.storage import TemplateStorage
url, refs_json, out, user, password = sys.argv[1:6]
refs = [InstanceReference(*uids) for uids in json.loads(refs_json)]
storage = TemplateStorage(out, "{StudyInstanceUID}/{SOPInstanceUID}.dcm")
session = requests.Session()
session.auth = (user, password)
downloader = Rad69(session, url, transfer_syntax_list=["1.2.840.10008.1.2.1"])
start = time.perf_counter()
report = downloader.save_all(refs, storage, out)
elapsed = time.perf_counter() - start
report.raise_for_failures()
print(json.dumps({
    "seconds": elapsed,
    "bytes": report.bytes_written,
    "files": len(report.saved),
    "peak_rss_kib": peak_rss_kib(),
}))
"""


def references(paths: list[Path]) -> list[InstanceReference]:
    import pydicom

    refs = []
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        refs.append(
            InstanceReference(
                str(ds.StudyInstanceUID),
                str(ds.SeriesInstanceUID),
                str(ds.SOPInstanceUID),
            )
        )
    return refs


def curl_download(url: str, request: Path, target: Path) -> tuple[float, int]:
    start = time.perf_counter()
    subprocess.run(
        [
            "curl",
            "-s",
            "-f",
            "-u",
            f"{USER}:{PASSWORD}",
            "-H",
            f"Content-Type: {SOAP_CONTENT_TYPE}",
            "--data-binary",
            f"@{request}",
            "-o",
            str(target),
            url,
        ],
        check=True,
    )
    return time.perf_counter() - start, target.stat().st_size


def trolley_download(
    url: str, refs: list[InstanceReference], out: Path
) -> dict[str, float]:
    uids = json.dumps([list(ref.uids()) for ref in refs])
    result = subprocess.run(
        [sys.executable, "-c", CHILD, url, uids, str(out), USER, PASSWORD],
        check=True,
        capture_output=True,
        text=True,
    )
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def bench(
    emulator: Emulator, refs: list[InstanceReference], work: Path, repeat: int
) -> dict[str, float]:
    url = emulator.base_url + "/rad69"
    request = work / "request.xml"
    request.write_bytes(
        build_request(
            refs,
            to=url,
            transfer_syntaxes=["1.2.840.10008.1.2.1"],
            repository_unique_id="1.3.6.1.4.1000",
        )
    )
    best_curl = best_ours = float("inf")
    size = 0
    peak = 0.0
    files = 0
    for attempt in range(repeat):
        raw = work / f"curl-{attempt}.bin"
        seconds, size = curl_download(url, request, raw)
        raw.unlink()
        best_curl = min(best_curl, seconds)
        out = work / f"trolley-{attempt}"
        result = trolley_download(url, refs, out)
        shutil.rmtree(out)
        best_ours = min(best_ours, result["seconds"])
        peak = max(peak, result["peak_rss_kib"] / 1024)
        files = int(result["files"])
    if files != len(refs):
        raise RuntimeError(f"saved {files} of {len(refs)} instances")
    return {
        "bytes": size,
        "instances": len(refs),
        "curl_mb_s": size / best_curl / 1e6,
        "trolley_mb_s": size / best_ours / 1e6,
        "ratio": best_curl / best_ours,
        "peak_rss_mb": peak,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=420.0, help="large study, MB")
    parser.add_argument("--repeat", type=int, default=5, help="runs; best counts")
    parser.add_argument("--keep", type=Path, help="work folder (default: temporary)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dicomtrolley-rad69-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    large = int(args.mb * 1e6)
    sizes = {"large": large, "quarter": large // 4}
    print(f"generating studies of {large / 1e6:.0f} MB and {large / 4e6:.0f} MB ...")
    results = {}
    try:
        for name, size in sizes.items():
            data = work / f"data-{name}"
            paths = synthetic.large_study(
                data, size, INSTANCE_BYTES, key=f"rad69-bench-{name}"
            )
            refs = references(paths)
            with Emulator(data, rescan_interval=None) as emulator:
                results[name] = bench(emulator, refs, work, args.repeat)
            shutil.rmtree(data)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{'study':>8} {'MB':>8} {'instances':>9} {'curl MB/s':>10} "
        f"{'trolley MB/s':>13} {'ratio':>6} {'peak RSS MB':>12}"
    )
    for name, r in results.items():
        print(
            f"{name:>8} {r['bytes'] / 1e6:8.0f} {r['instances']:9.0f} "
            f"{r['curl_mb_s']:10.0f} {r['trolley_mb_s']:13.0f} {r['ratio']:6.2f} "
            f"{r['peak_rss_mb']:12.0f}"
        )
    growth = results["large"]["peak_rss_mb"] / results["quarter"]["peak_rss_mb"]
    print(f"peak RSS growth for 4x the data: {growth:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
