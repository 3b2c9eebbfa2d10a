"""With de-identification, no identified byte is ever written under the output folder.

Every protocol (WADO-RS, WADO-URI, RAD-69, C-GET, C-MOVE) downloads studies carrying
every PS3.15 Table E.1-1 attribute while a watcher reads every file under the
output folder, temporary names included (the state folder and the manifest,
which keep source UIDs by design, left out): over and over from a thread, and
at the moments a received instance is complete (each write of the storage's
writer, before its commit, before the C-GET/C-MOVE intake hands its file over). A run
without de-identification is the control: there the watcher finds the source
values. A CLI download killed with SIGKILL mid-run leaves nothing identified
either. An instance larger than the memory limit fails, named by its UIDs, and
nothing of it is written. The index and the manifest are mode 0600.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dicomtrolley.catalog import INDEX_NAME, STATE_FOLDER
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.deid import Deidentifier
from dicomtrolley.dicom_qr import DICOMQRMove
from dicomtrolley.dimse import retrieve
from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.exceptions import DownloadIncompleteError
from dicomtrolley.manifest import MANIFEST_NAME
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import InstanceTooLargeError, InstanceWriter, TemplateStorage
from dicomtrolley.synthetic import instance_specs, phi_studies, write_studies
from dicomtrolley.trolley import Trolley
from tests.deid_checks import KEY, LAYOUT, output_files, source_markers
from tests.emulator.conftest import PASSWORD, USER
from tests.emulator.test_deid_download import download
from tests.emulator.test_dimse_service import free_port
from tests.emulator.transfer_helpers import REPO, cli_command

HOST = "127.0.0.1"
STUDIES = phi_studies(3, 3)
INSTANCES = sum(study.instance_count for study in STUDIES)
PROTOCOLS = ["wado-rs", "wado-uri", "rad69", "c-get", "c-move"]


@pytest.fixture(scope="module")
def phi_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    root = tmp_path_factory.mktemp("phi-data")
    write_studies(root, STUDIES)
    with Emulator(root, services=[*default_services(), DimseService()]) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.auth = (USER, PASSWORD)
        yield http


class Watcher(threading.Thread):
    """Reads every file under out again and again; records source values found.

    ``scan()`` may also be called from hooks (any thread)."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.markers = source_markers(STUDIES)
        self.found: set[tuple[str, bytes]] = set()
        self.scans = 0
        self.files_read = 0
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def scan(self) -> None:
        for path in self._files():
            try:
                data = path.read_bytes()
            except OSError:  # renamed or removed meanwhile
                continue
            relative = str(path.relative_to(self.out)).encode()
            hits = {(path.name, m) for m in self.markers if m in data or m in relative}
            with self._lock:
                self.files_read += 1
                self.found |= hits
        with self._lock:
            self.scans += 1

    def _files(self) -> list[Path]:
        found = []
        for folder, dirs, names in os.walk(self.out):
            dirs[:] = [d for d in dirs if d != STATE_FOLDER]
            found += [Path(folder) / n for n in names if n != MANIFEST_NAME]
        return found

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.scan()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


@pytest.fixture
def hooked(monkeypatch: pytest.MonkeyPatch) -> Callable[[Watcher], None]:
    """Scan with the watcher whenever a received instance is complete."""

    def install(watcher: Watcher) -> None:
        write, commit = InstanceWriter.write, InstanceWriter.commit
        adopt = retrieve.adopt_file

        def watched_write(self: InstanceWriter, data: Any) -> None:
            write(self, data)
            if self._file is not None:
                self._file.flush()  # what a plain writer wrote is on disk
            watcher.scan()

        def watched_commit(self: InstanceWriter) -> Path:
            if self._file is not None:
                self._file.flush()
            watcher.scan()
            return commit(self)

        def watched_adopt(writer: Any, path: Path) -> int:
            watcher.scan()  # the C-GET intake's file is complete
            return adopt(writer, path)

        monkeypatch.setattr(InstanceWriter, "write", watched_write)
        monkeypatch.setattr(InstanceWriter, "commit", watched_commit)
        monkeypatch.setattr(retrieve, "adopt_file", watched_adopt)

    return install


