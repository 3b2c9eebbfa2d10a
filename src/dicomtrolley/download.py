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
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dicomtrolley.core import DICOMDownloadable, InstanceReference
from dicomtrolley.exceptions import DICOMTrolleyError, DownloadIncompleteError
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("download")

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

    from dicomtrolley.storage import DICOMDiskStorage

T = TypeVar("T")
R = TypeVar("R")


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


@dataclass
class SaveJob:
    """One :meth:`~dicomtrolley.core.Downloader.save_all`: what to save, where to,
    and what became of it.

    Every adapter's save_all runs through this: it skips the files already on
    disk, reports each file saved (once) and tells the progress display. A
    storage that must not write into output_dir (de-identified files there and
    none here, another de-identification key) raises when the job is made.
    """

    objects: Sequence[DICOMDownloadable]
    storage: DICOMDiskStorage
    output_dir: str | Path
    progress: Progress
    max_workers: int | None = None
    report: DownloadReport = field(default_factory=DownloadReport)

    def __post_init__(self) -> None:
        check = getattr(self.storage, "check_folder", None)  # duck-typed storages
        if check is not None:
            check(self.output_dir)

    def skip_if_present(self, refs: Sequence[InstanceReference]) -> bool:
        """True when every one of refs has its intact file: each is reported skipped.

        False (and nothing reported) when refs is empty or a file is missing.
        """
        paths = [self.storage.existing_file(ref, self.output_dir) for ref in refs]
        present = [path for path in paths if path is not None]
        if not refs or len(present) < len(paths):
            return False
        self.progress.add_total(instances=len(present))
        for path in present:
            self.report.add_skipped(path)
            self.progress.instance_done(skipped=True)
        return True

    def skip_present(self, refs: Sequence[R]) -> list[R]:
        """The refs still to fetch: instances whose intact file is present are
        reported skipped; studies and series are kept."""
        return [
            ref
            for ref in refs
            if not (isinstance(ref, InstanceReference) and self.skip_if_present([ref]))
        ]

    def saved(self, path: Path, nbytes: int) -> None:
        """A file is complete on disk."""
        self.report.add_saved(path, nbytes)
        self.progress.instance_done(nbytes)

    def save_dataset(self, dataset: Dataset) -> None:
        """Save a dataset held in memory with ``storage.save`` (4.1.0's path).

        A file that cannot be stored is a failure of its instance, named by its
        SOPInstanceUID; the download goes on. The storage's transform changes
        it first; the index keeps the UIDs received.
        """
        from pydicom.dataset import Dataset

        from dicomtrolley.storage import record_saved

        uid = str(dataset.get("SOPInstanceUID", ""))
        source = Dataset()  # the UIDs received, for the index
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(source, keyword, dataset.get(keyword, ""))
        try:
            note = None
            if hasattr(self.storage, "prepare"):  # duck-typed storages have not
                dataset, note = self.storage.prepare(dataset)
            path = self.storage.save(dataset, path=str(self.output_dir))
        except DICOMTrolleyError as error:
            if uid and uid not in error.uids:
                error.uids = (*error.uids, uid)
            self.report.add_failure(f"instance {uid or '(no SOPInstanceUID)'}", error)
            return
        if path is not None:
            record_saved(
                self.output_dir,
                Path(path),
                source,
                layout=self.storage.layout_key(),
            )
            hook = getattr(self.storage, "transform", None)
            if hook is not None and note is not None:
                hook.saved(Path(self.output_dir), Path(path), note)
        nbytes = _file_size(path)
        self.report.add_saved(path, nbytes)
        self.progress.instance_done(nbytes)


def _file_size(path: Path | None) -> int:
    """Size of a saved file; 0 when a storage did not say where it saved."""
    if path is None:
        return 0
    try:
        return path.stat().st_size
    except (OSError, AttributeError, TypeError):  # save() returned no real path
        return 0


def run_transfers(
    items: Sequence[T],
    transfer: Callable[[T], None],
    report: DownloadReport,
    *,
    workers: int,
    uids_of: Callable[[T], tuple[str, ...]],
    stops_all: Callable[[DICOMTrolleyError], bool] | None = None,
) -> None:
    """Run transfer(item) for every item, workers at a time; record failures.

    A failing item does not stop the others: its DICOMTrolleyError goes into the
    report with the item's UIDs, unless stops_all(error) says it ends the whole
    run: then it propagates once the transfers under way have ended. Anything
    else is a bug and propagates.
    """

    def one(item: T) -> None:
        try:
            transfer(item)
        except DICOMTrolleyError as error:
            if stops_all is not None and stops_all(error):
                raise
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
