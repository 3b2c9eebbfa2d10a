"""A small fake DICOMweb server for adapter tests: real HTTP on loopback, in-process.

:class:`FakeServer` is a :class:`http.server.ThreadingHTTPServer` on 127.0.0.1 and
a free port, served from a daemon thread while the ``with`` block runs. It answers
every request with what its routes say (a :class:`Reply`), and records each
request (method, path, query string, headers) in arrival order, plus how many
requests were being answered at once (:attr:`FakeServer.max_active`).

A :class:`Reply` describes an answer, good or broken::

    Reply(200, body, {"Content-Type": "application/dicom"})   a plain answer
    Reply(..., piece_size=100, delay=0.05)        body in pieces, with pauses
    Reply(..., cut_after=300)                     Content-Length of the whole body,
                                                  300 bytes sent, connection closed
    Reply(..., chunked=True, cut_after=300)       chunked, no terminating chunk
    Reply(..., wait=2.0)                          silence before the status line
    Reply(reset=True)                             connection reset, no answer

Routes are either one function ``(request) -> Reply`` or a dict from path (no
query string) to a Reply or such a function; unknown paths get 404.

The helpers at the end build bodies: :func:`dicom_file` (a small valid PS3.10
file), :func:`multipart_body` and :func:`multipart_reply` (multipart/related with
a chosen boundary, quoted or not), :func:`json_reply` and :func:`html_reply`.

:class:`RecordingProgress` is a :class:`dicomtrolley.download.Progress` that
remembers every call, to check what a download shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from requests.structures import CaseInsensitiveDict

__all__ = [
    "FakeServer",
    "Handler",
    "Recorded",
    "RecordingProgress",
    "Reply",
    "dicom_file",
    "html_reply",
    "json_reply",
    "multipart_body",
    "multipart_content_type",
    "multipart_reply",
    "unused_url",
]


@dataclass(frozen=True)
class Recorded:
    """One request as the fake server received it."""

    number: int  # arrival order, from 0
    method: str
    path: str  # as sent, still percent-encoded
    query: str  # the raw query string, without "?"
    headers: CaseInsensitiveDict[str]

    @property
    def params(self) -> list[tuple[str, str]]:
        """The decoded query parameters, in order, repeated names kept."""
        return parse_qsl(self.query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        """The first decoded value of a query parameter, or None."""
        return next((value for key, value in self.params if key == name), None)

    @property
    def target(self) -> str:
        """Path and query string as sent."""
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass(frozen=True)
class Reply:
    """An answer for the fake server to send, possibly a broken one.

    Parameters
    ----------
    status, body, headers:
        The answer. Content-Length is added unless given, chunked or 204/304.
    piece_size:
        Send the body in pieces of this many bytes (0: all at once).
    delay:
        Seconds to pause after each piece but the last.
    cut_after:
        Send only this many bytes of the body, then close the connection. With
        Content-Length (the default) the header still announces the whole body;
        with ``chunked`` the terminating chunk is never sent.
    chunked:
        Use ``Transfer-Encoding: chunked``.
    wait:
        Seconds of silence before the status line (longer than the client's read
        timeout makes it time out).
    reset:
        Answer nothing: close the connection with a TCP reset.
    answer_cut_after:
        Send only this many bytes of the whole answer, status line and header
        block included, then close the connection.
    unframed:
        Send neither Content-Length nor chunked encoding: the body ends where
        the connection is closed (HTTP/1.0 style).
    """

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    piece_size: int = 0
    delay: float = 0.0
    cut_after: int | None = None
    chunked: bool = False
    wait: float = 0.0
    reset: bool = False
    answer_cut_after: int | None = None
    unframed: bool = False

    def head(self) -> bytes:
        """Status line and header block as they go on the wire (framed as sent)."""
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {self.status} {reason}".rstrip()]
        names = {name.lower() for name in self.headers}
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if self.unframed:
            lines.append("Connection: close")
        elif self.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif "content-length" not in names and self.status not in (204, 304):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def wire(self) -> bytes:
        """The whole answer as bytes (body not chunked: for unframed/cut answers)."""
        return self.head() + self.body

    def pieces(self) -> Iterator[bytes]:
        """The body bytes to send, piece by piece, after any cut."""
        body = self.body if self.cut_after is None else self.body[: self.cut_after]
        size = self.piece_size or len(body) or 1
        for start in range(0, len(body), size):
            yield body[start : start + size]


Handler = Callable[[Recorded], Reply]
Routes = Handler | Mapping[str, Reply | Handler]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer

    def shutdown_request(self, request: Any) -> None:
        # A connection to reset gets no FIN first: with SO_LINGER 0, close() sends RST.
        if self.fake._take_reset(request):
            self.close_request(request)
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (timeouts, cut answers) is expected here


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle and
        # delayed ACKs add 40 ms to every answer on a kept-alive connection
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def _answer(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = urlsplit(self.path)
        with fake._active():
            request = fake._record(
                self.command, parts.path, parts.query, self.headers.items()
            )
            try:
                reply = fake._route(request)
            except Exception as error:  # a bug in a test's handler: fail that test
                fake.errors.append(error)
                reply = Reply(500, b"fake server handler failed")
            try:
                self._send(reply, fake)
            except (ConnectionError, TimeoutError):
                self.close_connection = True  # the client gave up on this one

    def _send(self, reply: Reply, fake: FakeServer) -> None:
        if reply.wait and fake._stopping.wait(reply.wait):
            self.close_connection = True
            return
        if reply.reset:
            fake._mark_reset(self.connection)
            self.close_connection = True
            return
        if reply.answer_cut_after is not None or reply.unframed:
            wire = reply.wire()
            if reply.answer_cut_after is not None:
                wire = wire[: reply.answer_cut_after]
            self.wfile.write(wire)
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(reply.status)
        names = {name.lower() for name in reply.headers}
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif "content-length" not in names and reply.status not in (204, 304):
            self.send_header("Content-Length", str(len(reply.body)))
        if reply.cut_after is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        first = True
        for piece in reply.pieces():
            if not first and reply.delay and fake._stopping.wait(reply.delay):
                break
            first = False
            if reply.chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
            self.wfile.flush()
        if reply.cut_after is not None:
            self.close_connection = True
        elif reply.chunked:
            self.wfile.write(b"0\r\n\r\n")


class FakeServer:
    """An HTTP server on 127.0.0.1 that answers from routes and records requests.

    Use as a context manager; the server runs in a daemon thread inside the
    ``with`` block. On leaving it, open connections are closed, pauses of replies
    are cut short, and an exception raised by a route handler fails the test.
    """

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.errors: list[BaseException] = []
        self.max_active = 0
        self._requests: list[Recorded] = []
        self._active_count = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._resets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- what tests use -------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[Recorded]:
        """The requests received for one path."""
        return [request for request in self.requests if request.path == path]

    def __enter__(self) -> FakeServer:
        server = _Server(("127.0.0.1", 0), _RequestHandler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-dicomweb",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # wake handlers waiting on idle keep-alives
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self.errors and exc_type is None:
            raise AssertionError(
                f"fake server route handler failed: {self.errors[0]!r}"
            ) from self.errors[0]

    # -- used by the request handler -----------------------------------------

    def _record(self, method: str, path: str, query: str, headers: Any) -> Recorded:
        with self._lock:
            request = Recorded(
                number=len(self._requests),
                method=method,
                path=path,
                query=query,
                headers=CaseInsensitiveDict(dict(headers)),
            )
            self._requests.append(request)
        return request

    def _route(self, request: Recorded) -> Reply:
        routes = self.routes
        if isinstance(routes, Mapping):
            found = routes.get(request.path)
            if found is None:
                return Reply(404, b"no such resource", {"Content-Type": "text/plain"})
            return found if isinstance(found, Reply) else found(request)
        return routes(request)

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        """Count a request as being answered while the block runs."""
        with self._lock:
            self._active_count += 1
            self.max_active = max(self.max_active, self._active_count)
        try:
            yield
        finally:
            with self._lock:
                self._active_count -= 1

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _mark_reset(self, connection: socket.socket) -> None:
        connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        with self._lock:
            self._resets.add(connection)

    def _take_reset(self, connection: socket.socket) -> bool:
        with self._lock:
            if connection in self._resets:
                self._resets.discard(connection)
                return True
        return False


def tree(folder: Path) -> list[Path]:
    """Every path below folder, except dicomtrolley's own records (the
    ``.dicomtrolley`` folder of the index, and ``manifest.jsonl``): what a
    download put there."""
    return [
        p
        for p in folder.rglob("*")
        if ".dicomtrolley" not in p.parts and p != folder / "manifest.jsonl"
    ]


def unused_url() -> str:
    """The URL of a loopback port where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- #
