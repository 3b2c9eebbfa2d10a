"""C-FIND and C-ECHO over dicomtrolley's own association (dimse.find, dimse.echo)
against a scripted peer on loopback: matches as they come, C-CANCEL when the
caller stops early, Ctrl-C, timeouts, failure statuses, protocol errors.

The peer is tests/dimse_peer.py. Real peers (the emulator, Orthanc, findscu's
view of the same data) are in tests/emulator and tests/orthanc.
"""

from __future__ import annotations

import _thread
import io
import threading
import time

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from dicomtrolley.core import Query
from dicomtrolley.dicom_qr import DICOMQR, DICOMQuery
from dicomtrolley.dimse.echo import VERIFICATION, c_echo
from dicomtrolley.dimse.errors import (
    AssociationAbortedError,
    DIMSEOutOfResourcesError,
    DIMSEStatusError,
    DIMSETimeoutError,
)
from dicomtrolley.dimse.find import STOP_WAIT
from dicomtrolley.dimse.settings import DIMSETimeouts
from dicomtrolley.dimse.settings import Peer as PeerAddress
from dicomtrolley.exceptions import PermanentError, TransientError
from dicomtrolley.formats import dul
from tests.dimse_peer import FIND_MODEL, Peer

QUERY = DICOMQuery(PatientID="DTR*")


def searcher(port: int, **timeouts: float) -> DICOMQR:
    """One relational C-FIND per search: one scripted request per association."""
    return DICOMQR(
        "127.0.0.1",
        port,
        aec="SCRIPTED",
        relational=True,
        timeout=DIMSETimeouts(**timeouts) if timeouts else None,
    )


def request(peer: Peer) -> tuple[int, Dataset]:
    """The C-FIND request: its message ID and identifier."""
    command, data = peer.message()
    assert command[dul.COMMAND_FIELD] == dul.C_FIND_RQ
    assert command[dul.AFFECTED_SOP_CLASS_UID] == FIND_MODEL
    assert data is not None
    return dul.command_int(command, dul.MESSAGE_ID), decode(
        io.BytesIO(data), False, True
    )


def match(peer: Peer, msg_id: int, number: int, status: int = 0xFF00) -> None:
    """A pending response with one study as identifier."""
    found = Dataset()
    found.QueryRetrieveLevel = "STUDY"
    found.PatientID = f"DTR{number:03d}"
    found.StudyInstanceUID = f"1.2.3.{number}"
    data = encode(found, False, True)
    assert data is not None
    peer.send_message(
        FIND_MODEL,
        {
            dul.AFFECTED_SOP_CLASS_UID: FIND_MODEL,
            dul.COMMAND_FIELD: dul.C_FIND_RSP,
            dul.MESSAGE_ID_BEING_RESPONDED_TO: msg_id,
            dul.STATUS: status,
        },
        data,
    )


def final(peer: Peer, msg_id: int, status: int, comment: str = "") -> None:
    command: dict[int, dul.CommandValue] = {
        dul.AFFECTED_SOP_CLASS_UID: FIND_MODEL,
        dul.COMMAND_FIELD: dul.C_FIND_RSP,
        dul.MESSAGE_ID_BEING_RESPONDED_TO: msg_id,
        dul.STATUS: status,
    }
    if comment:
        command[dul.ERROR_COMMENT] = comment
    peer.send_message(FIND_MODEL, command)


def expect_cancel(peer: Peer, msg_id: int) -> None:
    command, data = peer.message()
    assert command[dul.COMMAND_FIELD] == dul.C_CANCEL_RQ
    assert command[dul.MESSAGE_ID_BEING_RESPONDED_TO] == msg_id
    assert data is None


def expect_abort(peer: Peer) -> None:
    [event] = peer.next(1)
    assert isinstance(event, dul.PDU) and event.type == dul.A_ABORT


def ids(found: list[Dataset]) -> list[str]:
    return [str(ds.PatientID) for ds in found]


# -- the good path -------------------------------------------------------------------


