"""Fixtures for the fault campaigns: the data, the servers, and the results table.

``fault_data`` writes the campaign's 12 instances once per session;
``fault_emulator`` serves them (HTTP and DIMSE) for the whole session and
``fault_orthanc`` loads them into an Orthanc of its own (skipped with
``DICOMTROLLEY_SKIP_ORTHANC=1``, like tests/orthanc). Each campaign test adds
its :class:`~tests.faults.campaign.Result` to ``campaign_results``; at the end
of the session the table of all of them is printed with the test summary.

``DICOMTROLLEY_FAULT_SEED=N`` replays a campaign with another seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomtrolley.emulator import Emulator
from tests.faults.campaign import (
    Result,
    SourceData,
    markdown_table,
    running_emulator,
    running_orthanc,
    write_campaign_data,
)
from tests.orthanc_server import OrthancServer

SKIP_ORTHANC = "DICOMTROLLEY_SKIP_ORTHANC"
SEED_VARIABLE = "DICOMTROLLEY_FAULT_SEED"
DEFAULT_SEED = 20240611
RESULTS = pytest.StashKey[list[Result]]()


@pytest.fixture(scope="session")
def fault_seed() -> int:
    return int(os.environ.get(SEED_VARIABLE, DEFAULT_SEED))


@pytest.fixture(scope="session")
def fault_data(tmp_path_factory: pytest.TempPathFactory) -> SourceData:
    return write_campaign_data(tmp_path_factory.mktemp("fault-data"))


@pytest.fixture(scope="session")
def fault_emulator(fault_data: SourceData) -> Iterator[Emulator]:
    """The emulator over the campaign data, with DIMSE, for the whole session."""
    with running_emulator(fault_data) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def fault_orthanc(fault_data: SourceData) -> Iterator[OrthancServer]:
    """An Orthanc holding the campaign data, for the whole session."""
    if os.environ.get(SKIP_ORTHANC) == "1":
        pytest.skip(f"Orthanc tests skipped: {SKIP_ORTHANC}=1")
    try:
        context = running_orthanc(fault_data)
        server = context.__enter__()
    except (RuntimeError, OSError) as error:
        pytest.fail(
            f"Orthanc could not start: {error}\n(set {SKIP_ORTHANC}=1 to skip)",
            pytrace=False,
        )
    try:
        yield server
    finally:
        context.__exit__(None, None, None)


@pytest.fixture(scope="session")
def campaign_results(request: pytest.FixtureRequest) -> list[Result]:
    """Where campaign tests put their results, for the table at the end."""
    return request.config.stash.setdefault(RESULTS, [])


@pytest.fixture
def campaign_dir(tmp_path: Path) -> Path:
    return tmp_path / "campaign"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    terminalreporter.write_sep("=", "fault campaign")
    seeds = ", ".join(f"{r.name}: {r.seed}" for r in results)
    terminalreporter.write_line(
        f"seed {os.environ.get(SEED_VARIABLE, DEFAULT_SEED)} ({seeds})"
    )
    for line in markdown_table(results).splitlines():
        terminalreporter.write_line(line)
