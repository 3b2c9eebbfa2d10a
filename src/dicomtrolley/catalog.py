"""The index of an output folder: which instances are already saved, and where.

Every download keeps ``<output>/.dicomtrolley/index.sqlite`` (SQLite, WAL
journal) up to date: one row per SOP Instance UID with the file's path relative
to the folder, its size, a checksum, its state, the layout it was saved in and
when it was saved and last checked. The row of a verified file is written just
before the rename that gives it its final name (with the size and checksum of
the verified bytes), so a crash between the two leaves a row whose file is not
there (fetched again), never a file without a row (fetched twice). Files saved
by a storage whose own ``save`` decides where get their row after the save.
Rows are not batched: a C-GET or C-MOVE answers each C-STORE only once the
file has its name (the PACS sends nothing more meanwhile), so its row must be
committed then; one autocommitted INSERT in WAL mode (``synchronous=NORMAL``:
no fsync per commit) costs about 40 microseconds, under a tenth of what
receiving a small instance takes.

An instance is *present* when its row says so and the file is still there with
the recorded size; a file that is gone or changed size is not present (its row
is marked ``gone``) and is fetched again. When the index file is missing (first
download into a folder written by an older version, or deleted), the folder is
scanned once: every file that is a complete DICOM file (its header read and
checked, large values seeked over, as in
:func:`~dicomtrolley.storage.verify_dicom_file`) gets a row, without checksum;
other files (not PS3.10: no ``DICM`` at byte 128) are not read further.

The checksum is CRC-32 (``crc32:`` and 8 hex digits), computed while the bytes
are written, so the file is never read back for it: zlib's CRC-32 runs at
several GB/s (3.6 GB/s measured here, against 1.3 GB/s for SHA-256 and 0.7
GB/s for BLAKE2b), libdeflate's, used by :func:`crc32` when the system has it,
at over 20 GB/s; it catches the damage that happens to files (truncation,
flipped bits) and is no defence against someone changing files on purpose.

One :class:`Catalog` per folder and process (:meth:`Catalog.for_folder`): one
SQLite connection, every use under a lock, so worker threads share it safely.
Several processes may use one folder (the workers of
:mod:`dicomtrolley.distributed`): every write is one autocommitted statement
and a busy timeout (30 s) orders them. On a local file system the journal is a
WAL (readers never wait for writers); on a network file system (NFS, SMB,
Lustre ...), where SQLite's WAL cannot work (it needs memory shared by every
process on one host), the index uses a rollback journal, whose locks those file
systems provide. Two processes that find the index missing both scan the
folder; a scan keeps the rows written by others while it ran.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from dicomtrolley.exceptions import DICOMParseError, StorageError
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("catalog")

#: The folder of dicomtrolley's own files inside an output folder.
STATE_FOLDER = ".dicomtrolley"
INDEX_NAME = "index.sqlite"
PRESENT = "present"
GONE = "gone"
_SCHEMA_VERSION = "1"
_BUSY_TIMEOUT_S = 30.0
#: File system types (as in /proc/mounts) on which SQLite's WAL cannot work.
NETWORK_FILE_SYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "lustre", "gpfs",
        "beegfs", "ceph", "glusterfs", "fuse.sshfs", "fuse.glusterfs",
        "fuse.cephfs", "fuse.s3fs", "fuse.gcsfuse", "afs", "ncpfs",
    }
)  # fmt: skip
#: Connections kept open at most (3 file descriptors each); the least recently
#: used folder's is closed beyond that and reopened when used again.
MAX_OPEN_CATALOGS = 16
#: UIDs per ``IN (...)`` query (SQLite allows 999 parameters in older builds).
_UIDS_PER_QUERY = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT,
    state TEXT NOT NULL,
    layout TEXT,
    saved_at TEXT NOT NULL,
    checked_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances (study_uid, series_uid);
CREATE INDEX IF NOT EXISTS instances_by_path ON instances (path);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = (
    "instance_uid, study_uid, series_uid, path, size, checksum, state, layout, "
    "saved_at, checked_at"
)
_PLACEHOLDERS = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?"


def utc_now() -> str:
    """The current time as ISO 8601 in UTC, to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def crc32_text(value: int) -> str:
    """A CRC-32 as written in the index and the manifest: ``crc32:0a1b2c3d``."""
    return f"crc32:{value & 0xFFFFFFFF:08x}"