def test_matches_come_as_sent_then_the_association_is_released() -> None:
    asked: list[Dataset] = []

    def script(peer: Peer) -> None:
        msg_id, identifier = request(peer)
        asked.append(identifier)
        match(peer, msg_id, 1)
        match(peer, msg_id, 2, status=0xFF01)  # pending, optional keys unsupported
        peer.send_message(  # a pending response without identifier is skipped
            FIND_MODEL,
            {
                dul.AFFECTED_SOP_CLASS_UID: FIND_MODEL,
                dul.COMMAND_FIELD: dul.C_FIND_RSP,
                dul.MESSAGE_ID_BEING_RESPONDED_TO: msg_id,
                dul.STATUS: 0xFF00,
            },
        )
        match(peer, msg_id, 3)
        final(peer, msg_id, 0x0000)
        peer.finish_release()

    peer = Peer(script)
    found = searcher(peer.port).send_c_find(QUERY)
    peer.join()
    assert ids(found) == ["DTR001", "DTR002", "DTR003"]
    [identifier] = asked
    assert identifier.QueryRetrieveLevel == "STUDY"
    assert identifier.PatientID == "DTR*"
    assert "StudyInstanceUID" in identifier


def test_studies_from_the_matches() -> None:
    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        match(peer, msg_id, 7)
        final(peer, msg_id, 0x0000)
        peer.finish_release()

    peer = Peer(script)
    studies = searcher(peer.port).find_studies(Query(PatientID="DTR*"))
    peer.join()
    assert [study.uid for study in studies] == ["1.2.3.7"]


# -- stopping early: C-CANCEL --------------------------------------------------------


def test_stopping_early_cancels_and_releases() -> None:
    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        match(peer, msg_id, 1)
        match(peer, msg_id, 2)
        expect_cancel(peer, msg_id)
        match(peer, msg_id, 3)  # was on its way: read and dropped
        final(peer, msg_id, 0xFE00)
        peer.finish_release()

    peer = Peer(script)
    started = time.monotonic()
    seen = []
    for found in searcher(peer.port).iter_c_find(QUERY):
        seen.append(found)
        break
    peer.join()
    assert ids(seen) == ["DTR001"]
    assert time.monotonic() - started < 1


def test_a_cancel_without_answer_ends_in_an_abort() -> None:
    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        match(peer, msg_id, 1)
        expect_cancel(peer, msg_id)
        expect_abort(peer)

    peer = Peer(script)
    results = searcher(peer.port).iter_c_find(QUERY)
    assert ids([next(results)]) == ["DTR001"]
    started = time.monotonic()
    results.close()
    elapsed = time.monotonic() - started
    peer.join()
    assert STOP_WAIT <= elapsed < 1


def test_ctrl_c_in_the_consumer_stops_a_slow_peer_within_a_second() -> None:
    stop = threading.Event()

    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        match(peer, msg_id, 1)
        expect_cancel(peer, msg_id)  # and then is slow to answer anything
        expect_abort(peer)
        stop.wait(5)

    peer = Peer(script)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in searcher(peer.port).iter_c_find(QUERY):
            started = time.monotonic()
            raise KeyboardInterrupt
    elapsed = time.monotonic() - started
    stop.set()
    peer.join()
    assert elapsed < 1


def test_ctrl_c_while_waiting_for_the_peer_aborts_within_a_second() -> None:
    def script(peer: Peer) -> None:
        request(peer)
        expect_abort(peer)  # never answers; Ctrl-C comes first

    peer = Peer(script)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            searcher(peer.port, idle=10).send_c_find(QUERY)
    finally:
        timer.cancel()
    elapsed = time.monotonic() - started
    peer.join()
    assert elapsed < 1.3


# -- timeouts -------------------------------------------------------------------------


def test_a_silent_peer_times_out_idle() -> None:
    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        match(peer, msg_id, 1)
        expect_abort(peer)

    peer = Peer(script)
    started = time.monotonic()
    with pytest.raises(DIMSETimeoutError, match="idle timeout") as caught:
        searcher(peer.port, idle=0.5).send_c_find(QUERY)
    elapsed = time.monotonic() - started
    peer.join()
    assert 0.5 <= elapsed < 1.5
    assert isinstance(caught.value, TransientError)


def test_a_busy_peer_runs_into_the_total_timeout() -> None:
    done = threading.Event()

    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        number = 0
        while not done.is_set():
            number += 1
            try:
                match(peer, msg_id, number)
            except OSError:
                return  # aborted
            time.sleep(0.05)

    peer = Peer(script)
    started = time.monotonic()
    with pytest.raises(DIMSETimeoutError, match="total timeout"):
        searcher(peer.port, idle=5, total=0.6).send_c_find(QUERY)
    elapsed = time.monotonic() - started
    done.set()
    peer.join()
    assert 0.6 <= elapsed < 1.5


