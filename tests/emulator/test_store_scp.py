"""The C-MOVE storage SCP on our own Link, and C-MOVE/C-GET stopping on Ctrl-C.

Requestors of three makes talk to :class:`~dicomtrolley.dimse.storage_scp.
StoreSCP`: our own :class:`~dicomtrolley.dimse.link.Link` (association
accepted or rejected with the right reason), pynetdicom (C-ECHO, C-STORE with
a Move Originator Message ID, as a PACS sends C-MOVE sub-operations) and DCMTK
(``echoscu``, ``storescu``, and ``movescu`` asking the emulator to move a
series into our SCP). Then whole downloads: two C-MOVEs at once into one SCP,
and Ctrl-C during a C-MOVE or C-GET that a scripted peer leaves hanging.
Everything on 127.0.0.1.
"""

from __future__ import annotations

import _thread
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from dicomtrolley.core import InstanceReference, StudyReference
from dicomtrolley.dicom_qr import DICOMQRGet, DICOMQRMove
from dicomtrolley.dimse.contexts import VERIFICATION, proposal, storage_contexts
from dicomtrolley.dimse.errors import AssociationRejectedError
from dicomtrolley.dimse.link import Link
from dicomtrolley.dimse.retrieve import Receiver, RetrieveUnit, Tally, disk_sink
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.dimse.storage_scp import StoreSCP
from dicomtrolley.download import DownloadReport, NullProgress
from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.exceptions import StorageError
from dicomtrolley.formats import dul
from dicomtrolley.storage import StorageDir, TemplateStorage
from dicomtrolley.transport import NO_RETRY
from tests import dimse_peer
from tests.emulator.conftest import DemoData
from tests.emulator.test_dimse_service import free_port
from tests.fakes import tree

HOST = "127.0.0.1"
STORE_AET = "TROLLEY-STORE"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
needs_dcmtk = pytest.mark.skipif(
    not all(
        Path("/usr/bin", tool).exists() for tool in ("echoscu", "storescu", "movescu")
    ),
    reason="DCMTK is not installed",
)
C_MOVE_RSP = 0x8021
MOVE_MODEL = "1.2.840.10008.5.1.4.1.2.2.2"


@pytest.fixture(scope="module")
def emulator(demo: DemoData) -> Iterator[Emulator]:
    services = [*default_services(), DimseService()]
    with Emulator(demo.root, services=services, rescan_interval=None) as running:
        yield running


@pytest.fixture
def dimse(emulator: Emulator) -> DimseService:
    return emulator.dimse


