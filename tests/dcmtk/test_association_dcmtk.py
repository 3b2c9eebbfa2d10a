"""Our A-ASSOCIATE codec against DCMTK, the independent encoder and acceptor.

A plain socket on 127.0.0.1 records the A-ASSOCIATE-RQ that ``echoscu``,
``findscu``, ``getscu`` and ``storescu`` (with its user identity options) send,
answers with an A-ASSOCIATE-RJ, and the test decodes the bytes with
:mod:`dicomtrolley.formats.association`. Our own A-ASSOCIATE-RQ goes to
``storescp`` on a free port; its A-ASSOCIATE-AC must decode and negotiate to the
contexts storescp accepts.

DCMTK missing is a failure, not a skip (scripts/install-system-deps.sh installs
it). Run with ``bash scripts/loopback-only.sh``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from dicomtrolley.formats import association as a
from dicomtrolley.formats import dul
from dicomtrolley.formats.negotiation import negotiate_as_requestor

HOST = "127.0.0.1"
ENV = {**os.environ, "TCP_NODELAY": "1"}  # Debian's DCMTK needs it on loopback
VERIFICATION = "1.2.840.10008.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG2000 = "1.2.840.10008.1.2.4.91"
DCMTK_ROOT = "1.2.276.0.7230010.3"  # OFFIS's implementation class UIDs


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"DCMTK's {name} is not installed; run scripts/install-system-deps.sh",
            pytrace=False,
        )
    return path


class Recorder:
    """Accepts one connection, keeps its first PDU, answers A-ASSOCIATE-RJ."""

    def __init__(self) -> None:
        self.server = socket.create_server((HOST, 0))
        self.server.settimeout(20)
        self.port = int(self.server.getsockname()[1])
        self.pdu: dul.PDU | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.server.accept()
            with conn:
                conn.settimeout(20)
                reader = dul.PDUReader()
                while self.pdu is None:
                    data = conn.recv(65536)
                    if not data:
                        raise ConnectionError("closed before a whole PDU")
                    for event in reader.feed(data):
                        assert isinstance(event, dul.PDU)
                        self.pdu = event
                conn.sendall(a.AssociateRJ(1, 1, 1).encode())
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            self.server.close()

    def request(self) -> a.AssociateRQ:
        self.thread.join(25)
        if self.error is not None:
            raise self.error
        assert self.pdu is not None and self.pdu.type == dul.A_ASSOCIATE_RQ
        return a.AssociateRQ.decode(self.pdu.raw)


def capture(name: str, *args: str) -> tuple[a.AssociateRQ, str]:
    """The A-ASSOCIATE-RQ DCMTK's name sends with args (then host and port)."""
    recorder = Recorder()
    done = subprocess.run(
        [tool(name), *args, HOST, str(recorder.port)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=30,
        check=False,
    )
    return recorder.request(), done.stdout + done.stderr


def check_dcmtk_user_information(request: a.AssociateRQ) -> None:
    info = request.user_information
    assert info.maximum_length == 16384  # DCMTK's default -pdu
    assert info.implementation_class_uid is not None
    assert info.implementation_class_uid.startswith(DCMTK_ROOT)
    assert (info.implementation_version_name or "").startswith("OFFIS_DCMTK")
    assert request.application_context_name == a.APPLICATION_CONTEXT_NAME
    assert request.protocol_version == 1
    ids = [c.context_id for c in request.presentation_contexts]
    assert len(set(ids)) == len(ids) and all(i % 2 for i in ids)
    # and our encoder writes the same values back
    assert a.AssociateRQ.decode(request.encode()) == request


@pytest.fixture
def dicom_file(tmp_path: Path) -> Path:
    dataset = Dataset()
    dataset.SOPClassUID = CT
    dataset.SOPInstanceUID = generate_uid()
    dataset.PatientName = "Capture^Test"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = UID(CT)
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "ct.dcm"
    dcmwrite(path, dataset, enforce_file_format=True)
    return path


# -- DCMTK's requests, decoded by us ------------------------------------------------


def test_echoscu_request() -> None:
    request, _ = capture("echoscu", "-aet", "ECHO TEST", "-aec", "LISTENER")
    assert (request.called_ae_title, request.calling_ae_title) == (
        "LISTENER",
        "ECHO TEST",
    )
    assert [
        (c.abstract_syntax, c.transfer_syntaxes) for c in request.presentation_contexts
    ] == [(VERIFICATION, (IMPLICIT,))]
    assert request.user_information.roles == ()
    assert request.user_information.user_identity is None
    check_dcmtk_user_information(request)


def test_findscu_request() -> None:
    request, _ = capture(
        "findscu",
        "-S",
        "-aet",
        "FINDTEST",
        "-aec",
        "LISTENER",
        "-k",
        "QueryRetrieveLevel=STUDY",
    )
    assert request.calling_ae_title == "FINDTEST"
    [context] = request.presentation_contexts
    assert context.abstract_syntax == STUDY_FIND
    assert (
        IMPLICIT in context.transfer_syntaxes and EXPLICIT in context.transfer_syntaxes
    )
    check_dcmtk_user_information(request)


def test_getscu_request_proposes_the_scp_role_for_storage() -> None:
    request, _ = capture(
        "getscu",
        "-S",
        "-aet",
        "GETTEST",
        "-aec",
        "LISTENER",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID=1.2.3",
    )
    contexts = request.presentation_contexts
    assert contexts[0].abstract_syntax == STUDY_GET
    storage = {c.abstract_syntax for c in contexts[1:]}
    assert CT in storage and len(contexts) <= 128
    roles = request.user_information.roles
    assert roles, "getscu proposes role selection for its storage contexts"
    assert {(r.scu, r.scp) for r in roles} == {(False, True)}
    assert {r.sop_class_uid for r in roles} <= storage
    assert request.user_information.role_for(CT) == a.RoleSelection(CT, False, True)
    check_dcmtk_user_information(request)


@pytest.mark.parametrize(
    "options, expected",
    [
        (["-usr", "jane"], a.UserIdentity(a.USERNAME, b"jane", b"", False)),
        (
            ["-usr", "jane", "-pwd", "s3cret", "-rsp"],
            a.UserIdentity(a.USERNAME_AND_PASSCODE, b"jane", b"s3cret", True),
        ),
        (["-kt", "{file}"], a.UserIdentity(a.KERBEROS, b"\x01kerberos-ticket\x00")),
        (
            ["--saml", "{file}", "-rsp"],
            a.UserIdentity(a.SAML, b"\x01kerberos-ticket\x00", b"", True),
        ),
        (["--jwt", "{file}"], a.UserIdentity(a.JWT, b"\x01kerberos-ticket\x00")),
    ],
)
def test_storescu_user_identity(
    options: list[str], expected: a.UserIdentity, dicom_file: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "identity.bin"
    secret.write_bytes(b"\x01kerberos-ticket\x00")
    options = [str(secret) if option == "{file}" else option for option in options]
    recorder = Recorder()
    subprocess.run(
        [
            tool("storescu"),
            "-aet",
            "STORETEST",
            "-aec",
            "LISTENER",
            *options,
            HOST,
            str(recorder.port),
            str(dicom_file),
        ],
        capture_output=True,
        env=ENV,
        timeout=30,
        check=False,
    )
    request = recorder.request()
    assert request.user_information.user_identity == expected
    assert request.calling_ae_title == "STORETEST"
    assert CT in {c.abstract_syntax for c in request.presentation_contexts}
    check_dcmtk_user_information(request)


# -- our request, answered by storescp ------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[int]:
    """storescp listening on a free port (stopped after the test)."""
    port = free_port()
    process = subprocess.Popen(
        [tool("storescp"), "-aet", "STORESCP", "-od", str(tmp_path), str(port)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("storescp did not start listening", pytrace=False)
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def exchange(port: int, data: bytes) -> dul.PDU:
    """Send data, return the first PDU of the answer."""
    with socket.create_connection((HOST, port), 10) as sock:
        sock.settimeout(10)
        sock.sendall(data)
        reader = dul.PDUReader()
        while True:
            chunk = sock.recv(65536)
            assert chunk, "storescp closed the connection"
            events = reader.feed(chunk)
            if events:
                assert isinstance(events[0], dul.PDU)
                answer = events[0]
                if answer.type == dul.A_ASSOCIATE_AC:
                    sock.sendall(dul.release_rq())
                    [released] = reader.feed(sock.recv(65536)) or [None]
                    assert isinstance(released, dul.PDU)
                    assert released.type == dul.A_RELEASE_RP
                return answer


def test_storescp_accepts_our_request(storescp: int) -> None:
    request = a.AssociateRQ(
        "STORESCP",
        "DICOMTROLLEY",
        a.presentation_contexts(
            [
                (VERIFICATION, [IMPLICIT]),  # 1
                (CT, [JPEG2000]),  # 3: storescp takes uncompressed only by default
                (CT, [IMPLICIT, EXPLICIT]),  # 5
                (STUDY_FIND, [IMPLICIT]),  # 7: not a storage class
            ]
        ),
        a.UserInformation(
            131072,
            "1.2.826.0.1.3680043.8.498.1",
            "DTROLLEY_TEST",
            async_window=a.AsyncOperationsWindow(1, 1),
            user_identity=a.UserIdentity.username("jane"),
        ),
    )
    answer = exchange(storescp, request.encode())
    assert answer.type == dul.A_ASSOCIATE_AC
    accepted = a.AssociateAC.decode(answer.raw)
    assert accepted.user_information.implementation_class_uid is not None
    assert accepted.user_information.implementation_class_uid.startswith(DCMTK_ROOT)
    assert (accepted.called_ae_title, accepted.calling_ae_title) == (
        "STORESCP",
        "DICOMTROLLEY",
    )
    result = negotiate_as_requestor(request, accepted)
    assert {
        cid: (c.abstract_syntax, c.transfer_syntax)
        for cid, c in result.accepted.items()
    } == {
        1: (VERIFICATION, IMPLICIT),
        5: (CT, EXPLICIT),  # storescp prefers explicit VR little endian
    }
    assert {(r.context_id, r.reason) for r in result.refused} == {
        (3, a.TRANSFER_SYNTAXES_NOT_SUPPORTED),
        (7, a.ABSTRACT_SYNTAX_NOT_SUPPORTED),
    }
    assert result.maximum_length == accepted.user_information.maximum_length > 0


def test_storescp_rejects_an_unknown_application_context(storescp: int) -> None:
    request = a.AssociateRQ(
        "STORESCP",
        "DICOMTROLLEY",
        a.presentation_contexts([(VERIFICATION, [IMPLICIT])]),
        a.UserInformation(16384, "1.2.826.0.1.3680043.8.498.1"),
        application_context_name="1.2.3.4.5",
    )
    answer = exchange(storescp, request.encode())
    assert answer.type == dul.A_ASSOCIATE_RJ
    rejection = a.AssociateRJ.decode(answer.raw)
    assert rejection.source == a.SOURCE_SERVICE_USER
    assert rejection.reason == 2, rejection.describe()
