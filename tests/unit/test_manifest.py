"""manifest.jsonl: lines from many threads, CSV copy, the folder summary."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from click.testing import CliRunner

from dicomtrolley.catalog import Catalog
from dicomtrolley.cli.main import main
from dicomtrolley.exceptions import DICOMTrolleyConnectionError
from dicomtrolley.manifest import Manifest, Outcomes, read_manifest, summarize
from dicomtrolley.storage import StorageDir
from tests.fakes import dicom_file

STUDY, SERIES = "1.2.840.1", "1.2.840.1.2"


def saved(root: Path, n: int) -> Path:
    uid = f"{SERIES}.{n}"
    writer = StorageDir(root).open_writer(root)
    writer.write(dicom_file(STUDY, SERIES, uid))
    return writer.commit()


def test_lines_from_many_threads_never_interleave(tmp_path: Path) -> None:
    manifest = Manifest.in_folder(tmp_path)
    long_text = "x" * 5000

    def work(n: int) -> None:
        for i in range(50):
            manifest.write({"n": n, "i": i, "text": long_text})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    manifest.close()
    lines = manifest.path.read_text().splitlines()
    assert len(lines) == 400
    assert {(r["n"], r["i"]) for r in map(json.loads, lines)} == {
        (n, i) for n in range(8) for i in range(50)
    }


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"status": "saved"}\n{"status": "sk')
    assert list(read_manifest(path)) == [{"status": "saved"}]


def test_outcomes_summary_and_report(tmp_path: Path) -> None:
    manifest = Manifest.in_folder(tmp_path)
    first = Outcomes(manifest, tmp_path, protocol="WADO-RS", row=3, query="q")
    one, two = saved(tmp_path, 1), saved(tmp_path, 2)
    first.saved(one, one.stat().st_size)
    first.saved(two, two.stat().st_size)
    error = DICOMTrolleyConnectionError(
        f"instance {SERIES}.3 of {SERIES}: reset", uids=(STUDY, SERIES, f"{SERIES}.3")
    )
    first.failed(f"instance {SERIES}.3", error)
    first.failed(
        "series 9", DICOMTrolleyConnectionError("refused", uids=(STUDY, "1.2.9"))
    )
    records = list(manifest.records())
    assert [r["status"] for r in records] == ["saved", "saved", "failed", "failed"]
    assert records[0]["instance_uid"] == f"{SERIES}.1"
    assert records[0]["checksum"].startswith("crc32:")
    assert records[0]["row"] == 3 and records[0]["query"] == "q"
    assert records[2]["error"].count(f"{SERIES}.3") == 1  # each UID once

    summary = summarize(tmp_path)
    assert (summary.instances, summary.studies, summary.failed) == (2, 1, 2)
    assert len(summary.failures) == 2

    # another download call through the same Manifest is the same run
    Outcomes(manifest, tmp_path, row=4).skipped(one)
    assert summarize(tmp_path).runs == 1
    manifest.close()
    rerun = Manifest.in_folder(tmp_path)
    later = Outcomes(rerun, tmp_path)  # a second run gets instance 3
    three = saved(tmp_path, 3)
    later.saved(three, three.stat().st_size)
    rerun.close()
    summary = summarize(tmp_path)
    assert summary.runs == 2 and summary.saved == 3 and summary.skipped == 1
    assert [f["uids"] for f in summary.failures] == [[STUDY, "1.2.9"]]

    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1  # a failure is still open
    assert "3 instance(s) of 1 study(ies)" in result.output
    assert "1 failure(s) not fetched since" in result.output
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--json"])
    assert json.loads(result.output)["instances"] == 3

    assert manifest.write_csv(tmp_path / "m.csv") == 6
    Catalog.for_folder(tmp_path).close()
