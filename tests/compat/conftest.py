"""What the adapter compatibility tests share: a session with the emulator's
default credentials (tests/compat/serving.py has the emulator)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A session that logs in to the emulator (its default credentials)."""
    with requests.Session() as session:
        session.auth = ("trolley", "trolley")
        yield session
