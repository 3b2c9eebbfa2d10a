"""DIMSE over TLS: our C-FIND, C-GET and C-MOVE against the emulator's TLS SCP.

The emulator's DIMSE service (pynetdicom, ``ssl_context``) serves the demo
studies over TLS with certificates of a throwaway CA made by ``openssl`` at
test time (:mod:`tests.tls_pki`); with ``verify`` it requires a client
certificate. C-MOVE sub-operations come back over TLS into our storage SCP.
Then what must fail, and how: an unknown CA, a certificate for another host, an
expired one, a plain client at a TLS port and a TLS client at a plain port (both
fast), no client certificate; ``verify=False`` connects with a warning. A
connection cut in the middle of the TLS stream: the retrieve resumes on a new
one. Against our own TLS storage SCP: a client certificate refused after the
handshake (TLS 1.3) is permanent and tried once; plain and TLS clients at the
wrong kind of port are told so. Last, ``dicomtrolley serve --dimse-tls-*``.
Everything on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from dicomtrolley.cli.main import main
from dicomtrolley.core import Query, StudyReference
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet, DICOMQRMove
from dicomtrolley.dimse.echo import c_echo
from dicomtrolley.dimse.errors import (
    AssociationAbortedError,
    DIMSEConnectionError,
    DIMSEError,
)
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.dimse.storage_scp import StoreSCP
from dicomtrolley.dimse.tls import DIMSETLS, PROTOCOL_VERSION_ALERT, DIMSETLSError
from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.exceptions import PermanentError, TransientError
from dicomtrolley.formats import dul
from dicomtrolley.formats.association import AssociateRJ
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.synthetic import large_study
from dicomtrolley.transport import NO_RETRY, Retry
from tests.emulator.conftest import DemoData
from tests.emulator.test_cli_emulator import Served
from tests.emulator.test_dimse_service import free_port
from tests.emulator.test_store_scp import STORE_AET as STORE_SCP_AET
from tests.emulator.test_store_scp import Saved, scp
from tests.emulator.transfer_helpers import cli_command, run_cli
from tests.fakes import tree
from tests.tls_pki import Pair, Pki, make_pki

HOST = "127.0.0.1"
AET = "TROLLEY"
STORE_AET = STORE_SCP_AET
TIMEOUTS = DIMSETimeouts(connect=5, idle=5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def serving(pki: Pki, pair: Pair | None = None, verify: bool = True) -> DIMSETLS:
    pair = pair or pki.server
    return DIMSETLS(
        ca_file=pki.ca, cert_file=pair.cert, key_file=pair.key, verify=verify
    )


def client(pki: Pki, **options: object) -> DIMSETLS:
    settings: dict[str, object] = {
        "ca_file": pki.ca,
        "cert_file": pki.client.cert,
        "key_file": pki.client.key,
    }
    settings.update(options)
    return DIMSETLS(**settings)  # type: ignore[arg-type]


@contextlib.contextmanager
def tls_emulator(root: Path, tls: DIMSETLS | None) -> Iterator[DimseService]:
    service = DimseService(tls=tls)
    with Emulator(root, services=[*default_services(), service], rescan_interval=None):
        yield service


@pytest.fixture(scope="module")
def secure(demo: DemoData, pki: Pki) -> Iterator[DimseService]:
    with tls_emulator(demo.root, serving(pki)) as service:
        yield service


def storage(folder: Path) -> TemplateStorage:
    return TemplateStorage(folder, "{StudyInstanceUID}/{SOPInstanceUID}.dcm")


def saved(folder: Path) -> dict[str, pydicom.Dataset]:
    found: dict[str, pydicom.Dataset] = {}
    for path in tree(folder):
        if path.is_file():
            dataset = pydicom.dcmread(path)
            found[str(dataset.SOPInstanceUID)] = dataset
    return found


def assert_same(folder: Path, demo: DemoData, study: str) -> None:
    received = saved(folder)
    assert set(received) == set(demo.files_of(study))
    for uid, dataset in received.items():
        assert dataset == pydicom.dcmread(demo.by_uid[uid]), uid


def find(service: DimseService, tls: DIMSETLS | None, **options: object) -> object:
    searcher = DICOMQR(HOST, service.port, AET, service.ae_title, tls=tls)
    return searcher.find_studies(Query(**options))


# -- working ------------------------------------------------------------------------


def test_c_find_over_tls(secure: DimseService, demo: DemoData, pki: Pki) -> None:
    studies = find(secure, client(pki))
    assert isinstance(studies, list)
    assert {s.uid for s in studies} == {s.study_uid for s in demo.studies}


def test_c_get_over_tls(
    secure: DimseService, demo: DemoData, pki: Pki, tmp_path: Path
) -> None:
    study = demo.study("DTR003").study_uid
    getter = DICOMQRGet(HOST, secure.port, AET, secure.ae_title, tls=client(pki))
    report = getter.save_all([StudyReference(study)], storage(tmp_path), tmp_path)
    assert not report.failures
    assert_same(tmp_path, demo, study)


def test_c_move_over_tls_into_our_tls_storage_scp(
    secure: DimseService, demo: DemoData, pki: Pki, tmp_path: Path
) -> None:
    port = free_port()
    secure.move_destinations[STORE_AET] = (HOST, port)
    mover = DICOMQRMove(
        HOST,
        secure.port,
        AET,
        secure.ae_title,
        store_aet=STORE_AET,
        store_port=port,
        tls=client(pki),  # its certificate is the storage SCP's too
    )
    study = demo.study("DTR001").study_uid
    report = mover.save_all([StudyReference(study)], storage(tmp_path), tmp_path)
    assert not report.failures
    assert_same(tmp_path, demo, study)


def test_c_move_to_a_plain_storage_scp_is_refused_by_the_tls_one(
    secure: DimseService, demo: DemoData, pki: Pki, tmp_path: Path
) -> None:
    """The emulator moves over TLS; a storage SCP told to take plain TCP
    (store_tls=False) receives nothing and the study fails, named."""
    port = free_port()
    secure.move_destinations[STORE_AET] = (HOST, port)
    mover = DICOMQRMove(
        HOST,
        secure.port,
        AET,
        secure.ae_title,
        store_aet=STORE_AET,
        store_port=port,
        tls=client(pki),
        store_tls=False,
        retry=NO_RETRY,
        timeout=5,
    )
    study = demo.study("DTR001").study_uid
    report = mover.save_all([StudyReference(study)], storage(tmp_path), tmp_path)
    assert report.failures and not saved(tmp_path)
    assert study in str(report.failures[0])


def test_large_instances_over_tls(pki: Pki, tmp_path: Path) -> None:
    """Instances of 24 MiB: many TLS records per PDU and PDUs per record
    boundary; every byte arrives."""
    data = tmp_path / "data"
    paths = large_study(data, 48 * 1024**2, 24 * 1024**2, key="tls-large")
    study = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    out = tmp_path / "out"
    with tls_emulator(data, serving(pki)) as service:
        getter = DICOMQRGet(HOST, service.port, AET, service.ae_title, tls=client(pki))
        report = getter.save_all([StudyReference(study)], storage(out), out)
    assert not report.failures
    received = saved(out)
    assert len(received) == len(paths) == 2
    for path in paths:
        original = pydicom.dcmread(path)
        assert received[str(original.SOPInstanceUID)].PixelData == original.PixelData


# -- refused, and how ---------------------------------------------------------------


def permanent(error: BaseException) -> bool:
    return isinstance(error, PermanentError) and not isinstance(error, TransientError)


def test_unknown_ca_is_refused(secure: DimseService, pki: Pki) -> None:
    with pytest.raises(DIMSETLSError) as caught:
        find(secure, client(pki, ca_file=pki.other_ca))
    assert permanent(caught.value)
    message = str(caught.value)
    assert "certificate was refused" in message and "CA is not one we trust" in message
    assert f"{HOST}:{secure.port}" in message


def test_system_cas_do_not_know_a_private_ca(secure: DimseService, pki: Pki) -> None:
    with pytest.raises(DIMSETLSError, match="not one we trust"):
        find(secure, client(pki, ca_file=None))


@pytest.mark.parametrize(
    ("which", "why"),
    [
        ("wrong_host", "not issued for '127.0.0.1'"),
        ("expired", "certificate has expired"),
        ("untrusted", "CA is not one we trust"),
    ],
)
def test_bad_server_certificates_are_refused(
    demo: DemoData, pki: Pki, which: str, why: str
) -> None:
    with tls_emulator(demo.root, serving(pki, getattr(pki, which))) as service:
        with pytest.raises(DIMSETLSError, match=why) as caught:
            find(service, client(pki))
        assert permanent(caught.value)
        # what the check is for: without it, the same server is accepted
        if which == "wrong_host":
            assert find(service, client(pki, check_hostname=False))


def test_no_verify_connects_with_a_warning(
    demo: DemoData, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        tls_emulator(demo.root, serving(pki, pki.untrusted)) as service,
        caplog.at_level(logging.WARNING, logger="dicomtrolley"),
    ):
        studies = find(service, client(pki, ca_file=None, verify=False))
    assert studies
    assert any("without verifying" in r.getMessage() for r in caplog.records)


def test_client_certificate_required(secure: DimseService, pki: Pki) -> None:
    """No certificate of ours: the server refuses it after the handshake (TLS
    1.3), as an alert or by closing: a permanent error naming the peer and
    asking for our certificate."""
    with pytest.raises(DIMSETLSError, match="client certificate") as caught:
        find(secure, DIMSETLS(ca_file=pki.ca))
    assert f"{HOST}:{secure.port} (TLS, calling AE {AET})" in str(caught.value)
    assert permanent(caught.value)


def test_plain_client_at_a_tls_port_fails_fast(secure: DimseService) -> None:
    started = time.monotonic()
    with pytest.raises(DIMSEError):
        find(secure, None)
    assert time.monotonic() - started < 3


def test_tls_client_at_a_plain_port_fails_fast(demo: DemoData, pki: Pki) -> None:
    with tls_emulator(demo.root, None) as service:
        started = time.monotonic()
        with pytest.raises(DIMSETLSError, match="does not speak TLS on this port"):
            find(service, client(pki))
        assert time.monotonic() - started < 3


def test_handshake_times_out_on_a_silent_peer(pki: Pki) -> None:
    """A port that accepts and says nothing: the connect timeout ends it."""
    with socket.create_server((HOST, 0)) as silent:
        port = silent.getsockname()[1]
        timeouts = DIMSETimeouts(connect=0.6, idle=5)
        searcher = DICOMQR(HOST, port, AET, "SILENT", tls=client(pki), timeout=timeouts)
        started = time.monotonic()
        with pytest.raises(DIMSEConnectionError, match="no TLS handshake within"):
            searcher.find_studies(Query())
        assert time.monotonic() - started < 2


# -- a TLS stream cut mid-PDU ---------------------------------------------------------


class CuttingRelay:
    """Relays 127.0.0.1 connections to upstream; the first one is cut after
    ``cut_after`` bytes from upstream (in the middle of TLS records and PDUs)."""

    def __init__(self, upstream: int, cut_after: int) -> None:
        self.upstream, self.cut_after = upstream, cut_after
        self.server = socket.create_server((HOST, 0))
        self.port = int(self.server.getsockname()[1])
        self.connections = 0
        self.cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            far = socket.create_connection((HOST, self.upstream))
            limit = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(near, far, None)).start()
            threading.Thread(target=self._pipe, args=(far, near, limit)).start()

    def _pipe(
        self, source: socket.socket, sink: socket.socket, limit: int | None
    ) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[: limit - sent])
                    self.cut = True
                    break
                sink.sendall(data)
                sent += len(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.server.close()


def test_tls_stream_cut_mid_pdu_is_transient_and_resumed(
    secure: DimseService, demo: DemoData, pki: Pki, tmp_path: Path
) -> None:
    relay = CuttingRelay(secure.port, cut_after=150_000)
    try:
        study = demo.study("DTR003").study_uid
        getter = DICOMQRGet(
            HOST,
            relay.port,
            AET,
            secure.ae_title,
            tls=client(pki),
            retry=Retry(total=2, backoff_factor=0),
        )
        report = getter.save_all([StudyReference(study)], storage(tmp_path), tmp_path)
    finally:
        relay.close()
    assert relay.cut and relay.connections >= 2
    assert not report.failures
    assert_same(tmp_path, demo, study)
    assert len(report.saved) == len(set(report.saved)) == len(demo.files_of(study))


# -- the command line -----------------------------------------------------------------


def test_cli_download_over_tls(
    secure: DimseService, demo: DemoData, pki: Pki, tmp_path: Path
) -> None:
    study = demo.study("DTR003").study_uid
    address = ["--host", HOST, "--port", str(secure.port), "--aec", secure.ae_title]
    keys = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client.cert)]
    keys += ["--tls-key", str(pki.client.key)]
    done = run_cli(
        cli_command(
            "download", "--protocol", "c-get", *address, *keys,
            "--study-uid", study, "-o", str(tmp_path),
        )
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(saved(tmp_path)) == set(demo.files_of(study))
    refused = run_cli(
        cli_command(
            "download", "--protocol", "c-get", *address, "--tls-ca",
            str(pki.other_ca), "--study-uid", study, "-o", str(tmp_path / "no"),
        )
    )  # fmt: skip
    assert refused.returncode != 0
    assert "CA is not one we trust" in refused.stdout + refused.stderr


# -- refused after the handshake (TLS 1.3), by our own TLS storage SCP ---------------


def store_scp(pki: Pki, tmp_path: Path, tls: DIMSETLS | None) -> StoreSCP:
    return scp(Saved(tmp_path / "out"), tls=tls, accept_from=None)


@pytest.mark.parametrize(
    ("ours", "why", "logged"),
    [
        (
            None,
            "requires a client certificate: give ours (--tls-cert",
            "no certificate",
        ),
        ("untrusted", "does not trust the CA of our certificate", "not one we trust"),
    ],
)
def test_certificate_refused_after_the_handshake_is_permanent(
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    ours: str | None,
    why: str,
    logged: str,
) -> None:
    """Our TLS storage SCP requires a client certificate from its CA; a client
    without one, or with one of another CA, learns it from the alert that meets
    its association request: DIMSETLSError, not retried (one handshake seen)."""
    pair = None if ours is None else getattr(pki, ours)
    tls = DIMSETLS(
        ca_file=pki.ca,
        cert_file=None if pair is None else pair.cert,
        key_file=None if pair is None else pair.key,
    )
    with (
        store_scp(pki, tmp_path, serving(pki)) as server,
        caplog.at_level(logging.WARNING, logger="dicomtrolley"),
    ):
        getter = DICOMQRGet(
            HOST,
            server.port,
            AET,
            STORE_AET,
            tls=tls,
            retry=Retry(total=3, backoff_factor=0),
        )
        out = tmp_path / "got"
        report = getter.save_all([StudyReference("1.2.3")], storage(out), out)
    [failure] = report.failures
    assert isinstance(failure.error, DIMSETLSError) and permanent(failure.error)
    assert why in str(failure.error) and "after the handshake" in str(failure.error)
    refusals = [r for r in caplog.records if logged in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]


def test_with_the_right_certificate_the_same_scp_answers(
    pki: Pki, tmp_path: Path
) -> None:
    """The control for the test above: the SCP does accept its CA's client."""
    with store_scp(pki, tmp_path, serving(pki)) as server:
        c_echo(Peer(HOST, server.port, AET, STORE_AET, tls=client(pki)), TIMEOUTS)


