"""The client side: connect to a Dask cluster, submit a plan, follow its tasks.

Dask (``dask.distributed``) schedules the tasks, moves them off a worker that
dies (a task whose worker is lost runs again elsewhere, up to the scheduler's
``allowed-failures``) and shows them on its dashboard; nothing here schedules
anything itself. Dask is an optional dependency (``pip install
dicomtrolley[dask]``): without it, :func:`run_batch` and :func:`open_client`
raise :class:`DaskUnavailableError`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dicomtrolley.distributed.deid import DeidSettings
from dicomtrolley.distributed.plan import BatchPlan, TaskResult
from dicomtrolley.distributed.worker import RunSettings, run_task
from dicomtrolley.exceptions import PermanentError, TransientError
from dicomtrolley.logs import get_module_logger

if TYPE_CHECKING:
    from distributed import Client

    from dicomtrolley.storage import DICOMDiskStorage

logger = get_module_logger("distributed")

__all__ = [
    "BatchOutcome",
    "ClusterError",
    "DaskUnavailableError",
    "open_client",
    "run_batch",
]

LOCAL_PREFIX = "local:"
#: Seconds to wait for a scheduler to answer, or local workers to start.
CONNECT_TIMEOUT_S = 30.0


class DaskUnavailableError(PermanentError):
    """dask.distributed is not installed: ``pip install dicomtrolley[dask]``."""


class ClusterError(TransientError):
    """The Dask scheduler cannot be reached, or the cluster failed a task."""


def require_dask() -> ModuleType:
    """The ``distributed`` module, or DaskUnavailableError saying what to install."""
    try:
        import distributed
    except ImportError as error:
        raise DaskUnavailableError(
            "running on Dask needs dask.distributed: pip install 'dicomtrolley[dask]'"
        ) from error
    return distributed


@contextlib.contextmanager
def open_client(
    address: str,
    *,
    threads_per_worker: int = 2,
    env: Mapping[str, str] | None = None,
) -> Iterator[Client]:
    """A client of the scheduler at address, closed at the end.

    ``tcp://host:8786`` (any address Dask takes) connects to a running
    cluster; ``local:N`` starts N worker processes on this machine (each with
    threads_per_worker threads and env added to its environment: that is how
    secrets reach local workers without going into a task) and stops them at
    the end.
    """
    distributed = require_dask()
    cluster = None
    try:
        if address.startswith(LOCAL_PREFIX):
            count = address[len(LOCAL_PREFIX) :]
            if not count.isdigit() or int(count) < 1:
                raise ClusterError(f"{address}: say local:N with N workers (N >= 1)")
            cluster = distributed.LocalCluster(
                n_workers=int(count),
                threads_per_worker=threads_per_worker,
                processes=True,
                env=dict(env or {}),
                dashboard_address=":0",
            )
            client = distributed.Client(cluster, timeout=CONNECT_TIMEOUT_S)
        else:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as error:  # ValueError: a bad address
        if cluster is not None:
            cluster.close()
        raise ClusterError(
            f"cannot reach the Dask scheduler {address}: {error}"
        ) from error
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def dashboard_link(client: Client) -> str | None:
    """The dashboard's address, when the scheduler serves one (needs bokeh)."""
    try:
        services = client.scheduler_info().get("services", {})
        if "dashboard" not in services:
            return None
        return str(client.dashboard_link)
    except (OSError, KeyError, AttributeError):
        return None


@dataclass
class BatchOutcome:
    """What a distributed batch did: one result per task, in plan order."""

    results: list[TaskResult] = field(default_factory=list)
    total: int = 0
    elapsed: float = 0.0
    #: the error that stopped the run (a refused login ...), or None
    stopped: str | None = None

    @property
    def saved(self) -> int:
        return sum(result.saved for result in self.results)

    @property
    def skipped(self) -> int:
        return sum(result.skipped for result in self.results)

    @property
    def bytes_saved(self) -> int:
        return sum(result.bytes_saved for result in self.results)

    @property
    def failed(self) -> list[TaskResult]:
        return [result for result in self.results if not result.ok]


#: Called on the client as each task ends: (result, tasks done, tasks in all).
ResultListener = Callable[[TaskResult, int, int], None]


def semaphore_name(server: str, limit: int) -> str:
    """The cluster-wide semaphore of a server (its limit in the name, so that a
    run with another limit on the same scheduler gets its own)."""
    return f"dicomtrolley:{server}:max{limit}"


