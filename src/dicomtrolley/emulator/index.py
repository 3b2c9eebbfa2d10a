"""An index of the DICOM files below a folder, kept in an in-memory SQLite database.

Every protocol the emulator serves answers from this one index: searches read the
study, series and instance rows; downloads look up the file of an instance here
and nowhere else, so no request can reach a file that was not indexed.

The folder may have any layout. Only file headers are read (up to the pixel data,
and only the attributes of :mod:`dicomtrolley.emulator.attributes`). Files that
are not PS3.10 DICOM files (no ``DICM`` prefix), lack one of the three UIDs or
carry UIDs that are not digits and dots are skipped with a warning, once per
version of the file. Names starting with a dot are ignored (temporary files of
atomic writes, ``.git`` ...). When two files hold the same SOP Instance UID, the
first one (in path order) wins.

:meth:`DicomIndex.refresh` walks the folder and compares every file's size and
modification time with what it has indexed: new and changed files are read,
removed ones dropped, and the study and series rows of the studies they belong
to are computed again (each such study's MINT ``version`` goes up by one). The
emulator calls it before each request; it walks the folder at most once every
``rescan_interval`` seconds.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dicomtrolley.emulator.attributes import (
    INSTANCE_TAGS,
    JsonDataset,
    first_value,
    project,
    tag_of,
)
from dicomtrolley.emulator.scan import (
    SERIES_NUMBER,
    ParsedFile,
    as_integer,
    read_header,
    summarise,
    walk,
)

logger = logging.getLogger("trolley.emulator.index")

#: At most this many values in one SQL ``IN (...)``; longer lists filter in Python.
_MAX_SQL_VALUES = 500
#: Namespace of the MINT study UUIDs (stable: derived from the Study Instance UID).
_MINT_NAMESPACE = uuid.UUID("6f1d8c1e-5b7a-4c43-9a8e-64a1d0c7e3b2")

_SCHEMA = """
CREATE TABLE instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    transfer_syntax TEXT NOT NULL,
    number INTEGER,
    header TEXT NOT NULL
);
CREATE INDEX instances_by_series ON instances (series_uid);
CREATE INDEX instances_by_study ON instances (study_uid);
CREATE TABLE series (
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    number INTEGER,
    attrs TEXT NOT NULL,
    PRIMARY KEY (study_uid, series_uid)
);
CREATE INDEX series_by_uid ON series (series_uid);
CREATE TABLE studies (
    study_uid TEXT PRIMARY KEY,
    uuid TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_modified_ns INTEGER NOT NULL,
    attrs TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class StudyRecord:
    """One study: its study-level attributes (DICOM JSON) and MINT bookkeeping."""

    uid: str
    uuid: str
    version: int
    last_modified: datetime
    attrs: JsonDataset


@dataclass(frozen=True)
class SeriesRecord:
    """One series: its series-level attributes (DICOM JSON)."""

    uid: str
    study_uid: str
    attrs: JsonDataset


@dataclass(frozen=True)
class InstanceRecord:
    """One instance: its file and its instance-level attributes (DICOM JSON)."""

    uid: str
    series_uid: str
    study_uid: str
    path: Path
    size: int
    transfer_syntax: str
    attrs: JsonDataset


@dataclass(frozen=True)
class ScanReport:
    """What one walk of the folder changed."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    skipped: int = 0

    @property
    def modified(self) -> bool:
        return bool(self.added or self.changed or self.removed)


@dataclass(frozen=True)
class IndexStats:
    """How much the index holds."""

    patients: int
    studies: int
    series: int
    instances: int


class DicomIndex:
    """The DICOM files below ``root``, searchable by level and UID.

    Thread-safe: one SQLite connection guarded by a lock; folder walks are
    serialised. ``rescan_interval`` (seconds) throttles :meth:`refresh`; None
    turns automatic rescans off (call ``refresh(force=True)`` yourself).
    """

    def __init__(self, root: Path | str, rescan_interval: float | None = 1.0) -> None:
        self.root = Path(root).resolve()
        self.rescan_interval = rescan_interval
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._db_lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._last_scan = float("-inf")
        # Files that were not indexed, by path: the (size, mtime) last looked at.
        self._skipped: dict[str, tuple[int, int]] = {}

    def close(self) -> None:
        with self._db_lock:
            self._db.close()

    # -- keeping up with the folder ---------------------------------------------

    def invalidate(self) -> None:
        """Make the next :meth:`refresh` walk the folder, whatever the interval."""
        self._last_scan = float("-inf")

    def refresh(self, force: bool = False) -> ScanReport | None:
        """Walk the folder and index what changed; None if throttled.

        Without ``force`` the folder is walked only when ``rescan_interval``
        seconds have passed since the last walk began, and not while another
        thread walks it.
        """
        if not force and not self._due():
            return None
        # Requests do not queue up behind a walk that is under way: they are
        # answered from the index as it is. A forced refresh waits its turn.
        if not self._scan_lock.acquire(blocking=force):
            return None
        try:
            if not force and not self._due():
                return None  # another thread walked the folder meanwhile
            started = time.monotonic()
            report = self._scan()
            self._last_scan = started
        finally:
            self._scan_lock.release()
        if report.modified:
            logger.info(
                "Index of %s: %d added, %d changed, %d removed",
                self.root,
                report.added,
                report.changed,
                report.removed,
            )
        return report

    def _due(self) -> bool:
        if self.rescan_interval is None:
            return self._last_scan == float("-inf")
        return time.monotonic() - self._last_scan >= self.rescan_interval

    def _scan(self) -> ScanReport:
        on_disk = dict(walk(self.root))
        with self._db_lock:
            known = {
                path: (size, mtime)
                for path, size, mtime in self._db.execute(
                    "SELECT path, size, mtime_ns FROM instances"
                )
            }
        for path in set(self._skipped) - set(on_disk):
            del self._skipped[path]
        removed = set(known) - set(on_disk)
        todo = sorted(
            path
            for path, state in on_disk.items()
            if known.get(path) != state and self._skipped.get(path) != state
        )
        changed = {path for path in todo if path in known}
        parsed: list[ParsedFile] = []
        for path in todo:
            result = read_header(path, *on_disk[path])
            if isinstance(result, str):
                logger.warning("Skipped %s: %s", path, result)
                self._skipped[path] = on_disk[path]
            else:
                self._skipped.pop(path, None)
                parsed.append(result)
        with self._db_lock, self._db:
            inserted = self._apply(removed | changed, parsed)
        return ScanReport(
            added=len(inserted - changed),
            changed=len(inserted & changed),
            removed=len(removed) + len(changed - inserted),
            skipped=len(self._skipped),
        )

    def _apply(self, gone: set[str], parsed: list[ParsedFile]) -> set[str]:
        """Drop rows of gone paths, insert parsed files, summarise touched studies.

        Returns the paths inserted (duplicate SOP Instance UIDs are refused).
        """
        db = self._db
        touched: set[str] = set()
        for path in gone:
            row = db.execute(
                "SELECT study_uid FROM instances WHERE path = ?", (path,)
            ).fetchone()
            if row:
                touched.add(row[0])
                db.execute("DELETE FROM instances WHERE path = ?", (path,))
        inserted: set[str] = set()
        for item in parsed:
            other = db.execute(
                "SELECT path FROM instances WHERE sop_uid = ?", (item.sop_uid,)
            ).fetchone()
            if other:
                logger.warning(
                    "Skipped %s: SOP Instance UID %s is already indexed from %s",
                    item.path,
                    item.sop_uid,
                    other[0],
                )
                self._skipped[item.path] = (item.size, item.mtime_ns)
                continue
            db.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.sop_uid,
                    item.series_uid,
                    item.study_uid,
                    item.path,
                    item.size,
                    item.mtime_ns,
                    item.transfer_syntax,
                    item.number,
                    json.dumps(item.header, ensure_ascii=False),
                ),
            )
            touched.add(item.study_uid)
            inserted.add(item.path)
        for study_uid in sorted(touched):
            self._summarise(study_uid)
        return inserted

    def _summarise(self, study_uid: str) -> None:
        """Compute the study row and its series rows from the study's instances."""
        db = self._db
        rows = db.execute(
            "SELECT series_uid, header, mtime_ns FROM instances WHERE study_uid = ? "
            "ORDER BY path",
            (study_uid,),
        ).fetchall()
        previous = db.execute(
            "SELECT version FROM studies WHERE study_uid = ?", (study_uid,)
        ).fetchone()
        db.execute("DELETE FROM series WHERE study_uid = ?", (study_uid,))
        db.execute("DELETE FROM studies WHERE study_uid = ?", (study_uid,))
        if not rows:
            return
        headers = [(series_uid, json.loads(header)) for series_uid, header, _ in rows]
        study, series = summarise(headers)
        for series_uid, attrs in series.items():
            db.execute(
                "INSERT INTO series VALUES (?, ?, ?, ?)",
                (
                    study_uid,
                    series_uid,
                    as_integer(first_value(attrs, SERIES_NUMBER)),
                    json.dumps(attrs, ensure_ascii=False),
                ),
            )
        db.execute(
            "INSERT INTO studies VALUES (?, ?, ?, ?, ?)",
            (
                study_uid,
                str(uuid.uuid5(_MINT_NAMESPACE, study_uid)),
                previous[0] + 1 if previous else 1,
                max(mtime for _, _, mtime in rows),
                json.dumps(study, ensure_ascii=False),
            ),
        )

    # -- lookups ----------------------------------------------------------------

    def studies(self, uids: Collection[str] | None = None) -> list[StudyRecord]:
        """Studies, all or those with the given UIDs, ordered by UID."""
        rows = self._select(
            "SELECT study_uid, uuid, version, last_modified_ns, attrs FROM studies",
            [("study_uid", uids, 0)],
            "ORDER BY study_uid",
        )
        return [
            StudyRecord(
                uid=uid,
                uuid=mint_uuid,
                version=version,
                last_modified=datetime.fromtimestamp(modified / 1e9, timezone.utc),
                attrs=json.loads(attrs),
            )
            for uid, mint_uuid, version, modified, attrs in rows
        ]

    def series(
        self,
        study_uids: Collection[str] | None = None,
        series_uids: Collection[str] | None = None,
    ) -> list[SeriesRecord]:
        """Series, ordered by study, series number and UID."""
        rows = self._select(
            "SELECT series_uid, study_uid, attrs FROM series",
            [("study_uid", study_uids, 1), ("series_uid", series_uids, 0)],
            "ORDER BY study_uid, number IS NULL, number, series_uid",
        )
        return [
            SeriesRecord(uid=uid, study_uid=study_uid, attrs=json.loads(attrs))
            for uid, study_uid, attrs in rows
        ]

    def instances(
        self,
        study_uids: Collection[str] | None = None,
        series_uids: Collection[str] | None = None,
        sop_uids: Collection[str] | None = None,
    ) -> list[InstanceRecord]:
        """Instances, ordered by study, series number, instance number and UID."""
        rows = self._select(
            "SELECT i.sop_uid, i.series_uid, i.study_uid, i.path, i.size, "
            "i.transfer_syntax, i.header FROM instances i LEFT JOIN series s "
            "ON s.study_uid = i.study_uid AND s.series_uid = i.series_uid",
            [
                ("i.study_uid", study_uids, 2),
                ("i.series_uid", series_uids, 1),
                ("i.sop_uid", sop_uids, 0),
            ],
            "ORDER BY i.study_uid, s.number IS NULL, s.number, i.series_uid, "
            "i.number IS NULL, i.number, i.sop_uid",
        )
        return [
            InstanceRecord(
                uid=uid,
                series_uid=series_uid,
                study_uid=study_uid,
                path=Path(path),
                size=size,
                transfer_syntax=syntax,
                attrs=project(json.loads(header), INSTANCE_TAGS),
            )
            for uid, series_uid, study_uid, path, size, syntax, header in rows
        ]

    def instance(self, sop_uid: str) -> InstanceRecord | None:
        """The instance with this SOP Instance UID, if indexed."""
        found = self.instances(sop_uids=[sop_uid])
        return found[0] if found else None

    def stats(self) -> IndexStats:
        """Counts of patients (distinct Patient IDs), studies, series, instances."""
        with self._db_lock:
            patients = {
                str(first_value(json.loads(attrs), tag_of("PatientID") or "") or "")
                for (attrs,) in self._db.execute("SELECT attrs FROM studies")
            }
            counts = [
                self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("studies", "series", "instances")
            ]
        return IndexStats(len(patients), *counts)

    def _select(
        self,
        query: str,
        constraints: Sequence[tuple[str, Collection[str] | None, int]],
        order: str,
    ) -> list[tuple[Any, ...]]:
        """Rows of query restricted to column IN values for each constraint.

        Each constraint names the column, the allowed values (None: any) and the
        position of that column in the result rows (to filter in Python when
        the list is too long for SQL).
        """
        clauses: list[str] = []
        arguments: list[str] = []
        in_python: list[tuple[int, frozenset[str]]] = []
        for column, values, position in constraints:
            if values is None:
                continue
            if not values:
                return []
            if len(values) > _MAX_SQL_VALUES:
                in_python.append((position, frozenset(values)))
                continue
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            arguments.extend(values)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._db_lock:
            rows = self._db.execute(f"{query}{where} {order}", arguments).fetchall()
        return [
            row
            for row in rows
            if all(row[position] in allowed for position, allowed in in_python)
        ]
