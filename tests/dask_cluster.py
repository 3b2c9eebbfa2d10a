"""What the Dask tests share: a small local cluster of process workers, and the
facts of an output folder's manifest that do not depend on who wrote them.

The cluster has short lease timeouts (a killed worker's semaphore lease comes
back within about two seconds instead of 30) and is always closed.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster

from dicomtrolley.manifest import read_folder_manifest

#: Short enough for a test, long enough for a busy 2-core machine.
FAST_LEASES = {
    "distributed.scheduler.locks.lease-timeout": "2s",
    "distributed.scheduler.locks.lease-validation-interval": "0.5s",
}


@contextlib.contextmanager
def local_cluster(
    workers: int = 3, threads: int = 2, env: dict[str, str] | None = None
) -> Iterator[Client]:
    """A LocalCluster of process workers on loopback and its client."""
    with dask.config.set(FAST_LEASES):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env=env or {},
        )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def manifest_facts(folder: Path) -> Counter[tuple[Any, ...]]:
    """Each outcome of the folder's manifest (shards included) as what it says
    about the instance, without time, run or writer."""
    return Counter(
        (
            record["status"],
            record["study_uid"],
            record["series_uid"],
            record["instance_uid"],
            record["path"],
            record["size"],
            record["checksum"],
            record["protocol"],
            record["row"],
            record["query"],
        )
        for record in read_folder_manifest(folder)
    )


def saved_per_instance(folder: Path) -> Counter[str]:
    """Instance UID -> how many 'saved' lines the folder's manifest has for it."""
    return Counter(
        str(record["instance_uid"])
        for record in read_folder_manifest(folder)
        if record["status"] == "saved"
    )
