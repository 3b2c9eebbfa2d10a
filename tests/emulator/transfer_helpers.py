"""What the resume and batch tests share: counting on the server, checking the folder,
running the CLI as a subprocess and stopping it at a chosen request.

The emulator logs each request line (``"GET /path HTTP/1.1"``) to the
``trolley.emulator`` logger; :class:`RequestLog` collects them, so a test knows
which instances were retrieved (WADO-RS per study/series/instance, WADO-URI per
instance). :class:`CountingDimse` keeps the UIDs each C-GET/C-MOVE sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pydicom

from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.files import is_temp_name
from dicomtrolley.storage import verify_dicom_file
from tests.emulator.conftest import PASSWORD, DemoData
from tests.fakes import tree

REPO = Path(__file__).resolve().parents[2]
ENV = {"DICOMTROLLEY_PASSWORD": PASSWORD}
_RETRIEVE = re.compile(
    r"^/dicom-web/studies/([^/?]+)(?:/series/([^/?]+)(?:/instances/([^/?]+))?)?$"
)


def is_retrieve(line: str) -> bool:
    """True for a WADO-URI or WADO-RS retrieve request line (not a search)."""
    return line.startswith("/wado?") or bool(_RETRIEVE.match(line.partition("?")[0]))


class CountingDimse(DimseService):
    """The emulator's DIMSE service, keeping the UIDs each retrieve sent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lock = threading.Lock()
        self.sent: list[str] = []

    def _instances(self, event: Any) -> Any:
        model, instances = super()._instances(event)
        with self.lock:
            self.sent.extend(record.uid for record in instances)
        return model, instances


class RequestLog(logging.Handler):
    """The request lines the emulator logs; on_request(line, count) sees each."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._guard = threading.Lock()
        self.lines: list[str] = []
        self.on_request: Callable[[str, int], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r'"(GET|POST) (\S+) HTTP', record.getMessage())
        if match:
            with self._guard:
                self.lines.append(match.group(2))
                count = len(self.lines)
            if self.on_request is not None:
                self.on_request(match.group(2), count)

    def clear(self) -> None:
        with self._guard:
            self.lines = []
        self.on_request = None

    def retrieved(self, demo: DemoData) -> list[str]:
        """SOP Instance UIDs the WADO-RS/WADO-URI requests asked for (repeats kept)."""
        uids: list[str] = []
        with self._guard:
            lines = list(self.lines)
        for line in lines:
            path, _, query = line.partition("?")
            if path == "/wado":
                found = re.search(r"objectUID=([^&]+)", query)
                if found:
                    uids.append(found.group(1))
                continue
            match = _RETRIEVE.match(path)
            if match is None:
                continue
            study, series, instance = match.groups()
            if instance:
                uids.append(instance)
            else:
                uids.extend(demo.files_of(study, series or ""))
        return uids


@contextlib.contextmanager
def counting_emulator(
    root: Path, services: Sequence[Any] | None = None
) -> Iterator[tuple[Emulator, RequestLog]]:
    """An emulator over root (default services and a CountingDimse) whose request
    lines go to the RequestLog yielded with it; stopped and detached at the end."""
    log = RequestLog()
    logger = logging.getLogger("trolley.emulator")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(log)
    chosen = list(services) if services is not None else default_services()
    try:
        with Emulator(
            root, services=[*chosen, CountingDimse()], rescan_interval=None
        ) as running:
            yield running, log
    finally:
        logger.removeHandler(log)
        logger.setLevel(level)


# -- the output folder ------------------------------------------------------------


def on_disk(folder: Path) -> dict[str, Path]:
    """SOP UID -> complete DICOM file below folder (temporary files and
    dicomtrolley's records left out)."""
    found: dict[str, Path] = {}
    for path in tree(folder):
        if not path.is_file() or is_temp_name(path.name) or path.suffix == ".csv":
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        found[str(dataset.SOPInstanceUID)] = path
    return found


def dicom_files(folder: Path) -> dict[str, bytes]:
    """SOP UID -> bytes of every DICOM file below folder."""
    return {uid: path.read_bytes() for uid, path in on_disk(folder).items()}


def temp_files(folder: Path) -> list[Path]:
    return [p for p in tree(folder) if is_temp_name(p.name)]


def assert_complete(
    folder: Path, expected: dict[str, bytes], exact: bool = True
) -> None:
    """Every expected instance on disk and no other, intact (byte for byte when
    exact; C-GET sends the data set with a file header of its own), no
    temporary file."""
    files = on_disk(folder)
    assert set(files) == set(expected)
    for uid, path in files.items():
        if exact:
            assert path.read_bytes() == expected[uid], uid
        else:
            verify_dicom_file(path)
    assert not temp_files(folder)


# -- the CLI as a subprocess --------------------------------------------------------


def cli_command(*args: str) -> list[str]:
    """``python -m dicomtrolley.cli.main ARGS``."""
    return [sys.executable, "-m", "dicomtrolley.cli.main", *args]


def run_cli(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command (the password in the environment); its output as text."""
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **ENV, **(env or {})},
    )


def stop_at_retrieve(
    args: Sequence[str],
    log: RequestLog,
    sig: signal.Signals,
    stop_after: int,
    delay: float,
    timeout: float = 120,
) -> tuple[subprocess.Popen[str], bool]:
    """Run args, and send sig delay seconds after the server saw retrieve request
    number stop_after. Returns the ended process and whether the signal was sent.

    The process is killed if it has not ended after timeout seconds (then the
    test fails on its return code), so a stuck command never hangs the suite.
    """
    process = subprocess.Popen(
        list(args),
        cwd=REPO,
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    retrieves = 0
    fired = threading.Event()
    timers: list[threading.Timer] = []

    def on_request(line: str, count: int) -> None:
        nonlocal retrieves
        if is_retrieve(line):
            retrieves += 1
            if retrieves == stop_after and not fired.is_set():
                fired.set()
                timer = threading.Timer(delay, _signal, args=(process, sig))
                timers.append(timer)
                timer.start()

    log.on_request = on_request
    try:
        process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
    finally:
        log.on_request = None
        for timer in timers:
            timer.cancel()
            timer.join()
    return process, fired.is_set()


def _signal(process: subprocess.Popen[str], sig: signal.Signals) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


def wait_for_lines(
    path: Path, count: int, process: subprocess.Popen[str], timeout: float = 60
) -> None:
    """Until path holds count lines, or process ended, or timeout passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
