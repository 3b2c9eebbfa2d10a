"""C-FIND and C-ECHO on dicomtrolley's Link against the emulator's DIMSE SCP
(pynetdicom): relational negotiation, matches as they come, and C-CANCEL when
the caller stops early, seen by the SCP, with the next search on a new
association working.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomtrolley.dicom_qr import DICOMQR, DICOMQuery
from dicomtrolley.dimse.contexts import qr_model
from dicomtrolley.dimse.echo import c_echo
from dicomtrolley.dimse.errors import AssociationRejectedError
from dicomtrolley.dimse.find import FindAssociation
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.synthetic import cohort_studies, write_studies

HOST = "127.0.0.1"
#: Enough matches that the SCP is still sending when the C-CANCEL arrives.
INSTANCES = 600


@pytest.fixture(scope="module")
def big_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """An emulator with one study of INSTANCES tiny instances."""
    root = tmp_path_factory.mktemp("big-study")
    write_studies(root, cohort_studies(1, instances=INSTANCES, size=2, key="cancel"))
    services = [*default_services(), DimseService(ae_title="BIGSCP")]
    with Emulator(root, services=services, rescan_interval=None) as running:
        yield running


def searcher(emulator: Emulator) -> DICOMQR:
    return DICOMQR(HOST, emulator.dimse.port, aet="CANCELLER", aec="BIGSCP")


INSTANCE_QUERY = DICOMQuery(PatientID="COH00001", query_level="INSTANCE")


def test_relational_queries_are_negotiated(big_study: Emulator) -> None:
    peer = Peer(HOST, big_study.dimse.port, "CANCELLER", "BIGSCP")
    model = qr_model("study", "find")
    with FindAssociation.open(
        peer, model, timeouts=DIMSETimeouts(), ask_relational=True
    ) as asked:
        assert asked.relational
    with FindAssociation.open(peer, model, timeouts=DIMSETimeouts()) as not_asked:
        assert not not_asked.relational


def test_every_match_of_a_large_query(big_study: Emulator) -> None:
    found = searcher(big_study).send_c_find(INSTANCE_QUERY)
    # the study, its series, its instances (the relational query was accepted)
    assert len(found) == INSTANCES
    assert len({str(ds.SOPInstanceUID) for ds in found}) == INSTANCES


def test_stopping_early_sends_c_cancel_and_the_next_search_works(
    big_study: Emulator,
) -> None:
    service = big_study.dimse
    service.cancelled_finds.clear()
    started = time.monotonic()
    with contextlib.closing(searcher(big_study).iter_c_find(INSTANCE_QUERY)) as found:
        first = [next(found) for _ in range(3)]
    stopped = time.monotonic() - started
    assert len({str(ds.SOPInstanceUID) for ds in first}) == 3
    assert service.cancelled_finds == [("CANCELLER", 1)]
    assert stopped < 5
    # a fresh association, a whole answer
    studies = searcher(big_study).find_studies(DICOMQuery(PatientID="COH*"))
    assert len(studies) == 1


def test_break_in_a_for_loop_cancels(big_study: Emulator) -> None:
    service = big_study.dimse
    service.cancelled_finds.clear()
    for _ in searcher(big_study).iter_c_find(INSTANCE_QUERY):
        break
    assert service.cancelled_finds == [("CANCELLER", 1)]


def test_c_echo(big_study: Emulator) -> None:
    c_echo(Peer(HOST, big_study.dimse.port, "ECHOER", "BIGSCP"), DIMSETimeouts())


def test_c_echo_rejected(tmp_path: Path) -> None:
    service = DimseService(ae_title="STRICT", allowed_calling_aes=["FRIEND"])
    with (
        Emulator(tmp_path, services=[service], rescan_interval=None),
        pytest.raises(AssociationRejectedError, match="calling AE"),
    ):
        c_echo(Peer(HOST, service.port, "STRANGER", "STRICT"), DIMSETimeouts())


def test_debug_logs_the_protocol_trace_and_no_data(
    big_study: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("trolley.dimse")
    level = logger.level
    try:
        with caplog.at_level(logging.DEBUG, logger="trolley.dimse"):
            found = DICOMQR(
                HOST, big_study.dimse.port, aet="TRACER", aec="BIGSCP", debug=True
            ).send_c_find(DICOMQuery(PatientID="COH00001", query_level="STUDY"))
    finally:
        logger.setLevel(level)
    assert len(found) == 1
    text = caplog.text
    model = qr_model("study", "find")
    for expected in (
        "A-ASSOCIATE-RQ sent to BIGSCP",
        f"proposed context 1: {model} in",
        "A-ASSOCIATE-AC received from BIGSCP",
        f"context 1: {model} in",
        "C-FIND-RQ, context 1, message 1, data set of ",
        "C-FIND-RSP, context 1, answers message 1, status 0xFF00, data set of ",
        "C-FIND-RSP, context 1, answers message 1, status 0x0000 received from",
        "A-RELEASE-RQ sent to BIGSCP",
        "A-RELEASE-RP received from BIGSCP",
    ):
        assert expected in text
    # what was asked and found stays out of the log
    assert "COH00001" not in text
    assert str(found[0].StudyInstanceUID) not in text
