"""A rich progress display for downloads: the CLI's :class:`~dicomtrolley.download.Progress`.

Downloaders report from several threads at once, and not always everything:
WADO-URI knows how many instances are coming but not their size, WADO-RS per
series learns sizes request by request (``Content-Length``) and never how many
instances a series holds. The display shows what is known::

    Downloading ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━  12/40 files  34.1 MB  5.2 MB/s  ETA 0:00:08

The bar and ETA follow the instance count when it is known, else the bytes
announced so far, else the bar pulses. The rate is rich's moving estimate over
the bytes received.

:class:`RichProgress` works without a terminal too (it then draws nothing) and
keeps the counts for a summary at the end (:attr:`RichProgress.counts`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import timedelta
from types import TracebackType

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.progress_bar import ProgressBar
from rich.text import Text


@dataclass(frozen=True)
class TransferCounts:
    """What a download has done so far. Totals are None while unknown."""

    instances_total: int | None = None
    instances_done: int = 0
    skipped: int = 0
    bytes_total: int | None = None
    bytes_received: int = 0
    bytes_saved: int = 0

    @property
    def downloaded(self) -> int:
        """Instances written by this download (done minus skipped)."""
        return self.instances_done - self.skipped

    @property
    def known_instances_total(self) -> int | None:
        """instances_total, unless more instances than that are done already."""
        total = self.instances_total
        if total is None or self.instances_done > total:
            return None
        return total

    def fraction(self) -> float | None:
        """How much is done (0..1), by instances if known, else by bytes."""
        total = self.known_instances_total
        if total:
            return self.instances_done / total
        if self.bytes_total:
            return min(1.0, self.bytes_received / self.bytes_total)
        return None


def seconds_remaining(counts: TransferCounts, speed: float | None) -> float | None:
    """Estimated seconds to go at speed (bytes/s), or None when unknown.

    With a known instance count, the remaining instances are taken to be as
    large as the average downloaded one, minus what is already in flight. Else
    the announced bytes (which may grow) are used.
    """
    if not speed or speed <= 0:
        return None
    total = counts.known_instances_total
    if total is not None:
        remaining = total - counts.instances_done
        if remaining <= 0:
            return 0.0
        if counts.downloaded <= 0 or counts.bytes_saved <= 0:
            return None
        per_instance = counts.bytes_saved / counts.downloaded
        in_flight = max(0, counts.bytes_received - counts.bytes_saved)
        return max(0.0, per_instance * remaining - in_flight) / speed
    if counts.bytes_total is not None:
        return max(0, counts.bytes_total - counts.bytes_received) / speed
    return None


def _counts(task: Task) -> TransferCounts:
    counts = task.fields.get("counts")
    return counts if isinstance(counts, TransferCounts) else TransferCounts()


class _BarColumn(ProgressColumn):
    def render(self, task: Task) -> ProgressBar:
        fraction = _counts(task).fraction()
        return ProgressBar(
            total=None if fraction is None else 1000.0,
            completed=0 if fraction is None else fraction * 1000.0,
            width=30,
            pulse=fraction is None,
            animation_time=task.get_time(),
        )


class _FilesColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        counts = _counts(task)
        total = counts.known_instances_total
        text = f"{counts.instances_done}" + ("" if total is None else f"/{total}")
        text += " files"
        if counts.skipped:
            text += f" ({counts.skipped} skipped)"
        return Text(text, style="progress.download")


class _BytesColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        counts = _counts(task)
        text = decimal(counts.bytes_received)
        if counts.bytes_total and counts.known_instances_total is None:
            text += f" of {decimal(counts.bytes_total)}"
        return Text(text, style="progress.filesize")


class _EtaColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        remaining = seconds_remaining(_counts(task), task.speed)
        if remaining is None:
            return Text("ETA -:--:--", style="progress.remaining")
        shown = timedelta(seconds=int(remaining + 0.999))
        return Text(f"ETA {shown}", style="progress.remaining")


class RichProgress:
    """Shows download progress on a rich console. Thread-safe.

    Use as a context manager around the download; the display starts and stops
    with it. Implements :class:`dicomtrolley.download.Progress`.

    Parameters
    ----------
    console:
        Where to draw (default: stderr).
    description:
        Text before the bar.
    disable:
        Draw nothing, only count. Default: draw only on a terminal.
    """

    def __init__(
        self,
        console: Console | None = None,
        description: str = "Downloading",
        disable: bool | None = None,
    ) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self._lock = threading.Lock()
        self._counts = TransferCounts()
        self._display = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            _BarColumn(),
            _FilesColumn(),
            _BytesColumn(),
            TransferSpeedColumn(),
            _EtaColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.console.is_terminal if disable is None else disable,
            refresh_per_second=5,
        )
        self._task = self._display.add_task(
            description, total=None, counts=self._counts
        )

    @property
    def counts(self) -> TransferCounts:
        """A snapshot of the counts so far."""
        with self._lock:
            return self._counts

    def __enter__(self) -> RichProgress:
        self._display.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._display.stop()

    def describe(self, text: str) -> None:
        """Show text before the bar (e.g. ``Study 3/40 1.2.3...``)."""
        with self._lock:
            self._display.update(self._task, description=text)

    def _update(self, counts: TransferCounts) -> None:
        # called with self._lock held: updates reach rich in the order they happen
        self._counts = counts
        self._display.update(self._task, completed=counts.bytes_received, counts=counts)

    # -- dicomtrolley.download.Progress -------------------------------------------

    def add_total(self, instances: int = 0, nbytes: int = 0) -> None:
        """More work became known: instances and/or bytes expected."""
        with self._lock:
            counts = self._counts
            if instances:
                counts = replace(
                    counts, instances_total=(counts.instances_total or 0) + instances
                )
            if nbytes:
                counts = replace(counts, bytes_total=(counts.bytes_total or 0) + nbytes)
            self._update(counts)

    def advance_bytes(self, nbytes: int) -> None:
        """nbytes more arrived."""
        with self._lock:
            counts = self._counts
            self._update(replace(counts, bytes_received=counts.bytes_received + nbytes))

    def instance_done(self, nbytes: int = 0, skipped: bool = False) -> None:
        """One instance is on disk (nbytes written), or was there already."""
        with self._lock:
            counts = self._counts
            self._update(
                replace(
                    counts,
                    instances_done=counts.instances_done + 1,
                    skipped=counts.skipped + (1 if skipped else 0),
                    bytes_saved=counts.bytes_saved + nbytes,
                )
            )
