"""VitreaAuth against a fake Vitrea login server on loopback.

The fake keeps server-side sessions: ``POST /login`` with the right X-Userid,
X-Password and X-Realm headers opens one and sets its JSESSIONID cookie; any
other path answers 401 without a live session cookie, else 200 (a POST gets its
body echoed). Tests can expire every session, make logins slow, or make the
server refuse everything. Every request is recorded with its body.
"""

from __future__ import annotations

import io
import logging
import pickle
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from dicomtrolley import auth as auth_module
from dicomtrolley.auth import VitreaAuth, create_session
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyConnectionError,
    DICOMTrolleyTimeoutError,
)
from dicomtrolley.transport import HttpTransport, Timeout
from tests.fakes import unused_url

USER = "alice"
PASSWORD = "s3cret-Pa55word"
REALM = "DefaultSystemRealm"


@dataclass(frozen=True)
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    query: str
    headers: CaseInsensitiveDict[str]
    body: bytes

    @property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        jar.load(self.headers.get("Cookie", ""))
        return {name: morsel.value for name, morsel in jar.items()}


class FakeVitrea:
    """A Vitrea-like login server; use as a context manager."""

    def __init__(self) -> None:
        self.users = {USER: PASSWORD}
        self.realm = REALM
        self.login_delay = 0.0  # seconds before answering a login
        self.refuse_all = False  # resources answer 401 even to a live session
        self.login_status: int | None = None  # force this status on every login
        self.echo_password = False  # a failed login's page repeats the password
        self.seen: list[Seen] = []
        self.sessions: set[str] = set()
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def login_url(self) -> str:
        return f"{self.url}/login"

    @property
    def logins(self) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.path == "/login"]

    @property
    def resources(self) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.path != "/login"]

    def expire_sessions(self) -> None:
        with self.lock:
            self.sessions.clear()

    def __enter__(self) -> FakeVitrea:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body are separate writes: Nagle would delay each
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._answer(self)

            do_POST = do_GET
            do_PUT = do_GET

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- serving -------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        path, _, query = handler.path.partition("?")
        seen = Seen(
            handler.command,
            path,
            query,
            CaseInsensitiveDict(dict(handler.headers.items())),
            body,
        )
        with self.lock:
            self.seen.append(seen)
        if path == "/login":
            self._login(handler, seen)
            return
        with self.lock:
            live = seen.cookies.get("JSESSIONID") in self.sessions
        if live and not self.refuse_all:
            reply = body if handler.command == "POST" else b"the data"
            _send(handler, 200, reply, "application/octet-stream")
        else:
            page = b"<html><title>401</title><body>you need to log in</body></html>"
            _send(handler, 401, page, "text/html")

    def _login(self, handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        if self.login_delay:
            time.sleep(self.login_delay)
        user = seen.headers.get("X-Userid", "")
        good = (
            self.users.get(user) == seen.headers.get("X-Password")
            and seen.headers.get("X-Realm") == self.realm
        )
        if self.login_status is not None and self.login_status != 200:
            _send(handler, self.login_status, b"Request failed", "text/plain")
        elif not good:
            text = "Login failed: bad username/password"
            if self.echo_password:
                text += f" ({seen.headers.get('X-Password')})"
            _send(handler, 401, text.encode(), "text/plain")
        else:
            token = uuid.uuid4().hex
            with self.lock:
                self.sessions.add(token)
            cookie = f"JSESSIONID={token}; Path=/; HttpOnly"
            body = b'{"token": "bearer-token-nobody-checks"}'
            _send(handler, 200, body, "application/json", {"Set-Cookie": cookie})


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            chunk = handler.rfile.read(size)
            handler.rfile.readline()
            if size == 0:
                return out
            out += chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def vitrea() -> Iterator[FakeVitrea]:
    with FakeVitrea() as fake:
        yield fake


def _session(vitrea: FakeVitrea, **kwargs: Any) -> requests.Session:
    return create_session(vitrea.login_url, USER, PASSWORD, **kwargs)


def _auth_of(session: requests.Session) -> VitreaAuth:
    assert isinstance(session.auth, VitreaAuth)
    return session.auth


# --------------------------------------------------------------------------- #
# Logging in
# --------------------------------------------------------------------------- #


def test_create_session_sends_nothing_until_used(vitrea: FakeVitrea) -> None:
    session = _session(vitrea)
    assert isinstance(session.auth, VitreaAuth)
    assert session.auth.realm == "DefaultSystemRealm"
    assert vitrea.seen == []


def test_first_401_logs_in_and_later_requests_carry_the_cookie(
    vitrea: FakeVitrea,
) -> None:
    session = _session(vitrea)
    response = session.get(f"{vitrea.url}/data")
    assert response.status_code == 200
    assert response.content == b"the data"
    assert [(s.method, s.path) for s in vitrea.seen] == [
        ("GET", "/data"),
        ("POST", "/login"),
        ("GET", "/data"),
    ]
    login = vitrea.logins[0]
    assert login.headers["X-Userid"] == USER
    assert login.headers["X-Password"] == PASSWORD
    assert login.headers["X-Realm"] == REALM
    token = vitrea.seen[2].cookies["JSESSIONID"]
    assert token in vitrea.sessions
    assert session.cookies.get("JSESSIONID") == token

    assert session.get(f"{vitrea.url}/more").status_code == 200
    assert len(vitrea.logins) == 1
    assert vitrea.seen[-1].cookies["JSESSIONID"] == token


def test_log_in_up_front_saves_the_first_401(vitrea: FakeVitrea) -> None:
    session = _session(vitrea)
    _auth_of(session).log_in(session)
    assert session.get(f"{vitrea.url}/data").status_code == 200
    assert [(s.method, s.path) for s in vitrea.seen] == [
        ("POST", "/login"),
        ("GET", "/data"),
    ]
    assert _auth_of(session).generation == 1


def test_custom_realm_is_sent(vitrea: FakeVitrea) -> None:
    vitrea.realm = "Radiology"
    session = _session(vitrea, realm="Radiology")
    assert session.get(f"{vitrea.url}/data").status_code == 200
    assert vitrea.logins[0].headers["X-Realm"] == "Radiology"


def test_expired_session_logs_in_once_and_resends_once(vitrea: FakeVitrea) -> None:
    session = _session(vitrea)
    assert session.get(f"{vitrea.url}/data").status_code == 200
    old_token = session.cookies["JSESSIONID"]
    vitrea.expire_sessions()
    before = len(vitrea.seen)

    response = session.get(f"{vitrea.url}/data", params={"a": "1"})

    assert response.status_code == 200
    later = vitrea.seen[before:]
    assert [(s.method, s.path) for s in later] == [
        ("GET", "/data"),
        ("POST", "/login"),
        ("GET", "/data"),
    ]
    assert later[0].cookies["JSESSIONID"] == old_token
    assert later[2].cookies["JSESSIONID"] != old_token
    assert later[2].query == "a=1"
    assert session.cookies["JSESSIONID"] == later[2].cookies["JSESSIONID"]


def test_other_session_cookies_survive_the_resend(vitrea: FakeVitrea) -> None:
    session = _session(vitrea)
    session.cookies.set("BALANCER", "node-7")
    assert session.get(f"{vitrea.url}/data").status_code == 200
    resent = vitrea.seen[-1].cookies
    assert resent["BALANCER"] == "node-7"
    assert "JSESSIONID" in resent


def test_streaming_get_is_resent(vitrea: FakeVitrea) -> None:
    session = _session(vitrea)
    with session.get(f"{vitrea.url}/data", stream=True) as response:
        assert response.status_code == 200
        assert response.raw.read() == b"the data"


def test_http_transport_sees_only_the_resent_answer(vitrea: FakeVitrea) -> None:
    transport = HttpTransport(_session(vitrea))
    assert transport.get(f"{vitrea.url}/data").content == b"the data"
    vitrea.expire_sessions()
    assert transport.get(f"{vitrea.url}/data").content == b"the data"
    assert len(vitrea.logins) == 2


# --------------------------------------------------------------------------- #
# Request bodies
# --------------------------------------------------------------------------- #


def test_post_bytes_body_is_resent_intact(vitrea: FakeVitrea) -> None:
    body = bytes(range(256)) * 300
    session = _session(vitrea)
    response = session.post(f"{vitrea.url}/echo", data=body)
    assert response.status_code == 200
    assert response.content == body
    posts = [seen for seen in vitrea.resources if seen.method == "POST"]
    assert len(posts) == 2
    assert posts[0].body == body
    assert posts[1].body == body


def test_post_file_body_is_rewound_and_resent(vitrea: FakeVitrea) -> None:
    body = b"file body " * 1000
    session = _session(vitrea)
    response = session.post(f"{vitrea.url}/echo", data=io.BytesIO(body))
    assert response.status_code == 200
    assert response.content == body


def test_generator_body_cannot_be_resent_but_login_holds(vitrea: FakeVitrea) -> None:
    def pieces() -> Iterator[bytes]:
        yield b"one "
        yield b"two"

    session = _session(vitrea)
    response = session.post(f"{vitrea.url}/echo", data=pieces())
    assert response.status_code == 401  # returned as it came, not resent
    assert len(vitrea.logins) == 1
    again = session.post(f"{vitrea.url}/echo", data=pieces())
    assert again.status_code == 200
    assert again.content == b"one two"
    assert len(vitrea.logins) == 1


# --------------------------------------------------------------------------- #
# Failures
# --------------------------------------------------------------------------- #


def test_wrong_password_raises_auth_error_without_the_password(
    vitrea: FakeVitrea,
) -> None:
    wrong = "Wr0ng-PassPhrase"
    session = create_session(vitrea.login_url, USER, wrong)
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        session.get(f"{vitrea.url}/data")
    error = caught.value
    sent = vitrea.logins[0].headers["X-Password"]
    assert sent == wrong
    for text in (str(error), repr(error), repr(error.args)):
        assert wrong not in text
        assert sent not in text
    assert vitrea.login_url in str(error)
    assert USER in str(error)
    assert "Login failed" in str(error)
    assert error.status_code == 401
    assert len(vitrea.logins) == 1


def test_failed_login_page_echoing_the_password_is_withheld(
    vitrea: FakeVitrea,
) -> None:
    vitrea.echo_password = True
    wrong = "Wr0ng-PassPhrase"
    session = create_session(vitrea.login_url, USER, wrong)
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        session.get(f"{vitrea.url}/data")
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value)
    assert "(***)" in str(caught.value)  # masked, the rest of the page kept
    assert vitrea.login_url in str(caught.value)


