"""Seeded fault campaigns: every protocol pair through a fault-injecting proxy.

Each test runs rounds of search + download through a
:class:`~tests.faults.proxy.FaultProxy` until it has injected its share of
faults, checking after every round what :mod:`tests.faults.campaign` lists:
all instances present and identical, or named by DownloadIncompleteError; a
clean re-run completes the job; no partial files; nothing written elsewhere;
only TransientErrors and PermanentErrors; bounded memory. Together the tests
inject at least :data:`MIN_TOTAL_FAULTS` faults; the table of what was
injected and what came of it is printed at the end of the session.

Replay a failure with ``DICOMTROLLEY_FAULT_SEED=<seed> pytest tests/faults``;
each violation names its round and the faults of that round.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomtrolley.emulator import Emulator
from tests.faults.campaign import (
    Result,
    Settings,
    SourceData,
    emulator_pairs,
    orthanc_pairs,
    run_campaign,
)
from tests.orthanc_server import OrthancServer

#: Faults per pair: 3 x 50 + 2 x 30 = 210 from the emulator alone (Orthanc
#: may be skipped). HTTP faults are cheaper than DIMSE ones (a DIMSE stall or
#: trickle costs an idle or total timeout), hence the split.
EMULATOR_PAIRS = {
    "emulator QIDO-RS + WADO-RS": 50,
    "emulator MINT + WADO-URI": 50,
    "emulator MINT + RAD-69": 50,
    "emulator C-FIND + C-GET": 30,
    "emulator C-FIND + C-MOVE": 30,
}
ORTHANC_PAIRS = {"Orthanc QIDO-RS + WADO-RS": 30, "Orthanc C-FIND + C-GET": 30}
MIN_TOTAL_FAULTS = 200
#: Seconds one pair may take; past it the campaign stops short of its faults.
BUDGET = 60.0


def check(result: Result, target: int) -> None:
    assert not result.violations, result.summary()
    assert result.total_faults >= target, (
        f"only {result.total_faults} of {target} faults within {BUDGET:g} s\n"
        + result.summary()
    )
    if result.mode == "http":
        # keep-alive connections were reused, and broken on a later request
        assert result.reused_requests > 0, result.summary()
        assert result.faults_on_reused > 0, result.summary()


@pytest.mark.parametrize("name", EMULATOR_PAIRS)
def test_emulator_campaign(
    name: str,
    fault_emulator: Emulator,
    fault_data: SourceData,
    fault_seed: int,
    campaign_dir: Path,
    campaign_results: list[Result],
) -> None:
    pair = next(p for p in emulator_pairs(fault_emulator) if p.name == name)
    settings = Settings(
        fault_seed, target_faults=EMULATOR_PAIRS[name], budget_seconds=BUDGET
    )
    result = run_campaign(pair, fault_data, campaign_dir, settings)
    campaign_results.append(result)
    check(result, EMULATOR_PAIRS[name])


@pytest.mark.orthanc
@pytest.mark.parametrize("name", ORTHANC_PAIRS)
def test_orthanc_campaign(
    name: str,
    fault_orthanc: OrthancServer,
    fault_data: SourceData,
    fault_seed: int,
    campaign_dir: Path,
    campaign_results: list[Result],
) -> None:
    pair = next(p for p in orthanc_pairs(fault_orthanc) if p.name == name)
    settings = Settings(
        fault_seed, target_faults=ORTHANC_PAIRS[name], budget_seconds=BUDGET
    )
    result = run_campaign(pair, fault_data, campaign_dir, settings)
    campaign_results.append(result)
    check(result, ORTHANC_PAIRS[name])


def test_campaign_total(campaign_results: list[Result]) -> None:
    """Run last (file order): the campaigns above injected enough faults."""
    names = {result.name for result in campaign_results}
    if not set(EMULATOR_PAIRS) <= names:
        pytest.skip("not every emulator campaign ran in this session")
    total = sum(result.total_faults for result in campaign_results)
    assert total >= MIN_TOTAL_FAULTS
