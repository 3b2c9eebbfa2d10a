"""``manifest.jsonl``: one JSON line per instance outcome of every download.

A line records what happened to one instance (or, for a failure that concerns
a whole request, to the UIDs of that request)::

    {"time": "2026-12-06T01:02:03.456+00:00", "run": "9f1c...", "status": "saved",
     "study_uid": "1.2...", "series_uid": "1.2...", "instance_uid": "1.2...",
     "path": "DTR001/1.2.../1.2....dcm", "size": 52311, "checksum": "crc32:0a1b2c3d",
     "protocol": "WADO-RS", "error": null, "uids": [...], "row": null, "query": null,
     "run_started": "2026-12-06T01:02:00.001+00:00"}

``status`` is ``saved``, ``skipped`` (already present and intact) or
``failed`` (``error`` is one line; ``uids`` names each UID concerned once).
``row`` and ``query`` are what the caller passed (e.g. the line of a batch
file). Every run appends; a line is one ``write`` on a file opened for
appending, so lines from worker threads (or processes) never interleave, and a
process killed mid-run leaves complete lines only (a torn last line is skipped
when reading).

The CLI writes a manifest in every output folder; library users opt in with
``Trolley.download(..., manifest=Manifest.in_folder(output))``.

Shards: processes that share an output folder over a network file system (the
workers of :mod:`dicomtrolley.distributed`) do not append to one file; each
writes its own ``<output>/manifest.d/<name>.jsonl`` (:meth:`Manifest.shard`).
Whoever reads a folder's manifest (:func:`read_folder_manifest`,
:func:`summarize`, ``dicomtrolley report``, the CSV copy) reads
``manifest.jsonl`` and every shard, merged by time.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import json
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomtrolley.catalog import Catalog, CatalogEntry, utc_now
from dicomtrolley.exceptions import DICOMTrolleyError, StorageError
from dicomtrolley.files import make_temp_file, new_file_mode
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("manifest")

MANIFEST_NAME = "manifest.jsonl"
#: The folder of the shards, next to manifest.jsonl.
SHARD_FOLDER = "manifest.d"
SAVED, SKIPPED, FAILED = "saved", "skipped", "failed"
#: The columns of the CSV copy, in order.
CSV_FIELDS = (
    "time",
    "status",
    "study_uid",
    "series_uid",
    "instance_uid",
    "path",
    "size",
    "checksum",
    "protocol",
    "error",
    "uids",
    "row",
    "query",
    "run",
    "run_started",
)


class Manifest:
    """The manifest file of an output folder (or any path), appended to.

    Thread-safe: each line is written with one ``os.write`` on an
    ``O_APPEND`` descriptor under a lock. One Manifest object is one run: every
    line written through it (by any number of ``Trolley.download`` calls, as
    ``dicomtrolley batch`` makes one per study) carries its ``run`` id and
    ``run_started`` time, so ``dicomtrolley report`` counts runs, not calls.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        run: str | None = None,
        run_started: str | None = None,
        folder: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.run = run or uuid.uuid4().hex
        self.run_started = run_started or utc_now()
        #: the output folder whose manifest this is (records() reads its shards too)
        self.folder = None if folder is None else Path(folder)
        self._lock = threading.Lock()
        self._fd: int | None = None

    @classmethod
    def in_folder(cls, folder: str | Path) -> Manifest:
        """The manifest at ``<folder>/manifest.jsonl``."""
        return cls(Path(folder) / MANIFEST_NAME, folder=folder)

    @classmethod
    def shard(
        cls,
        folder: str | Path,
        name: str,
        *,
        run: str | None = None,
        run_started: str | None = None,
    ) -> Manifest:
        """The shard ``<folder>/manifest.d/<name>.jsonl`` of one process.

        ``run`` and ``run_started``: those of the run the process works for,
        so that the shards of one distributed run count as one run.
        """
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        return cls(
            Path(folder) / SHARD_FOLDER / f"{safe or 'shard'}.jsonl",
            run=run,
            run_started=run_started,
            folder=folder,
        )

    def write(self, record: Mapping[str, Any]) -> None:
        """Append record as one line (StorageError when the file cannot be written)."""
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            try:
                if self._fd is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(
                        self.path,
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                        new_file_mode(self.folder or self.path.parent),
                    )
                os.write(self._fd, line)
            except OSError as error:
                raise StorageError(
                    f"cannot write the manifest {self.path}: {error}"
                ) from error

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete line, oldest first (none when the file is missing).

        For a folder's manifest (:meth:`in_folder`, :meth:`shard`): the lines
        of manifest.jsonl and of every shard, merged by time.
        """
        if self.folder is not None:
            return read_folder_manifest(self.folder)
        return read_manifest(self.path)

    def write_csv(self, target: str | Path) -> int:
        """Write every record as CSV (columns :data:`CSV_FIELDS`). Returns rows."""
        return write_csv(self.records(), target)

    def __repr__(self) -> str:
        return f"Manifest({str(self.path)!r})"


def read_manifest(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a manifest file; lines that are not JSON objects are skipped."""
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        return
    except OSError as error:
        raise StorageError(f"cannot read the manifest {path}: {error}") from error
    with handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except ValueError:
                logger.warning("%s line %d is not JSON; skipped", path, number)
                continue
            if isinstance(record, dict):
                yield record


