"""Files of the output folder before they get their name: temporary names, modes.

Every file dicomtrolley writes into an output folder (instances, the manifest's
CSV copy, C-GET/C-MOVE spools) is first a temporary file made here, in the
folder it will be renamed in. Its name tells whose it is::

    .dicomtrolley-<pid>.<host>-<random>.part

``<host>`` is 8 hexadecimal digits of the host name, so that on a folder shared
by several machines (an NFS share under a Dask cluster, pods whose process IDs
repeat) a run removes only what a dead process *of its own host* left behind
(:func:`is_stale_temp_file`); another host's files are removed only when a day
old. Names without the host part (dicomtrolley before this change) are taken
as this host's.

New files get the process umask's mode (``mkstemp`` would give 0600), except
the bookkeeping of a de-identified folder, which names source UIDs: 0600
(:func:`new_file_mode`).

Only the standard library is used, so that the CLI's start (a re-run with
nothing to fetch) need not import pydicom through :mod:`dicomtrolley.storage`,
which re-exports these names.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
import zlib
from pathlib import Path

from dicomtrolley.catalog import STATE_FOLDER
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("storage")

TEMP_PREFIX = ".dicomtrolley-"
TEMP_SUFFIX = ".part"
#: A temporary file of another host (or of unknown origin) this old is stale.
STALE_TEMP_AGE_S = 24 * 3600.0
#: In ``<output>/.dicomtrolley/`` of a folder that holds de-identified data.
DEID_STATE_NAME = "deid.json"

__all__ = [
    "DEID_STATE_NAME",
    "STALE_TEMP_AGE_S",
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "apply_file_mode",
    "current_umask",
    "file_mode",
    "fsync_dir",
    "host_tag",
    "is_stale_temp_file",
    "is_temp_name",
    "make_temp_file",
    "new_file_mode",
    "remove_stale_temp_files",
    "temp_prefix",
]


def host_tag(hostname: str | None = None) -> str:
    """8 hexadecimal digits naming a host (this one by default) in temp names."""
    name = socket.gethostname() if hostname is None else hostname
    return f"{zlib.crc32(name.encode('utf-8', 'replace')):08x}"


_HOST = host_tag()


def temp_prefix() -> str:
    """The prefix of this process's temporary files: ``.dicomtrolley-<pid>.<host>-``."""
    return f"{TEMP_PREFIX}{os.getpid()}.{_HOST}-"


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file of dicomtrolley."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def _owner(name: str) -> tuple[int, str] | None:
    """(pid, host tag) from a temporary file's name; the host is ours for names
    made before host tags; None when the name says neither."""
    owner = name[len(TEMP_PREFIX) :].split("-", 1)[0]
    pid_text, _, host = owner.partition(".")
    if not pid_text.isdigit() or int(pid_text) <= 0:
        return None
    return int(pid_text), host or _HOST


def is_stale_temp_file(path: Path) -> bool:
    """True for a temporary file whose process is gone: a process of this host
    that is not running, or, for another host's file, one a day old."""
    owner = _owner(path.name)
    if owner is not None and owner[1] == _HOST:
        pid = owner[0]
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, of another user
            return False
        return False
    try:
        return time.time() - path.stat().st_mtime > STALE_TEMP_AGE_S
    except OSError:
        return False


def remove_stale_temp_files(folder: Path) -> int:
    """Remove the temporary files of dead processes directly in folder."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        path = folder / name
        if is_temp_name(name) and is_stale_temp_file(path):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # elsewhere: set and restore it (a short race window)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a new file as open() would make it: 0666 less the umask."""
    return 0o666 & ~current_umask()


def apply_file_mode(target: int | Path | str) -> None:
    """Give a file (descriptor or path) the umask's mode instead of mkstemp's 0600."""
    try:
        if isinstance(target, int):
            if hasattr(os, "fchmod"):
                os.fchmod(target, file_mode())
        else:
            os.chmod(target, file_mode())
    except OSError as error:
        logger.debug("cannot set the mode of %s: %s", target, error)


def make_temp_file(folder: Path) -> tuple[int, str]:
    """A new temporary file in folder (mkstemp) with the umask's mode."""
    fd, name = tempfile.mkstemp(prefix=temp_prefix(), suffix=TEMP_SUFFIX, dir=folder)
    apply_file_mode(fd)
    return fd, name


def fsync_dir(folder: Path) -> None:
    """Flush folder's entries (a rename in it) to disk; errors are ignored."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_file_mode(folder: str | Path) -> int:
    """The mode to create a file of folder's bookkeeping with (a manifest):
    0600 when folder holds de-identified data (such files name source UIDs),
    else 0666 (less the umask)."""
    return 0o600 if (Path(folder) / STATE_FOLDER / DEID_STATE_NAME).exists() else 0o666
