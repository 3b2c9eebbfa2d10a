"""HTTP plumbing of the emulator: requests, responses, routing, errors, streaming.

:class:`Router` is the whole application logic of the HTTP side and does no I/O:
it takes a :class:`Request` and returns a :class:`Response` (route lookup, 404 and
405, authentication, UID checks, error pages, 500 on a crash). :class:`HTTPServer`
is the standard library's threaded server (HTTP/1.1, keep-alive) around it; it
reads bodies up to a size limit, and writes responses with an exact
``Content-Length``, sending file parts straight from disk (``socket.sendfile``)
so that large instances never sit in memory.

Route paths are regular expressions on the raw (still percent-encoded) path, with
``{name}`` placeholders for one path segment each. Every placeholder is a DICOM
UID: it is percent-decoded and must be digits and dots, or the answer is 400
before any handler runs. Files are served only through :class:`FilePart` bodies
built from index records, never from a path in a request.

:class:`ConcurrencyCounter` counts the requests each client address has in
progress (from the request line read to the last byte of the answer written)
and the most it had at once, so that a test can check a client's concurrency
limit at the server, where it matters.

Error pages imitate the Jetty pages of Vitrea Connection (``<h2>HTTP ERROR 404
</h2>`` ...), for every protocol.
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import os
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qsl, unquote

from dicomtrolley.emulator.attributes import is_uid

logger = logging.getLogger("trolley.emulator")

#: Requests with a larger body are refused (413).
DEFAULT_MAX_BODY = 1024 * 1024
#: Seconds a connection may stay silent (between or inside requests).
DEFAULT_IDLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class FilePart:
    """A file sent as (part of) a response body, as it is on disk."""

    path: Path
    size: int


@dataclass
class Response:
    """Status, headers and body. A body is bytes, or a sequence of bytes and
    :class:`FilePart` pieces sent one after the other."""

    status: int = 200
    body: bytes | Sequence[bytes | FilePart] = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def pieces(self) -> list[bytes | FilePart]:
        return [self.body] if isinstance(self.body, bytes) else list(self.body)

    @property
    def length(self) -> int:
        return sum(
            piece.size if isinstance(piece, FilePart) else len(piece)
            for piece in self.pieces
        )


class HTTPError(Exception):
    """Raised by handlers to answer with an error page."""

    def __init__(
        self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


@dataclass
class Request:
    """One HTTP request as the handlers see it."""

    method: str
    path: str  # raw: percent-encoded as received, without the query
    query: list[tuple[str, str]]  # decoded name/value pairs, in order
    headers: Message
    body: bytes = b""
    base_url: str = ""  # scheme://host:port as the client addressed us
    client: str = ""
    params: dict[str, str] = field(default_factory=dict)  # decoded UIDs
    user: str | None = None

    def header(self, name: str, default: str = "") -> str:
        """A header value (several occurrences joined with ', ')."""
        values = self.headers.get_all(name) or []
        return ", ".join(str(value) for value in values) if values else default


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """A handler for one method and path pattern.

    ``auth``: the request needs a session cookie, bearer token or basic auth.
    ``basic_challenge``: a 401 carries ``WWW-Authenticate: Basic`` (for plain
    DICOMweb clients; MINT answers like Vitrea, with the page only).
    """

    method: str
    path: str
    handler: Handler
    auth: bool = True
    basic_challenge: bool = False

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.path)


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@functools.lru_cache(maxsize=256)
def _compile(path: str) -> re.Pattern[str]:
    return re.compile(_PLACEHOLDER.sub(r"(?P<\1>[^/]+)", path))


def error_page(status: int, message: str, path: str = "") -> bytes:
    """A Jetty-style HTML error page, as Vitrea Connection sends them."""
    reason = message or HTTPStatus(status).phrase
    where = f"<p>Problem accessing {html.escape(path)}. Reason:\n" if path else "<p>"
    return (
        "<html>\n<head>\n"
        '<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>\n'
        f"<title>Error {status} {html.escape(reason)}</title>\n"
        "</head>\n"
        f"<body><h2>HTTP ERROR {status}</h2>\n"
        f"{where}<pre>    {html.escape(reason)}</pre></p><hr>"
        "<i><small>dicomtrolley emulator</small></i><hr/>\n"
        "</body>\n</html>\n"
    ).encode()


def error_response(
    status: int,
    message: str,
    path: str = "",
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    return Response(
        status,
        error_page(status, message, path),
        "text/html;charset=utf-8",
        list(headers),
    )


class ConcurrencyCounter:
    """Requests in progress per client address, and the most seen at once.

    Thread-safe. ``with counter.request(address):`` around the handling of one
    request; :meth:`peak` is the largest number a client had in progress at
    the same time since the start (or the last :meth:`reset`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: Counter[str] = Counter()
        self._peak: Counter[str] = Counter()

    @contextlib.contextmanager
    def request(self, client: str) -> Iterator[None]:
        with self._lock:
            self._active[client] += 1
            if self._active[client] > self._peak[client]:
                self._peak[client] = self._active[client]
        try:
            yield
        finally:
            with self._lock:
                self._active[client] -= 1

    def active(self, client: str) -> int:
        """Requests of client in progress now."""
        with self._lock:
            return self._active[client]

    def peak(self, client: str | None = None) -> int:
        """The most requests client (None: any one client) had at once."""
        with self._lock:
            if client is None:
                return max(self._peak.values(), default=0)
            return self._peak[client]

    def peaks(self) -> dict[str, int]:
        """Client address -> the most requests it had in progress at once."""
        with self._lock:
            return {client: peak for client, peak in self._peak.items() if peak}

    def reset(self) -> None:
        """Forget the peaks (requests in progress stay counted)."""
        with self._lock:
            self._peak = Counter({client: n for client, n in self._active.items() if n})


class Router:
    """Finds the route of a request, checks it, runs its handler. No I/O.

    ``authenticate(request)`` returns the user name or None. ``before_request``
    runs before each handler (the index uses it to notice new files).
    ``concurrency`` counts the requests in progress per client (the HTTP server
    updates it around each request).
    """

    def __init__(
        self,
        routes: Sequence[Route],
        authenticate: Callable[[Request], str | None],
        *,
        realm: str = "dicomtrolley",
        before_request: Callable[[], Any] | None = None,
        bearer_challenge: bool = False,
        concurrency: ConcurrencyCounter | None = None,
    ) -> None:
        self.routes = list(routes)
        self.concurrency = (
            concurrency if concurrency is not None else ConcurrencyCounter()
        )
        self.bearer_challenge = bearer_challenge  # 401s ask for an OAuth2 token
        self.authenticate = authenticate
        self.realm = realm
        self.before_request = before_request

    def dispatch(self, request: Request) -> Response:
        try:
            return self._dispatch(request)
        except HTTPError as error:
            return error_response(
                error.status, error.message, request.path, error.headers
            )
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return error_response(500, "Request failed.", request.path)

    def _dispatch(self, request: Request) -> Response:
        found = [
            (route, match)
            for route in self.routes
            if (match := route.regex.fullmatch(request.path))
        ]
        if not found:
            raise HTTPError(404, "Not Found")
        method = "GET" if request.method == "HEAD" else request.method
        chosen = [(route, match) for route, match in found if route.method == method]
        if not chosen:
            allowed = sorted({route.method for route, _ in found})
            if "GET" in allowed:
                allowed.append("HEAD")
            raise HTTPError(405, "Method Not Allowed", [("Allow", ", ".join(allowed))])
        route, match = chosen[0]
        if route.auth:
            request.user = self.authenticate(request)
            if request.user is None:
                challenge = (
                    [("WWW-Authenticate", 'Bearer error="invalid_token"')]
                    if self.bearer_challenge
                    else [("WWW-Authenticate", f'Basic realm="{self.realm}"')]
                    if route.basic_challenge
                    else []
                )
                raise HTTPError(401, "you need to log in", challenge)
        for name, raw in match.groupdict().items():
            value = unquote(raw)
            if not is_uid(value):
                raise HTTPError(400, f"{value[:80]!r} is not a valid DICOM UID")
            request.params[name] = value
        if self.before_request is not None:
            self.before_request()
        return route.handler(request)


_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dicomtrolley-emulator"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def _handle(self) -> None:
        with self.server.router.concurrency.request(str(self.client_address[0])):
            self._handle_counted()

    def _handle_counted(self) -> None:
        raw_path, _, query = self.path.partition("?")
        body = self._read_body()
        if body is None:
            return
        host = self.headers.get("Host", "")
        request = Request(
            method=self.command,
            path=raw_path,
            query=parse_qsl(query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            base_url=f"http://{host}" if _HOST.fullmatch(host) else self.server.url,
            client=self.address_string(),
        )
        response = self.server.router.dispatch(request)
        stale = [
            piece
            for piece in response.pieces
            if isinstance(piece, FilePart) and not _same_size(piece)
        ]
        if stale:
            logger.warning("%s changed on disk since it was indexed", stale[0].path)
            self.server.on_stale()
            response = error_response(
                503, "data changed, try again", raw_path, [("Retry-After", "1")]
            )
        self._send(response)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _read_body(self) -> bytes | None:
        """The request body, or None after refusing it (411, 400, 413)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(411, "Length Required")
            return None
        text = self.headers.get("Content-Length", "0").strip() or "0"
        if not text.isdigit():
            self._refuse(400, "Bad Content-Length")
            return None
        length = int(text)
        if length > self.server.max_body:
            self._refuse(413, f"request body larger than {self.server.max_body} bytes")
            return None
        return self.rfile.read(length) if length else b""

    def _refuse(self, status: int, message: str) -> None:
        self.close_connection = True
        self._send(error_response(status, message, self.path.partition("?")[0]))

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        no_body = response.status in (204, 304) or response.status < 200
        if not no_body:
            self.send_header("Content-Length", str(response.length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if no_body or self.command == "HEAD":
            return
        for piece in response.pieces:
            if isinstance(piece, FilePart):
                self._send_file(piece)
            elif piece:
                self.wfile.write(piece)

    def _send_file(self, part: FilePart) -> None:
        with open(part.path, "rb") as stream:
            if os.fstat(stream.fileno()).st_size < part.size:
                raise ConnectionAbortedError(f"{part.path} shrank while being sent")
            sent = self.connection.sendfile(stream, 0, part.size)
        if sent != part.size:
            raise ConnectionAbortedError(f"sent {sent} of {part.size} bytes")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.info('%s "%s" %s', self.address_string(), self.requestline, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


def _same_size(part: FilePart) -> bool:
    try:
        return os.stat(part.path).st_size == part.size
    except OSError:
        return False


def _shutdown(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


class HTTPServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server for a Router; tracks open connections so that
    :meth:`close_connections` can end idle keep-alive connections at shutdown."""

    daemon_threads = True
    block_on_close = True
    request_queue_size = 64

    def __init__(
        self,
        host: str,
        port: int,
        router: Router,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        on_stale: Callable[[], Any] = lambda: None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.router = router
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.on_stale = on_stale
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._closing = False
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn): slow without DNS.
        TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    @property
    def url(self) -> str:
        host = self.server_name
        return (
            f"http://[{host}]:{self.server_port}"
            if ":" in host
            else (f"http://{host}:{self.server_port}")
        )

    def track(self, connection: socket.socket, active: bool) -> None:
        with self._connections_lock:
            if not active:
                self._connections.discard(connection)
                return
            self._connections.add(connection)
            closing = self._closing
        if closing:  # accepted just before close_connections(): end it too
            _shutdown(connection)

    def close_connections(self) -> None:
        """End every open connection (idle keep-alive ones included)."""
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections)
        for connection in connections:
            _shutdown(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug(
            "Connection from %s ended with an error", client_address[0], exc_info=True
        )


__all__ = [
    "ConcurrencyCounter",
    "FilePart",
    "HTTPError",
    "HTTPServer",
    "Request",
    "Response",
    "Route",
    "Router",
    "error_page",
    "error_response",
]