# Bodies
# --------------------------------------------------------------------------- #


def dicom_file(
    study_uid: str, series_uid: str, sop_uid: str, *, pixel_bytes: int = 512
) -> bytes:
    """A small, valid PS3.10 file (Explicit VR Little Endian) with these UIDs.

    The pixel data is noise derived from sop_uid: different instances differ in
    their bytes, not only in their UIDs, and it does not compress.
    """
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = "FAKE"
    ds.PatientName = "Fake^Patient"
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 1
    ds.Columns = pixel_bytes // 2
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    blocks = (pixel_bytes + 31) // 32
    noise = b"".join(
        hashlib.sha256(f"{sop_uid}/{n}".encode()).digest() for n in range(blocks)
    )
    pixels = noise[: (pixel_bytes // 2) * 2]
    ds.add_new(0x7FE00010, "OW", pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def multipart_content_type(
    boundary: str, *, quoted: bool = True, part_type: str = "application/dicom"
) -> str:
    """``multipart/related; type="application/dicom"; boundary=...``."""
    shown = f'"{boundary}"' if quoted else boundary
    return f'multipart/related; type="{part_type}"; boundary={shown}'


def multipart_body(
    parts: Sequence[bytes],
    boundary: str,
    *,
    part_type: str = "application/dicom",
    part_types: Sequence[str] | None = None,
) -> bytes:
    """A multipart/related body (RFC 2046 5.1, CRLF line ends) holding parts.

    part_types gives each part its own Content-Type instead of part_type.
    """
    types = list(part_types) if part_types is not None else [part_type] * len(parts)
    delimiter = b"--" + boundary.encode("ascii")
    out = bytearray()
    for content, content_type in zip(parts, types, strict=True):
        out += delimiter + b"\r\n"
        out += b"Content-Type: " + content_type.encode("ascii") + b"\r\n"
        out += b"Content-Length: " + str(len(content)).encode("ascii") + b"\r\n\r\n"
        out += content + b"\r\n"
    out += delimiter + b"--\r\n"
    return bytes(out)


def multipart_reply(
    parts: Sequence[bytes],
    boundary: str = "fake-DICOM-boundary-1234",
    *,
    quoted: bool = True,
    part_types: Sequence[str] | None = None,
    **reply: Any,
) -> Reply:
    """A 200 multipart/related answer holding parts (other Reply fields in reply)."""
    return Reply(
        body=multipart_body(parts, boundary, part_types=part_types),
        headers={"Content-Type": multipart_content_type(boundary, quoted=quoted)},
        **reply,
    )


def json_reply(payload: Any, status: int = 200, **reply: Any) -> Reply:
    """A DICOM JSON answer (``application/dicom+json``)."""
    return Reply(
        status=status,
        body=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/dicom+json"},
        **reply,
    )


def html_reply(status: int, title: str, text: str = "") -> Reply:
    """An HTML page, as proxies and some PACS answer errors (even with 200)."""
    page = (
        f"<html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p></body></html>"
    )
    return Reply(
        status=status,
        body=page.encode("utf-8"),
        headers={"Content-Type": "text/html; charset=utf-8"},
    )


class RecordingProgress:
    """A thread-safe Progress that records every call as (method, value).

    ``mark(label)`` adds an entry of its own, e.g. when a request goes out.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | str]] = []
        self._lock = threading.Lock()

    def _record(self, method: str, value: int | str) -> None:
        with self._lock:
            self.calls.append((method, value))

    def add_total(self, instances: int = 0, nbytes: int = 0) -> None:
        if instances:
            self._record("instances_total", instances)
        if nbytes:
            self._record("bytes_total", nbytes)

    def advance_bytes(self, nbytes: int) -> None:
        self._record("advance", nbytes)

    def instance_done(self, nbytes: int = 0, skipped: bool = False) -> None:
        self._record("skipped" if skipped else "done", nbytes)

    def mark(self, label: str) -> None:
        self._record("mark", label)

    def values(self, method: str) -> list[int]:
        """The values of every call to method, in order."""
        with self._lock:
            return [v for m, v in self.calls if m == method and isinstance(v, int)]

    def total(self, method: str) -> int:
        return sum(self.values(method))
