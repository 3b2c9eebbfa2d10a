"""FallbackDownloader's choices on fake downloaders: which errors fall back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from dicomtrolley.core import DICOMDownloadable, Downloader, StudyReference
from dicomtrolley.credentials import ConfigError
from dicomtrolley.download import DownloadReport, Progress
from dicomtrolley.exceptions import (
    ClientHTTPError,
    DICOMTrolleyError,
    PermanentError,
    ServerHTTPError,
    StorageError,
)
from dicomtrolley.fallback import FallbackDownloader, falls_back, protocol_name
from dicomtrolley.storage import DICOMDiskStorage, StorageDir


class Scripted(Downloader):
    """Fails the studies in `fails` with their error, 'saves' the others."""

    def __init__(self, fails: dict[str, DICOMTrolleyError]) -> None:
        self.fails = fails
        self.asked: list[str] = []

    def save_all(
        self,
        objects: Sequence[DICOMDownloadable],
        storage: DICOMDiskStorage,
        output_dir: str | Path,
        *,
        max_workers: int | None = None,
        progress: Progress | None = None,
    ) -> DownloadReport:
        report = DownloadReport()
        for obj in objects:
            uid = obj.reference().study_uid
            self.asked.append(uid)
            if uid in self.fails:
                error = self.fails[uid]
                error.uids = (uid,)
                report.add_failure(f"study {uid}", error)
            else:
                report.add_saved(Path(output_dir) / uid, 10)
        return report


def _save(fallback: FallbackDownloader, *uids: str, tmp: Path) -> DownloadReport:
    return fallback.save_all(
        [StudyReference(uid) for uid in uids], StorageDir(tmp), tmp
    )


def test_permanent_failure_goes_to_the_next(tmp_path: Path) -> None:
    first = Scripted({"1.1": ClientHTTPError("404", status_code=404)})
    second = Scripted({})
    fallback = FallbackDownloader([("a", first), ("b", second)])
    report = _save(fallback, "1.1", "1.2", tmp=tmp_path)
    assert report.failures == []
    assert second.asked == ["1.1"]  # only the failed study
    assert fallback.delivered_by == {"1.1": "b", "1.2": "a"}
    assert len(report.saved) == 2 and report.bytes_written == 20


@pytest.mark.parametrize(
    "error",
    [ServerHTTPError("busy", status_code=503), StorageError("disk full")],
)
def test_transient_and_storage_errors_stay(
    error: DICOMTrolleyError, tmp_path: Path
) -> None:
    first = Scripted({"1.1": error})
    second = Scripted({})
    fallback = FallbackDownloader([("a", first), ("b", second)])
    report = _save(fallback, "1.1", tmp=tmp_path)
    assert second.asked == []
    assert [f.uids for f in report.failures] == [("1.1",)]
    assert "1.1" not in fallback.delivered_by
    assert not falls_back(error)


def test_last_protocols_failure_is_reported_with_every_attempt(tmp_path: Path) -> None:
    refused = {"1.1": ClientHTTPError("refused", status_code=403)}
    fallback = FallbackDownloader([("a", Scripted(refused)), ("b", Scripted(refused))])
    report = _save(fallback, "1.1", tmp=tmp_path)
    assert len(report.failures) == 1
    assert [a.protocol for a in fallback.attempts["1.1"]] == ["a", "b"]


def test_names_and_empty_list() -> None:
    assert protocol_name(Scripted({})) == "scripted"
    with pytest.raises(ConfigError, match="at least one downloader") as caught:
        FallbackDownloader([])
    assert isinstance(caught.value, PermanentError)
    assert not isinstance(caught.value, ValueError)