def manifest_files(folder: str | Path) -> list[Path]:
    """``manifest.jsonl`` of folder and its shards (``manifest.d/*.jsonl``)."""
    root = Path(folder)
    try:
        shards = sorted((root / SHARD_FOLDER).glob("*.jsonl"))
    except OSError as error:
        raise StorageError(
            f"cannot list the manifest shards in {root / SHARD_FOLDER}: {error}"
        ) from error
    return [root / MANIFEST_NAME, *shards]


def read_folder_manifest(folder: str | Path) -> Iterator[dict[str, Any]]:
    """Every record of folder's manifest and shards, merged oldest first.

    Each file is in time order (lines are appended as things happen), so the
    merge is by the ``time`` field; records of equal time keep file order.
    """
    streams = [read_manifest(path) for path in manifest_files(folder)]
    return heapq.merge(*streams, key=lambda record: str(record.get("time", "")))


def write_csv(records: Iterator[Mapping[str, Any]], target: str | Path) -> int:
    """records as CSV at target (lists joined with spaces). Returns rows written.

    Written under a temporary name next to target and renamed when complete:
    an interrupted export leaves the previous copy (or none), never half a file.
    """
    target = Path(target)
    rows = 0
    name: str | None = None
    try:
        fd, name = make_temp_file(target.parent)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for record in records:
                writer.writerow(
                    {key: _csv_value(record.get(key)) for key in CSV_FIELDS}
                )
                rows += 1
        os.replace(name, target)
    except OSError as error:
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(name)
        raise StorageError(f"cannot write {target}: {error}") from error
    return rows


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


@dataclass
class Outcomes:
    """Writes the outcomes of one download to a manifest.

    The Trolley makes one per download call; :class:`~dicomtrolley.download.
    DownloadReport` objects created while it is active pass every saved,
    skipped and failed instance to it (from any thread). Saved and skipped
    files are looked up in the folder's index for their UIDs and checksum.
    """

    manifest: Manifest
    folder: Path
    protocol: str = ""
    row: Any = None
    query: str | None = None
    run: str = ""  # default: the manifest's run
    run_started: str = ""

    def __post_init__(self) -> None:
        self.run = self.run or self.manifest.run
        self.run_started = self.run_started or self.manifest.run_started

    def saved(self, path: Path | None, nbytes: int = 0) -> None:
        self._file(SAVED, path, nbytes)

    def skipped(self, path: Path) -> None:
        self._file(SKIPPED, path, 0)

    def failed(self, what: str, error: DICOMTrolleyError) -> None:
        uids = list(dict.fromkeys(error.uids))
        self._write(
            status=FAILED,
            uids=uids,
            error=_one_line(what, error, uids),
            **_guess_levels(uids),
        )

    def _file(self, status: str, path: Path | None, nbytes: int) -> None:
        if path is None:
            return
        try:
            entry = Catalog.for_folder(self.folder).entry_for_path(path)
        except DICOMTrolleyError as error:
            logger.warning("cannot read the index for %s: %s", path, error)
            entry = None
        if entry is None:
            self._write(status=status, path=str(path), size=nbytes or None)
            return
        self._entry(status, entry)

    def skipped_entry(self, entry: CatalogEntry) -> None:
        """A file already there, as the index has it (no lookup by path)."""
        self._entry(SKIPPED, entry)

    def _entry(self, status: str, entry: CatalogEntry) -> None:
        self._write(
            status=status,
            study_uid=entry.study_uid,
            series_uid=entry.series_uid,
            instance_uid=entry.instance_uid,
            path=str(entry.path),
            size=entry.size,
            checksum=entry.checksum,
        )

    def _write(self, **values: Any) -> None:
        record: dict[str, Any] = {
            "time": utc_now(),
            "run": self.run,
            "run_started": self.run_started,
            "status": values.pop("status"),
            "study_uid": None,
            "series_uid": None,
            "instance_uid": None,
            "path": None,
            "size": None,
            "checksum": None,
            "protocol": self.protocol,
            "error": None,
            "uids": None,
            "row": self.row,
            "query": self.query,
        }
        record.update(values)
        try:
            self.manifest.write(record)
        except StorageError as error:  # the download goes on; the index has it
            logger.warning("%s", error)


