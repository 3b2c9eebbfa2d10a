"""What a download to disk reports, and how it tells a progress display.

A :class:`DownloadReport` collects, thread-safely, every file saved or skipped
and every failure with its UIDs. Failures never pass silently: the Trolley calls
:meth:`DownloadReport.raise_for_failures` at the end, which raises
:class:`~dicomtrolley.exceptions.DownloadIncompleteError` naming them all.
"""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

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
        return one_line(self.what, self.error, self.uids)


_UID_TOKEN = re.compile(r"(?<![\d.])\d+(?:\.\d+){2,}(?![\d.])")
_MAX_LINE = 400


def one_line(what: str, error: BaseException, uids: Sequence[str] = ()) -> str:
    """``what: error`` on one line, naming each UID once.

    Error texts repeat themselves (the object in the message, again in the URL,
    again in the server's error page): segments already said are dropped, a UID
    already named becomes ``…``, and UIDs of the failure not named yet are
    added at the end. At most about 400 characters.
    """
    body = " ".join(str(error).split())
    if what:
        body = body.replace(what, "")
    kept: list[str] = []
    for segment in (part.strip(" :") for part in body.split(": ")):
        if not segment or any(segment in k or segment.startswith(k) for k in kept):
            continue
        kept.append(segment)
    text = ": ".join([what, *kept]) if what else ": ".join(kept)
    seen: set[str] = set()

    def once(match: re.Match[str]) -> str:
        uid = match.group()
        if uid in seen:
            return "…"
        seen.add(uid)
        return uid

    text = _UID_TOKEN.sub(once, text)
    if len(text) > _MAX_LINE:
        text = text[: _MAX_LINE - 1] + "…"
    missing = [uid for uid in dict.fromkeys(uids) if uid not in seen]
    if missing:
        text += f" (UIDs: {', '.join(missing)})"
    return text


class OutcomeListener(Protocol):
    """Told about each outcome as it happens (e.g. a manifest). Thread-safe."""

    def saved(self, path: Path | None, nbytes: int = 0) -> None: ...

    def skipped(self, path: Path) -> None: ...

    def failed(self, what: str, error: DICOMTrolleyError) -> None: ...


#: The listener of the download running in this context (set by the Trolley).
#: A DownloadReport made while one is set tells it every outcome.
current_listener: contextvars.ContextVar[OutcomeListener | None] = (
    contextvars.ContextVar("dicomtrolley_outcome_listener", default=None)
)


def _current_listener() -> Any:
    return current_listener.get()


@dataclass
class DownloadReport:
    """Files saved and skipped, bytes written, and failures of one download.

    ``listener`` (default: the one of the download running in this context,
    see :data:`current_listener`) is told each outcome when it happens, from
    the thread where it happens; merging reports tells it nothing again.
    """

    saved: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    bytes_written: int = 0
    listener: OutcomeListener | None = field(
        default_factory=_current_listener, repr=False, compare=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_saved(self, path: Path | None, nbytes: int = 0) -> None:
        with self._lock:
            if path is not None:
                self.saved.append(path)
            self.bytes_written += nbytes
        if self.listener is not None:
            self.listener.saved(path, nbytes)

    def add_skipped(self, path: Path) -> None:
        with self._lock:
            self.skipped.append(path)
        if self.listener is not None:
            self.listener.skipped(path)

    def add_failure(self, what: str, error: DICOMTrolleyError) -> None:
        with self._lock:
            self.failures.append(Failure(what=what, uids=error.uids, error=error))
        if self.listener is not None:
            self.listener.failed(what, error)

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
            logger.error("%s", one_line(f"{item} failed", error, error.uids))
            if not error.uids:
                error.uids = uids_of(item)
            report.add_failure(str(item), error)

    if workers <= 1 or len(items) <= 1:
        for item in items:
            one(item)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dicomtrolley")
    try:
        list(pool.map(one, items))
    except BaseException:  # Ctrl-C: the transfers under way end, no new ones start
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
