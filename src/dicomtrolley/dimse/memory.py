"""Datasets in memory from a retrieve that runs in a background thread.

``Downloader.datasets`` hands out pydicom Datasets one by one. The C-GET or
C-MOVE runs in a worker thread and passes each received instance through a
small queue, so it is at most a few instances ahead of the caller (the PACS
waits for our C-STORE response meanwhile). When the caller stops early the
transfer is cancelled: the association is aborted at its next look
(within :data:`~dicomtrolley.dimse.link.SLICE` seconds).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from dicomtrolley.dimse.retrieve import Received, Sink, Tally
from dicomtrolley.download import DownloadReport
from dicomtrolley.exceptions import StorageError

#: Instances read ahead of the caller at most.
READ_AHEAD = 4

Transfer = Callable[[Sink, DownloadReport, Callable[[], bool]], None]
"""Runs a retrieve: (sink, report, cancelled) -> None."""


def stream_datasets(transfer: Transfer, join_timeout: float) -> Iterator[Dataset]:
    """Every instance transfer receives, in arrival order.

    Raises what the transfer raised, and DownloadIncompleteError at the end for
    instances that did not arrive.
    """
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()

    def offer(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def sink(received: Received, sop_uid: str, tally: Tally) -> int:
        dataset = pydicom.dcmread(received.path)
        if not offer("dataset", dataset):
            raise StorageError("the caller stopped reading datasets", uids=[sop_uid])
        return 0

    def work() -> None:
        report = DownloadReport()
        try:
            transfer(sink, report, stop.is_set)
        except BaseException as error:  # handed over to the caller's thread
            offer("error", error)
            return
        offer("done", report)

    worker = threading.Thread(target=work, name="dicomtrolley-dimse", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "dataset":
                yield value
            elif kind == "error":
                raise value
            else:
                value.raise_for_failures()
                return
    finally:
        stop.set()
        worker.join(timeout=join_timeout)
