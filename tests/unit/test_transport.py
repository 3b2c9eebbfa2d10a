"""Timeout, Retry and HttpTransport, against a small HTTP server in this process."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from requests.adapters import HTTPAdapter

from dicomtrolley.exceptions import (
    ClientHTTPError,
    DICOMTrolleyAuthError,
    DICOMTrolleyConnectionError,
    DICOMTrolleyError,
    DICOMTrolleyTimeoutError,
    HTTPStatusError,
    PermanentError,
    ServerHTTPError,
    TransientError,
    redact_url,
)
from dicomtrolley.transport import (
    BearerAuth,
    HttpTransport,
    Retry,
    Timeout,
    ensure_pool_size,
    map_requests_error,
    new_session,
)

# --------------------------------------------------------------------------- #
# a scripted HTTP server
# --------------------------------------------------------------------------- #


@dataclass
class Answer:
    """One scripted answer. ``stall`` seconds before headers, ``stall_body`` after."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    stall: float = 0.0
    stall_body: float = 0.0


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.scripts: dict[str, list[Answer]] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def script(self, path: str, *answers: Answer) -> str:
        """Answer requests for path in this order; the last answer repeats."""
        self.scripts[path] = list(answers)
        return self.url + path

    def next_answer(self, path: str) -> Answer:
        self.hits[path] += 1
        answers = self.scripts.get(path) or [Answer(404, b"no script")]
        return answers.pop(0) if len(answers) > 1 else answers[0]


class Handler(BaseHTTPRequestHandler):
    server: ScriptedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        path = self.path.split("?")[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.requests.append((self.command, self.path, dict(self.headers)))
        answer = self.server.next_answer(path)
        if answer.stall and self.server.stop.wait(answer.stall):
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body) + 10))
        self.end_headers()
        if answer.stall_body:
            self.wfile.write(answer.body)
            self.wfile.flush()
            self.server.stop.wait(answer.stall_body)
            return
        self.wfile.write(answer.body + b"\n" * 10)

    do_GET = _answer
    do_POST = _answer
    do_HEAD = _answer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """A scripted HTTP/1.1 server on 127.0.0.1 and a free port; stopped after."""
    httpd = ScriptedServer()
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield httpd
    finally:
        httpd.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records the sleeps between retries instead of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr("time.sleep", recorded.append)
    return recorded


FAST = Retry(total=2, backoff_factor=0.1, backoff_jitter=0.0)


@pytest.fixture
def http() -> Iterator[HttpTransport]:
    session = requests.Session()
    try:
        yield HttpTransport(session, timeout=Timeout(2, 2), retry=FAST)
    finally:
        session.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --------------------------------------------------------------------------- #
# Timeout
# --------------------------------------------------------------------------- #


def test_timeout_defaults_are_on() -> None:
    timeout = Timeout()
    assert timeout.connect is not None and timeout.connect > 0
    assert timeout.read is not None and timeout.read > 0
    assert timeout.as_requests() == (timeout.connect, timeout.read)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Timeout()),
        (5, Timeout(5.0, 5.0)),
        (2.5, Timeout(2.5, 2.5)),
        ((3, 60), Timeout(3, 60)),
        ((3, None), Timeout(3, None)),
        (Timeout(1, 2), Timeout(1, 2)),
    ],
)
def test_timeout_coerce(value: object, expected: Timeout) -> None:
    assert Timeout.coerce(value) == expected  # type: ignore[arg-type]


def test_timeout_is_immutable() -> None:
    with pytest.raises(FrozenInstanceError):
        Timeout().read = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- #
# Retry
# --------------------------------------------------------------------------- #


def test_retry_increment_returns_a_new_object_with_history() -> None:
    retry = Retry(total=1)
    first = retry.increment("GET", "http://u:secret@host/a", status=503)
    assert retry.total == 1 and retry.history == ()
    assert first.total == 0 and not first.exhausted
    (entry,) = first.history
    assert entry.method == "GET"
    assert entry.status == 503
    assert entry.url == "http://host/a"
    second = first.increment("GET", "http://host/a", error=OSError("reset"))
    assert second.exhausted
    assert [h.error for h in second.history] == [None, "reset"]
    with pytest.raises(FrozenInstanceError):
        retry.total = 5  # type: ignore[misc]


def test_retry_zero_means_one_try() -> None:
    assert not Retry(total=0).exhausted
    assert Retry(total=0).increment("GET", None).exhausted


