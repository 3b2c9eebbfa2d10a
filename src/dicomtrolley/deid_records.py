"""The private records a de-identified output folder keeps, written by many processes.

A de-identified folder (:mod:`dicomtrolley.deid`) keeps, in ``.dicomtrolley/``,
``deid-map.jsonl`` (source UID -> mapped UID, patient ID -> pseudonym and date
offset) and ``deid-flags.jsonl`` (instances whose pixels may show text). One
process appends to them; the processes of a Dask cluster, which may sit on
several hosts sharing the folder over NFS (where ``O_APPEND`` is not atomic
between hosts), each append to a shard of their own instead,
``deid-map.d/<host>-<pid>.jsonl`` and ``deid-flags.d/<host>-<pid>.jsonl``, as
they do for the manifest. Readers take the file and its shards together, each
record once (a patient two workers met is written by both).

Every file is mode 0600 (the mapping undoes the pseudonyms), every shard
folder 0700; each record is one whole JSON line. Standard library only, so
that ``dicomtrolley report`` reads them without pydicom.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dicomtrolley.catalog import STATE_FOLDER
from dicomtrolley.exceptions import StorageError
from dicomtrolley.files import DEID_STATE_NAME

__all__ = [
    "FLAGS_NAME",
    "MAP_NAME",
    "PRIVATE_MODE",
    "append_private",
    "deid_summary",
    "read_flags",
    "read_mapping",
    "read_state",
    "record_files",
    "record_path",
]

MAP_NAME = "deid-map.jsonl"
FLAGS_NAME = "deid-flags.jsonl"
PRIVATE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700


def shard_folder(root: Path, name: str) -> Path:
    """``.dicomtrolley/deid-map.d`` for ``deid-map.jsonl`` (and so on)."""
    return Path(root) / STATE_FOLDER / f"{name.removesuffix('.jsonl')}.d"


def record_path(root: Path, name: str, shard: str | None = None) -> Path:
    """Where a process appends records of kind name: the folder's file, or
    its shard (``shard``: the process's name, e.g. ``<host>-<pid>``)."""
    if shard is None:
        return Path(root) / STATE_FOLDER / name
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in shard)
    return shard_folder(root, name) / f"{safe or 'shard'}.jsonl"


def append_private(path: Path, records: list[dict[str, Any]]) -> None:
    """Append records as whole JSON lines, in one ``write`` on an ``O_APPEND``
    descriptor (mode 0600; its folder made 0700 when new).

    One write of whole lines: two processes appending to one file on a local
    file system never interleave within a line. A write the kernel cut short
    (a full disk) is completed, or raises OSError.
    """
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def record_files(root: Path, name: str) -> list[Path]:
    """The folder's file of records name and its shards (those that exist)."""
    main = record_path(root, name)
    try:
        shards = sorted(shard_folder(root, name).glob("*.jsonl"))
    except OSError as error:
        raise StorageError(
            f"cannot list {shard_folder(root, name)}: {error}"
        ) from error
    return [path for path in (main, *shards) if path.is_file()]


def _records(root: Path, name: str) -> Iterator[dict[str, Any]]:
    for path in record_files(root, name):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise StorageError(f"cannot read {path}: {error}") from error
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the end of a line a killed process did not finish
            if isinstance(record, dict):
                yield record


def read_mapping(root: str | Path) -> list[dict[str, Any]]:
    """Every mapping record of folder root (file and shards), each pair once:
    ``{"type": "uid", "source", "mapped"}`` and ``{"type": "patient", "source",
    "pseudonym", "date_offset_days"}``, in the order first written."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for record in _records(Path(root), MAP_NAME):
        seen.setdefault((str(record.get("type")), str(record.get("source"))), record)
    return list(seen.values())


def read_flags(root: str | Path) -> list[dict[str, Any]]:
    """Every flagged instance of folder root (file and shards), each mapped
    SOP Instance UID once (its latest record): ``{"time", "instance_uid",
    "path", "reason"}``."""
    latest: dict[str, dict[str, Any]] = {}
    for record in _records(Path(root), FLAGS_NAME):
        latest[str(record.get("instance_uid"))] = record
    return sorted(latest.values(), key=lambda record: str(record.get("time", "")))


def read_state(root: Path) -> dict[str, Any] | None:
    """The ``deid.json`` of folder root (None when it has none; StorageError
    when it cannot be read)."""
    path = Path(root) / STATE_FOLDER / DEID_STATE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StorageError(f"cannot read {path}: {error}") from error
    return data if isinstance(data, dict) else {}


def deid_summary(root: str | Path) -> dict[str, Any] | None:
    """What a de-identified folder's records say: its ``profile``, how many
    ``patients`` and ``uids`` are mapped, how many instances are ``flagged``
    (their pixels may show patient data). None for a folder that is not
    de-identified (no ``deid.json``)."""
    state = read_state(Path(root))
    if state is None:
        return None
    kinds = [str(record.get("type")) for record in read_mapping(root)]
    return {
        "profile": str(state.get("profile", "")),
        "patients": kinds.count("patient"),
        "uids": kinds.count("uid"),
        "flagged": len(read_flags(root)),
    }
