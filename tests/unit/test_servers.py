"""The legacy login helpers of dicomtrolley.servers against fake servers on loopback.

One small fake plays both products. Vitrea: ``POST /login`` with X-* headers
opens a session (JSESSIONID cookie); ``/wado`` then needs it. IMPAX: ``GET
/impax/wado`` hands out a session cookie, ``POST /impax/wado/j_security_check``
with a form body logs that session in (a redirect back to the WADO URL, which
answers 403 as IMPAX does) or answers 200 "Login Failed!". Bodies are recorded.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import types
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from dicomtrolley.auth import VitreaAuth
from dicomtrolley.core import InstanceReference, Query, Searcher, Study
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyConnectionError,
    DICOMTrolleyError,
)
from dicomtrolley.servers import IMPAXDataCenter, VitreaConnection
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_uri import WadoURI
from tests.fakes import dicom_file, unused_url

USER = "bob"
PASSWORD = "Imp4x&Vitrea=secret"  # & and = must survive form encoding
UIDS = ("1.2.3", "1.2.3.4", "1.2.3.4.5")


@dataclass(frozen=True)
class Seen:
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


class FakeServers:
    """Vitrea login + WADO-URI, and an IMPAX form login, on one port."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.vitrea_sessions: set[str] = set()
        self.impax_sessions: dict[str, bool] = {}  # cookie -> logged in
        self.impax_status: int | None = None  # force a status on j_security_check
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def to(self, path: str) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.path == path]

    def __enter__(self) -> FakeServers:
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

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
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
            self._vitrea_login(handler, seen)
        elif path == "/wado":
            if seen.cookies.get("JSESSIONID") in self.vitrea_sessions:
                data = dicom_file(*UIDS)
                _send(handler, 200, data, {"Content-Type": "application/dicom"})
            else:
                _send(handler, 401, b"you need to log in")
        elif path == "/impax/wado":
            self._impax_wado(handler, seen)
        elif path == "/impax/wado/j_security_check":
            self._impax_login(handler, seen)
        else:
            _send(handler, 404, b"no such resource")

    def _vitrea_login(self, handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        if seen.headers.get("X-Userid") == USER and (
            seen.headers.get("X-Password") == PASSWORD
        ):
            token = uuid.uuid4().hex
            with self.lock:
                self.vitrea_sessions.add(token)
            cookie = {"Set-Cookie": f"JSESSIONID={token}; Path=/"}
            _send(handler, 200, b'{"token": "ignored"}', cookie)
        else:
            _send(handler, 401, b"Login failed: bad username/password")

    def _impax_wado(self, handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        cookie = seen.cookies.get("JSESSIONID")
        if cookie in self.impax_sessions:
            _send(handler, 403, b"Forbidden")  # what IMPAX answers, logged in or not
            return
        token = uuid.uuid4().hex
        with self.lock:
            self.impax_sessions[token] = False
        _send(handler, 200, b"please log in", {"Set-Cookie": f"JSESSIONID={token}"})

    def _impax_login(self, handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        if self.impax_status is not None:
            _send(handler, self.impax_status, b"<html>Request failed</html>")
            return
        form = parse_qs(seen.body.decode("ascii"))
        cookie = seen.cookies.get("JSESSIONID")
        good = (
            seen.method == "POST"
            and cookie in self.impax_sessions
            and form.get("j_username") == [USER]
            and form.get("j_password") == [PASSWORD]
        )
        if good:
            assert cookie is not None
            with self.lock:
                self.impax_sessions[cookie] = True
            _send(handler, 302, b"", {"Location": "/impax/wado"})
        else:
            _send(handler, 200, b"<html><body>Login Failed!</body></html>")


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def fake() -> Iterator[FakeServers]:
    with FakeServers() as servers:
        yield servers


def _connection(fake: FakeServers) -> VitreaConnection:
    with pytest.warns(DeprecationWarning):
        return VitreaConnection(f"{fake.url}/login")


class StubDICOMQR(Searcher):
    """Stands in for dicomtrolley.dicom_qr.DICOMQR, a later module."""

    def __init__(
        self, host: str, port: int, aet: str = "DICOMTROLLEY", aec: str = "ANY-SCP"
    ) -> None:
        self.host, self.port, self.aet, self.aec = host, port, aet, aec

    def find_studies(self, query: Query) -> Sequence[Study]:
        return []


# --------------------------------------------------------------------------- #
# VitreaConnection
# --------------------------------------------------------------------------- #


def test_vitrea_connection_is_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match="VitreaAuth"):
        VitreaConnection("https://vitrea/login")


def test_vitrea_log_in_logs_in_now_and_renews(fake: FakeServers) -> None:
    session = _connection(fake).log_in(USER, PASSWORD, "DefaultSystemRealm")
    assert isinstance(session.auth, VitreaAuth)
    assert len(fake.to("/login")) == 1
    assert session.get(f"{fake.url}/wado").status_code == 200
    assert len(fake.to("/login")) == 1  # the first request already had the cookie
    fake.vitrea_sessions.clear()  # the session expires
    assert session.get(f"{fake.url}/wado").status_code == 200
    assert len(fake.to("/login")) == 2


def test_vitrea_log_in_refused(fake: FakeServers) -> None:
    connection = _connection(fake)
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        connection.log_in(USER, "wrong-Passw0rd", "DefaultSystemRealm")
    assert isinstance(caught.value, DICOMTrolleyError)  # as 4.1.0 raised
    assert "wrong-Passw0rd" not in str(caught.value)
    assert f"{fake.url}/login" in str(caught.value)


def test_get_mint_trolley(fake: FakeServers) -> None:
    mint = pytest.importorskip("dicomtrolley.mint")
    trolley = _connection(fake).get_mint_trolley(
        USER, PASSWORD, "DefaultSystemRealm", f"{fake.url}/wado", f"{fake.url}/mint"
    )
    assert isinstance(trolley, Trolley)
    assert isinstance(trolley.searcher, mint.Mint)
    assert isinstance(trolley.downloader, WadoURI)
    assert trolley.downloader.url == f"{fake.url}/wado"
    session = trolley.downloader.session
    assert isinstance(session.auth, VitreaAuth)
    assert trolley.searcher.session is session
    assert len(fake.to("/login")) == 1


class StubMint(Searcher):
    """Stands in for dicomtrolley.mint.Mint where that module is not there."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self.session, self.url = session, url

    def find_studies(self, query: Query) -> Sequence[Study]:
        return []


def test_get_mint_trolley_wiring(
    fake: FakeServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("dicomtrolley.mint")
    module.Mint = StubMint  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dicomtrolley.mint", module)
    trolley = _connection(fake).get_mint_trolley(
        USER, PASSWORD, "DefaultSystemRealm", f"{fake.url}/wado", f"{fake.url}/mint"
    )
    assert isinstance(trolley.searcher, StubMint)
    assert isinstance(trolley.downloader, WadoURI)
    assert trolley.searcher.url == f"{fake.url}/mint"
    assert trolley.searcher.session is trolley.downloader.session
    assert len(fake.to("/login")) == 1
    fake.vitrea_sessions.clear()
    dataset = trolley.downloader.get_dataset(InstanceReference(*UIDS))
    assert dataset.SOPInstanceUID == UIDS[2]
    assert len(fake.to("/login")) == 2


def test_get_mint_trolley_without_mint_module(
    fake: FakeServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "dicomtrolley.mint", None)  # import fails
    with pytest.raises(DICOMTrolleyError, match="MINT"):
        _connection(fake).get_mint_trolley(
            USER, PASSWORD, "R", f"{fake.url}/wado", f"{fake.url}/mint"
        )
    assert fake.seen == []  # nothing sent for a trolley that cannot be built


# --------------------------------------------------------------------------- #
# IMPAXDataCenter
# --------------------------------------------------------------------------- #


def test_impax_login_sends_the_password_only_in_a_post_body(
    fake: FakeServers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session = IMPAXDataCenter(f"{fake.url}/impax/wado").log_in(USER, PASSWORD)
    assert isinstance(session, requests.Session)

    first, login = fake.seen[0], fake.seen[1]
    assert (first.method, first.path) == ("GET", "/impax/wado")
    assert (login.method, login.path, login.query) == (
        "POST",
        "/impax/wado/j_security_check",
        "",
    )
    assert login.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(login.body.decode("ascii")) == {
        "j_username": [USER],
        "j_password": [PASSWORD],
    }
    cookie = login.cookies["JSESSIONID"]
    assert fake.impax_sessions[cookie] is True  # that server session is logged in
    assert session.cookies["JSESSIONID"] == cookie

    for seen in fake.seen:
        assert PASSWORD not in seen.path and PASSWORD not in seen.query
        assert all(PASSWORD not in value for value in seen.headers.values())
        if seen is not login:
            assert b"j_password" not in seen.body  # the redirect drops the form
    assert PASSWORD not in caplog.text


def test_impax_login_failed(fake: FakeServers) -> None:
    impax = IMPAXDataCenter(f"{fake.url}/impax/wado")
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        impax.log_in(USER, "Not-The-Passw0rd")
    text = f"{caught.value} {caught.value!r}"
    assert "Not-The-Passw0rd" not in text
    assert "/impax/wado/j_security_check" in text
    assert USER in text


@pytest.mark.parametrize("status", [401, 500])
def test_impax_login_error_status(fake: FakeServers, status: int) -> None:
    fake.impax_status = status
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        IMPAXDataCenter(f"{fake.url}/impax/wado").log_in(USER, PASSWORD)
    assert caught.value.status_code == status
    assert PASSWORD not in str(caught.value)


def test_impax_unreachable() -> None:
    impax = IMPAXDataCenter(f"{unused_url()}/wado", timeout=2)
    with pytest.raises(DICOMTrolleyConnectionError) as caught:
        impax.log_in(USER, PASSWORD)
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(caught.value)


def test_get_dicom_qr_trolley(
    fake: FakeServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("dicomtrolley.dicom_qr")
    module.DICOMQR = StubDICOMQR  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dicomtrolley.dicom_qr", module)
    wado_url = f"{fake.url}/impax/wado"
    trolley = IMPAXDataCenter(wado_url).get_dicom_qr_trolley(
        USER, PASSWORD, "pacs.local", 104, aec="IMPAX"
    )
    assert isinstance(trolley.downloader, WadoURI)
    assert trolley.downloader.url == wado_url
    searcher = trolley.searcher
    assert isinstance(searcher, StubDICOMQR)
    assert (searcher.host, searcher.port, searcher.aet, searcher.aec) == (
        "pacs.local",
        104,
        "DICOMTROLLEY",
        "IMPAX",
    )
    assert len(fake.to("/impax/wado/j_security_check")) == 1


def test_get_dicom_qr_trolley_without_dicom_qr(
    fake: FakeServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "dicomtrolley.dicom_qr", None)
    impax = IMPAXDataCenter(f"{fake.url}/impax/wado")
    with pytest.raises(DICOMTrolleyError, match="DICOM-QR"):
        impax.get_dicom_qr_trolley(USER, PASSWORD, "pacs.local", 104)
    assert fake.seen == []


def test_reprs_hold_no_secrets() -> None:
    assert "impax" in repr(IMPAXDataCenter("https://impax/wado"))
    with pytest.warns(DeprecationWarning):
        assert "vitrea" in repr(VitreaConnection("https://vitrea/login"))
