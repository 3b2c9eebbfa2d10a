"""Temporary names and their owners (dicomtrolley.files)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from dicomtrolley.files import (
    STALE_TEMP_AGE_S,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    host_tag,
    is_stale_temp_file,
    is_temp_name,
    make_temp_file,
    remove_stale_temp_files,
    temp_prefix,
)


def dead_pid() -> int:
    """The process ID of a process that has ended."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def temp(folder: Path, owner: str, age: float = 0.0) -> Path:
    path = folder / f"{TEMP_PREFIX}{owner}-abc{TEMP_SUFFIX}"
    path.write_bytes(b"partial")
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_a_temp_name_carries_the_pid_and_this_hosts_tag(tmp_path: Path) -> None:
    fd, name = make_temp_file(tmp_path)
    os.close(fd)
    assert Path(name).name.startswith(f"{TEMP_PREFIX}{os.getpid()}.{host_tag()}-")
    assert is_temp_name(Path(name).name)
    assert temp_prefix() == f"{TEMP_PREFIX}{os.getpid()}.{host_tag()}-"
    assert len(host_tag("some-pod-7f9c")) == 8
    assert host_tag("a") != host_tag("b")


def test_a_dead_process_of_this_host_leaves_stale_files(tmp_path: Path) -> None:
    pid = dead_pid()
    assert is_stale_temp_file(temp(tmp_path, f"{pid}.{host_tag()}"))
    assert is_stale_temp_file(temp(tmp_path, str(pid)))  # names before host tags
    assert not is_stale_temp_file(temp(tmp_path, f"{os.getpid()}.{host_tag()}"))


def test_another_hosts_file_is_stale_only_when_a_day_old(tmp_path: Path) -> None:
    pid = dead_pid()  # dead here, but the pid is another host's
    other = host_tag("another-host")
    fresh = temp(tmp_path, f"{pid}.{other}")
    old = temp(tmp_path, f"{pid + 1}.{other}", STALE_TEMP_AGE_S + 60)
    assert not is_stale_temp_file(fresh)
    assert is_stale_temp_file(old)
    assert remove_stale_temp_files(tmp_path) == 1
    assert fresh.exists() and not old.exists()