# -- statuses and protocol errors -------------------------------------------------------


def test_a_failure_status_names_status_and_comment() -> None:
    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        final(peer, msg_id, 0xC001, "no such thing")
        peer.finish_release()

    peer = Peer(script)
    with pytest.raises(DIMSEStatusError) as caught:
        searcher(peer.port).send_c_find(QUERY)
    peer.join()
    assert caught.value.status == 0xC001
    assert "no such thing" in str(caught.value)
    assert "0xC001" in str(caught.value)
    assert isinstance(caught.value, PermanentError)


def test_out_of_resources_is_transient() -> None:
    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        final(peer, msg_id, 0xA700)
        peer.finish_release()

    peer = Peer(script)
    with pytest.raises(DIMSEOutOfResourcesError) as caught:
        searcher(peer.port).send_c_find(QUERY)
    peer.join()
    assert isinstance(caught.value, TransientError)


def test_a_cancel_status_from_the_peer_keeps_what_came(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        match(peer, msg_id, 1)
        final(peer, msg_id, 0xFE00)  # the PACS's own result limit
        peer.finish_release()

    peer = Peer(script)
    found = searcher(peer.port).send_c_find(QUERY)
    peer.join()
    assert ids(found) == ["DTR001"]
    assert "narrow the search" in caplog.text


@pytest.mark.parametrize("wrong", ["message id", "command"])
def test_an_answer_to_something_else_aborts(wrong: str) -> None:
    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        if wrong == "message id":
            match(peer, msg_id + 1, 1)
        else:
            peer.send_message(
                FIND_MODEL,
                {dul.COMMAND_FIELD: dul.C_GET_RSP, dul.STATUS: 0},
            )
        expect_abort(peer)

    peer = Peer(script)
    with pytest.raises(AssociationAbortedError, match="protocol error"):
        searcher(peer.port).send_c_find(QUERY)
    peer.join()


def test_an_undecodable_identifier_aborts() -> None:
    def script(peer: Peer) -> None:
        msg_id, _ = request(peer)
        peer.send_message(
            FIND_MODEL,
            {
                dul.COMMAND_FIELD: dul.C_FIND_RSP,
                dul.MESSAGE_ID_BEING_RESPONDED_TO: msg_id,
                dul.STATUS: 0xFF00,
            },
            b"\x08\x00\x20\x00XX\x02\x00ab",  # a VR that does not exist
        )
        expect_abort(peer)

    peer = Peer(script)
    with pytest.raises(AssociationAbortedError, match="undecodable identifier"):
        searcher(peer.port).send_c_find(QUERY)
    peer.join()


# -- C-ECHO ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [0x0000, 0x0110])
def test_c_echo(status: int) -> None:
    def script(peer: Peer) -> None:
        command, data = peer.message()
        assert command[dul.COMMAND_FIELD] == dul.C_ECHO_RQ
        assert command[dul.AFFECTED_SOP_CLASS_UID] == VERIFICATION
        assert data is None
        peer.send_message(
            VERIFICATION,
            {
                dul.AFFECTED_SOP_CLASS_UID: VERIFICATION,
                dul.COMMAND_FIELD: dul.C_ECHO_RSP,
                dul.MESSAGE_ID_BEING_RESPONDED_TO: command[dul.MESSAGE_ID],
                dul.STATUS: status,
            },
        )
        peer.finish_release()

    peer = Peer(script)
    address = PeerAddress("127.0.0.1", peer.port, aec="SCRIPTED")
    if status == 0:
        c_echo(address, DIMSETimeouts())
    else:
        with pytest.raises(DIMSEStatusError, match="0x0110") as caught:
            c_echo(address, DIMSETimeouts())
        assert caught.value.status == 0x0110
    peer.join()


def test_c_echo_to_a_silent_peer_times_out() -> None:
    def script(peer: Peer) -> None:
        peer.message()
        expect_abort(peer)

    peer = Peer(script)
    with pytest.raises(DIMSETimeoutError):
        c_echo(PeerAddress("127.0.0.1", peer.port), DIMSETimeouts(idle=0.3))
    peer.join()