def file_checksum(path: Path, block: int = 1024 * 1024) -> str:
    """The CRC-32 of a whole file (for files not written through a writer)."""
    value = 0
    buffer = bytearray(block)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            value = crc32(view[:count], value)
    return crc32_text(value)


#: Shorter buffers go to zlib (the call through ctypes costs a microsecond).
FAST_CRC32_MIN = 8192
#: Where libdeflate may be (tried in turn, without searching: no ldconfig run).
_LIBDEFLATE = ("libdeflate.so.0", "libdeflate.so", "libdeflate.0.dylib")
_fast_crc32: list[Callable[..., int] | None] = []  # [] until looked for


def crc32(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """``zlib.crc32(data, value)``, computed by libdeflate when the system has
    it (``libdeflate.so.0``, which libtiff needs): its CRC-32 uses the CPU's
    carry-less multiplication, several times faster than zlib's. Same
    polynomial, same result (checked when it is loaded); zlib otherwise.

    Files are checksummed as their bytes arrive: with zlib that was about a
    quarter of a C-GET's CPU time on large instances (benchmarks/dimse.py)."""
    if len(data) >= FAST_CRC32_MIN:
        fast = _fast_crc32[0] if _fast_crc32 else _load_fast_crc32()
        if fast is not None:
            if isinstance(data, bytes):
                return fast(value, data, len(data))
            view = memoryview(data)
            if not view.readonly and view.c_contiguous:
                import ctypes

                block = (ctypes.c_char * view.nbytes).from_buffer(view)
                return fast(value, block, view.nbytes)
    return zlib.crc32(data, value)


def _load_fast_crc32() -> Callable[..., int] | None:
    """libdeflate's CRC-32 function, when it loads and agrees with zlib."""
    import ctypes

    found: Callable[..., int] | None = None
    for name in _LIBDEFLATE:
        try:
            function = ctypes.CDLL(name).libdeflate_crc32
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_uint32
        function.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
        probe = bytes(range(256)) * 64
        if function(12345, probe, len(probe)) == zlib.crc32(probe, 12345):
            found = function
        break
    _fast_crc32[:] = [found]
    return found


@dataclass(frozen=True)
class CatalogEntry:
    """One instance in the index. ``path`` is relative to the folder."""

    instance_uid: str
    study_uid: str
    series_uid: str
    path: PurePosixPath
    size: int
    checksum: str | None
    state: str
    layout: str | None
    saved_at: str
    checked_at: str


class Catalog:
    """The index of one output folder (see the module docstring).

    Use :meth:`for_folder` to share one per folder in a process. Every method
    is thread-safe. SQLite failures raise
    :class:`~dicomtrolley.exceptions.StorageError`.
    """

    _shared: dict[Path, Catalog] = {}
    _shared_lock = threading.Lock()

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        self.path = self.folder / STATE_FOLDER / INDEX_NAME
        self._lock = threading.RLock()
        new = not self.path.exists()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot open the index {self.path}: {error}") from error
        self._conn()
        if new:
            self.rebuild()
        else:
            from dicomtrolley.files import remove_stale_temp_files

            remove_stale_temp_files(self.folder)

    def _conn(self) -> sqlite3.Connection:
        """The open connection (opened again after :meth:`suspend`)."""
        with self._lock:
            if self._db is None:
                try:
                    self._db = self._connect()
                except sqlite3.Error as error:
                    raise StorageError(
                        f"cannot open the index {self.path}: {error}"
                    ) from error
            return self._db

    def suspend(self) -> None:
        """Close the connection for now; the next use opens it again."""
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_S,
            check_same_thread=False,
            isolation_level=None,  # autocommit; explicit BEGIN where needed
        )
        try:
            db.execute(f"PRAGMA journal_mode={journal_mode(self.folder)}")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                (_SCHEMA_VERSION,),
            )
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @classmethod
    def for_folder(cls, folder: str | Path) -> Catalog:
        """The process's catalog of folder, opened (and built) on first use.

        When its index file was deleted since, the folder is scanned again.
        """
        key = _resolved(str(folder))
        with cls._shared_lock:
            catalog = cls._shared.pop(key, None)
            if catalog is not None and not catalog.path.exists():
                catalog.suspend()
                catalog = None
            if catalog is None:
                catalog = cls(key)
            cls._shared[key] = catalog  # the most recently used last
            opened = [c for c in cls._shared.values() if c._db is not None]
            for old in opened[: max(0, len(opened) - MAX_OPEN_CATALOGS)]:
                old.suspend()
            return catalog

    @classmethod
    def existing(cls, folder: str | Path) -> Catalog | None:
        """The catalog of folder when it has an index file, else None (no scan)."""
        if not (Path(folder) / STATE_FOLDER / INDEX_NAME).exists():
            return None
        return cls.for_folder(folder)

    def close(self) -> None:
        """Close the connection (the shared instance is dropped too)."""
        self.suspend()
        with Catalog._shared_lock:
            if Catalog._shared.get(self.folder) is self:
                del Catalog._shared[self.folder]

    # ------------------------------------------------------------------ reads

    def entry(self, instance_uid: str) -> CatalogEntry | None:
        """The row of instance_uid as stored (the disk is not looked at)."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM instances WHERE instance_uid = ?",
            (instance_uid,),
        )
        return rows[0] if rows else None

    def entry_for_path(self, path: str | Path) -> CatalogEntry | None:
        """The row of the file at path (absolute, or relative to the folder)."""
        relative = self._relative(Path(path))
        if relative is None:
            return None
        rows = self._query(
            f"SELECT {_COLUMNS} FROM instances WHERE path = ? AND state = ? "
            "ORDER BY saved_at DESC LIMIT 1",
            (str(relative), PRESENT),
        )
        return rows[0] if rows else None

    def entries(self, study_uid: str | None = None) -> list[CatalogEntry]:
        """Every row (of one study), whatever its state."""
        if study_uid is None:
            return self._query(f"SELECT {_COLUMNS} FROM instances", ())
        return self._query(
            f"SELECT {_COLUMNS} FROM instances WHERE study_uid = ?", (study_uid,)
        )

    def has_study(self, study_uid: str) -> bool:
        """True when at least one instance of the study is recorded as present."""
        rows = self._db_read(
            "SELECT 1 FROM instances WHERE study_uid = ? AND state = ? LIMIT 1",
            (study_uid, PRESENT),
        )
        return bool(rows)

    def present(
        self,
        instance_uid: str,
        layout: str | None = None,
        fits: Callable[[Path], bool] | None = None,
    ) -> Path | None:
        """The file of instance_uid when it is on disk with its recorded size.

        A row whose file is gone or has another size is marked ``gone``: the
        instance is not present and will be fetched again. With ``layout``
        (a storage's :meth:`~dicomtrolley.storage.DICOMDiskStorage.layout_key`)
        only a file saved in that layout counts, so a download in another
        layout saves its own copy. A file found by scanning has no layout
        yet: it counts when ``fits(file)`` says it is where the layout puts
        it (its row then takes the layout).
        """
        return self._present(self.entry(instance_uid), layout, fits)

    def _present(
        self,
        entry: CatalogEntry | None,
        layout: str | None,
        fits: Callable[[Path], bool] | None,
    ) -> Path | None:
        if entry is None or entry.state != PRESENT:
            return None
        full = self._check(entry)
        if full is None or layout is None or entry.layout == layout:
            return full
        if entry.layout is None and fits is not None and fits(full):
            self._execute(
                "UPDATE instances SET layout = ? WHERE instance_uid = ?",
                (layout, entry.instance_uid),
            )
            return full
        return None

    def present_of(
        self,
        instance_uids: Iterable[str],
        layout: str | None = None,
        fits: Callable[[Path], bool] | None = None,
    ) -> dict[str, Path]:
        """instance UID -> file, for those of instance_uids that are present
        (as :meth:`present`, with the rows read in a few queries)."""
        entries = self.entries_of(instance_uids)
        found: dict[str, Path] = {}
        for uid, entry in entries.items():
            path = self._present(entry, layout, fits)
            if path is not None:
                found[uid] = path
        return found

    def entries_of(self, instance_uids: Iterable[str]) -> dict[str, CatalogEntry]:
        """instance UID -> row as stored, for those of instance_uids in the index
        (one query per 500 UIDs; the disk is not looked at)."""
        uids = list(dict.fromkeys(instance_uids))
        found: dict[str, CatalogEntry] = {}
        for start in range(0, len(uids), _UIDS_PER_QUERY):
            chunk = tuple(uids[start : start + _UIDS_PER_QUERY])
            marks = ", ".join("?" * len(chunk))
            for entry in self._query(
                f"SELECT {_COLUMNS} FROM instances WHERE instance_uid IN ({marks})",
                chunk,
            ):
                found[entry.instance_uid] = entry
        return found

    def _check(self, entry: CatalogEntry) -> Path | None:
        full = self.folder / entry.path
        try:
            size = full.stat().st_size
        except OSError:
            size = -1
        if size == entry.size and full.is_file():
            return full
        logger.info(
            "%s: %s (instance %s); fetching it again",
            full,
            "gone" if size < 0 else f"size {size} instead of {entry.size}",
            entry.instance_uid,
        )
        self._execute(
            "UPDATE instances SET state = ?, checked_at = ? WHERE instance_uid = ?",
            (GONE, utc_now(), entry.instance_uid),
        )
        return None

    # ----------------------------------------------------------------- writes

    def record(
        self,
        *,
        instance_uid: str,
        study_uid: str,
        series_uid: str,
        path: str | Path,
        size: int,
        checksum: str | None,
        layout: str | None = None,
    ) -> CatalogEntry | None:
        """Record a file that just got its final name. None when path is
        outside the folder (a storage that saves elsewhere: not indexed)."""
        relative = self._relative(Path(path))
        if relative is None:
            return None
        now = utc_now()
        entry = CatalogEntry(
            instance_uid, study_uid, series_uid, relative, size, checksum, PRESENT,
            layout, now, now,
        )  # fmt: skip
        self._execute(
            f"INSERT OR REPLACE INTO instances ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",
            _row(entry),
        )
        return entry

    def rebuild(self) -> int:
        """Scan the folder and index every complete DICOM file. Returns files found.

        Rows of files that are no longer there are dropped. Reads the headers
        only (large values are seeked over), so it costs about the same for
        small and large files. Leftover temporary files of processes that are
        gone are removed.
        """
        started = time.monotonic()
        scan_started = utc_now()
        found: list[CatalogEntry] = []
        for path in self._scan_files():
            entry = _entry_of_file(path, self.folder)
            if entry is not None:
                found.append(entry)
        with self._lock:
            try:
                db = self._conn()
                db.execute("BEGIN IMMEDIATE")
                # rows another process wrote while the folder was scanned stay
                # (with their checksum and layout), whether or not the scan saw
                # their file
                db.execute("DELETE FROM instances WHERE saved_at < ?", (scan_started,))
                db.executemany(
                    f"INSERT OR IGNORE INTO instances ({_COLUMNS}) "
                    f"VALUES ({_PLACEHOLDERS})",
                    [_row(entry) for entry in found],
                )
                db.execute("COMMIT")
            except sqlite3.Error as error:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise StorageError(
                    f"cannot rebuild the index {self.path}: {error}"
                ) from error
        logger.info(
            "Indexed %d DICOM file(s) in %s in %.2f s",
            len(found),
            self.folder,
            time.monotonic() - started,
        )
        return len(found)

    def _scan_files(self) -> Iterator[Path]:
        from dicomtrolley.files import is_stale_temp_file, is_temp_name

        for parent, folders, names in os.walk(self.folder):
            folders[:] = [name for name in folders if name != STATE_FOLDER]
            for name in names:
                path = Path(parent) / name
                if is_temp_name(name):
                    if is_stale_temp_file(path):
                        with contextlib.suppress(OSError):
                            path.unlink()
                    continue
                yield path

    # ---------------------------------------------------------------- helpers

    def _relative(self, path: Path) -> PurePosixPath | None:
        full = path if path.is_absolute() else self.folder / path
        try:
            relative = Path(os.path.abspath(full)).relative_to(self.folder)
        except ValueError:
            try:
                relative = full.resolve().relative_to(self.folder)
            except (ValueError, OSError):
                return None
        return PurePosixPath(relative.as_posix())

    def _query(self, sql: str, parameters: tuple[object, ...]) -> list[CatalogEntry]:
        return [_entry(row) for row in self._db_read(sql, parameters)]

    def _db_read(
        self, sql: str, parameters: tuple[object, ...]
    ) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return list(self._conn().execute(sql, parameters).fetchall())
            except sqlite3.Error as error:
                raise StorageError(
                    f"cannot read the index {self.path}: {error}"
                ) from error

    def _execute(self, sql: str, parameters: tuple[object, ...]) -> None:
        with self._lock:
            try:
                self._conn().execute(sql, parameters)
            except sqlite3.Error as error:
                raise StorageError(
                    f"cannot write the index {self.path}: {error}"
                ) from error

    def __repr__(self) -> str:
        return f"Catalog({str(self.folder)!r})"


@functools.lru_cache(maxsize=64)
def _resolved(folder: str) -> Path:
    """folder resolved once per process (for_folder runs for every file saved)."""
    return Path(folder).resolve()


def journal_mode(folder: Path) -> str:
    """``WAL`` for a folder on a local file system, ``DELETE`` on a network one."""
    return "DELETE" if file_system_type(folder) in NETWORK_FILE_SYSTEMS else "WAL"


def file_system_type(folder: Path) -> str:
    """The type of the file system folder is on (``ext4``, ``nfs4`` ...), from
    /proc/mounts; ``""`` where that cannot be read (other systems)."""
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return ""
    target = os.path.realpath(folder)
    best, kind = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _row(entry: CatalogEntry) -> tuple[object, ...]:
    return (
        entry.instance_uid,
        entry.study_uid,
        entry.series_uid,
        str(entry.path),
        entry.size,
        entry.checksum,
        entry.state,
        entry.layout,
        entry.saved_at,
        entry.checked_at,
    )


def _entry(row: tuple[object, ...]) -> CatalogEntry:
    uid, study, series, path, size, checksum, state, layout, saved, checked = row
    return CatalogEntry(
        instance_uid=str(uid),
        study_uid=str(study),
        series_uid=str(series),
        path=PurePosixPath(str(path)),
        size=int(str(size)),
        checksum=None if checksum is None else str(checksum),
        state=str(state),
        layout=None if layout is None else str(layout),
        saved_at=str(saved),
        checked_at=str(checked),
    )


def _entry_of_file(path: Path, folder: Path) -> CatalogEntry | None:
    """The row for a complete DICOM file found by scanning; None for others."""
    from dicomtrolley.storage import verify_dicom_file

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size < 132:
            return None  # fifos, sockets ...; too short for a PS3.10 file
        with open(path, "rb") as handle:
            if handle.read(132)[128:] != b"DICM":
                return None  # not a PS3.10 file (dicomtrolley writes only those)
        size = info.st_size
        dataset = verify_dicom_file(path)
    except (DICOMParseError, OSError):
        return None
    uid = str(dataset.get("SOPInstanceUID", "") or "")
    if not uid:
        return None
    now = utc_now()
    return CatalogEntry(
        instance_uid=uid,
        study_uid=str(dataset.get("StudyInstanceUID", "") or ""),
        series_uid=str(dataset.get("SeriesInstanceUID", "") or ""),
        path=PurePosixPath(path.relative_to(folder).as_posix()),
        size=size,
        checksum=None,
        state=PRESENT,
        layout=None,
        saved_at=now,
        checked_at=now,
    )