def move(
    emulator: Emulator, session: requests.Session, out: Path, deid: Deidentifier
) -> int:
    """A C-MOVE download into out, the storage SCP on a free port."""
    port = free_port()
    emulator.dimse.move_destinations["TROLLEY-STORE"] = (HOST, port)
    trolley = Trolley(
        DICOMQRMove(
            HOST, emulator.dimse.port, store_aet="TROLLEY-STORE", store_port=port
        ),
        QidoRS(session, emulator.dicomweb_url),
        storage=TemplateStorage(out, LAYOUT, transform=deid),
    )
    studies = trolley.find_studies(
        Query(PatientID="PHIPAT*", query_level=QueryLevels.INSTANCE)
    )
    return len(trolley.download(studies, out, use_async=True, max_workers=2).saved)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_identified_byte_under_the_output_folder(
    protocol: str,
    phi_emulator: Emulator,
    session: requests.Session,
    tmp_path: Path,
    hooked: Callable[[Watcher], None],
) -> None:
    watcher = Watcher(tmp_path)
    hooked(watcher)
    watcher.start()
    try:
        if protocol == "c-move":
            saved = move(phi_emulator, session, tmp_path, Deidentifier(KEY))
        else:
            saved = download(
                protocol, phi_emulator, session, tmp_path, Deidentifier(KEY)
            )
    finally:
        watcher.stop()
    watcher.scan()
    assert saved == INSTANCES == len(output_files(tmp_path))
    assert watcher.files_read >= INSTANCES and watcher.scans > 2 * INSTANCES
    assert watcher.found == set()
    state = tmp_path / STATE_FOLDER
    for path in [state / INDEX_NAME, tmp_path / MANIFEST_NAME]:
        if path.exists() or path.name == INDEX_NAME:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in state.glob(f"{INDEX_NAME}-*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("protocol", ["wado-rs", "c-get"])
def test_the_watcher_sees_identified_files_without_deidentification(
    protocol: str,
    phi_emulator: Emulator,
    session: requests.Session,
    tmp_path: Path,
    hooked: Callable[[Watcher], None],
) -> None:
    """The control: the same watcher finds source values when they are there."""
    watcher = Watcher(tmp_path)
    hooked(watcher)
    download(protocol, phi_emulator, session, tmp_path, None)
    assert {marker for _, marker in watcher.found} >= {b"PHI", b"Identifiable"}
    # temporary names too: the C-GET spool file and the writer's .part file
    assert any(name.endswith(".part") for name, _ in watcher.found)


@pytest.mark.parametrize("protocol", ["wado-rs", "c-get"])
def test_an_instance_above_the_memory_limit_fails_by_its_uids(
    protocol: str,
    phi_emulator: Emulator,
    session: requests.Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DICOMTROLLEY_DEID_MEMORY_LIMIT", "2K")
    watcher = Watcher(tmp_path)
    with pytest.raises(DownloadIncompleteError) as info:
        download(protocol, phi_emulator, session, tmp_path, Deidentifier(KEY))
    watcher.scan()
    assert watcher.found == set() and output_files(tmp_path) == []
    failures = info.value.report.failures if info.value.report else []
    assert failures
    assert all(isinstance(f.error, InstanceTooLargeError) for f in failures)
    sop_uids = {spec.sop_instance_uid for spec in instance_specs(STUDIES)}
    named = {uid for failure in failures for uid in failure.uids}
    assert named & sop_uids
    assert "2048 bytes" in str(failures[0].error)
    assert "DICOMTROLLEY_DEID_MEMORY_LIMIT" in str(failures[0].error)


def test_sigkill_mid_run_leaves_nothing_identified(
    phi_emulator: Emulator, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    command = cli_command(
        "download",
        "--url",
        phi_emulator.dicomweb_url,
        "--user",
        USER,
        "--patient-id",
        "PHIPAT*",
        "-o",
        str(out),
        "--no-progress",
        "--workers",
        "2",
        "--deidentify",
        "basic",
    )
    env = {
        **os.environ,
        "DICOMTROLLEY_DEID_KEY": KEY,
        "DICOMTROLLEY_PASSWORD": PASSWORD,
    }
    watcher = Watcher(out)
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists():
                watcher.scan()
                if len(output_files(out)) >= 2 and (out / MANIFEST_NAME).exists():
                    process.send_signal(signal.SIGKILL)
                    killed = True
                    break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert killed, "the download ended before it could be killed"
    watcher.scan()  # what the killed process left, temporary files included
    assert watcher.found == set()
    manifest = out / MANIFEST_NAME  # the CLI writes one: source UIDs, private
    assert manifest.exists() and stat.S_IMODE(manifest.stat().st_mode) == 0o600
    assert 2 <= len(output_files(out)) < INSTANCES + 1
