"""Rows of a batch that an earlier run completed, so a re-run need not ask again.

A cohort pull is re-run to fetch what is missing; for a row whose studies all
arrived, asking the server again (a search per row, then an instance list per
study) is most of a re-run's time. After every study of a row is downloaded
without a failure, :class:`CompletedRows` appends one JSON line to
``<output>/.dicomtrolley/batch-rows.jsonl``: the server, the row's query, the
storage layout, and the SOP Instance UIDs of each study found. A re-run takes a
row as done, without a request, when the same server, query and layout were
recorded and every one of those instances is present and intact in the
folder's index (:class:`~dicomtrolley.catalog.Catalog`: the file is there with
its recorded size). Anything else (a file deleted or changed, another layout)
and the row is searched for and downloaded as usual.

The trade-off: instances the server gained after a row was completed are not
looked for; ``dicomtrolley batch --refresh`` searches every row again.
Appends are single ``write`` calls on an ``O_APPEND`` file, so a run killed at
any point leaves whole lines (a torn last line is ignored).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dicomtrolley.catalog import STATE_FOLDER, Catalog, utc_now
from dicomtrolley.exceptions import StorageError
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("batchstate")

ROWS_NAME = "batch-rows.jsonl"

__all__ = ["ROWS_NAME", "CompletedRows"]


class CompletedRows:
    """The completed rows of batches downloaded into one folder. Thread-safe.

    A row is matched on the server (source) and the layout as the user gave
    it (layout_option: ``--layout`` and what else decides the files' paths).
    Each record also keeps the storage's own name of its layout (``layout``,
    :meth:`~dicomtrolley.storage.DICOMDiskStorage.layout_key`), which the
    folder's index files are filed under: a re-run checks presence under that
    name, so it need not build the storage (nor import pydicom) to know that
    nothing is left to fetch. Set :attr:`layout` before :meth:`record`.
    """

    def __init__(
        self,
        folder: str | Path,
        source: str,
        layout_option: str,
        layout: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / STATE_FOLDER / ROWS_NAME
        self.source = source
        self.layout_option = layout_option
        #: The storage's layout key (set once the storage exists).
        self.layout = layout
        self._lock = threading.Lock()
        self._known: dict[str, dict[str, list[str]]] = {}
        self._layouts: dict[str, str] = {}
        self._read()

    def _read(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as error:
            logger.warning("cannot read %s: %s; searching every row", self.path, error)
            return
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a killed run
            if not isinstance(record, dict):
                continue
            if (
                record.get("source") != self.source
                or record.get("layout_option") != self.layout_option
            ):
                continue
            studies = record.get("studies")
            query = record.get("query")
            layout = record.get("layout")
            if (
                isinstance(query, str)
                and isinstance(studies, dict)
                and isinstance(layout, str)
            ):
                self._known[query] = {
                    str(uid): [str(i) for i in instances]
                    for uid, instances in studies.items()
                    if isinstance(instances, list)
                }
                self._layouts[query] = layout

    @property
    def empty(self) -> bool:
        """True when no earlier run completed a row for this server and layout."""
        return not self._known

    def done(self, query: str, catalog: Catalog | None) -> dict[str, list[str]] | None:
        """The studies (UID -> instance UIDs) of query when all are still present."""
        studies = self._known.get(query)
        if not studies or catalog is None:
            return None
        if not all(studies.values()):
            return None
        uids = [uid for instances in studies.values() for uid in instances]
        present = catalog.present_of(uids, self._layouts[query])
        return studies if len(present) == len(set(uids)) else None

    def record(self, query: str, studies: Mapping[str, Sequence[str]]) -> None:
        """Note that query's studies (with these instances) are complete.

        Raises StorageError when the file cannot be written, or when
        :attr:`layout` was not set (nothing would find the files again).
        """
        if self.layout is None:
            raise StorageError(f"{self.path}: no storage layout to record")
        line = json.dumps(
            {
                "time": utc_now(),
                "source": self.source,
                "layout_option": self.layout_option,
                "layout": self.layout,
                "query": query,
                "studies": {uid: list(uids) for uid, uids in studies.items()},
            }
        )
        data = (line + "\n").encode("utf-8")
        with self._lock:
            self._known[query] = {uid: list(uids) for uid, uids in studies.items()}
            self._layouts[query] = self.layout
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                descriptor = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666
                )
                try:
                    os.write(descriptor, data)
                finally:
                    os.close(descriptor)
            except OSError as error:
                raise StorageError(f"cannot write {self.path}: {error}") from error

    def __repr__(self) -> str:
        return f"CompletedRows({str(self.path)!r}, {len(self._known)} rows)"

    @staticmethod
    def key_of(values: Mapping[str, Any]) -> str:
        """A stable text for a row's query values (keys sorted, empties left out)."""
        return json.dumps(
            {k: str(v) for k, v in sorted(values.items()) if v not in (None, "", ())},
            sort_keys=True,
        )