@pytest.mark.parametrize("status", [403, 404, 500, 302])
def test_any_non_2xx_login_is_an_auth_error(vitrea: FakeVitrea, status: int) -> None:
    vitrea.login_status = status
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        _session(vitrea).get(f"{vitrea.url}/data")
    assert caught.value.status_code == status
    assert PASSWORD not in str(caught.value)


def test_wrong_password_through_the_transport(vitrea: FakeVitrea) -> None:
    transport = HttpTransport(create_session(vitrea.login_url, USER, "nope-nope"))
    with pytest.raises(DICOMTrolleyAuthError, match="Login failed"):
        transport.get(f"{vitrea.url}/data")
    assert len(vitrea.logins) == 1  # POST logins are never retried


def test_401_after_login_is_returned_without_a_loop(vitrea: FakeVitrea) -> None:
    vitrea.refuse_all = True
    session = _session(vitrea)
    response = session.get(f"{vitrea.url}/data")
    assert response.status_code == 401
    assert len(vitrea.logins) == 1
    assert len(vitrea.resources) == 2


def test_401_after_login_becomes_auth_error_in_transport(vitrea: FakeVitrea) -> None:
    vitrea.refuse_all = True
    transport = HttpTransport(_session(vitrea))
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        transport.get(f"{vitrea.url}/data")
    assert caught.value.status_code == 401
    assert len(vitrea.logins) <= 2
    assert len(vitrea.resources) == 2


