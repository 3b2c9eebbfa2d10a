"""A loopback TCP proxy that breaks answers on purpose, from a seeded schedule.

:class:`FaultProxy` listens on 127.0.0.1 (a free port) and relays every
connection to one upstream: the emulator's HTTP port, Orthanc's, or a DIMSE
port. Each client connection gets its own upstream connection, so keep-alive
stays what the client and the server make of it: the proxy never adds
``Connection: close``.

HTTP mode reads request boundaries (``Content-Length`` or chunked bodies) and
answer boundaries (``Content-Length``, chunked, or until close), so a fault
lands on the k-th request of a connection. DIMSE mode relays both directions
as bytes and follows the PDU boundaries (PS3.8 9.3) of the stream from the
server. What a fault does (:class:`Fault`):

====== ================================================================
none   pass-through
cut    close the connection after ``offset`` bytes of the answer (inside
       the status line, the header block, the body or its last bytes)
stall  stop sending after ``offset`` bytes; hold the connection until the
       client gives up (its read timeout) or the proxy's stall cap
reset  TCP reset (SO_LINGER 0, then close) after ``offset`` bytes
500    answered by the proxy: ``500 Internal Server Error``
503    answered by the proxy, with ``Retry-After: 0`` or ``1``
429    answered by the proxy, with ``Retry-After: 0`` or ``1``
trickle  from ``offset`` on, a few bytes per interval: for ``trickle_bytes``
       bytes (then at full speed), or endless when ``trickle_bytes`` is None
       (only an overall deadline of the client stops it)
abort  DIMSE: an A-ABORT PDU to the client at the first PDU boundary at or
       after ``offset`` (and one to the server), then close
====== ================================================================

A fault whose offset lies beyond the end of the answer fires on its last byte
(HTTP), or just before the A-RELEASE-RP (DIMSE). Every fault that fired is
recorded as an :class:`Injected` (kind, connection, request, offset, where);
:meth:`FaultProxy.counts` sums them by kind.

Schedules say which fault goes where: :class:`RandomSchedule` draws it from
``random.Random`` seeded with (seed, connection, request), so a connection's
faults do not depend on thread timing; :class:`ScriptedSchedule` gives fixed
faults to requests whose request line contains a text, for targeted tests.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

logger = logging.getLogger("tests.faults.proxy")

HTTP_KINDS = ("none", "cut", "stall", "reset", "500", "503", "429", "trickle")
DIMSE_KINDS = ("none", "cut", "stall", "reset", "abort", "trickle")
STATUS_KINDS = frozenset({"500", "503", "429"})
#: A-ABORT PDU: type 07, reserved, length 4, reserved, reserved, source 0
#: (service user), reason 0 (PS3.8 9.3.8).
A_ABORT = bytes.fromhex("07 00 00 00 00 04 00 00 00 00")
A_RELEASE_RP = 0x06
_REASONS = {
    "500": "Internal Server Error",
    "503": "Service Unavailable",
    "429": "Too Many Requests",
}
_MAX_HEAD = 64 * 1024
_BLOCK = 64 * 1024
_HELD_BACK = 8  # bytes of an answer framed by closing: see _answer


@dataclass(frozen=True)
class Fault:
    """What to do to one answer (HTTP) or one association (DIMSE).

    ``where``: ``head`` (status line and headers), ``body``, ``tail`` (the last
    8 bytes of the body) or ``stream`` (DIMSE); ``position`` in [0, 1) places
    the offset inside it. ``offset`` overrides both with an absolute byte
    offset of the answer.
    """

    kind: str = "none"
    where: str = "body"
    position: float = 0.0
    offset: int | None = None
    retry_after: int = 0
    trickle_bytes: int | None = 256

    @property
    def active(self) -> bool:
        return self.kind != "none"


NO_FAULT = Fault()


@dataclass(frozen=True)
class Injected:
    """A fault that fired: on which connection and request, at which offset.

    ``where``: ``head``, ``body``, ``tail``, ``synthetic`` (HTTP), ``stream`` or
    ``release`` (DIMSE: just before the A-RELEASE-RP).
    """

    kind: str
    connection: int
    request: int
    offset: int
    where: str


class Schedule(Protocol):
    def fault_for(self, connection: int, request: int, line: str) -> Fault:
        """The fault for request number ``request`` (from 0) of a connection.

        ``line`` is the HTTP request line ('' in DIMSE mode, where request is 0).
        """


class NoFaults:
    """Pass everything through."""

    def fault_for(self, connection: int, request: int, line: str) -> Fault:
        return NO_FAULT


@dataclass(frozen=True)
class RandomSchedule:
    """Faults drawn at ``rate`` with ``weights`` per kind, seeded per request.

    ``endless_trickle``: trickles never speed up (needs a client deadline).
    ``dimse``: draw DIMSE faults (offsets spread log-uniformly over the stream).
    """

    seed: int
    rate: float = 0.3
    weights: Mapping[str, float] = field(default_factory=dict)
    endless_trickle: bool = False
    dimse: bool = False

    def fault_for(self, connection: int, request: int, line: str) -> Fault:
        rng = random.Random(f"{self.seed}/{connection}/{request}")
        if rng.random() >= self.rate:
            return NO_FAULT
        kinds = [kind for kind, weight in self.weights.items() if weight > 0]
        kind = rng.choices(kinds, [self.weights[k] for k in kinds])[0]
        trickle_bytes = None if self.endless_trickle else rng.randrange(32, 513)
        if self.dimse:
            # 0 to 128 KiB: association accept, C-FIND answers, C-STOREs
            offset = int(2 ** rng.uniform(0, 17)) - 1
            return Fault(kind, "stream", offset=offset, trickle_bytes=trickle_bytes)
        where = rng.choices(("head", "body", "tail"), (0.35, 0.5, 0.15))[0]
        return Fault(
            kind,
            where,
            rng.random(),
            retry_after=rng.choice((0, 0, 1)),
            trickle_bytes=trickle_bytes,
        )


class ScriptedSchedule:
    """Fixed faults: each rule ``(text, fault)`` applies once, to the first
    request whose request line contains text ('' matches any request, and every
    DIMSE connection). Rules are used in order; the rest pass through."""

    def __init__(self, rules: Sequence[tuple[str, Fault]]) -> None:
        self._rules = list(rules)
        self._lock = threading.Lock()

    def fault_for(self, connection: int, request: int, line: str) -> Fault:
        with self._lock:
            for index, (text, fault) in enumerate(self._rules):
                if text in line:
                    del self._rules[index]
                    return fault
        return NO_FAULT

    @property
    def unused(self) -> int:
        with self._lock:
            return len(self._rules)


@dataclass(frozen=True)
class Pacing:
    """Timing of stalls and trickles (seconds, bytes)."""

    #: the longest a stall or an endless trickle holds a connection
    cap: float = 15.0
    trickle_interval: float = 0.02
    trickle_step: int = 16


class _Closed(Exception):
    """The client or the server went away, or a fault ended the connection."""


class _Stream:
    """A socket with a read buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def fill(self) -> bool:
        """Read more into the buffer; False at end of stream."""
        try:
            data = self.sock.recv(_BLOCK)
        except (OSError, ValueError):
            return False
        if not data:
            return False
        self.buffer += data
        return True

    def head(self) -> bytes | None:
        """Bytes up to and including the first empty line; None at a clean EOF."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buffer[: end + 4])
                del self.buffer[: end + 4]
                return head
            if len(self.buffer) > _MAX_HEAD:
                raise _Closed("header block too long")
            if not self.fill():
                if self.buffer:
                    raise _Closed("connection closed inside a header block")
                return None

    def take(self, limit: int) -> bytes:
        """Up to limit buffered bytes (reading when the buffer is empty)."""
        if not self.buffer and not self.fill():
            raise _Closed("connection closed early")
        data = bytes(self.buffer[:limit])
        del self.buffer[:limit]
        return data


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


class ChunkedTracker:
    """Finds where a chunked body ends (RFC 9112 7.1), fed bytes as they come."""

    def __init__(self) -> None:
        self.done = False
        self._state = "size"
        self._line = bytearray()
        self._left = 0

    def feed(self, data: bytes) -> int:
        """How many bytes of data belong to the body (all, or up to its end)."""
        index = 0
        while index < len(data) and not self.done:
            if self._state == "data":
                step = min(self._left, len(data) - index)
                index += step
                self._left -= step
                if self._left == 0:
                    self._state = "crlf"
                    self._line.clear()
                continue
            newline = data.find(b"\n", index)
            if newline < 0:
                self._line += data[index:]
                return len(data)
            self._line += data[index:newline]
            index = newline + 1
            line = bytes(self._line).strip()
            self._line.clear()
            if self._state == "size":
                size = int(line.split(b";")[0], 16)
                self._state = "data" if size else "trailer"
                self._left = size
            elif self._state == "crlf":
                self._state = "size"
            elif not line:  # the empty line after the last chunk (and trailers)
                self.done = True
        return index


class PDUTracker:
    """Where PDUs start in a DICOM upper layer stream (6-byte headers)."""

    def __init__(self) -> None:
        self._position = 0  # of the next byte fed
        self._skip = 0  # PDU payload bytes still to pass over
        self._header = bytearray()
        self._header_start = 0

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        """(offset, PDU type) of every PDU whose header completes in data."""
        starts: list[tuple[int, int]] = []
        index = 0
        while index < len(data):
            if self._skip:
                step = min(self._skip, len(data) - index)
                index += step
                self._skip -= step
                continue
            if not self._header:
                self._header_start = self._position + index
            take = data[index : index + 6 - len(self._header)]
            self._header += take
            index += len(take)
            if len(self._header) == 6:
                starts.append((self._header_start, self._header[0]))
                (self._skip,) = struct.unpack(">I", self._header[2:6])
                self._header.clear()
        self._position += len(data)
        return starts


class FaultProxy:
    """A threaded loopback proxy to ``upstream`` that injects faults.

    Parameters
    ----------
    upstream:
        (host, port) to relay to.
    mode:
        ``"http"`` or ``"dimse"``.
    schedule:
        Which fault goes where (:class:`NoFaults` by default); may be replaced
        while running (:attr:`schedule`).
    pacing:
        Stall cap and trickle speed.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        mode: str = "http",
        schedule: Schedule | None = None,
        pacing: Pacing | None = None,
    ) -> None:
        if mode not in ("http", "dimse"):
            raise ValueError(f"mode must be http or dimse, not {mode!r}")
        self.upstream = upstream
        self.mode = mode
        self.schedule: Schedule = schedule or NoFaults()
        self.pacing = pacing or Pacing()
        self.injected: list[Injected] = []
        #: stalls and endless trickles that the client sat through until the
        #: proxy's cap: the client has no working timeout or deadline for them
        self.overstays: list[Injected] = []
        self.connections = 0
        self.requests = 0
        self.reused_requests = 0  # requests after the first on a connection
        self.errors: list[BaseException] = []  # proxy bugs, for the tests to see
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()

    # -- life cycle -------------------------------------------------------------

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection, wait for the threads."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sockets, workers = list(self._sockets), list(self._workers)
        for sock in sockets:
            _close(sock)
        for worker in workers:
            worker.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._listener is not None, "the proxy is not started"
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port`` of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    # -- what happened ----------------------------------------------------------

    def counts(self) -> Counter[str]:
        """Faults that fired, by kind."""
        with self._lock:
            return Counter(record.kind for record in self.injected)

    def take_injected(self) -> tuple[list[Injected], list[Injected]]:
        """(faults, overstays) recorded since the last call; forgets them."""
        with self._lock:
            taken, self.injected = self.injected, []
            overstays, self.overstays = self.overstays, []
        return taken, overstays

    def _record(self, record: Injected, overstay: bool = False) -> None:
        logger.debug("%s %s", "overstay" if overstay else "injected", record)
        with self._lock:
            (self.overstays if overstay else self.injected).append(record)

    # -- plumbing ---------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            number = next(self._numbers)
            with self._lock:
                self.connections += 1
            worker = threading.Thread(
                target=self._serve,
                args=(client, number),
                name=f"fault-proxy-{number}",
                daemon=True,
            )
            with self._lock:
                self._workers.add(worker)
            worker.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        if self._stopping.is_set():
            _close(sock)
        return sock

    def _forget(self, *socks: socket.socket | None) -> None:
        for sock in socks:
            if sock is None:
                continue
            _close(sock)
            with self._lock:
                self._sockets.discard(sock)

    def _connect_upstream(self) -> socket.socket:
        sock = socket.create_connection(self.upstream, timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(120)
        return self._track(sock)

    def _serve(self, client: socket.socket, number: int) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(120)
        self._track(client)
        try:
            if self.mode == "http":
                _HttpConnection(self, client, number).run()
            else:
                _DimseConnection(self, client, number).run()
        except _Closed:
            pass
        except OSError:
            pass
        except Exception as error:  # a bug in the proxy: make it visible
            logger.exception("fault proxy connection %d failed", number)
            with self._lock:
                self.errors.append(error)
        finally:
            self._forget(client)
            with self._lock:
                self._workers.discard(threading.current_thread())

    # -- faults shared by both modes ---------------------------------------------

    def _wait_for_client_to_leave(
        self, client: socket.socket, gone: threading.Event | None = None
    ) -> bool:
        """Hold the connection until the client closes it; False at the cap."""
        deadline = time.monotonic() + self.pacing.cap
        while time.monotonic() < deadline and not self._stopping.is_set():
            if gone is not None:
                if gone.wait(0.05):
                    return True
                continue
            try:
                client.settimeout(0.05)
                if not client.recv(_BLOCK):
                    return True
            except TimeoutError:
                continue
            except OSError:
                return True
        return False

    def _trickle(self, client: socket.socket, data: bytes, deadline: float) -> bool:
        """Send data a few bytes at a time; False when the cap was reached."""
        step, interval = self.pacing.trickle_step, self.pacing.trickle_interval
        for start in range(0, len(data), step):
            if time.monotonic() >= deadline or self._stopping.is_set():
                return False
            client.sendall(data[start : start + step])
            time.sleep(interval)
        return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset: SO_LINGER on, timeout 0.

    ``shutdown(SHUT_RD)`` first wakes a thread blocked in ``recv`` on the same
    socket (DIMSE mode): until that call returns, the kernel keeps the socket
    open, and close() would send nothing at all.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class _FaultInProgress:
    """A fault being applied to the bytes of one answer, piece by piece."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: socket.socket,
        fault: Fault,
        connection: int,
        request: int,
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.fault = fault
        self.connection = connection
        self.request = request
        self.record: Injected | None = None
        self.trickle_left: float = 0.0  # bytes still to trickle (inf: endless)
        self.deadline = 0.0

    @property
    def fired(self) -> bool:
        return self.record is not None

    def fire(
        self, offset: int, where: str, gone: threading.Event | None = None
    ) -> None:
        """Apply the fault now, after offset bytes were sent. Raises _Closed
        when the fault ends the connection; returns for trickles."""
        proxy, fault = self.proxy, self.fault
        self.record = Injected(fault.kind, self.connection, self.request, offset, where)
        proxy._record(self.record)
        if fault.kind == "trickle":
            endless = fault.trickle_bytes is None
            self.trickle_left = float("inf") if endless else fault.trickle_bytes or 0
            self.deadline = time.monotonic() + proxy.pacing.cap
            return
        if fault.kind == "stall":
            if not proxy._wait_for_client_to_leave(self.client, gone):
                proxy._record(self.record, overstay=True)
            raise _Closed("stalled")
        if fault.kind == "abort":
            with contextlib.suppress(OSError):
                self.client.sendall(A_ABORT)
        if fault.kind == "reset":
            _reset(self.client)
        else:
            _close(self.client)
        raise _Closed(fault.kind)

    def send(self, data: bytes) -> None:
        """Send data to the client, trickling while a trickle lasts."""
        if not data:
            return
        if self.trickle_left <= 0:
            self.client.sendall(data)
            return
        endless = self.trickle_left == float("inf")
        slow = data if endless else data[: int(self.trickle_left)]
        if not self.proxy._trickle(self.client, slow, self.deadline):
            # the client kept listening to an endless trickle: give up
            assert self.record is not None
            self.proxy._record(self.record, overstay=True)
            _close(self.client)
            raise _Closed("trickle cap")
        self.trickle_left -= len(slow)
        self.client.sendall(data[len(slow) :])


class _HttpConnection:
    """One client connection in HTTP mode: requests one after the other."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, number: int) -> None:
        self.proxy = proxy
        self.client = client
        self.number = number
        self.reader = _Stream(client)
        self.upstream: socket.socket | None = None
        self.upstream_reader: _Stream | None = None

    def run(self) -> None:
        try:
            for index in itertools.count():
                request = self._read_request()
                if request is None:
                    return
                line, method, raw = request
                with self.proxy._lock:
                    self.proxy.requests += 1
                    self.proxy.reused_requests += index > 0
                fault = self.proxy.schedule.fault_for(self.number, index, line)
                if fault.kind in STATUS_KINDS:
                    self._synthetic(fault, index)
                    continue
                if not self._exchange(raw, method, fault, index):
                    return
        finally:
            self.proxy._forget(self.upstream)

    def _read_request(self) -> tuple[str, str, bytes] | None:
        head = self.reader.head()
        if head is None:
            return None
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method = line.split(" ", 1)[0].upper()
        headers = _headers(head)
        body = bytearray()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            tracker = ChunkedTracker()
            while not tracker.done:
                data = self.reader.take(_BLOCK)
                used = tracker.feed(data)
                body += data[:used]
                self.reader.buffer[:0] = data[used:]
        else:
            left = int(headers.get("content-length", "0") or 0)
            while left:
                data = self.reader.take(left)
                body += data
                left -= len(data)
        return line, method, head + bytes(body)

    def _synthetic(self, fault: Fault, index: int) -> None:
        reason = _REASONS[fault.kind]
        body = f"fault proxy: {fault.kind} {reason}\n".encode()
        lines = [
            f"HTTP/1.1 {fault.kind} {reason}",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
        ]
        if fault.kind != "500":
            lines.append(f"Retry-After: {fault.retry_after}")
        answer = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.client.sendall(answer)
        self.proxy._record(Injected(fault.kind, self.number, index, 0, "synthetic"))

    def _send_upstream(self, raw: bytes) -> bytes:
        """Send the request, and return the head of the answer (reconnecting
        once when a kept-alive upstream connection was closed meanwhile)."""
        for attempt in range(2):
            fresh = self.upstream is None
            if self.upstream is None:
                self.upstream = self.proxy._connect_upstream()
                self.upstream_reader = _Stream(self.upstream)
            assert self.upstream_reader is not None
            head: bytes | None = None
            try:
                self.upstream.sendall(raw)
                head = self.upstream_reader.head()
            except (OSError, _Closed):
                head = None
            if head is not None:
                return head
            self.proxy._forget(self.upstream)
            self.upstream = self.upstream_reader = None
            if fresh or attempt:
                break
        raise _Closed("upstream gave no answer")

    def _exchange(self, raw: bytes, method: str, fault: Fault, index: int) -> bool:
        """Relay one request and its answer; False when the connection is over."""
        head = self._send_upstream(raw)
        while _status(head) in range(100, 200) and _status(head) != 101:
            self.client.sendall(head)  # interim answers pass unharmed
            head = self._send_upstream(b"")
        applying = _FaultInProgress(self.proxy, self.client, fault, self.number, index)
        target = _http_target(fault, len(head), self._body_length(head, method))
        position = 0
        try:
            for piece, last in self._answer(head, method):
                end = position + len(piece)
                at = None if applying.fired or not fault.active else target
                if last and not applying.fired and fault.active:
                    # not yet fired: fire on the last bytes at the latest
                    back = _tail_back(fault) if fault.where == "tail" else 0
                    latest = max(position, end - 1 - back)
                    at = latest if at is None else min(at, latest)
                if at is None or at >= end:
                    applying.send(piece)
                else:
                    applying.send(piece[: at - position])
                    applying.fire(at, "head" if at < len(head) else fault.where)
                    applying.send(piece[at - position :])
                position = end
        except BaseException:
            self.proxy._forget(self.upstream)
            self.upstream = self.upstream_reader = None
            raise
        headers = _headers(head)
        closing = "close" in headers.get("connection", "").lower()
        if closing or self._until_close(head, method):
            self.proxy._forget(self.upstream)
            self.upstream = self.upstream_reader = None
            _close(self.client)
            return False
        return True

    def _until_close(self, head: bytes, method: str) -> bool:
        return self._body_length(head, method) is None and not _is_chunked(head)

    @staticmethod
    def _body_length(head: bytes, method: str) -> int | None:
        """The body length when known from the head (0 for bodiless answers)."""
        status = _status(head)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return 0
        headers = _headers(head)
        if _is_chunked(head):
            return None
        value = headers.get("content-length")
        return int(value) if value is not None else None

    def _answer(self, head: bytes, method: str) -> Iterator[tuple[bytes, bool]]:
        """The answer piece by piece: (bytes, is this the last piece)."""
        reader = self.upstream_reader
        assert reader is not None
        length = self._body_length(head, method)
        if length == 0:
            yield head, True
            return
        yield head, False
        if length is not None:
            left = length
            while left:
                data = reader.take(min(left, _BLOCK))
                left -= len(data)
                yield data, left == 0
        elif _is_chunked(head):
            tracker = ChunkedTracker()
            while not tracker.done:
                data = reader.take(_BLOCK)
                used = tracker.feed(data)
                reader.buffer[:0] = data[used:]
                yield data[:used], tracker.done
        else:  # until the server closes; the last bytes wait for the close,
            # so that a fault can still land in them
            held = b""
            while reader.buffer or reader.fill():
                data = held + bytes(reader.buffer)
                reader.buffer.clear()
                data, held = data[:-_HELD_BACK], data[-_HELD_BACK:]
                if data:
                    yield data, False
            yield held, True


def _status(head: bytes) -> int:
    try:
        return int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise _Closed("not an HTTP answer") from None


def _is_chunked(head: bytes) -> bool:
    return "chunked" in _headers(head).get("transfer-encoding", "").lower()


def _tail_back(fault: Fault) -> int:
    return int(fault.position * 8)


def _http_target(fault: Fault, head_length: int, body_length: int | None) -> int | None:
    """The absolute offset of fault in an answer; None: decide at its end."""
    if not fault.active:
        return None
    if fault.offset is not None:
        return fault.offset
    if fault.where == "head" or body_length == 0:
        return int(fault.position * head_length)
    if body_length is None:  # chunked: the tail is found at the end
        if fault.where == "tail":
            return None
        return head_length + int(fault.position * 32768)
    if fault.where == "tail":
        return head_length + max(0, body_length - 1 - _tail_back(fault))
    return head_length + int(fault.position * body_length)


class _DimseConnection:
    """One association in DIMSE mode: bytes both ways, faults on the server's."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, number: int) -> None:
        self.proxy = proxy
        self.client = client
        self.number = number
        self.client_gone = threading.Event()

    def run(self) -> None:
        upstream = self.proxy._connect_upstream()
        with self.proxy._lock:
            self.proxy.requests += 1
        fault = self.proxy.schedule.fault_for(self.number, 0, "")
        pump = threading.Thread(
            target=self._pump,
            args=(upstream,),
            name=f"fault-proxy-{self.number}-up",
            daemon=True,
        )
        pump.start()
        try:
            self._relay(upstream, fault)
        finally:
            if fault.kind == "abort":
                with contextlib.suppress(OSError):
                    upstream.sendall(A_ABORT)
            self.proxy._forget(upstream)
            _close(self.client)
            pump.join(timeout=5)

    def _pump(self, upstream: socket.socket) -> None:
        """Client to server, as it comes."""
        try:
            while True:
                data = self.client.recv(_BLOCK)
                if not data:
                    break
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            self.client_gone.set()
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

    def _relay(self, upstream: socket.socket, fault: Fault) -> None:
        """Server to client, applying fault."""
        applying = _FaultInProgress(self.proxy, self.client, fault, self.number, 0)
        tracker = PDUTracker()
        position = 0
        offset = fault.offset or 0
        while True:
            try:
                data = upstream.recv(_BLOCK)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    self.client.shutdown(socket.SHUT_WR)
                self.client_gone.wait(self.proxy.pacing.cap)
                return
            starts = tracker.feed(data)
            end = position + len(data)
            at: int | None = None
            where = "stream"
            if fault.active and not applying.fired:
                if fault.kind == "abort":
                    at = next((start for start, _ in starts if start >= offset), None)
                elif offset < end:
                    at = offset
                release = next((s for s, kind in starts if kind == A_RELEASE_RP), None)
                if release is not None and (at is None or at > release):
                    at, where = release, "release"
            if at is None:
                applying.send(data)
            else:
                applying.send(data[: at - position])
                applying.fire(at, where, self.client_gone)
                applying.send(data[at - position :])
            position = end
