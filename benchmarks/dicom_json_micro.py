"""Micro-benchmark: DICOM JSON -> pydicom Datasets for a 10,000 instance QIDO-RS answer.

Builds the answer a server gives to an instance level QIDO-RS search
(10 studies x 10 series x 100 instances, 14 attributes each, as PS3.18 Annex F
DICOM JSON), serialises it to bytes and times, in the same run:

* baseline, the dicomtrolley 4.1.0 way: ``json.loads`` and then
  ``pydicom.Dataset.from_json`` for each result;
* ``dicomtrolley.formats.dicom_json.parse_dicom_json`` on the same bytes.

Each is run several times and the best time is reported (the least disturbed by
other work on the machine). For reference it also times ``json.loads`` alone and
both converters with and without Python's garbage collector paused
(``parse_dicom_json`` pauses it; see ``fast_dataset.gc_paused``). Run with ``python benchmarks/dicom_json_micro.py
[--repeat N] [--studies N] [--series N] [--instances N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

from pydicom import Dataset

from dicomtrolley.formats import dicom_json
from dicomtrolley.formats.dicom_json import parse_dicom_json

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.8.498"
BASE_URL = "https://pacs.example.org/dicom-web"


def qido_instance_answer(studies: int, series: int, instances: int) -> bytes:
    """A realistic instance level QIDO-RS answer as the server sends it."""
    results: list[dict[str, Any]] = []
    for st in range(studies):
        study_uid = f"{ROOT}.{st + 1}.{1000 + st}"
        patient_id = f"PAT{st:05d}"
        study_date = f"2024{(st % 12) + 1:02d}{(st % 28) + 1:02d}"
        accession = f"ACC{st:08d}"
        name = {"Alphabetic": f"Testpatient{st}^Anna^M"}
        for se in range(series):
            series_uid = f"{study_uid}.{se + 1}"
            modality = ("CT", "MR", "PT", "US")[se % 4]
            for inst in range(instances):
                sop_uid = f"{series_uid}.{inst + 1}"
                retrieve = (
                    f"{BASE_URL}/studies/{study_uid}/series/{series_uid}"
                    f"/instances/{sop_uid}"
                )
                results.append(
                    {
                        "00080016": {"vr": "UI", "Value": [CT_IMAGE_STORAGE]},
                        "00080018": {"vr": "UI", "Value": [sop_uid]},
                        "00080020": {"vr": "DA", "Value": [study_date]},
                        "00080030": {"vr": "TM", "Value": ["101530.123"]},
                        "00080050": {"vr": "SH", "Value": [accession]},
                        "00080060": {"vr": "CS", "Value": [modality]},
                        "00081190": {"vr": "UR", "Value": [retrieve]},
                        "00100010": {"vr": "PN", "Value": [name]},
                        "00100020": {"vr": "LO", "Value": [patient_id]},
                        "0020000D": {"vr": "UI", "Value": [study_uid]},
                        "0020000E": {"vr": "UI", "Value": [series_uid]},
                        "00200013": {"vr": "IS", "Value": [inst + 1]},
                        "00280010": {"vr": "US", "Value": [512]},
                        "00280011": {"vr": "US", "Value": [512]},
                    }
                )
    return json.dumps(results).encode("utf-8")


def baseline(body: bytes) -> list[Dataset]:
    """What dicomtrolley 4.1.0 does: json.loads, then Dataset.from_json per item."""
    return [Dataset.from_json(item) for item in json.loads(body)]


def with_gc_paused(function: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def paused(body: bytes) -> Any:
        gc.disable()
        try:
            return function(body)
        finally:
            gc.enable()

    return paused


def without_gc_pause(body: bytes) -> list[Dataset]:
    """parse_dicom_json with the garbage collector left running (for reference)."""
    with mock.patch.object(dicom_json, "gc_paused", contextlib.nullcontext):
        return parse_dicom_json(body)


def best_time(function: Callable[[bytes], Any], body: bytes, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        function(body)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    body = qido_instance_answer(args.studies, args.series, args.instances)
    count = args.studies * args.series * args.instances

    # Same input, same answer: check before timing.
    ours, theirs = parse_dicom_json(body), baseline(body)
    assert len(ours) == len(theirs) == count
    assert ours[0] == theirs[0] and ours[-1] == theirs[-1]
    del ours, theirs

    old = best_time(baseline, body, args.repeat)
    new = best_time(parse_dicom_json, body, args.repeat)
    print(
        f"QIDO-RS instance answer: {count} instances, {len(body) / 1e6:.2f} MB JSON, "
        f"best of {args.repeat}"
    )
    print(f"  baseline: json.loads + Dataset.from_json  {old:7.3f} s", end="")
    print(f"  ({old / count * 1e6:5.1f} us/instance)")
    print(f"  parse_dicom_json                          {new:7.3f} s", end="")
    print(f"  ({new / count * 1e6:5.1f} us/instance)")
    print(f"  speed-up                                  {old / new:7.1f} x")
    print("for reference:")
    references: list[tuple[str, Callable[[bytes], Any]]] = [
        ("json.loads alone", json.loads),
        ("json.loads alone, GC paused", with_gc_paused(json.loads)),
        ("baseline, GC paused", with_gc_paused(baseline)),
        ("parse_dicom_json, GC not paused", without_gc_pause),
    ]
    for label, function in references:
        print(f"  {label:40s}  {best_time(function, body, args.repeat):7.3f} s")


if __name__ == "__main__":
    main()
