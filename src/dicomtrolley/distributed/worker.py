"""What runs on a Dask worker: one task of a plan, under the server's limits.

A worker process opens the plan's connector once per run (one session, one
login, one Trolley shared by the tasks its threads run) and writes the
manifest lines of its tasks to a shard of its own,
``<output>/manifest.d/<host>-<pid>.jsonl``. Files are saved exactly as by
``dicomtrolley batch`` on one machine: verified under a temporary name, then
renamed; the folder's index says what is there already, so a task that runs
again (its worker died, or the batch is re-run) fetches only what is missing.
With de-identification, the worker builds its own de-identifier from the run's
:class:`~dicomtrolley.distributed.deid.DeidSettings` and the key in its
environment, checks the folder's ``deid.json`` before its first file, and
appends its mapping records to shards of its own (``deid-map.d/<host>-<pid>``).

Limits: a task holds one lease of the server's cluster-wide semaphore while
it transfers, and transfers one thing at a time, so the server never sees
more transfers at once than the semaphore has leases. The rate limit paces
HTTP requests: each lease held allows ``rate / limit`` requests a second, so
the whole cluster stays under ``rate`` without asking anyone per request.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import BaseAdapter

from dicomtrolley.credentials import ConfigError
from dicomtrolley.distributed.deid import DeidSettings, DeidWorkerError
from dicomtrolley.distributed.plan import Connector, StudyTask, TaskResult
from dicomtrolley.download import DownloadReport, one_line
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyError,
    DownloadIncompleteError,
    HTTPStatusError,
)
from dicomtrolley.logs import get_module_logger

if TYPE_CHECKING:
    from dicomtrolley.manifest import Manifest
    from dicomtrolley.storage import DICOMDiskStorage
    from dicomtrolley.trolley import Trolley

logger = get_module_logger("distributed")

#: Runs whose connections a worker process keeps open (the oldest is closed).
KEEP_RUNS = 4


@dataclass(frozen=True)
class RunSettings:
    """What every task of one run shares; shipped to each worker once."""

    connector: Connector
    output: Path
    storage: DICOMDiskStorage
    run: str
    run_started: str
    rate: float | None
    limit: int
    #: de-identify as these settings say, the key from the worker's environment
    deid: DeidSettings | None = None


def is_fatal(error: DICOMTrolleyError) -> bool:
    """An error every task would meet the same way: a refused login (401/403,
    Vitrea or OAuth2), a missing secret or a profile that cannot work."""
    if isinstance(error, DICOMTrolleyAuthError | ConfigError):
        return True
    return isinstance(error, HTTPStatusError) and error.status_code in (401, 403)


def shard_name() -> str:
    """``<host>-<pid>``: the manifest shard of this process."""
    return f"{socket.gethostname()}-{os.getpid()}"


# -- pacing ----------------------------------------------------------------------------


class Pacer:
    """Spaces the HTTP requests of one process so that the cluster keeps to rate.

    Each lease of the server's semaphore held in this process allows
    ``rate / limit`` requests a second; with every lease held somewhere, the
    cluster sends at most ``rate``. Thread-safe.
    """

    def __init__(
        self,
        rate: float | None,
        limit: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.limit = max(1, limit)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._held = 0
        self._next = 0.0

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Around the work done under one lease of the semaphore."""
        with self._lock:
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1

    def wait(self) -> None:
        """Return when the next request may go."""
        if not self.rate:
            return
        with self._lock:
            interval = self.limit / (self.rate * max(1, self._held))
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + interval
        if slot > now:
            self._sleep(slot - now)


class PacedAdapter(BaseAdapter):
    """A requests adapter that waits for its Pacer before each request."""

    def __init__(self, inner: BaseAdapter, pacer: Pacer) -> None:
        super().__init__()
        self.inner = inner
        self.pacer = pacer

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.pacer.wait()
        return self.inner.send(request, **kwargs)

    def close(self) -> None:
        self.inner.close()


def pace(session: requests.Session, pacer: Pacer) -> None:
    """Make every request of session wait for pacer."""
    for prefix, adapter in list(session.adapters.items()):
        session.mount(prefix, PacedAdapter(adapter, pacer))


# -- one process's connection per run ---------------------------------------------------


@dataclass
class _Opened:
    trolley: Trolley
    manifest: Manifest
    pacer: Pacer
    session: requests.Session

    def close(self) -> None:
        self.manifest.close()
        self.session.close()


_opened: dict[str, _Opened] = {}
_opened_lock = threading.Lock()
_runs: dict[str, RunSettings] = {}