# -- plain and TLS at the wrong port: said so ------------------------------------------


def test_plain_client_at_our_tls_scp_is_told_to_use_tls(
    pki: Pki, tmp_path: Path
) -> None:
    """Our TLS acceptor answers a plain A-ASSOCIATE-RQ with a TLS alert."""
    with store_scp(pki, tmp_path, serving(pki)) as server:
        started = time.monotonic()
        with pytest.raises(DIMSETLSError, match=r"seems to speak TLS.*Use --tls") as e:
            c_echo(Peer(HOST, server.port, AET, STORE_AET), TIMEOUTS)
        assert time.monotonic() - started < 3
    assert permanent(e.value)


class OneAnswer:
    """A listener on 127.0.0.1 that answers each connection with ``answer``
    once it has read something, then closes (``answer`` empty: only closes)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.server = socket.create_server((HOST, 0))
        self.port = int(self.server.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self.server.accept()
                with sock:
                    sock.recv(65536)
                    sock.sendall(self.answer)
                    sock.shutdown(socket.SHUT_WR)
                    sock.settimeout(2)
                    while sock.recv(65536):
                        pass

    def __enter__(self) -> OneAnswer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()


@pytest.mark.parametrize(
    "answer",
    [
        PROTOCOL_VERSION_ALERT,  # an alert, as our TLS SCP sends
        b"\x16\x03\x03\x00\x31\x02\x00\x00\x2d\x03\x03" + bytes(43),  # a ServerHello
    ],
)
def test_plain_client_answered_with_a_tls_record(answer: bytes) -> None:
    with OneAnswer(answer) as peer, pytest.raises(DIMSETLSError, match="speak TLS"):
        c_echo(Peer(HOST, peer.port, AET, "PACS"), TIMEOUTS)


def test_plain_client_reset_by_a_tls_port_gets_a_hint(demo: DemoData, pki: Pki) -> None:
    """The emulator's TLS port (pynetdicom, OpenSSL) resets a plain client
    without a TLS record: the error suggests --tls, transient as resets are."""
    hint = "expects TLS on this port, use --tls"
    with (
        tls_emulator(demo.root, serving(pki)) as service,
        pytest.raises(DIMSEError, match=hint),
    ):
        c_echo(Peer(HOST, service.port, AET, service.ae_title), TIMEOUTS)


def test_tls_client_at_our_plain_scp_is_told_it_does_not_speak_tls(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Our plain acceptor answers a TLS ClientHello with an A-ABORT: the
    client's handshake fails at once, saying the peer does not speak TLS; the
    SCP's log says the peer speaks TLS."""
    with (
        store_scp(pki, tmp_path, None) as server,
        caplog.at_level(logging.WARNING, logger="dicomtrolley"),
        pytest.raises(DIMSETLSError, match="does not speak TLS on this port"),
    ):
        c_echo(Peer(HOST, server.port, AET, STORE_AET, tls=client(pki)), TIMEOUTS)
    assert any(
        "speaks TLS and this storage SCP does not" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("answer", "error", "why"),
    [
        (b"", AssociationAbortedError, "does not speak TLS on this port, it seems"),
        (dul.abort(), DIMSETLSError, "does not speak TLS on this port"),
        (
            AssociateRJ(1, 1, 1).encode(),
            DIMSETLSError,
            "does not speak TLS on this port",
        ),
    ],
)
def test_tls_client_at_a_plain_peer(
    pki: Pki, answer: bytes, error: type[DIMSEError], why: str
) -> None:
    """A plain DICOM peer answers a ClientHello with an A-ABORT, an
    A-ASSOCIATE-RJ, or closes."""
    with OneAnswer(answer) as peer, pytest.raises(error, match=why):
        c_echo(Peer(HOST, peer.port, AET, "PACS", tls=client(pki)), TIMEOUTS)