def test_retry_methods_and_statuses() -> None:
    retry = Retry()
    assert retry.is_retryable_method("get")
    assert not retry.is_retryable_method("POST")
    assert retry.is_retryable_status("GET", 503)
    assert retry.is_retryable_status("GET", 429)
    assert retry.is_retryable_status("GET", 500)
    assert not retry.is_retryable_status("GET", 501)
    assert not retry.is_retryable_status("GET", 404)
    assert not retry.is_retryable_status("POST", 503)


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    retry = Retry(total=10, backoff_factor=1.0, backoff_max=5.0, backoff_jitter=0.0)
    assert retry.backoff_time() == 0.0
    times = []
    for _ in range(5):
        retry = retry.increment("GET", None)
        times.append(retry.backoff_time())
    assert times == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert Retry(backoff_factor=0).increment("GET", None).backoff_time() == 0.0


def test_backoff_jitter_stays_within_bounds() -> None:
    retry = Retry(backoff_factor=1.0, backoff_jitter=0.5, backoff_max=30).increment(
        "GET", None
    )
    values = {retry.backoff_time() for _ in range(50)}
    assert all(1.0 <= v <= 1.5 for v in values)
    assert len(values) > 1
    capped = Retry(backoff_factor=1.0, backoff_jitter=10, backoff_max=2).increment(
        "GET", None
    )
    assert all(capped.backoff_time() <= 2 for _ in range(50))


