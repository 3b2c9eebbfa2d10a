"""C-GET over dicomtrolley's own association (dicomtrolley.dimse.link / dimse.get)
against a scripted peer on loopback that can misbehave in ways a real PACS
rarely shows: truncated instances, garbage, aborts, releases, endless pending.

The peer is tests/dimse_peer.py; retries are tested in test_dimse_resume.py.
Real peers (Orthanc, DCMTK, the emulator) are in tests/orthanc and tests/emulator.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom.dsutils import decode, encode

from dicomtrolley.core import StudyReference
from dicomtrolley.dicom_qr import DICOMQRGet
from dicomtrolley.dimse.errors import (
    AssociationAbortedError,
    DIMSETimeoutError,
    SubOperationError,
)
from dicomtrolley.dimse.settings import DIMSETimeouts
from dicomtrolley.exceptions import DownloadIncompleteError, StorageError
from dicomtrolley.formats import dul
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.transport import NO_RETRY
from tests.dimse_peer import GET_MODEL, STUDY, Peer, instance
from tests.fakes import tree


def downloader(port: int, **timeouts: float) -> DICOMQRGet:
    """A C-GET downloader for one scripted association: no retries (those are
    tested in test_dimse_resume.py)."""
    return DICOMQRGet(
        "127.0.0.1",
        port,
        aec="SCRIPTED",
        timeout=DIMSETimeouts(**timeouts) if timeouts else None,
        retry=NO_RETRY,
    )


def save(peer: Peer, out: Path, **timeouts: float) -> object:
    storage = TemplateStorage(out, "{SOPInstanceUID}.dcm")
    report = downloader(peer.port, **timeouts).save_all(
        [StudyReference(STUDY)], storage, out
    )
    peer.join()
    return report


def files(folder: Path) -> list[Path]:
    return sorted(p for p in tree(folder) if p.is_file())


# -- the good path, byte by byte ----------------------------------------------------


def test_a_whole_exchange(tmp_path: Path) -> None:
    sops = [generate_uid() for _ in range(2)]
    answers: list[dict[int, dul.CommandValue]] = []
    asked: list[Dataset] = []

    def script(peer: Peer) -> None:
        request, identifier = peer.message()
        assert request[dul.COMMAND_FIELD] == dul.C_GET_RQ
        assert request[dul.AFFECTED_SOP_CLASS_UID] == GET_MODEL
        assert identifier is not None
        asked.append(decode(io.BytesIO(identifier), False, True))
        msg_id = dul.command_int(request, dul.MESSAGE_ID)
        for number, sop in enumerate(sops):
            peer.store(sop, instance(sop), message_id=100 + number)
            answers.append(peer.message()[0])
            peer.get_response(
                msg_id, 0xFF00, remaining=1 - number, completed=number + 1
            )
        peer.get_response(msg_id, 0x0000, completed=2, remaining=0, failed=0)
        peer.finish_release()

    peer = Peer(script)
    report = save(peer, tmp_path)
    assert [p.name for p in files(tmp_path)] == sorted(f"{s}.dcm" for s in sops)
    assert not report.failures  # type: ignore[attr-defined]
    assert asked[0].QueryRetrieveLevel == "STUDY"
    assert asked[0].StudyInstanceUID == STUDY
    for number, (answer, sop) in enumerate(zip(answers, sops, strict=True)):
        assert answer[dul.COMMAND_FIELD] == dul.C_STORE_RSP
        assert answer[dul.STATUS] == 0
        assert answer[dul.MESSAGE_ID_BEING_RESPONDED_TO] == 100 + number
        assert answer[dul.AFFECTED_SOP_INSTANCE_UID] == sop
        assert answer[dul.AFFECTED_SOP_CLASS_UID] == CTImageStorage
    saved = (tmp_path / f"{sops[0]}.dcm").read_bytes()
    assert saved[128:132] == b"DICM" and saved.endswith(instance(sops[0]))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the garbage
def test_an_instance_that_is_not_dicom_is_refused_and_reported(
    tmp_path: Path,
) -> None:
    sop = generate_uid()
    answers: list[dict[int, dul.CommandValue]] = []

    def script(peer: Peer) -> None:
        request, _ = peer.message()
        msg_id = dul.command_int(request, dul.MESSAGE_ID)
        peer.store(sop, b"\x08\x00\x18\x00\xff\xff\xff\x00garbage")
        answers.append(peer.message()[0])
        peer.get_response(msg_id, 0xA702, failed=1, completed=0)
        peer.finish_release()

    report = save(Peer(script), tmp_path)
    assert answers[0][dul.STATUS] == 0xC000  # cannot understand
    assert files(tmp_path) == []
    failures = report.failures  # type: ignore[attr-defined]
    assert any(sop in failure.uids for failure in failures)


# -- peers that break off -----------------------------------------------------------


def break_off_after_half_an_instance(peer: Peer) -> None:
    peer.message()
    sop = generate_uid()
    data = instance(sop)
    context_id = peer.contexts[CTImageStorage]
    command = {
        dul.AFFECTED_SOP_CLASS_UID: CTImageStorage,
        dul.COMMAND_FIELD: dul.C_STORE_RQ,
        dul.MESSAGE_ID: 1,
        dul.PRIORITY: 0,
        dul.COMMAND_DATA_SET_TYPE: 0,
        dul.AFFECTED_SOP_INSTANCE_UID: sop,
    }
    peer.send(
        b"".join(
            dul.p_data(
                context_id, dul.encode_command(command), command=True, max_length=0
            )
        )
    )
    first = next(dul.p_data(context_id, data, command=False, max_length=200))
    peer.send(first)
    time.sleep(0.2)


def test_a_connection_closed_mid_instance_leaves_no_file(tmp_path: Path) -> None:
    report = save(Peer(break_off_after_half_an_instance), tmp_path)
    [failure] = report.failures  # type: ignore[attr-defined]
    assert isinstance(failure.error, AssociationAbortedError)
    assert "closed the connection" in str(failure.error)
    assert STUDY in failure.uids
    assert files(tmp_path) == []  # not even the partial temporary file


@pytest.mark.parametrize(
    "answer, expected",
    [
        (dul.abort(2, 6), "the peer aborted the association (source 2, reason 6)"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "protocol error: unknown PDU type 0x48"),
        (dul.release_rq(), "released the association mid-operation"),
        (dul.release_rp(), "protocol error: unexpected PDU type 0x06"),
    ],
)
def test_what_a_peer_may_send_instead_of_an_answer(
    answer: bytes, expected: str, tmp_path: Path
) -> None:
    def script(peer: Peer) -> None:
        peer.message()
        peer.send(answer)
        time.sleep(0.2)

    report = save(Peer(script), tmp_path)
    [failure] = report.failures  # type: ignore[attr-defined]
    assert isinstance(failure.error, AssociationAbortedError)
    assert expected in str(failure.error)
    assert "SCRIPTED at 127.0.0.1" in str(failure.error)


def test_a_response_to_another_request_is_a_protocol_error(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        request, _ = peer.message()
        peer.get_response(dul.command_int(request, dul.MESSAGE_ID) + 1, 0x0000)
        time.sleep(0.2)

    report = save(Peer(script), tmp_path)
    [failure] = report.failures  # type: ignore[attr-defined]
    assert "a C-GET response to a request we did not send" in str(failure.error)


def test_total_timeout_while_the_peer_keeps_answering_pending(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        request, _ = peer.message()
        msg_id = dul.command_int(request, dul.MESSAGE_ID)
        with pytest.raises(OSError):
            for _ in range(100):
                peer.get_response(msg_id, 0xFF00, remaining=5)
                time.sleep(0.05)

    started = time.monotonic()
    report = save(Peer(script), tmp_path, idle=5, total=0.5)
    assert time.monotonic() - started < 3
    [failure] = report.failures  # type: ignore[attr-defined]
    assert isinstance(failure.error, DIMSETimeoutError)
    assert "total timeout" in str(failure.error)


def test_a_pending_response_with_an_identifier_is_tolerated(tmp_path: Path) -> None:
    sop = generate_uid()

    def script(peer: Peer) -> None:
        request, _ = peer.message()
        msg_id = dul.command_int(request, dul.MESSAGE_ID)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        raw = encode(identifier, False, True)
        assert raw is not None
        peer.send_message(
            GET_MODEL,
            {
                dul.AFFECTED_SOP_CLASS_UID: GET_MODEL,
                dul.COMMAND_FIELD: dul.C_GET_RSP,
                dul.MESSAGE_ID_BEING_RESPONDED_TO: msg_id,
                dul.STATUS: 0xFF00,
                dul.REMAINING: 1,
            },
            raw,
        )
        peer.store(sop, instance(sop))
        peer.message()
        peer.get_response(msg_id, 0x0000, completed=1)
        peer.finish_release()

    report = save(Peer(script), tmp_path)
    assert not report.failures  # type: ignore[attr-defined]
    assert [p.name for p in files(tmp_path)] == [f"{sop}.dcm"]


def test_failed_uids_in_the_final_identifier_are_reported(tmp_path: Path) -> None:
    lost = generate_uid()

    def script(peer: Peer) -> None:
        request, _ = peer.message()
        msg_id = dul.command_int(request, dul.MESSAGE_ID)
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = [lost]
        raw = encode(identifier, False, True)
        assert raw is not None
        peer.send_message(
            GET_MODEL,
            {
                dul.AFFECTED_SOP_CLASS_UID: GET_MODEL,
                dul.COMMAND_FIELD: dul.C_GET_RSP,
                dul.MESSAGE_ID_BEING_RESPONDED_TO: msg_id,
                dul.STATUS: 0xB000,
                dul.FAILED: 1,
                dul.COMPLETED: 0,
            },
            raw,
        )
        peer.finish_release()

    report = save(Peer(script), tmp_path)
    [failure] = report.failures  # type: ignore[attr-defined]
    assert isinstance(failure.error, SubOperationError)
    assert lost in failure.uids
    assert f"the PACS failed to send instance {lost}" in str(failure.error)


def test_missing_instances_are_counted_against_the_final_response(
    tmp_path: Path,
) -> None:
    def script(peer: Peer) -> None:
        request, _ = peer.message()
        msg_id = dul.command_int(request, dul.MESSAGE_ID)
        peer.get_response(msg_id, 0x0000, completed=3)
        peer.finish_release()

    report = save(Peer(script), tmp_path)
    [failure] = report.failures  # type: ignore[attr-defined]
    assert isinstance(failure.error, SubOperationError)
    assert "3 instance(s) reported sent never arrived" in str(failure.error)


# -- in memory ----------------------------------------------------------------------


def test_stopping_early_aborts_the_association() -> None:
    sops = [generate_uid() for _ in range(20)]
    ended: list[str] = []

    def script(peer: Peer) -> None:
        peer.message()
        try:
            for sop in sops:
                peer.store(sop, instance(sop))
                peer.message()
        except (ConnectionError, AssertionError, OSError):
            ended.append("stopped")
            kinds = [e.type for e in peer.seen if isinstance(e, dul.PDU)]
            ended.append("abort" if dul.A_ABORT in kinds else "closed")

    peer = Peer(script)
    datasets = downloader(peer.port).datasets([StudyReference(STUDY)])
    first = next(iter(datasets))
    assert first.SOPInstanceUID == sops[0]
    datasets.close()  # type: ignore[attr-defined]
    peer.join()
    assert ended == ["stopped", "abort"]


@pytest.fixture
def no_peer() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])
    server.close()
    yield port


def test_nobody_listening(no_peer: int, tmp_path: Path) -> None:
    storage = TemplateStorage(tmp_path, "{SOPInstanceUID}.dcm")
    report = downloader(no_peer).save_all([StudyReference(STUDY)], storage, tmp_path)
    [failure] = report.failures
    assert "cannot connect" in str(failure.error)
    with pytest.raises(DownloadIncompleteError):
        report.raise_for_failures()


def test_files_of_the_requested_transfer_syntax(tmp_path: Path) -> None:
    sop = generate_uid()

    def script(peer: Peer) -> None:
        request, _ = peer.message()
        peer.store(sop, instance(sop))
        peer.message()
        peer.get_response(dul.command_int(request, dul.MESSAGE_ID), 0, completed=1)
        peer.finish_release()

    save(Peer(script), tmp_path)
    import pydicom

    [path] = files(tmp_path)
    read = pydicom.dcmread(path)
    assert read.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert read.file_meta.SourceApplicationEntityTitle == "SCRIPTED"
    assert read.PatientName == "Link^Test"


def test_an_output_folder_that_cannot_be_made_is_a_storage_error(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a folder")
    out = blocker / "below"

    def script(peer: Peer) -> None:
        peer.finish_release()

    peer = Peer(script)
    report = downloader(peer.port).save_all(
        [StudyReference(STUDY)], TemplateStorage(out, "{SOPInstanceUID}.dcm"), out
    )
    peer.join()
    [failure] = report.failures
    assert isinstance(failure.error, StorageError)
    assert "cannot create" in str(failure.error) and STUDY in failure.uids
