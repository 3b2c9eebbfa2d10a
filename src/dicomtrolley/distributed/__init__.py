"""Cohort pulls on a Dask cluster: one task per study, many machines, one folder.

A pull of tens of thousands of studies from several PACS outgrows one process.
This package runs the downloads of a batch on ``dask.distributed`` (an
optional extra: ``pip install dicomtrolley[dask]``), which schedules the
tasks, moves them off workers that die and shows them on its dashboard::

    from distributed import Client
    from dicomtrolley.config import load_profile
    from dicomtrolley.distributed import BatchPlan, ProfileConnector, run_batch

    profile = load_profile("pacs1")
    studies = profile.searcher().find_studies(query)      # on the client
    plan = BatchPlan.from_studies(studies, ProfileConnector(profile), "/shared/out")
    outcome = run_batch(plan, client=Client("tcp://scheduler:8786"))

``dicomtrolley batch FILE --dask tcp://scheduler:8786`` (or ``--dask local:4``)
does the same for a batch file: the rows are searched on the client, as in a
single-machine run, then every study found is one task.

What a task does is what ``dicomtrolley batch`` does for one study: files are
verified under a temporary name and renamed into ``plan.output`` (a folder
every worker sees at the same path), the folder's index says what is there
(so a re-run fetches nothing present), and each outcome is one manifest line,
in a shard per worker process (``manifest.d/``) that ``dicomtrolley report``
reads with ``manifest.jsonl``. The server sees at most ``connector.limit``
transfers at once from the whole cluster (a ``distributed.Semaphore`` per
server and protocols) and at most ``plan.rate`` HTTP requests a second.

- :mod:`~dicomtrolley.distributed.plan`: the plan, its tasks and results, and
  connectors (how a worker opens its searcher and downloader). No Dask.
- :mod:`~dicomtrolley.distributed.worker`: what runs on a worker.
- :mod:`~dicomtrolley.distributed.cluster`: connecting, submitting, following.
- :mod:`~dicomtrolley.distributed.deid`: de-identification on the workers (a
  storage whose ``transform`` is a :class:`~dicomtrolley.deid.Deidentifier`),
  the key read from each worker's environment, never sent.
"""

from __future__ import annotations

from dicomtrolley.distributed.cluster import (
    BatchOutcome,
    ClusterError,
    DaskUnavailableError,
    open_client,
    run_batch,
)
from dicomtrolley.distributed.plan import (
    DEFAULT_SPLIT_ABOVE,
    BatchPlan,
    Connector,
    ProfileConnector,
    StudyTask,
    TaskResult,
)

__all__ = [
    "DEFAULT_SPLIT_ABOVE",
    "BatchOutcome",
    "BatchPlan",
    "ClusterError",
    "Connector",
    "DaskUnavailableError",
    "ProfileConnector",
    "StudyTask",
    "TaskResult",
    "open_client",
    "run_batch",
]