def run_batch(
    plan: BatchPlan,
    client: Client | None = None,
    *,
    on_result: ResultListener | None = None,
    retries: int = 1,
) -> BatchOutcome:
    """Run every task of plan on the cluster of client (default: the current one).

    Each task downloads its study into ``plan.output`` (which every worker
    must see at that path) with the single-machine semantics: temporary name
    then rename, the folder's index, resume, one manifest line per outcome
    (in the worker's shard). At most ``plan.connector.limit`` tasks transfer
    at once across the cluster (a ``distributed.Semaphore``), at most
    ``plan.rate`` HTTP requests a second. ``retries``: times Dask runs a task
    again after it raised (a dead worker's tasks are moved by Dask on its own).

    A task that meets a refused login or a missing secret stops the run: the
    tasks not started are cancelled and ``stopped`` says why. Ctrl-C cancels
    the tasks too, and raises KeyboardInterrupt.

    With a :class:`~dicomtrolley.deid.Deidentifier` as the storage's
    ``transform``, the folder's ``deid.json`` is checked (or created) here,
    before any task, and the de-identifier's settings go to the workers
    without its key: each worker reads the key from its environment (the
    de-identifier's ``key_env``, default ``DICOMTROLLEY_DEID_KEY``), and one
    without it, or with another, stops the run (see
    :mod:`dicomtrolley.distributed.deid`).

    Raises
    ------
    DeidFolderError
        The output folder holds data de-identified otherwise, or identified.
    """
    distributed = require_dask()
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError as error:
            raise ClusterError(
                "no Dask client: pass client=, or start one (distributed.Client(...))"
            ) from error
    from dicomtrolley.catalog import Catalog

    storage, deid = _shipped_storage(plan)
    # the index exists before any worker opens it: no worker scans the folder
    Catalog.for_folder(plan.output)
    limit = max(1, plan.connector.limit)
    settings = RunSettings(
        plan.connector,
        plan.output,
        storage,
        plan.run,
        plan.run_started,
        plan.rate,
        limit,
        deid,
    )
    outcome = BatchOutcome(total=len(plan.tasks))
    started = time.monotonic()
    if not plan.tasks:
        return outcome
    from dicomtrolley.distributed.plugin import RunPlugin

    # the settings go to every worker once (and to workers that join later)
    plugin = RunPlugin(settings)
    client.register_plugin(plugin)
    spec = (semaphore_name(plan.connector.server, limit), limit)
    futures = client.map(
        run_task,
        plan.tasks,
        run=plan.run,
        semaphore=spec,
        key=[f"dicomtrolley-study-{plan.run[:8]}-{n}" for n in range(len(plan.tasks))],
        pure=False,
        retries=retries,
    )
    index = {future.key: n for n, future in enumerate(futures)}
    results: list[TaskResult | None] = [None] * len(futures)
    try:
        for done, future in enumerate(distributed.as_completed(futures), 1):
            n = index[future.key]
            result = _result_of(future, plan.tasks[n].key, plan.tasks[n].study_uid)
            result.row = plan.tasks[n].row
            results[n] = result
            if on_result is not None:
                on_result(result, done, len(futures))
            if result.fatal and outcome.stopped is None:
                outcome.stopped = result.error
                client.cancel([f for f in futures if not f.done()])
                break
    except KeyboardInterrupt:
        client.cancel(futures)
        raise
    finally:
        outcome.results = [r for r in results if r is not None]
        outcome.elapsed = time.monotonic() - started
        _finish(client, plan, plugin.name)
    return outcome


def _shipped_storage(
    plan: BatchPlan,
) -> tuple[DICOMDiskStorage, DeidSettings | None]:
    """The storage the workers get and, when it de-identifies, the settings
    they rebuild its de-identifier from (the key stays here). The folder is
    checked first: deid.json created, or compared with this key and profile."""
    hook = plan.storage.transform
    if hook is None:
        return plan.storage, None
    from dicomtrolley.deid import Deidentifier

    if not isinstance(hook, Deidentifier):  # it must pickle
        return plan.storage, None
    plan.storage.check_folder(plan.output)
    shipped = copy.copy(plan.storage)
    shipped.transform = None
    return shipped, DeidSettings.of(hook)


def _result_of(future: Any, key: str, study_uid: str) -> TaskResult:
    """The TaskResult of a finished future; one with the error for a task that
    raised or was lost (e.g. its workers kept dying: KilledWorker)."""
    try:
        result = future.result()
    except Exception as error:  # anything Dask or the task raised
        return TaskResult(key, study_uid, error=f"{type(error).__name__}: {error}")
    if not isinstance(result, TaskResult):
        return TaskResult(key, study_uid, error=f"unexpected result {result!r}")
    return result


def _finish(client: Client, plan: BatchPlan, plugin: str) -> None:
    """Close the workers' shards and sessions of the run; remove temporary files
    of processes that died (a worker killed mid-file)."""
    with contextlib.suppress(Exception):  # a cluster going away closes them too
        client.unregister_worker_plugin(plugin)  # type: ignore[no-untyped-call]
    from dicomtrolley.files import remove_stale_temp_files

    remove_stale_temp_files(plan.output)


def threads_for(limit: int, workers: int) -> int:
    """Threads per local worker so that workers x threads covers limit."""
    return max(1, math.ceil(limit / max(1, workers)))