def test_login_timeout_names_the_login_url(vitrea: FakeVitrea) -> None:
    vitrea.login_delay = 1.0
    session = _session(vitrea, timeout=Timeout(connect=1.0, read=0.2))
    with pytest.raises(DICOMTrolleyTimeoutError) as caught:
        session.get(f"{vitrea.url}/data")
    assert "login" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_unreachable_login_is_a_connection_error(vitrea: FakeVitrea) -> None:
    login_url = f"{unused_url()}/login"
    session = create_session(login_url, USER, PASSWORD)
    with pytest.raises(DICOMTrolleyConnectionError) as caught:
        session.get(f"{vitrea.url}/data")
    assert login_url in str(caught.value)


def test_default_login_timeout() -> None:
    auth = VitreaAuth("http://vitrea/login", USER, PASSWORD)
    assert auth.timeout == Timeout()
    assert VitreaAuth("http://v/l", USER, PASSWORD, timeout=3).timeout == Timeout(3, 3)


# --------------------------------------------------------------------------- #
# Threads
# --------------------------------------------------------------------------- #


def _in_threads(count: int, work: Any) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_401s_log_in_once(vitrea: FakeVitrea) -> None:
    vitrea.login_delay = 0.3
    session = _session(vitrea)
    results = _in_threads(8, lambda: session.get(f"{vitrea.url}/data"))
    assert [r.status_code for r in results] == [200] * 8
    assert len(vitrea.logins) == 1
    assert _auth_of(session).generation == 1
    refused = [seen for seen in vitrea.resources if "JSESSIONID" not in seen.cookies]
    assert len(refused) >= 2  # several threads really did meet a 401 together


