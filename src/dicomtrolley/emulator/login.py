"""Vitrea-style login and the sessions it opens; basic and bearer auth as well.

``POST /login`` with the headers ``X-Userid``, ``X-Password`` and ``X-Realm``
(Vitrea Connection's login, which dicomtrolley's ``VitreaAuth`` speaks) answers
200 with ``Set-Cookie: JSESSIONID=...; Path=/; HttpOnly`` and a small JSON body
``{"access_token": ..., "token_type": "Bearer", "expires_in": ...}``. Wrong
credentials or realm: 401 with the page "Login failed: bad username/password".

Every other endpoint accepts, in this order: the ``JSESSIONID`` cookie, the
access token as ``Authorization: Bearer``, or ``Authorization: Basic`` for the
same users (so plain DICOMweb clients work without a login). A session expires
after ``timeout`` seconds without a request; the next request answers 401.
Passwords are compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from dicomtrolley.emulator.server import HTTPError, Request, Response, Route
from dicomtrolley.emulator.service import Service

logger = logging.getLogger("trolley.emulator.login")

LOGIN_PATH = "/login"
SESSION_COOKIE = "JSESSIONID"


@dataclass
class _Session:
    user: str
    cookie: str
    token: str
    last_seen: float


class SessionStore:
    """Users, their passwords and their open sessions. Thread-safe."""

    def __init__(
        self,
        users: Mapping[str, str],
        timeout: float = 3600.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("session timeout must be positive")
        self._users = dict(users)
        self.timeout = timeout
        self._clock = clock
        self._sessions: dict[str, _Session] = {}  # by cookie and by token
        self._lock = threading.Lock()

    @property
    def users(self) -> list[str]:
        """The user names (never the passwords)."""
        return sorted(self._users)

    def verify(self, user: str, password: str) -> bool:
        """True when password is the password of user (constant-time compare)."""
        expected = self._users.get(user)
        candidate = password.encode("utf-8", "surrogateescape")
        if expected is None:
            hmac.compare_digest(candidate, candidate)  # same work either way
            return False
        return hmac.compare_digest(expected.encode("utf-8"), candidate)

    def open(self, user: str) -> tuple[str, str]:
        """A new session for user: (cookie value, access token)."""
        now = self._clock()
        session = _Session(
            user, secrets.token_hex(16).upper(), secrets.token_urlsafe(32), now
        )
        with self._lock:
            for key, old in list(self._sessions.items()):
                if now - old.last_seen > self.timeout:
                    del self._sessions[key]
            self._sessions[session.cookie] = session
            self._sessions[session.token] = session
        return session.cookie, session.token

    def user_for(self, key: str) -> str | None:
        """The user of the live session with this cookie or token; touches it."""
        now = self._clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.last_seen > self.timeout:
                self._sessions.pop(session.cookie, None)
                self._sessions.pop(session.token, None)
                return None
            session.last_seen = now
            return session.user

    def authenticate(self, request: Request) -> str | None:
        """The user a request acts for, or None (see the module docstring)."""
        cookie = _cookie(request.header("Cookie"), SESSION_COOKIE)
        if cookie:
            user = self.user_for(cookie)
            if user is not None:
                return user
        scheme, _, credentials = request.header("Authorization").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return self.user_for(credentials)
        if scheme.lower() == "basic" and credentials:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
            if self.verify(user, password):
                return user
            logger.warning("Basic auth refused for user %r", user)
        return None


def _cookie(header: str, name: str) -> str:
    if not header:
        return ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return ""
    morsel = jar.get(name)
    return morsel.value if morsel is not None else ""


class LoginService(Service):
    """``POST /login``: the Vitrea Connection login."""

    name = "login"

    def routes(self) -> Sequence[Route]:
        return [Route("POST", LOGIN_PATH, self.login, auth=False)]

    def login(self, request: Request) -> Response:
        emulator = self.emulator
        user = request.header("X-Userid")
        password = request.header("X-Password")
        realm = request.header("X-Realm", emulator.realm)
        sessions = emulator.sessions
        if not (user and sessions.verify(user, password) and realm == emulator.realm):
            logger.warning("Login refused for user %r (realm %r)", user, realm)
            raise HTTPError(401, "Login failed: bad username/password")
        cookie, token = sessions.open(user)
        logger.info("Login of user %r", user)
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(sessions.timeout),
        }
        return Response(
            200,
            json.dumps(body).encode(),
            "application/json",
            [("Set-Cookie", f"{SESSION_COOKIE}={cookie}; Path=/; HttpOnly")],
        )