# -- dicomtrolley serve --dimse-tls-* --------------------------------------------------


def test_cli_serve_dimse_over_tls(demo: DemoData, pki: Pki) -> None:
    served = Served(
        "--data", str(demo.root), "--port", "0", "--dimse-port", "0",
        "--dimse-aet", "TLS-EMU", "--dimse-tls-cert", str(pki.server.cert),
        "--dimse-tls-key", str(pki.server.key), "--dimse-tls-ca", str(pki.ca),
    )  # fmt: skip
    try:
        found = served.wait_for(r"DIMSE\s+AE TLS-EMU at 127\.0\.0\.1 port (\d+)")
        served.wait_for(r"over TLS: .*server\.pem; client certificates of .*ca\.pem")
        port = int(found.group(1))
        c_echo(Peer(HOST, port, AET, "TLS-EMU", tls=client(pki)), TIMEOUTS)
        searcher = DICOMQR(HOST, port, AET, "TLS-EMU", tls=client(pki))
        studies = searcher.find_studies(Query())
        assert {s.uid for s in studies} == {s.study_uid for s in demo.studies}
        with pytest.raises(DIMSETLSError, match="client certificate"):
            c_echo(
                Peer(HOST, port, AET, "TLS-EMU", tls=DIMSETLS(ca_file=pki.ca)), TIMEOUTS
            )
    finally:
        stdout, stderr = served.stop()
    assert served.process.returncode == 0, stdout + stderr


def test_cli_serve_dimse_tls_options_checked(pki: Pki, tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["serve", "--data", str(tmp_path), "--port", "0"]
    needs_port = runner.invoke(main, [*data, "--dimse-tls-cert", str(pki.server.cert)])
    assert needs_port.exit_code == 2 and "need --dimse-port" in needs_port.output
    needs_cert = runner.invoke(
        main, [*data, "--dimse-port", "0", "--dimse-tls-ca", str(pki.ca)]
    )
    assert needs_cert.exit_code == 2 and "need --dimse-tls-cert" in needs_cert.output
    wrong_key = runner.invoke(
        main,
        [*data, "--dimse-port", "0", "--dimse-tls-cert", str(pki.server.cert),
         "--dimse-tls-key", str(pki.client.key)],
    )  # fmt: skip
    assert wrong_key.exit_code == 2 and "does not belong" in wrong_key.output
    help_text = runner.invoke(main, ["serve", "--help"]).output
    for option in ("--dimse-tls-cert", "--dimse-tls-key", "--dimse-tls-ca"):
        assert option in help_text
