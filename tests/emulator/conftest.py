"""Fixtures for the emulator tests: demo data on disk and emulators serving it.

``demo`` writes the synthetic demo studies once per session; ``emulator`` serves
them for the whole session (loopback, a free port) and stops at the end.
``make_emulator`` starts further emulators (other data, users or settings) for
one test and stops them when the test ends. The helpers below read answers as
raw bytes; none of them goes through dicomtrolley's client code.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from defusedxml import ElementTree

from dicomtrolley.emulator import Emulator
from dicomtrolley.formats.multipart import (
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
)
from dicomtrolley.synthetic import StudySpec, default_studies, write_studies

USER, PASSWORD = "trolley", "trolley"
MINT_NS = "{http://medical.nema.org/mint}"


@dataclass
class DemoData:
    """The files of the demo studies, and what is in them."""

    root: Path
    studies: list[StudySpec]
    paths: list[Path]
    by_uid: dict[str, Path] = field(default_factory=dict)  # SOP UID -> file

    def __post_init__(self) -> None:
        for path in self.paths:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            self.by_uid[str(ds.SOPInstanceUID)] = path

    def study(self, patient_id: str, description: str = "") -> StudySpec:
        return next(
            s
            for s in self.studies
            if s.patient_id == patient_id and description in s.description
        )

    def files_of(self, study_uid: str, series_uid: str = "") -> dict[str, bytes]:
        """SOP UID -> file bytes for a study (or one of its series)."""
        parts = [study_uid] + ([series_uid] if series_uid else [])
        return {
            uid: path.read_bytes()
            for uid, path in self.by_uid.items()
            if all(part in path.parts for part in parts)
        }


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    root = tmp_path_factory.mktemp("emulator-data")
    studies = default_studies()
    return DemoData(root, studies, write_studies(root, studies))


@pytest.fixture(scope="session")
def emulator(demo: DemoData) -> Iterator[Emulator]:
    """One emulator over the demo data for the whole session."""
    with Emulator(demo.root) as running:
        yield running


@pytest.fixture
def http(emulator: Emulator) -> Iterator[requests.Session]:
    """A requests session with basic auth for the session emulator."""
    with requests.Session() as session:
        session.auth = (USER, PASSWORD)
        yield session


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulator]]:
    """make(data_dir, **kwargs) -> a started Emulator, stopped after the test."""
    started: list[Emulator] = []

    def make(data_dir: Path, **kwargs: Any) -> Emulator:
        emulator = Emulator(data_dir, **kwargs).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


def login(
    emulator: Emulator, user: str = USER, password: str = PASSWORD
) -> requests.Session:
    """A session logged in the Vitrea way (cookie)."""
    session = requests.Session()
    response = session.post(
        emulator.login_url,
        headers={
            "X-Userid": user,
            "X-Password": password,
            "X-Realm": "DefaultSystemRealm",
        },
    )
    assert response.status_code == 200, response.text
    return session


def mint(
    session: requests.Session, emulator: Emulator, query: str
) -> requests.Response:
    """GET the MINT search with a raw query string (sent as written)."""
    return session.get(f"{emulator.mint_url}/studies?{query}")


def mint_xml(response: requests.Response) -> Any:
    """The root element of a MINT answer, after checking the status."""
    assert response.status_code == 200, response.text
    return ElementTree.fromstring(response.content)


def attrs_of(element: Any) -> dict[str, dict[str, str]]:
    """tag -> the attributes of each direct <attr> child of a MINT element."""
    return {
        child.get("tag"): dict(child.attrib)
        for child in element
        if child.tag == MINT_NS + "attr"
    }


def multipart_parts(response: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """(headers, body) of every part of a multipart answer, via the sans-I/O parser."""
    parser = MultipartParser(
        boundary_from_content_type(response.headers["Content-Type"])
    )
    parts: list[tuple[dict[str, str], bytes]] = []
    headers: dict[str, str] = {}
    body = bytearray()
    content = response.content
    # Odd chunk sizes, so that delimiters fall across chunk borders.
    for start in range(0, len(content), 7919):
        for event in parser.feed(content[start : start + 7919]):
            if isinstance(event, PartStart):
                headers, body = event.headers, bytearray()
            elif isinstance(event, PartData):
                body += event.data
            elif isinstance(event, PartEnd):
                parts.append((headers, bytes(body)))
    assert parser.finished
    parser.close()
    return parts


def raw_request(
    emulator: Emulator,
    target: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
) -> bytes:
    """Send a request with target exactly as written (no normalisation, no
    quoting) on a fresh connection, and return the whole raw answer."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{emulator.port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append("Connection: close")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(
        ("127.0.0.1", emulator.port), timeout=timeout
    ) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(raw: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    assert match, raw[:200]
    return int(match.group(1))
