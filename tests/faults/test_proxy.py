"""The fault proxy itself: framing, keep-alive, and each fault on the wire.

Upstreams are :class:`tests.fakes.FakeServer` (HTTP) and a scripted TCP peer
(DIMSE); clients are raw sockets, so what the proxy sends is seen byte for byte.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.fakes import FakeServer, Reply
from tests.faults.proxy import (
    A_ABORT,
    ChunkedTracker,
    Fault,
    FaultProxy,
    Pacing,
    PDUTracker,
    RandomSchedule,
    ScriptedSchedule,
)

BODY = bytes(range(256)) * 40  # 10 kB


def routes(request: object) -> Reply:
    path = getattr(request, "path", "")
    if path == "/unframed":
        return Reply(
            200, BODY, {"Content-Type": "application/octet-stream"}, unframed=True
        )
    if path == "/chunked":
        return Reply(
            200,
            BODY,
            {"Content-Type": "application/octet-stream"},
            chunked=True,
            piece_size=3000,
        )
    return Reply(200, BODY, {"Content-Type": "application/octet-stream"})


@pytest.fixture
def upstream() -> Iterator[FakeServer]:
    with FakeServer(routes) as server:
        yield server


@pytest.fixture
def proxy(upstream: FakeServer) -> Iterator[FaultProxy]:
    port = int(upstream.url.rsplit(":", 1)[1])
    with FaultProxy(("127.0.0.1", port), pacing=Pacing(cap=3.0)) as running:
        yield running


def without_date(raw: bytes) -> bytes:
    """raw without its Date header (it changes from one answer to the next)."""
    return re.sub(rb"\r\nDate: [^\r]*", b"", raw)


def raw_exchange(proxy: FaultProxy, *paths: str, timeout: float = 2.0) -> bytes:
    """Send GETs for paths on one connection; everything received until close
    or silence."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout) as sock:
        for path in paths:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = bytearray()
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            received += data
    return bytes(received)


def test_pass_through_keeps_connections_alive(proxy: FaultProxy) -> None:
    with requests.Session() as session:
        for path in ("/a", "/chunked", "/b"):
            answer = session.get(proxy.url + path, timeout=5)
            assert answer.content == BODY
    assert proxy.connections == 1
    assert proxy.requests == 3
    assert proxy.reused_requests == 2
    assert not proxy.injected and not proxy.errors


@pytest.mark.parametrize("kind", ["500", "503", "429"])
def test_synthetic_status_keeps_the_connection(proxy: FaultProxy, kind: str) -> None:
    proxy.schedule = ScriptedSchedule([("/first", Fault(kind, retry_after=1))])
    raw = raw_exchange(proxy, "/first", "/second", timeout=1.0)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(f"HTTP/1.1 {kind} ".encode())
    assert (b"Retry-After: 1" in first) == (kind != "500")
    assert rest.endswith(BODY)
    assert b"HTTP/1.1 200" in rest
    assert proxy.counts() == {kind: 1}
    assert proxy.connections == 1


@pytest.mark.parametrize("offset", [0, 1, 9, 30, 60, 200, 5000])
def test_cut_after_exactly_offset_bytes(proxy: FaultProxy, offset: int) -> None:
    whole = raw_exchange(proxy, "/a", timeout=0.3)
    proxy.schedule = ScriptedSchedule([("", Fault("cut", offset=offset))])
    got = raw_exchange(proxy, "/a")
    assert len(got) == offset
    assert without_date(got) == without_date(whole)[: len(without_date(got))]
    assert [r.offset for r in proxy.injected] == [offset]


@pytest.mark.parametrize("where", ["head", "body", "tail"])
def test_cut_lands_in_its_region(proxy: FaultProxy, where: str) -> None:
    whole = raw_exchange(proxy, "/a", timeout=0.3)
    head = whole.index(b"\r\n\r\n") + 4
    for position in (0.0, 0.5, 0.99):
        proxy.schedule = ScriptedSchedule([("", Fault("cut", where, position))])
        got = len(raw_exchange(proxy, "/a"))
        if where == "head":
            assert got < head
        elif where == "body":
            assert head <= got < len(whole)
        else:
            assert len(whole) - 8 <= got < len(whole)


@pytest.mark.parametrize("path", ["/chunked", "/unframed"])
def test_cut_in_an_answer_of_unknown_length_fires_before_its_end(
    proxy: FaultProxy, path: str
) -> None:
    whole = raw_exchange(proxy, path, timeout=0.3)
    if path == "/unframed":
        assert whole.endswith(BODY)
    for back in (0, 3):
        proxy.schedule = ScriptedSchedule([("", Fault("cut", "tail", back / 8))])
        got = without_date(raw_exchange(proxy, path))
        assert got == without_date(whole)[: -1 - back]


def test_reset(proxy: FaultProxy) -> None:
    proxy.schedule = ScriptedSchedule([("", Fault("reset", offset=100))])
    with pytest.raises(ConnectionResetError):
        raw_exchange(proxy, "/a")
    assert proxy.counts() == {"reset": 1}


