"""An OAuth2 token endpoint (client credentials, RFC 6749 section 4.4).

Off unless asked for: ``Emulator(data, oauth2_clients={"id": "secret"},
token_lifetime=60)`` or ``dicomtrolley serve --oauth2 ID:SECRET``. Then
``POST /oauth2/token`` with ``grant_type=client_credentials`` and the client's
credentials (HTTP basic auth, form-encoded first as RFC 6749 2.3.1 says, or
``client_id``/``client_secret`` in the form) answers::

    {"access_token": "...", "token_type": "Bearer", "expires_in": 60}

and every other endpoint (DICOMweb, MINT, WADO-URI, RAD-69) accepts only such a
token, as ``Authorization: Bearer`` (RFC 6750), until it expires; session
cookies and basic auth are refused. A missing, unknown or expired token answers
401 with ``WWW-Authenticate: Bearer error="invalid_token"``.

:class:`TokenStore` counts tokens issued and requests refused for an expired
token, so tests can check that a client renewed its token in time.
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
from urllib.parse import parse_qsl, unquote_plus

from dicomtrolley.emulator.server import Request, Response, Route
from dicomtrolley.emulator.service import Service

logger = logging.getLogger("trolley.emulator.oauth2")

OAUTH2_TOKEN_PATH = "/oauth2/token"
DEFAULT_TOKEN_LIFETIME = 300.0


class TokenStore:
    """OAuth2 clients, the tokens issued to them, and counters. Thread-safe."""

    def __init__(
        self,
        clients: Mapping[str, str],
        lifetime: float = DEFAULT_TOKEN_LIFETIME,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lifetime <= 0:
            raise ValueError("token lifetime must be positive")
        self._clients = dict(clients)
        self.lifetime = float(lifetime)
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (client, expiry)
        self._lock = threading.Lock()
        self.issued = 0  # tokens handed out
        self.expired_refusals = 0  # requests refused because their token expired
        self.refusals = 0  # requests refused for any reason (401)

    def verify(self, client_id: str, secret: str) -> bool:
        expected = self._clients.get(client_id)
        candidate = secret.encode("utf-8", "surrogateescape")
        if expected is None:
            hmac.compare_digest(candidate, candidate)
            return False
        return hmac.compare_digest(expected.encode("utf-8"), candidate)

    def issue(self, client_id: str) -> str:
        now = self._clock()
        token = secrets.token_urlsafe(32)
        with self._lock:
            for key, (_, expiry) in list(self._tokens.items()):
                if expiry <= now - 60:
                    del self._tokens[key]
            self._tokens[token] = (client_id, now + self.lifetime)
            self.issued += 1
        return token

    def expire_all(self) -> None:
        """Make every token issued so far expired (as a server restart would)."""
        with self._lock:
            self._tokens = {
                key: (client, float("-inf"))
                for key, (client, _) in self._tokens.items()
            }

    def authenticate(self, request: Request) -> str | None:
        """The client of a valid bearer token, or None (counted as a refusal)."""
        scheme, _, token = request.header("Authorization").strip().partition(" ")
        token = token.strip()
        now = self._clock()
        with self._lock:
            found = self._tokens.get(token) if scheme.lower() == "bearer" else None
            if found is not None and found[1] > now:
                return found[0]
            self.refusals += 1
            if found is not None:
                self.expired_refusals += 1
        return None


class OAuth2Service(Service):
    """``POST /oauth2/token``: the client credentials grant."""

    name = "oauth2"

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    def routes(self) -> Sequence[Route]:
        return [Route("POST", OAUTH2_TOKEN_PATH, self.token, auth=False)]

    def token(self, request: Request) -> Response:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        client_id, secret = _client_credentials(request, form)
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type")
        if client_id is None or not self.store.verify(client_id, secret):
            logger.warning("OAuth2 token refused for client %r", client_id)
            return _error(401, "invalid_client")
        token = self.store.issue(client_id)
        lifetime = self.store.lifetime
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(lifetime) if lifetime.is_integer() else lifetime,
        }
        logger.info("OAuth2 token for client %r", client_id)
        return Response(
            200,
            json.dumps(body).encode(),
            "application/json",
            [("Cache-Control", "no-store"), ("Pragma", "no-cache")],
        )


def _client_credentials(
    request: Request, form: Mapping[str, str]
) -> tuple[str | None, str]:
    scheme, _, encoded = request.header("Authorization").strip().partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, ""
        client_id, _, secret = decoded.partition(":")
        return unquote_plus(client_id), unquote_plus(secret)
    if "client_id" in form:
        return form["client_id"], form.get("client_secret", "")
    return None, ""


def _error(status: int, code: str) -> Response:
    headers = [("Cache-Control", "no-store")]
    if status == 401:
        headers.append(("WWW-Authenticate", 'Basic realm="oauth2"'))
    return Response(
        status, json.dumps({"error": code}).encode(), "application/json", headers
    )