def register_run(settings: RunSettings) -> None:
    """Keep the settings of a run in this process (see the RunPlugin)."""
    with _opened_lock:
        _runs[settings.run] = settings


def _open(settings: RunSettings) -> _Opened:
    """This process's Trolley, shard and pacer for the run (made on first use)."""
    with _opened_lock:
        found = _opened.get(settings.run)
        if found is not None:
            return found
        from dicomtrolley.catalog import Catalog
        from dicomtrolley.manifest import Manifest
        from dicomtrolley.trolley import Trolley

        storage = _storage(settings)
        Catalog.for_folder(settings.output)  # removes temp files of dead processes
        searcher, downloader, session = settings.connector.open(pool_size=4)
        pacer = Pacer(settings.rate, settings.limit)
        pace(session, pacer)
        opened = _Opened(
            Trolley(downloader, searcher, storage=storage),
            Manifest.shard(
                settings.output,
                shard_name(),
                run=settings.run,
                run_started=settings.run_started,
            ),
            pacer,
            session,
        )
        _opened[settings.run] = opened
        while len(_opened) > KEEP_RUNS:
            _opened.pop(next(iter(_opened))).close()
        return opened


def _storage(settings: RunSettings) -> DICOMDiskStorage:
    """The run's storage, with this worker's de-identifier when the run asks
    for one; its folder checked (DeidWorkerError: not as the client's)."""
    if settings.deid is None:
        return settings.storage
    worker = shard_name()
    storage = copy.copy(settings.storage)
    storage.transform = settings.deid.open(worker)
    try:
        storage.check_folder(settings.output)
    except DICOMTrolleyError as error:
        raise DeidWorkerError(f"worker {worker}: {error.message}") from error
    return storage


def close_run(run: str) -> None:
    """Close this process's connection and shard of run (when it is over)."""
    with _opened_lock:
        _runs.pop(run, None)
        opened = _opened.pop(run, None)
    if opened is not None:
        opened.close()


# -- the task ---------------------------------------------------------------------------


def run_task(
    task: StudyTask, run: str, semaphore: tuple[str, int] | None
) -> TaskResult:
    """Download one task's study (or series) of run into the shared folder.

    The run's settings are those registered in this process (by the
    RunPlugin). Waits for a lease of the cluster's semaphore (name, leases);
    None: no limit. Never raises for a failed download: the result says what
    failed (a task that raised would be retried by Dask, and a failure that
    a retry cannot mend would only be asked for again).
    """
    started = time.monotonic()
    result = TaskResult(task.key, task.study_uid, worker=shard_name(), row=task.row)
    with _opened_lock:
        settings = _runs.get(run)
    if settings is None:
        result.error = f"this worker has no settings of run {run}"
        return result
    try:
        opened = _open(settings)
    except DICOMTrolleyError as error:
        result.error, result.fatal = one_line("", error), is_fatal(error)
        result.elapsed = time.monotonic() - started
        return result
    with _semaphore(semaphore):
        result.waited = time.monotonic() - started
        with opened.pacer.lease():
            _download(opened, settings, task, result)
    result.elapsed = time.monotonic() - started
    return result


def _download(
    opened: _Opened, settings: RunSettings, task: StudyTask, result: TaskResult
) -> None:
    report: DownloadReport | None = None
    try:
        report = opened.trolley.download(
            [task.target],
            settings.output,
            manifest=opened.manifest,
            row=task.row,
            query=task.query,
        )
    except DownloadIncompleteError as error:
        report = getattr(error, "report", None)
        failures = [str(f) for f in getattr(report, "failures", [])]
        result.failures = failures or [one_line("", error)]
    except DICOMTrolleyError as error:
        result.error, result.fatal = one_line("", error), is_fatal(error)
        logger.warning("task %s failed: %s", task.key, result.error)
    if report is not None:
        result.saved = len(report.saved)
        result.skipped = len(report.skipped)
        result.bytes_saved = report.bytes_written


_semaphores: dict[tuple[str, int], Any] = {}


def _semaphore(spec: tuple[str, int] | None) -> Any:
    """This process's ``distributed.Semaphore`` of (name, leases): one per
    process, so that one lease-refresh loop serves every task."""
    if spec is None:
        return contextlib.nullcontext()
    with _opened_lock:
        found = _semaphores.get(spec)
        if found is None:
            from distributed import Semaphore

            found = _semaphores[spec] = Semaphore(  # type: ignore[no-untyped-call]
                max_leases=spec[1], name=spec[0]
            )
        return found
