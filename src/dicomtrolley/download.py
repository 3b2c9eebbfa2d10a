"""What a download to disk reports, and how it tells a progress display.

A :class:`DownloadReport` collects, thread-safely, every file saved or skipped
and every failure with its UIDs. Failures never pass silently: the Trolley calls
:meth:`DownloadReport.raise_for_failures` at the end, which raises
:class:`~dicomtrolley.exceptions.DownloadIncompleteError` naming them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from dicomtrolley.exceptions import DICOMTrolleyError, DownloadIncompleteError
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("download")

T = TypeVar("T")


class Progress(Protocol):
    """Receives progress from downloaders. Must be thread-safe."""

    def add_total(self, instances: int = 0, nbytes: int = 0) -> None:
        """More work became known (instances and/or bytes expected)."""

    def advance_bytes(self, nbytes: int) -> None:
        """nbytes more arrived."""

    def instance_done(self, nbytes: int = 0, skipped: bool = False) -> None:
        """One instance is complete on disk (or was already there: skipped)."""


class NullProgress:
    """A Progress that ignores everything."""

    def add_total(self, instances: int = 0, nbytes: int = 0) -> None:
        pass

    def advance_bytes(self, nbytes: int) -> None:
        pass

    def instance_done(self, nbytes: int = 0, skipped: bool = False) -> None:
        pass


@dataclass
class Failure:
    """One thing that could not be downloaded, with the UIDs it concerns."""

    what: str
    uids: tuple[str, ...]
    error: DICOMTrolleyError

    def __str__(self) -> str:
        text = f"{self.what}: {self.error}"
        missing = [uid for uid in self.uids if uid not in text]
        if missing:
            text += f" (UIDs: {', '.join(missing)})"
        return text


@dataclass
class DownloadReport:
    """Files saved and skipped, bytes written, and failures of one download."""

    saved: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    bytes_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_saved(self, path: Path | None, nbytes: int = 0) -> None:
        with self._lock:
            if path is not None:
                self.saved.append(path)
            self.bytes_written += nbytes

    def add_skipped(self, path: Path) -> None:
        with self._lock:
            self.skipped.append(path)

    def add_failure(self, what: str, error: DICOMTrolleyError) -> None:
        with self._lock:
            self.failures.append(Failure(what=what, uids=error.uids, error=error))

    def merge(self, other: DownloadReport) -> None:
        with self._lock:
            self.saved.extend(other.saved)
            self.skipped.extend(other.skipped)
            self.failures.extend(other.failures)
            self.bytes_written += other.bytes_written

    @property
    def failed_uids(self) -> tuple[str, ...]:
        return tuple(uid for failure in self.failures for uid in failure.uids)

    def raise_for_failures(self) -> None:
        """Raise DownloadIncompleteError naming every failure, if there was any."""
        if not self.failures:
            return
        lines = "\n".join(f"  - {failure}" for failure in self.failures[:50])
        more = len(self.failures) - 50
        if more > 0:
            lines += f"\n  ... and {more} more"
        error = DownloadIncompleteError(
            f"{len(self.failures)} download(s) failed ({len(self.saved)} file(s) "
            f"saved):\n{lines}",
            uids=self.failed_uids,
        )
        error.report = self  # what did arrive: saved, skipped, bytes
        raise error


def skip_present(
    refs: Sequence[T],
    present: Callable[[T], Path | None],
    report: DownloadReport,
    progress: Progress,
) -> list[T]:
    """The refs still to fetch; those whose verified file is present are skipped.

    present(ref) gives the intact file for ref, or None. Skipped files go into
    the report and count as done for the progress display.
    """
    todo: list[T] = []
    for ref in refs:
        existing = present(ref)
        if existing is None:
            todo.append(ref)
        else:
            report.add_skipped(existing)
            progress.instance_done(skipped=True)
    return todo


def run_transfers(
    items: Sequence[T],
    transfer: Callable[[T], None],
    report: DownloadReport,
    *,
    workers: int,
    uids_of: Callable[[T], tuple[str, ...]],
) -> None:
    """Run transfer(item) for every item, workers at a time; record failures.

    A failing item does not stop the others: its DICOMTrolleyError goes into the
    report with the item's UIDs. Anything else is a bug and propagates.
    """

    def one(item: T) -> None:
        try:
            transfer(item)
        except DICOMTrolleyError as error:
            logger.error("%s failed: %s", item, error)
            if not error.uids:
                error.uids = uids_of(item)
            report.add_failure(str(item), error)

    if workers <= 1 or len(items) <= 1:
        for item in items:
            one(item)
        return
    with ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="dicomtrolley"
    ) as pool:
        list(pool.map(one, items))