def _guess_levels(uids: Sequence[str]) -> dict[str, str | None]:
    """study/series/instance fields for the UIDs of a failure, study first.

    The library names failures study first (``reference.uids()``); a single
    UID may be of any level, so it is only in ``uids``.
    """
    if len(uids) == 3:
        return {"study_uid": uids[0], "series_uid": uids[1], "instance_uid": uids[2]}
    if len(uids) == 2:
        return {"study_uid": uids[0], "series_uid": uids[1], "instance_uid": None}
    return {}


def protocol_name(downloader: object) -> str:
    """A short protocol name for a downloader (``WADO-RS``, ``C-GET`` ...)."""
    operation = getattr(downloader, "operation", None)
    if isinstance(operation, str) and operation:
        return operation
    names = {
        "WadoRSMetaData": "WADO-RS metadata",
        "WadoRS": "WADO-RS",
        "WadoURI": "WADO-URI",
        "Rad69": "RAD-69",
    }
    for cls in type(downloader).__mro__:
        if cls.__name__ in names:
            return names[cls.__name__]
    return type(downloader).__name__


@dataclass
class FolderSummary:
    """What an output folder holds (index) and what its downloads did (manifest)."""

    folder: Path
    studies: int = 0
    instances: int = 0
    bytes_on_disk: int = 0
    runs: int = 0
    saved: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_saved: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "studies": self.studies,
            "instances": self.instances,
            "bytes_on_disk": self.bytes_on_disk,
            "runs": self.runs,
            "saved": self.saved,
            "skipped": self.skipped,
            "failed": self.failed,
            "bytes_saved": self.bytes_saved,
            "failures": self.failures,
        }


def summarize(folder: str | Path) -> FolderSummary:
    """The summary of folder from its index and ``manifest.jsonl`` (and shards).

    Instances, studies and bytes on disk come from the index (instances
    present and intact). Saved, skipped and failed count manifest lines over
    all runs (bytes: those saved). A failure is listed (the latest for its
    UID, with its UIDs once) unless a later line saved or skipped what it
    names: its instance, or for a failure of a whole series or study, an
    instance of that series or study (a re-run, a retry, another protocol).
    """
    root = Path(folder)
    summary = FolderSummary(root.resolve())
    catalog = Catalog.existing(root)
    if catalog is not None:
        studies: set[str] = set()
        for entry in catalog.entries():
            if entry.state == "present" and catalog.present(entry.instance_uid):
                studies.add(entry.study_uid)
                summary.instances += 1
                summary.bytes_on_disk += entry.size
        summary.studies = len(studies)
    runs: list[str] = []
    failures: dict[str, tuple[int, tuple[str, ...], dict[str, Any]]] = {}
    last_ok: dict[str, int] = {}  # UID -> line of its last success
    for line, record in enumerate(read_folder_manifest(root)):
        run = str(record.get("run", ""))
        if run not in runs:
            runs.append(run)
        status = record.get("status")
        if status == FAILED:
            summary.failed += 1
            uids = tuple(dict.fromkeys(str(u) for u in record.get("uids") or ()))
            key = str(record.get("instance_uid") or (uids[-1] if uids else ""))
            failures[key] = (line, uids, record)  # the latest per UID
            continue
        if status == SAVED:
            summary.saved += 1
            summary.bytes_saved += int(record.get("size") or 0)
        elif status == SKIPPED:
            summary.skipped += 1
        for name in ("instance_uid", "series_uid", "study_uid"):
            if record.get(name):
                last_ok[str(record[name])] = line
    summary.runs = len(runs)
    for key, (line, uids, record) in failures.items():
        if last_ok.get(key, -1) > line:
            continue  # came later (a re-run, a retry, another protocol)
        summary.failures.append(
            {"uids": list(uids or (key,)), "error": record.get("error") or ""}
        )
    return summary


def _one_line(what: str, error: DICOMTrolleyError, uids: Sequence[str]) -> str:
    from dicomtrolley.download import one_line  # the download stack: when it fails

    return one_line(what, error, uids)
