"""Connecting is stoppable: Ctrl-C and ``cancelled()`` end a connect that hangs
within a second, whether the peer never completes the TCP handshake (a
listening socket whose backlog is full: Linux drops the SYNs) or accepts TCP
and never answers the A-ASSOCIATE-RQ; and both hang until the connect timeout
otherwise.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from dicomtrolley.core import StudyReference
from dicomtrolley.dicom_qr import DICOMQRGet
from dicomtrolley.dimse.contexts import VERIFICATION, proposal
from dicomtrolley.dimse.errors import AssociationAbortedError, DIMSETimeoutError
from dicomtrolley.dimse.link import Link
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.transport import NO_RETRY
from tests.emulator.test_store_scp import ctrl_c_during_save_all
from tests.fakes import tree

HOST = "127.0.0.1"
STUDY = "1.2.826.0.1.3680043.8.498.1"


@contextmanager
def silent_peer() -> Iterator[int]:
    """A port that completes TCP handshakes (the kernel does, from the
    backlog) but never reads or answers anything."""
    with socket.create_server((HOST, 0), backlog=16) as server:
        yield int(server.getsockname()[1])


@contextmanager
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: further SYNs go unanswered."""
    with ExitStack() as stack:
        server = stack.enter_context(socket.socket())
        server.bind((HOST, 0))
        server.listen(0)
        port = int(server.getsockname()[1])
        for _ in range(8):  # fill the queue until a connect no longer succeeds
            probe = stack.enter_context(socket.socket())
            probe.settimeout(0.3)
            try:
                probe.connect((HOST, port))
            except TimeoutError:
                break
        else:
            pytest.skip("this kernel completes every handshake: no blackhole")
        yield port


PEERS = {"silent": silent_peer, "blackhole": blackhole}
TIMEOUTS = DIMSETimeouts(connect=10, idle=10)


def connect(port: int, timeouts: DIMSETimeouts, stop: threading.Event) -> Link:
    return Link.connect(
        Peer(HOST, port),
        [proposal(VERIFICATION)],
        operation="C-ECHO",
        timeouts=timeouts,
        cancelled=stop.is_set,
    )


@pytest.mark.parametrize("kind", PEERS)
def test_cancelled_stops_a_hanging_connect(kind: str) -> None:
    stop = threading.Event()
    with PEERS[kind]() as port:
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        started = time.monotonic()
        with pytest.raises(AssociationAbortedError, match="cancelled by the caller"):
            connect(port, TIMEOUTS, stop)
        stopped = time.monotonic() - started - 0.3
        timer.cancel()
    assert stopped < 1.0


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("silent", "no answer to the association request within 0.6 s"),
        ("blackhole", "no TCP connection within 0.6 s"),
    ],
)
def test_hanging_connect_ends_at_the_connect_timeout(kind: str, message: str) -> None:
    with PEERS[kind]() as port:
        started = time.monotonic()
        with pytest.raises(DIMSETimeoutError, match=message):
            connect(port, DIMSETimeouts(connect=0.6, idle=10), threading.Event())
        took = time.monotonic() - started
    assert 0.5 < took < 1.5


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("kind", PEERS)
def test_ctrl_c_while_connecting_stops_within_a_second(
    tmp_path: Path, kind: str, workers: int
) -> None:
    objects = [StudyReference(f"{STUDY}.{n}") for n in range(workers)]
    with PEERS[kind]() as port:
        downloader = DICOMQRGet(HOST, port, timeout=TIMEOUTS, retry=NO_RETRY)
        interrupted = ctrl_c_during_save_all(downloader, objects, tmp_path, workers)
    assert interrupted < 1.0
    assert not [p for p in tree(tmp_path) if p.is_file()]