def test_stall_ends_when_the_client_leaves(proxy: FaultProxy) -> None:
    proxy.schedule = ScriptedSchedule([("", Fault("stall", offset=50))])
    started = time.monotonic()
    assert len(raw_exchange(proxy, "/a", timeout=0.3)) == 50
    assert time.monotonic() - started < 1.0
    time.sleep(0.2)
    assert proxy.counts() == {"stall": 1}
    assert not proxy.overstays


def test_trickle_then_full_speed(proxy: FaultProxy) -> None:
    whole = raw_exchange(proxy, "/a", timeout=0.3)
    proxy.schedule = ScriptedSchedule(
        [("", Fault("trickle", offset=10, trickle_bytes=160))]
    )
    started = time.monotonic()
    assert without_date(raw_exchange(proxy, "/a", timeout=1.0)) == without_date(whole)
    assert time.monotonic() - started >= 10 * Pacing().trickle_interval


def test_endless_trickle_outlasting_the_cap_is_an_overstay(
    upstream: FakeServer,
) -> None:
    port = int(upstream.url.rsplit(":", 1)[1])
    with FaultProxy(("127.0.0.1", port), pacing=Pacing(cap=0.3)) as proxy:
        proxy.schedule = ScriptedSchedule(
            [("", Fault("trickle", offset=0, trickle_bytes=None))]
        )
        assert len(raw_exchange(proxy, "/a")) < len(BODY)
        time.sleep(0.1)
        assert len(proxy.overstays) == 1


def test_random_schedule_is_reproducible() -> None:
    one = RandomSchedule(seed=7, rate=0.5, weights={"cut": 1, "503": 1})
    two = RandomSchedule(seed=7, rate=0.5, weights={"cut": 1, "503": 1})
    draws = [(c, r) for c in range(20) for r in range(5)]
    assert [one.fault_for(c, r, "") for c, r in draws] == [
        two.fault_for(c, r, "") for c, r in draws
    ]
    kinds = {one.fault_for(c, r, "").kind for c, r in draws}
    assert kinds == {"none", "cut", "503"}


def test_chunked_tracker_at_every_split() -> None:
    body = b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n"
    for split in range(len(body) + 1):
        tracker = ChunkedTracker()
        used = tracker.feed(body[:split] + b"")
        assert used == split and (tracker.done == (split == len(body)))
        rest = body[split:] + b"NEXT"
        assert tracker.feed(rest) == len(body) - split
        assert tracker.done


def test_pdu_tracker_at_every_split() -> None:
    pdus = [
        bytes([kind, 0]) + len(payload).to_bytes(4, "big") + payload
        for kind, payload in ((2, b"x" * 10), (4, b"y" * 3), (6, b"\0" * 4))
    ]
    stream = b"".join(pdus)
    expected = [(0, 2), (16, 4), (25, 6)]
    for split in range(len(stream) + 1):
        tracker = PDUTracker()
        assert tracker.feed(stream[:split]) + tracker.feed(stream[split:]) == expected


class ScriptedPeer:
    """A TCP server that sends a fixed byte stream to each connection."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", int(self.sock.getsockname()[1]))

    def _serve(self) -> None:
        try:
            connection, _ = self.sock.accept()
        except OSError:
            return
        with connection:
            connection.sendall(self.stream)
            time.sleep(0.5)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(("offset", "boundary"), [(0, 0), (1, 16), (16, 16), (20, 25)])
def test_dimse_abort_at_the_next_pdu_boundary(offset: int, boundary: int) -> None:
    stream = b"".join(
        bytes([kind, 0]) + len(payload).to_bytes(4, "big") + payload
        for kind, payload in ((2, b"x" * 10), (4, b"y" * 3), (4, b"z" * 30))
    )
    peer = ScriptedPeer(stream)
    try:
        with FaultProxy(peer.address, "dimse") as proxy:
            proxy.schedule = ScriptedSchedule([("", Fault("abort", offset=offset))])
            received = raw_exchange(proxy, timeout=1.0)
    finally:
        peer.close()
    assert received == stream[:boundary] + A_ABORT
    assert proxy.counts() == {"abort": 1}


def test_dimse_fault_past_the_end_fires_before_the_release_answer() -> None:
    stream = b"".join(
        bytes([kind, 0]) + len(payload).to_bytes(4, "big") + payload
        for kind, payload in ((2, b"x" * 10), (4, b"y" * 3), (6, b"\0" * 4))
    )
    peer = ScriptedPeer(stream)
    try:
        with FaultProxy(peer.address, "dimse") as proxy:
            proxy.schedule = ScriptedSchedule([("", Fault("cut", offset=10**6))])
            received = raw_exchange(proxy, timeout=1.0)
    finally:
        peer.close()
    assert received == stream[:25]
    assert [(r.offset, r.where) for r in proxy.injected] == [(25, "release")]