def response_with(headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = 503
    response.headers.update(headers)
    return response


def test_retry_after_in_seconds() -> None:
    retry = Retry(backoff_max=30)
    assert retry.retry_after(response_with({"Retry-After": "7"})) == 7.0
    assert retry.retry_after(response_with({"Retry-After": "3600"})) == 30.0
    assert retry.retry_after(response_with({})) is None
    assert retry.retry_after(None) is None
    ignoring = Retry(respect_retry_after=False)
    assert ignoring.retry_after(response_with({"Retry-After": "7"})) is None


def test_retry_after_as_http_date() -> None:
    retry = Retry(backoff_max=120)
    later = datetime.now(timezone.utc) + timedelta(seconds=60)
    delay = retry.retry_after(
        response_with({"Retry-After": format_datetime(later, usegmt=True)})
    )
    assert delay is not None and 55 <= delay <= 61
    past = format_datetime(datetime(2000, 1, 1, tzinfo=timezone.utc), usegmt=True)
    assert retry.retry_after(response_with({"Retry-After": past})) == 0.0


def test_retry_after_date_without_zone_is_utc() -> None:
    later = datetime.now(timezone.utc) + timedelta(seconds=60)
    header = later.strftime("%a, %d %b %Y %H:%M:%S -0000")
    delay = Retry(backoff_max=120).retry_after(response_with({"Retry-After": header}))
    assert delay is not None and 55 <= delay <= 61


@pytest.mark.parametrize("header", ["soon", "Mon, 99 Foo 2020", "-5", "1.5"])
def test_malformed_retry_after_falls_back_to_backoff(header: str) -> None:
    assert Retry().retry_after(response_with({"Retry-After": header})) is None


def test_sleep_prefers_retry_after(sleeps: list[float]) -> None:
    retry = Retry(backoff_factor=1, backoff_jitter=0).increment("GET", None)
    retry.sleep(response_with({"Retry-After": "3"}))
    retry.sleep(response_with({}))
    Retry(backoff_factor=1).sleep()  # no history: no sleep at all
    assert sleeps == [3.0, 1.0]


# --------------------------------------------------------------------------- #
# HttpTransport against the scripted server
# --------------------------------------------------------------------------- #


def test_ok_answer(server: ScriptedServer, http: HttpTransport) -> None:
    url = server.script("/a", Answer(200, b"hello"))
    response = http.get(url, params={"x": "1"}, headers={"Accept": "text/plain"})
    assert response.status_code == 200
    assert response.content.startswith(b"hello")
    method, path, headers = server.requests[0]
    assert (method, path) == ("GET", "/a?x=1")
    assert headers["Accept"] == "text/plain"


def test_503_then_200_is_retried(
    server: ScriptedServer, http: HttpTransport, sleeps: list[float]
) -> None:
    url = server.script("/busy", Answer(503, b"busy"), Answer(200, b"fine"))
    response = http.get(url)
    assert response.content.startswith(b"fine")
    assert server.hits["/busy"] == 2
    assert sleeps == [0.1]


def test_retry_after_from_the_server_is_honoured(
    server: ScriptedServer, http: HttpTransport, sleeps: list[float]
) -> None:
    url = server.script(
        "/later", Answer(429, headers={"Retry-After": "4"}), Answer(200)
    )
    assert http.get(url).status_code == 200
    assert sleeps == [4.0]


def test_503_forever_gives_server_error_after_total_plus_one_tries(
    server: ScriptedServer, http: HttpTransport, sleeps: list[float]
) -> None:
    url = server.script("/down", Answer(503, b"<h1>Service Unavailable</h1>"))
    with pytest.raises(ServerHTTPError) as info:
        http.get(url)
    assert server.hits["/down"] == FAST.total + 1
    assert len(sleeps) == FAST.total
    assert sleeps == sorted(sleeps)
    error = info.value
    assert error.status_code == 503
    assert isinstance(error, TransientError) and isinstance(error, HTTPStatusError)
    assert "Service Unavailable" in str(error)


def test_500_is_retried_by_default_and_named_in_the_error(
    server: ScriptedServer, http: HttpTransport, sleeps: list[float]
) -> None:
    """A ServerHTTPError is transient, so the default policy tries 500 again."""
    url = server.script("/boom", Answer(500, b"Request failed"))
    with pytest.raises(ServerHTTPError, match="Request failed"):
        http.get(url)
    assert server.hits["/boom"] == FAST.total + 1


def test_404_is_a_client_error_and_not_retried(
    server: ScriptedServer, http: HttpTransport, sleeps: list[float]
) -> None:
    url = server.script("/missing", Answer(404, b"not here"))
    with pytest.raises(ClientHTTPError) as info:
        http.get(url, what="WADO-URI", uids=("1.2", "1.2.3"))
    assert server.hits["/missing"] == 1
    assert sleeps == []
    error = info.value
    assert isinstance(error, PermanentError)
    assert error.status_code == 404
    assert error.uids == ("1.2", "1.2.3")
    assert error.url == url
    text = str(error)
    assert "404" in text
    assert url in text
    assert text.startswith("WADO-URI: ")
    assert "not here" in text


def test_ok_statuses_are_returned(server: ScriptedServer, http: HttpTransport) -> None:
    url = server.script("/gone", Answer(404))
    assert http.get(url, ok_statuses=(404,)).status_code == 404


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_an_auth_error(
    server: ScriptedServer, http: HttpTransport, status: int
) -> None:
    url = server.script("/secure", Answer(status, b"you need to log in"))
    with pytest.raises(DICOMTrolleyAuthError) as info:
        http.get(url)
    assert info.value.status_code == status
    assert "you need to log in" in str(info.value)
    assert server.hits["/secure"] == 1


def test_html_error_page_is_summarised_without_credentials(
    server: ScriptedServer, http: HttpTransport
) -> None:
    page = (
        b"<html><head><title>Vitrea Error</title><style>body{color:red}</style>"
        b"<script>var x = 1;</script></head><body><h1>Request failed</h1>"
        b"<p>Please try again</p></body></html>"
    )
    server.script("/mint/studies", Answer(500, page))
    url = server.url.replace("http://", "http://alice:s3cr3t@") + "/mint/studies"
    with pytest.raises(ServerHTTPError) as info:
        http.get(url)
    text = str(info.value)
    assert "Vitrea Error" in text
    assert "Request failed" in text
    assert "Please try again" in text
    assert "<title>" not in text and "<h1>" not in text
    assert "color:red" not in text and "var x" not in text
    assert "s3cr3t" not in text and "alice" not in text
    assert "s3cr3t" not in repr(info.value.args)
    assert info.value.url == server.url + "/mint/studies"
    # the server did get the credentials, as basic auth
    assert server.requests[0][2]["Authorization"].startswith("Basic ")


def test_long_error_bodies_are_shortened(
    server: ScriptedServer, http: HttpTransport
) -> None:
    url = server.script("/long", Answer(400, b"x" * 10_000))
    with pytest.raises(ClientHTTPError) as info:
        http.get(url)
    assert len(str(info.value)) < 500


def test_connection_refused_is_a_transient_connection_error(
    http: HttpTransport, sleeps: list[float]
) -> None:
    url = f"http://bob:hunter2@127.0.0.1:{closed_port()}/wado?x=1"
    with pytest.raises(DICOMTrolleyConnectionError) as info:
        http.get(url)
    error = info.value
    assert isinstance(error, TransientError)
    assert not isinstance(error, DICOMTrolleyTimeoutError)
    assert "hunter2" not in str(error)
    assert "refused" in str(error).lower()
    assert len(sleeps) == FAST.total  # GET is retried


def test_read_timeout_before_headers(server: ScriptedServer) -> None:
    url = server.script("/slow", Answer(200, stall=5))
    slow = HttpTransport(requests.Session(), timeout=Timeout(2, 0.2), retry=Retry(0))
    started = time.monotonic()
    with pytest.raises(DICOMTrolleyTimeoutError) as info:
        slow.get(url)
    assert time.monotonic() - started < 3
    assert isinstance(info.value, DICOMTrolleyConnectionError)
    assert isinstance(info.value, TransientError)
    assert "timed out" in str(info.value)


def test_read_timeout_in_the_body(server: ScriptedServer) -> None:
    """requests reports this one as a ConnectionError; it is still a timeout."""
    url = server.script("/stall", Answer(200, b"partial", stall_body=5))
    slow = HttpTransport(requests.Session(), timeout=Timeout(2, 0.2), retry=Retry(0))
    with pytest.raises(DICOMTrolleyTimeoutError):
        slow.get(url)


def test_timeouts_are_retried_for_get(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    url = server.script("/flaky", Answer(200, stall=5), Answer(200, b"ok now"))
    http = HttpTransport(requests.Session(), timeout=Timeout(2, 0.2), retry=FAST)
    assert http.get(url).content.startswith(b"ok now")
    assert server.hits["/flaky"] == 2


def test_post_is_not_retried(
    server: ScriptedServer, http: HttpTransport, sleeps: list[float]
) -> None:
    url = server.script("/rad69", Answer(503), Answer(200))
    with pytest.raises(ServerHTTPError):
        http.request("POST", url, data=b"<soap/>")
    assert server.hits["/rad69"] == 1
    assert server.requests[0][0] == "POST"
    with pytest.raises(DICOMTrolleyConnectionError):
        http.request("POST", f"http://127.0.0.1:{closed_port()}/rad69", data=b"x")
    assert sleeps == []


def test_post_may_be_retried_when_allowed(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    url = server.script("/rad69", Answer(503), Answer(200))
    retry = Retry(total=1, backoff_jitter=0, allowed_methods=frozenset({"POST"}))
    http = HttpTransport(requests.Session(), retry=retry)
    assert http.request("post", url, data=b"x").status_code == 200
    assert server.hits["/rad69"] == 2


def test_unsendable_request_is_permanent(http: HttpTransport) -> None:
    with pytest.raises(PermanentError) as info:
        http.get("nonsense://host/path")
    assert isinstance(info.value, DICOMTrolleyError)
    assert not isinstance(info.value, TransientError)


# --------------------------------------------------------------------------- #
# sessions and pools
# --------------------------------------------------------------------------- #


def pool_sizes(session: requests.Session) -> list[int]:
    return [
        adapter.poolmanager.connection_pool_kw["maxsize"]  # type: ignore[attr-defined]
        for adapter in session.adapters.values()
    ]


def test_ensure_pool_size_grows_but_never_shrinks() -> None:
    session = requests.Session()
    assert pool_sizes(session) == [10, 10]
    HttpTransport(session).ensure_pool_size(32)
    assert pool_sizes(session) == [32, 32]
    ensure_pool_size(session, 4)
    assert pool_sizes(session) == [32, 32]


def test_ensure_pool_size_leaves_custom_adapters_alone() -> None:
    class Custom(HTTPAdapter):
        pass

    session = requests.Session()
    session.mount("https://", Custom(pool_maxsize=3))
    ensure_pool_size(session, 20)
    assert session.adapters["https://"].poolmanager.connection_pool_kw["maxsize"] == 3  # type: ignore[attr-defined]
    assert session.adapters["http://"].poolmanager.connection_pool_kw["maxsize"] == 20  # type: ignore[attr-defined]


def test_grown_pool_still_works(server: ScriptedServer) -> None:
    url = server.script("/a", Answer(200, b"pooled"))
    session = new_session(pool_size=16)
    assert pool_sizes(session) == [16, 16]
    assert HttpTransport(session).get(url).content.startswith(b"pooled")


def test_new_session_and_bearer_auth(server: ScriptedServer) -> None:
    url = server.script("/token", Answer(200))
    session = new_session(BearerAuth("tok3n"), verify=False)
    assert session.verify is False
    assert "tok3n" not in repr(session.auth)
    HttpTransport(session).get(url)
    assert server.requests[0][2]["Authorization"] == "Bearer tok3n"


# --------------------------------------------------------------------------- #
# redact_url
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://u:p@host:8080/a?b=1#frag", "http://host:8080/a?b=1"),
        ("https://user@host/a", "https://host/a"),
        ("https://host/a@b", "https://host/a@b"),
        ("http://a:b@c@host/", "http://host/"),
        ("", ""),
        (None, None),
    ],
)
def test_redact_url(url: str | None, expected: str | None) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://pacs/wado?requestType=WADO&password=s3cret&user=bob",
            "https://pacs/wado?requestType=WADO&password=***&user=bob",
        ),
        ("https://pacs/rs?access_token=abc", "https://pacs/rs?access_token=***"),
        (
            "https://pacs/rs?token=t1&studyUID=1.2&api_key=k1&apikey=k2&key=k3",
            "https://pacs/rs?token=***&studyUID=1.2&api_key=***&apikey=***&key=***",
        ),
        (
            "http://h/w?secret=a&pass=b&pwd=c&auth=d&session=e&sessionid=f",
            "http://h/w?secret=***&pass=***&pwd=***&auth=***&session=***&sessionid=***",
        ),
        # names in any case and spelling, values holding "=" and "%"
        (
            "http://h/w?PassWord=x%3Dy&Access-Token=a=b&X-Api-Key=z&client_secret=s",
            "http://h/w?PassWord=***&Access-Token=***&X-Api-Key=***&client_secret=***",
        ),
        # percent-encoded and plus-encoded names
        (
            "http://h/w?%70assword=x&access%5Ftoken=y&api+key=z",
            "http://h/w?%70assword=***&access%5Ftoken=***&api+key=***",
        ),
        # repeated keys: every value goes, order and neighbours stay
        (
            "http://h/w?token=1&objectUID=2&token=3&contentType=application%2Fdicom",
            "http://h/w?token=***&objectUID=2&token=***"
            "&contentType=application%2Fdicom",
        ),
        # keys without a value have nothing to hide
        ("http://h/w?token&password=&debug", "http://h/w?token&password=&debug"),
        # semicolons between parameters, as some old servers use
        ("http://h/w?a=1;password=2", "http://h/w?a=1;password=***"),
        # path parameters
        (
            "https://pacs/wado;jsessionid=ABC123?objectUID=1.2",
            "https://pacs/wado;jsessionid=***?objectUID=1.2",
        ),
        (
            "https://pacs/a;v=2/b;JSESSIONID=x;y=1/c",
            "https://pacs/a;v=2/b;JSESSIONID=***;y=1/c",
        ),
        # credentials in both places, and a fragment that may hold a token too
        (
            "https://bob:pw@pacs/wado?password=pw&x=1#access_token=t",
            "https://pacs/wado?password=***&x=1",
        ),
        # names that merely look alike are kept
        (
            "http://h/w?keyword=k&passage=p&tokens_left=3&studyUID=1.2",
            "http://h/w?keyword=k&passage=p&tokens_left=3&studyUID=1.2",
        ),
    ],
)
def test_redact_url_hides_secrets_in_query_and_path(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_errors_never_show_a_password_from_the_query_string() -> None:
    error = ServerHTTPError(
        "busy", url="https://pacs/wado?objectUID=1.2&password=s3cret", status_code=503
    )
    assert "s3cret" not in str(error)
    assert error.url == "https://pacs/wado?objectUID=1.2&password=***"


def test_connection_error_reasons_never_show_the_query_string() -> None:
    url = "https://pacs.example/wado?objectUID=1.2&password=s3cret"
    error = requests.exceptions.SSLError(
        "HTTPSConnectionPool(host='pacs.example', port=443): Max retries exceeded "
        "with url: /wado?objectUID=1.2&password=s3cret (Caused by SSLError("
        "SSLCertVerificationError(1, 'certificate verify failed')))"
    )
    mapped = map_requests_error(error, "GET", url, "WADO-URI")
    assert "s3cret" not in str(mapped)
    assert "with url: <url>" in str(mapped)
    assert "certificate verify failed" in str(mapped)
