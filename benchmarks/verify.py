"""Micro-benchmark: checking a downloaded file, pydicom against the walker.

Every instance a download saves goes through ``verify_dicom_file`` before it
gets its final name. Timed in this one process, per file, best of several runs
(old and new runs alternate, so both see the same machine load):

- old: ``_verify_with_pydicom``, ``pydicom.dcmread(defer_size=4096)`` and a loop
  over the elements (what ``verify_dicom_file`` did before the walker);
- new: ``verify_dicom_file``, which walks little endian files with
  :class:`~dicomtrolley.formats.dataset_walker.DatasetWalker`.

on (a) the demo's 105 small files (``synthetic.write_studies``: Explicit VR,
Implicit VR and RLE Lossless instances) and (b) one ~20 MB file
(``synthetic.large_study``). Both results are compared before timing. Target:
several times faster on the small files, no slower on the large one.

Usage: python benchmarks/verify.py [--repeat 15] [--large-bytes 20000000]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dicomtrolley import synthetic
from dicomtrolley.storage import _verify_with_pydicom, verify_dicom_file

Check = Callable[[Path], Any]


def run_time(check: Check, paths: list[Path]) -> float:
    """Seconds for one run of check over all paths."""
    gc.collect()
    start = time.perf_counter()
    for path in paths:
        check(path)
    return time.perf_counter() - start


def best_per_file(checks: list[Check], paths: list[Path], repeat: int) -> list[float]:
    """Best time per file of each check; runs alternate, so both see the same load.

    A run checks at least 100 files (the same ones again when there are fewer),
    so that one file's cold start after the garbage collection does not count.
    """
    runs = paths * max(1, 100 // len(paths))
    best = [float("inf")] * len(checks)
    for _ in range(repeat):
        for index, check in enumerate(checks):
            best[index] = min(best[index], run_time(check, runs))
    return [seconds / len(runs) for seconds in best]


def same_answers(paths: list[Path]) -> None:
    """Old and new agree on every file: same tags, same SOP Instance UID."""
    for path in paths:
        old, new = _verify_with_pydicom(path), verify_dicom_file(path)
        assert list(old.keys()) == list(new.keys()), path
        assert old.SOPInstanceUID == new.SOPInstanceUID, path


def report(label: str, paths: list[Path], repeat: int) -> None:
    same_answers(paths)
    old, new = best_per_file([_verify_with_pydicom, verify_dicom_file], paths, repeat)
    size = sum(path.stat().st_size for path in paths) / len(paths)
    print(f"{label}: {len(paths)} file(s), {size / 1e6:.3f} MB each on average")
    print(f"  old  pydicom.dcmread + element loop  {old * 1e3:8.3f} ms/file")
    print(f"  new  DatasetWalker                   {new * 1e3:8.3f} ms/file")
    print(f"  speed-up                             {old / new:8.1f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--large-bytes", type=int, default=20_000_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pydicom warns about demo UIDs

    with tempfile.TemporaryDirectory(prefix="dicomtrolley-verify-") as folder:
        root = Path(folder)
        small = synthetic.write_studies(root / "demo", synthetic.default_studies())
        large = synthetic.large_study(
            root / "large",
            args.large_bytes,
            instance_bytes=max(args.large_bytes, 20 * 1024**2),
            key="verify",
        )
        print(f"best of {args.repeat} runs")
        report("demo studies (small files)", small, args.repeat)
        report("large study", large, args.repeat)


if __name__ == "__main__":
    main()
