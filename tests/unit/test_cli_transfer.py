"""Checks before work (issue 11): output folder and free space."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import pytest

from dicomtrolley.cli.progress import TransferCounts
from dicomtrolley.cli.transfer import check_output, interrupted


def test_output_is_created_and_written(tmp_path: Path) -> None:
    warnings: list[str] = []
    free = check_output(tmp_path / "a" / "b", warn=warnings.append)
    assert (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe is gone
    assert free > 0


def test_a_file_in_the_way_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(click.UsageError, match="cannot write to the output folder"):
        check_output(tmp_path / "file" / "out")


def test_too_little_space_is_refused_with_numbers(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(click.UsageError) as raised:
        check_output(tmp_path, expected_bytes=free * 10 + 10**12)
    assert "not enough space" in str(raised.value) and "free" in str(raised.value)
    assert check_output(tmp_path, expected_bytes=1) == shutil.disk_usage(tmp_path).free


def test_low_space_warns_when_size_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dicomtrolley.cli.transfer.LOW_SPACE", 10**18)
    warnings: list[str] = []
    check_output(tmp_path, warn=warnings.append)
    assert len(warnings) == 1 and "free in" in warnings[0]


def test_interrupted_summary(tmp_path: Path) -> None:
    counts = TransferCounts(instances_done=7, skipped=2, bytes_saved=5_000)
    text = interrupted(counts, tmp_path, 3.2, ["row 4: no study found"])
    assert text.startswith("Interrupted after 3.2 s: 5 files saved (5.0 kB)")
    assert "2 already present" in text and "row 4" in text
    assert "Run the same command again" in text
