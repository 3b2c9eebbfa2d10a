"""OAuth2 client credentials (RFC 6749 section 4.4) as a requests auth plugin.

:class:`OAuth2ClientCredentials` asks the token endpoint for an access token
(``grant_type=client_credentials``), sends it as ``Authorization: Bearer`` (RFC
6750) and gets a new one:

- before the current one expires: when less than ``refresh_margin`` seconds of
  its ``expires_in`` are left (at most half its lifetime, so that short-lived
  tokens are not renewed on every request);
- once on a 401: the request is sent again with a new token. A second 401 is
  returned as it is (the transport turns it into a DICOMTrolleyAuthError).

Several threads share one token: one fetch at a time, and a thread whose 401
came for a token that another thread has already replaced just resends with the
new one. The client authenticates with HTTP basic auth (its id and secret
form-encoded first, RFC 6749 section 2.3.1), or in the request body with
``client_auth="body"``. The secret and the tokens are never logged, never put
in a URL, an exception or a ``repr``.

Why written here on requests rather than taken from requests-oauthlib or
Authlib: requests-oauthlib's automatic refresh needs a refresh token, which the
client credentials grant does not issue (RFC 6749 4.4.3), so it would not renew
an expired token by itself, and neither library coordinates threads sharing one
token or retries a 401 once; the grant itself is one form POST. Being on our
transport, token requests get the same timeouts, retries, TLS settings and
error classes as every other request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import quote_plus, urlencode

import requests
from requests.adapters import BaseAdapter
from requests.auth import AuthBase

from dicomtrolley.credentials import ConfigError, NoAuth
from dicomtrolley.exceptions import DICOMTrolleyAuthError, ResponseFormatError
from dicomtrolley.logs import get_module_logger
from dicomtrolley.transport import (
    HttpTransport,
    Retry,
    Timeout,
    new_session,
)

__all__ = ["AccessToken", "OAuth2ClientCredentials"]

logger = get_module_logger("oauth")

DEFAULT_REFRESH_MARGIN = 30.0
_SEND_KEYS = ("stream", "timeout", "verify", "cert", "proxies")


@dataclass(frozen=True)
class AccessToken:
    """An access token and when it stops being used (monotonic clock).

    ``expires_at`` is None when the server gave no ``expires_in``: the token is
    then used until a request answers 401.
    """

    value: str
    expires_at: float | None
    serial: int  # 1 for the first token fetched, +1 for each after it

    def __repr__(self) -> str:
        return f"AccessToken(serial={self.serial}, expires_at={self.expires_at})"


class OAuth2ClientCredentials(AuthBase):
    """Bearer tokens from an OAuth2 token endpoint, renewed before they expire.

    Parameters
    ----------
    token_url:
        The token endpoint, e.g. ``https://idp/oauth2/token``.
    client_id, client_secret:
        The client's credentials.
    scope:
        Scopes to ask for (a space-separated string or a list), or None.
    extra:
        More form fields for the token request (``audience``, ``resource``).
    client_auth:
        ``"basic"`` (HTTP basic auth, the default) or ``"body"`` (in the form).
    refresh_margin:
        Renew a token this many seconds before it expires (at most half its
        lifetime).
    timeout, retry:
        For token requests (retried on network errors and 5xx, although POST).
    verify, cert:
        TLS verification and client certificate for token requests.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | Sequence[str] | None = None,
        extra: Mapping[str, str] | None = None,
        client_auth: str = "basic",
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if client_auth not in ("basic", "body"):
            raise ConfigError(
                f"OAuth2 client_auth must be 'basic' or 'body', not {client_auth!r}"
            )
        if refresh_margin < 0:
            raise ConfigError("OAuth2 refresh_margin must not be negative")
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = (
            scope if isinstance(scope, str) or scope is None else " ".join(scope)
        )
        self.extra = dict(extra or {})
        self.client_auth = client_auth
        self.refresh_margin = refresh_margin
        self.timeout = Timeout.coerce(timeout)
        policy = Retry() if retry is None else retry
        self.retry = replace(policy, allowed_methods=policy.allowed_methods | {"POST"})
        self.verify = verify
        self.cert = cert
        self._clock = clock
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self._fetches = 0
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return (
            f"OAuth2ClientCredentials(token_url={self.token_url!r}, "
            f"client_id={self.client_id!r}, client_secret=***)"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def fetches(self) -> int:
        """How many tokens this auth has been issued so far."""
        with self._lock:
            return self._fetches

    # -- tokens ---------------------------------------------------------------

    def token(self) -> AccessToken:
        """A token that is not about to expire, fetched when needed."""
        with self._lock:
            if self._token is None or self._expiring(self._token):
                self._token = self._fetch()
            return self._token

    def renew(self, stale: AccessToken | None = None) -> AccessToken:
        """A new token, unless another thread already replaced stale."""
        with self._lock:
            current = self._token
            if (
                current is not None
                and stale is not None
                and current.serial != stale.serial
            ):
                return current
            self._token = self._fetch()
            return self._token

    def _expiring(self, token: AccessToken) -> bool:
        if token.expires_at is None:
            return False
        return self._clock() >= token.expires_at

    def _fetch(self) -> AccessToken:
        """Ask the token endpoint (the lock is held: one fetch at a time)."""
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        form.update(self.extra)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if self.client_auth == "basic":
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(
                pair.encode()
            ).decode("ascii")
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self._client_secret
        if self._session is None:
            self._session = new_session(NoAuth(), verify=self.verify, pool_size=2)
            self._session.cert = self.cert
        transport = HttpTransport(self._session, timeout=self.timeout, retry=self.retry)
        started = self._clock()
        what = f"OAuth2 token for client {self.client_id!r}"
        response = transport.request(
            "POST",
            self.token_url,
            data=urlencode(form),
            headers=headers,
            what=what,
            ok_statuses=(400, 401),
        )
        try:
            body = _json_object(response.content)
        finally:
            response.close()
        if response.status_code in (400, 401):
            code = str(body.get("error", "")) if body else ""
            raise DICOMTrolleyAuthError(
                f"{what}: refused ({response.status_code}"
                + (f", {code[:60]}" if code else "")
                + ")",
                url=self.token_url,
                status_code=response.status_code,
            )
        if body is None:
            raise ResponseFormatError(
                f"{what}: the answer is not a JSON object", url=self.token_url
            )
        return self._token_from(body, started, what)

    def _token_from(
        self, body: Mapping[str, Any], started: float, what: str
    ) -> AccessToken:
        value = body.get("access_token")
        kind = str(body.get("token_type", "")).lower()
        if not isinstance(value, str) or not value:
            raise ResponseFormatError(
                f"{what}: the answer holds no access_token", url=self.token_url
            )
        if kind != "bearer":
            raise ResponseFormatError(
                f"{what}: token_type {kind[:20]!r} is not Bearer", url=self.token_url
            )
        expires_in = body.get("expires_in")
        expires_at: float | None = None
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            lifetime = max(float(expires_in), 0.0)
            margin = min(self.refresh_margin, lifetime / 2)
            expires_at = started + lifetime - margin
        self._fetches += 1
        logger.info(
            "OAuth2 token %d for client %r (expires in %s s)",
            self._fetches,
            self.client_id,
            expires_in if expires_at is not None else "?",
        )
        return AccessToken(value, expires_at, self._fetches)

    # -- requests' auth protocol ----------------------------------------------

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.token()
        r.headers["Authorization"] = f"Bearer {token.value}"
        r.hooks["response"].append(partial(self._on_response, token))
        return r

    def _on_response(
        self, sent: AccessToken, r: requests.Response, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """On 401: a new token (once for all threads), then the request once more."""
        if r.status_code != 401:
            return r
        adapter: BaseAdapter | None = getattr(r, "connection", None)
        retry = r.request.copy()
        if adapter is None or not _rewindable(retry):
            return r
        with contextlib.suppress(requests.RequestException, RuntimeError):
            r.content  # noqa: B018  (frees the connection)
        r.close()
        logger.debug("401 with OAuth2 token %d: asking for a new one", sent.serial)
        token = self.renew(sent)
        retry.headers["Authorization"] = f"Bearer {token.value}"
        send_kwargs = {key: kwargs[key] for key in _SEND_KEYS if key in kwargs}
        answer = adapter.send(retry, **send_kwargs)
        answer.history.append(r)
        if answer.status_code == 401:
            logger.warning(
                "401 again with a new OAuth2 token (client %r)", self.client_id
            )
        return answer


def _rewindable(request: requests.PreparedRequest) -> bool:
    body = request.body
    return body is None or isinstance(body, bytes | str)


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
