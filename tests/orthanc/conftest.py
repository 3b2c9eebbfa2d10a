"""Fixtures for tests against a real Orthanc PACS (see tests/orthanc_server.py).

``orthanc`` is one Orthanc for the whole session, loaded with the synthetic demo
studies (``orthanc_studies``). ``orthanc_factory`` starts more servers with other
settings (authentication, result caps, C-MOVE destinations) for one test.

When Orthanc cannot start, the tests fail. Set ``DICOMTROLLEY_SKIP_ORTHANC=1`` to
skip every test in this folder instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.orthanc_server import GeneratedStudies, OrthancServer, generate_studies

SKIP_VARIABLE = "DICOMTROLLEY_SKIP_ORTHANC"
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Mark every test below this folder with ``orthanc``."""
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.orthanc)


def _skip_if_asked() -> None:
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"Orthanc tests skipped: {SKIP_VARIABLE}=1")


def _start(server: OrthancServer) -> OrthancServer:
    try:
        return server.start()
    except (RuntimeError, OSError) as exc:
        pytest.fail(
            f"Orthanc could not start: {exc}\n"
            f"(Install it with scripts/install-system-deps.sh, or set "
            f"{SKIP_VARIABLE}=1 to skip these tests.)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def orthanc_studies(tmp_path_factory: pytest.TempPathFactory) -> GeneratedStudies:
    """The synthetic demo studies, written once per session."""
    return generate_studies(tmp_path_factory.mktemp("synthetic-studies"))


@pytest.fixture(scope="session")
def orthanc(orthanc_studies: GeneratedStudies) -> Iterator[OrthancServer]:
    """An Orthanc holding exactly the demo studies, for the whole session."""
    _skip_if_asked()
    server = OrthancServer()
    try:
        _start(server)
        answers = server.upload(orthanc_studies.paths)
        refused = [a for a in answers if a.get("Status") != "Success"]
        if refused:
            pytest.fail(f"Orthanc did not store every instance: {refused[:3]}")
        yield server
    finally:
        server.stop()


@pytest.fixture
def orthanc_factory() -> Iterator[Callable[..., OrthancServer]]:
    """``orthanc_factory(**OrthancServer options)``: a started, empty Orthanc.

    Every server started this way is stopped after the test.
    """
    _skip_if_asked()
    servers: list[OrthancServer] = []

    def factory(**options: Any) -> OrthancServer:
        server = OrthancServer(**options)
        servers.append(server)
        return _start(server)

    try:
        yield factory
    finally:
        for server in servers:
            server.request_stop()
        for server in servers:
            server.stop()