def test_concurrent_expiry_logs_in_once(vitrea: FakeVitrea) -> None:
    session = _session(vitrea)
    assert session.get(f"{vitrea.url}/data").status_code == 200
    vitrea.expire_sessions()
    vitrea.login_delay = 0.3
    results = _in_threads(8, lambda: session.get(f"{vitrea.url}/data"))
    assert [r.status_code for r in results] == [200] * 8
    assert len(vitrea.logins) == 2


def test_concurrent_wrong_password_tries_one_login(vitrea: FakeVitrea) -> None:
    vitrea.login_delay = 0.5
    session = create_session(vitrea.login_url, USER, "not-the-password")
    results = _in_threads(8, lambda: session.get(f"{vitrea.url}/data"))
    assert all(isinstance(r, DICOMTrolleyAuthError) for r in results)
    assert len(vitrea.logins) == 1  # a burst of failures could lock the account


# --------------------------------------------------------------------------- #
# The password stays secret
# --------------------------------------------------------------------------- #


def test_password_never_in_logs_urls_or_other_requests(
    vitrea: FakeVitrea, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session = _session(vitrea)
    session.get(f"{vitrea.url}/data", params={"q": "x"})
    vitrea.expire_sessions()
    session.post(f"{vitrea.url}/echo", data=b"payload")
    vitrea.refuse_all = True
    session.get(f"{vitrea.url}/data")
    with pytest.raises(DICOMTrolleyAuthError):
        create_session(vitrea.login_url, USER, PASSWORD + "x").get(f"{vitrea.url}/data")

    assert caplog.records, "expected some DEBUG logging to inspect"
    assert PASSWORD not in caplog.text
    for record in caplog.records:
        assert PASSWORD not in str(record.args)
    for seen in vitrea.seen:
        assert PASSWORD not in seen.path
        assert PASSWORD not in seen.query
        assert PASSWORD.encode() not in seen.body
        secret_headers = {"X-Password"} if seen.path == "/login" else set()
        for name, value in seen.headers.items():
            if name not in secret_headers:
                assert PASSWORD not in value, name


def test_repr_hides_the_password() -> None:
    auth = VitreaAuth("https://vitrea/login", USER, PASSWORD, "Realm")
    shown = repr(auth)
    assert PASSWORD not in shown
    assert "https://vitrea/login" in shown
    assert USER in shown


def test_session_with_auth_can_be_pickled(vitrea: FakeVitrea) -> None:
    session = _session(vitrea)
    assert session.get(f"{vitrea.url}/data").status_code == 200
    copy = pickle.loads(pickle.dumps(session))
    assert isinstance(copy.auth, VitreaAuth)
    assert copy.get(f"{vitrea.url}/data").status_code == 200


def test_auth_error_importable_from_auth_module() -> None:
    # dicomtrolley 4.1.0 defined DICOMTrolleyAuthError in dicomtrolley.auth
    assert auth_module.DICOMTrolleyAuthError is DICOMTrolleyAuthError


def test_response_hook_logs_in_for_an_answer_sent_without_the_auth(
    vitrea: FakeVitrea,
) -> None:
    """4.1.0's public response_hook: a 401 answer in, the answer after login out."""
    auth = VitreaAuth(vitrea.login_url, USER, PASSWORD, REALM)
    with requests.Session() as plain:
        refused = plain.get(f"{vitrea.url}/data")
        assert refused.status_code == 401
        answer = auth.response_hook(refused)
    assert answer.status_code == 200
    assert answer.content == b"the data"
    assert len(vitrea.logins) == 1
    assert answer.history[-1].url == vitrea.login_url
    assert auth.response_hook(answer) is answer  # anything but 401 passes through