class Saved:
    """A receiver that saves into a folder, and what it reported."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.report = DownloadReport()
        sink = disk_sink(StorageDir(out), out, self.report, NullProgress())
        self.receiver = Receiver(sink, self.report, NullProgress())


def scp(saved: Saved, **options: object) -> StoreSCP:
    settings: dict[str, object] = {
        "pacs": Peer(HOST, 104, aet="TROLLEY", aec="PACS"),
        "receiver": saved.receiver,
        "timeouts": DIMSETimeouts(connect=5, idle=10),
        "spool": saved.out,
    }
    settings.update(options)
    return StoreSCP(STORE_AET, 0, **settings)  # type: ignore[arg-type]


def associate(port: int, *, aet: str = "PACS", aec: str = STORE_AET) -> Link:
    return Link.connect(
        Peer(HOST, port, aet=aet, aec=aec),
        [proposal(VERIFICATION), *storage_contexts()],
        operation="C-STORE",
        timeouts=DIMSETimeouts(connect=5, idle=5),
    )


def ct(sop_uid: str, study: str = "1.2.3", series: str = "1.2.3.4") -> pydicom.Dataset:
    dataset = pydicom.Dataset()
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = sop_uid
    dataset.StudyInstanceUID = study
    dataset.SeriesInstanceUID = series
    dataset.PatientID = "SCP"
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


# -- associations: accepted, rejected with the right reason -------------------------


def test_association_accepted_and_echo_answered(tmp_path: Path) -> None:
    with scp(Saved(tmp_path)) as server:
        link = associate(server.port)
        echo = link.context_for(VERIFICATION)
        assert echo is not None
        assert echo.transfer_syntax == ExplicitVRLittleEndian  # our first
        command = {
            dul.AFFECTED_SOP_CLASS_UID: VERIFICATION,
            dul.COMMAND_FIELD: dul.C_ECHO_RQ,
            dul.MESSAGE_ID: 5,
            dul.COMMAND_DATA_SET_TYPE: dul.NO_DATASET,
        }
        link.send(int(echo.context_id or 0), dul.encode_command(command), None)
        [answer] = link.receive(time.monotonic() + 5)
        assert isinstance(answer, dul.Fragment) and answer.command
        response = dul.decode_command(answer.data)
        assert dul.command_int(response, dul.COMMAND_FIELD) == dul.C_ECHO_RSP
        assert dul.command_int(response, dul.MESSAGE_ID_BEING_RESPONDED_TO) == 5
        assert dul.command_int(response, dul.STATUS) == 0
        link.release()
        assert not link.open


@pytest.mark.parametrize(
    ("options", "calling", "called", "reason"),
    [
        ({}, "PACS", "SOMEONE-ELSE", "called AE title not recognized"),
        (
            {"accept_aets": ["PACS"]},
            "INTRUDER",
            STORE_AET,
            "calling AE title not recognized",
        ),
        ({"accept_from": "192.0.2.7"}, "PACS", STORE_AET, "no reason given"),
    ],
)
def test_association_refused(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    options: dict[str, object],
    calling: str,
    called: str,
    reason: str,
) -> None:
    with (
        scp(Saved(tmp_path), **options) as server,
        pytest.raises(AssociationRejectedError) as raised,
    ):
        associate(server.port, aet=calling, aec=called)
    assert reason in str(raised.value)
    assert "refused" in caplog.text


def test_allowed_calling_ae_is_accepted(tmp_path: Path) -> None:
    with scp(Saved(tmp_path), accept_aets=["PACS"]) as server:
        associate(server.port, aet="PACS").release()


def test_start_and_stop_with_an_association_open(tmp_path: Path) -> None:
    server = scp(Saved(tmp_path)).start()
    link = associate(server.port)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1  # not a slice, not the idle timeout
    with pytest.raises(OSError):
        socket.create_connection((HOST, server.port), timeout=1).close()
    link.abort()


# -- C-STORE: routed to the C-MOVE that waits for it, never success unless saved ----


def store_all(
    port: int, datasets: list[pydicom.Dataset], originator_id: int
) -> list[int]:
    """C-STORE each dataset with pynetdicom, as a PACS sends sub-operations."""
    ae = AE(ae_title="PACS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(HOST, port, ae_title=STORE_AET)
    assert assoc.is_established
    try:
        return [
            int(
                assoc.send_c_store(
                    ds, originator_aet="TROLLEY", originator_id=originator_id
                ).Status
            )
            for ds in datasets
        ]
    finally:
        assoc.release()


def test_two_moves_at_once_each_get_exactly_their_instances(tmp_path: Path) -> None:
    saved = Saved(tmp_path / "out")
    first = Tally(RetrieveUnit("STUDY", "1.2.3"))
    second = Tally(RetrieveUnit("STUDY", "1.2.5"))
    saved.receiver.register(101, first)
    saved.receiver.register(102, second)
    ones = [ct(f"1.2.3.4.{n}") for n in range(6)]
    twos = [ct(f"1.2.5.6.{n}", "1.2.5", "1.2.5.6") for n in range(6)]
    results: dict[int, list[int]] = {}
    with scp(saved) as server:
        threads = [
            threading.Thread(
                target=lambda m=msg_id, d=data: results.update(
                    {m: store_all(server.port, d, m)}
                )
            )
            for msg_id, data in ((101, ones), (102, twos))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        stray = store_all(server.port, [ct("1.2.3.4.99")], originator_id=777)
    assert results == {101: [0] * 6, 102: [0] * 6}
    assert first.received == {str(ds.SOPInstanceUID) for ds in ones}
    assert second.received == {str(ds.SOPInstanceUID) for ds in twos}
    assert stray == [0xA700]
    saved_uids = {
        str(pydicom.dcmread(path).SOPInstanceUID)
        for path in tree(saved.out)
        if path.is_file()
    }
    assert saved_uids == first.received | second.received
    assert not saved.report.failures


def test_an_instance_that_cannot_be_saved_is_not_success(tmp_path: Path) -> None:
    report = DownloadReport()

    def full(path: Path, sop_uid: str, tally: Tally) -> int:
        raise StorageError("no space left on device", uids=[sop_uid])

    saved = Saved(tmp_path)
    saved.receiver = Receiver(full, report, NullProgress())
    tally = Tally(RetrieveUnit("STUDY", "1.2.3"))
    saved.receiver.register(5, tally)
    with scp(saved) as server:
        statuses = store_all(server.port, [ct("1.2.3.4.1")], originator_id=5)
    assert statuses == [0xA700]
    assert tally.failed == {"1.2.3.4.1"} and not tally.received
    assert list(report.failed_uids) == ["1.2.3.4.1"]
    assert not [p for p in tree(tmp_path) if p.is_file()]  # no temporary file left


# -- DCMTK as the other side ------------------------------------------------------


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [f"/usr/bin/{tool}", *args],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=60,
        check=False,
    )


@needs_dcmtk
def test_dcmtk_echoscu_and_storescu(tmp_path: Path) -> None:
    saved = Saved(tmp_path / "out")
    files = []
    for n in range(3):
        path = tmp_path / f"ct{n}.dcm"
        dataset = ct(f"1.2.3.4.{n}")
        dataset.save_as(path, enforce_file_format=True)
        files.append(str(path))
    tally = Tally(RetrieveUnit("STUDY", "1.2.3"))
    saved.receiver.register(1, tally)  # storescu sends no originator: the only one
    with scp(saved) as server:
        echo = dcmtk(
            "echoscu", "-aet", "PACS", "-aec", STORE_AET, HOST, str(server.port)
        )
        assert echo.returncode == 0, echo.stderr
        wrong = dcmtk(
            "echoscu", "-aet", "PACS", "-aec", "NOBODY", HOST, str(server.port)
        )
        assert wrong.returncode != 0
        sent = dcmtk(
            "storescu",
            "-aet",
            "PACS",
            "-aec",
            STORE_AET,
            HOST,
            str(server.port),
            *files,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
    assert tally.received == {"1.2.3.4.0", "1.2.3.4.1", "1.2.3.4.2"}
    assert len([p for p in tree(saved.out) if p.is_file()]) == 3


@needs_dcmtk
def test_movescu_moves_a_series_into_our_scp(
    dimse: DimseService, demo: DemoData, tmp_path: Path
) -> None:
    study = demo.study("DTR001", "MR")
    series = study.series[1]
    expected = demo.files_of(study.study_uid, series.series_uid)
    saved = Saved(tmp_path)
    unit = RetrieveUnit(
        "SERIES",
        study.study_uid,
        series.series_uid,
        expected=tuple(
            InstanceReference(study.study_uid, series.series_uid, uid)
            for uid in expected
        ),
    )
    tally = Tally(unit)
    saved.receiver.register(4242, tally)  # movescu's message ID is not ours
    with scp(saved, pacs=Peer(HOST, dimse.port, aet="MOVESCU", aec="X")) as server:
        dimse.move_destinations[STORE_AET] = (HOST, server.port)
        moved = dcmtk(
            "movescu", "-S", "-aet", "MOVESCU", "-aec", dimse.ae_title,
            "-aem", STORE_AET,
            "-k", "QueryRetrieveLevel=SERIES",
            "-k", f"StudyInstanceUID={study.study_uid}",
            "-k", f"SeriesInstanceUID={series.series_uid}",
            HOST, str(dimse.port),
        )  # fmt: skip
        assert moved.returncode == 0, moved.stdout + moved.stderr
    assert tally.received == set(expected)
    for path in (p for p in tree(tmp_path) if p.is_file()):
        dataset = pydicom.dcmread(path)
        original = pydicom.dcmread(demo.by_uid[str(dataset.SOPInstanceUID)])
        assert dataset.PixelData == original.PixelData


# -- whole downloads -----------------------------------------------------------------


def test_two_studies_moved_at_once(
    dimse: DimseService, demo: DemoData, tmp_path: Path
) -> None:
    port = free_port()
    dimse.move_destinations[STORE_AET] = (HOST, port)
    downloader = DICOMQRMove(
        HOST,
        dimse.port,
        aet="TROLLEY",
        aec=dimse.ae_title,
        store_aet=STORE_AET,
        store_port=port,
        accept_aets=[dimse.ae_title],
        timeout=20,
    )
    studies = [demo.study("DTR001", "MR"), demo.study("DTR003")]
    report = downloader.save_all(
        [StudyReference(s.study_uid) for s in studies],
        TemplateStorage(tmp_path, "{StudyInstanceUID}/{SOPInstanceUID}.dcm"),
        tmp_path,
        max_workers=2,
    )
    report.raise_for_failures()
    for study in studies:
        folder = tmp_path / study.study_uid
        got = {p.stem for p in folder.iterdir()}
        assert got == set(demo.files_of(study.study_uid))


def hang_after_request(seen: list[str]) -> dimse_peer.Script:
    """A peer that takes the request, says pending once, then waits for the end."""

    def script(peer: dimse_peer.Peer) -> None:
        command, _ = peer.message()
        model = dul.command_str(command, dul.AFFECTED_SOP_CLASS_UID)
        field = C_MOVE_RSP if model == MOVE_MODEL else dul.C_GET_RSP
        peer.send_message(
            model,
            {
                dul.AFFECTED_SOP_CLASS_UID: model,
                dul.COMMAND_FIELD: field,
                dul.MESSAGE_ID_BEING_RESPONDED_TO: dul.command_int(
                    command, dul.MESSAGE_ID
                ),
                dul.STATUS: 0xFF00,
                dul.REMAINING: 5,
            },
        )
        try:
            [event] = peer.next(1)
        except (ConnectionError, OSError):
            seen.append("closed")
            return
        if isinstance(event, dul.PDU):
            seen.append("abort" if event.type == dul.A_ABORT else f"PDU {event.type}")
        else:
            seen.append(f"command {dul.decode_command(event.data)}")

    return script


class HangingPeers:
    """Scripted peers (tests/dimse_peer.py) on one port, each association in a
    thread of its own, so that several workers can be connected at once."""

    def __init__(self, script: dimse_peer.Script, count: int) -> None:
        self.server = socket.create_server((HOST, 0))
        self.port = int(self.server.getsockname()[1])
        self.threads = [
            threading.Thread(target=self._one, args=(script,)) for _ in range(count)
        ]
        self.errors: list[BaseException] = []
        for thread in self.threads:
            thread.start()

    def _one(self, script: dimse_peer.Script) -> None:
        self.server.settimeout(10)
        conn, _ = self.server.accept()
        conn.settimeout(10)
        peer = object.__new__(dimse_peer.Peer)  # one association of a Peer
        peer.conn, peer.reader, peer.max_pdu = conn, dul.PDUReader(), 16384
        peer.pending, peer.seen, peer.contexts = [], [], {}
        try:
            [request] = peer.next(1)
            assert isinstance(request, dul.PDU)
            conn.sendall(peer._accept(request.raw))
            script(peer)
        except BaseException as error:  # reported by join()
            self.errors.append(error)
        finally:
            conn.close()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
        self.server.close()
        if self.errors:
            raise self.errors[0]


def ctrl_c_during_save_all(
    downloader: DICOMQRGet | DICOMQRMove,
    objects: list[StudyReference],
    out: Path,
    workers: int,
) -> float:
    """Seconds save_all into out takes to stop after a Ctrl-C 0.5 s into it."""
    storage = TemplateStorage(out, "{SOPInstanceUID}.dcm")
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            downloader.save_all(objects, storage, out, max_workers=workers)
    finally:
        timer.cancel()
    return time.monotonic() - started - 0.5


@pytest.mark.parametrize(
    ("operation", "workers"), [("C-MOVE", 1), ("C-GET", 1), ("C-GET", 2)]
)
def test_ctrl_c_stops_within_a_second(
    tmp_path: Path, operation: str, workers: int
) -> None:
    seen: list[str] = []
    peers = HangingPeers(hang_after_request(seen), workers)
    objects = [StudyReference(f"{dimse_peer.STUDY}.{n}") for n in range(workers)]
    timeouts = DIMSETimeouts(connect=5, idle=30)
    store_port = free_port()
    downloader: DICOMQRGet | DICOMQRMove
    if operation == "C-MOVE":
        downloader = DICOMQRMove(
            HOST, peers.port, store_port=store_port, timeout=timeouts, retry=NO_RETRY
        )
    else:
        downloader = DICOMQRGet(HOST, peers.port, timeout=timeouts, retry=NO_RETRY)
    interrupted = ctrl_c_during_save_all(downloader, objects, tmp_path, workers)
    peers.join()
    assert interrupted < 1.0
    assert seen == ["abort"] * workers
    if operation == "C-MOVE":  # its storage SCP stopped too
        with pytest.raises(OSError):
            socket.create_connection((HOST, store_port), timeout=1).close()
    assert not [p for p in tree(tmp_path) if p.is_file()]
