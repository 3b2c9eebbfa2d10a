"""``dicomtrolley serve`` (as a real process) and ``dicomtrolley demo-data``."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from defusedxml import ElementTree

from dicomtrolley.cli.main import main
from tests.emulator.conftest import MINT_NS, DemoData

STARTUP_SECONDS = 20.0


class Served:
    """A ``dicomtrolley serve`` process and the lines it has printed so far."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dicomtrolley.cli.main", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout = ""
        self._errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def _read_errors(self) -> None:
        assert self.process.stderr is not None
        self._errors.extend(self.process.stderr)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first new line that matches pattern (fails after a deadline)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.stdout += line
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r} in:\n{self.stdout}")

    def stop(self) -> tuple[str, str]:
        """SIGTERM, then (rest of stdout, stderr)."""
        self.process.terminate()
        self.process.wait(10)
        for reader in self._readers:
            reader.join(10)
        while not self.lines.empty():
            self.stdout += self.lines.get()
        return self.stdout, "".join(self._errors)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """start(*args) -> a running ``serve`` process, killed after the test."""
    started: list[Served] = []

    def start(*args: str) -> Served:
        started.append(Served(*args))
        return started[-1]

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait(10)


def test_serve(demo: DemoData, serve: Callable[..., Served]) -> None:
    served = serve("--data", str(demo.root), "--port", "0")
    match = served.wait_for(r"Base URL\s+(http://127\.0\.0\.1:(\d+))")
    base_url = match.group(1)
    assert int(match.group(2)) > 0
    served.wait_for(r"Ctrl-C")
    banner = served.stdout
    for line in (
        f"{base_url}/login",
        f"{base_url}/rest/api/vault/mint",
        f"{base_url}/wado",
        f"{base_url}/dicom-web",
    ):
        assert line in banner
    assert "trolley, password trolley" in banner

    with requests.Session() as session:
        login = session.post(
            f"{base_url}/login",
            headers={
                "X-Userid": "trolley",
                "X-Password": "trolley",
                "X-Realm": "DefaultSystemRealm",
            },
        )
        assert login.status_code == 200
        response = session.get(
            f"{base_url}/rest/api/vault/mint/studies",
            params={"PatientID": "DTR001", "QueryLevel": "STUDY"},
        )
    assert response.status_code == 200
    assert len(ElementTree.fromstring(response.content).findall(MINT_NS + "study")) == 2

    stdout, stderr = served.stop()
    assert served.process.returncode == 0, stderr
    assert "Stopped." in stdout


def test_serve_other_users_and_an_empty_folder(
    tmp_path: Path, serve: Callable[..., Served]
) -> None:
    served = serve(
        "--data", str(tmp_path), "--port", "0", "--user", "alice:in:wonderland"
    )
    match = served.wait_for(r"Base URL\s+(\S+)")
    url = match.group(1) + "/dicom-web/studies"
    assert requests.get(url, auth=("alice", "in:wonderland")).status_code == 204
    assert requests.get(url, auth=("trolley", "trolley")).status_code == 401
    stdout, stderr = served.stop()
    assert "in:wonderland" not in stdout + stderr
    assert f"dicomtrolley demo-data {tmp_path}" in " ".join(stderr.split())


def test_serve_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--data", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "dicomtrolley demo-data" in result.output


@pytest.mark.parametrize("user", ["alice", ":secret", "alice:"])
def test_serve_refuses_bad_users(tmp_path: Path, user: str) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--data", str(tmp_path), "--user", user]
    )
    assert result.exit_code == 2
    assert "NAME:PASSWORD" in result.output


def test_demo_data(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo-data", str(target)], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert len(list(target.rglob("*.dcm"))) == 105
    for text in (
        "DTR001",
        "Doe^John",
        "Müller^Jürgen",
        "2024-02-29",
        "CT Head",
        "23",
        "105 instances",
        "4 patients",
        "5 studies",
        "11 series",
    ):
        assert text in result.output
    assert f"dicomtrolley serve --data {target}" in result.output


def test_commands_are_listed() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "serve" in result.output
    assert "demo-data" in result.output
