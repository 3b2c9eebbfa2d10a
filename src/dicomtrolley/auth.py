"""Log in to Vitrea Connection (Canon/Vital) automatically, for any requests session.

Vitrea keeps its login in a session cookie. ``POST login_url`` with the headers
``X-Userid``, ``X-Password`` and ``X-Realm`` answers 200 and sets ``JSESSIONID``
(the body holds a bearer token that Vitrea itself never asks for again). A
request without a valid session cookie, or with an expired one, answers 401.

:class:`VitreaAuth` is a requests auth plugin built on that: when an answer comes
back 401 it logs in once and sends the same request once more with the new
cookie. A second 401 is returned as it is (the transport turns it into a
:class:`~dicomtrolley.exceptions.DICOMTrolleyAuthError`): there is no loop.

Decisions worth knowing:

- The login is lazy: the first request of a session is sent without a cookie,
  answers 401, and triggers the login. The login goes out through the same
  connection adapter, with the same TLS verification, client certificate and
  proxies as the request that needed it, which a login in ``__call__`` (before
  sending, without the session's settings) could not guarantee. Call
  :meth:`VitreaAuth.log_in` with the session to log in up front instead.
- Several threads sharing one session that all get 401 log in once. Every
  successful login starts a new *session generation*; a request remembers the
  generation whose cookie it carried, and a 401 for an older generation is
  simply sent again with the current cookie. Requests prepared while a login
  is under way wait for it and go out with its cookie. When a login is
  refused, the threads that were waiting for it raise the same error instead
  of trying again (a burst of refused logins can lock an account).
- A request whose body is a stream (a generator) cannot be sent twice: after
  the login its 401 is returned; the next request carries the new cookie.
  Bytes, text and seekable files are sent again from their start.
- The password travels only in the ``X-Password`` header of the login request.
  It is never put in a URL, a log message, an exception or the ``repr``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from functools import partial
from http.cookiejar import CookieJar
from typing import Any, NamedTuple

import requests
from requests.adapters import BaseAdapter
from requests.auth import AuthBase
from requests.cookies import RequestsCookieJar
from requests.exceptions import UnrewindableBodyError
from requests.utils import rewind_body

from dicomtrolley.body import is_framed, unframed_error
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyError,
    redact_url,
)
from dicomtrolley.logs import get_module_logger
from dicomtrolley.transport import (
    Timeout,
    error_for_response,
    map_requests_error,
    new_session,
)

__all__ = ["DICOMTrolleyAuthError", "VitreaAuth", "create_session"]

logger = get_module_logger("auth")

DEFAULT_REALM = "DefaultSystemRealm"

# What requests' Session.send hands to response hooks and adapters.
_SEND_KEYS = ("stream", "timeout", "verify", "cert", "proxies")


def create_session(
    login_url: str,
    user: str,
    password: str,
    realm: str = DEFAULT_REALM,
    *,
    timeout: Timeout | float | tuple[float | None, float | None] | None = None,
) -> requests.Session:
    """A requests session that logs in to Vitrea whenever the server asks for it.

    Nothing is sent yet: the first request that answers 401 logs in (see
    :class:`VitreaAuth`). timeout applies to the login calls only.
    """
    return new_session(VitreaAuth(login_url, user, password, realm, timeout=timeout))


class VitreaAuth(AuthBase):
    """Session-cookie login for Vitrea Connection, renewed when it expires.

    Parameters
    ----------
    login_url:
        The full login URL, e.g. ``https://vitrea/rest/api/login``.
    user, password:
        The account to log in with.
    realm:
        The Vitrea realm (``X-Realm``), by default ``DefaultSystemRealm``.
    timeout:
        Connect and read timeouts of the login call; the defaults of
        :class:`dicomtrolley.transport.Timeout` when not given.

    Raises
    ------
    DICOMTrolleyAuthError
        From the request that triggered a login, when the login is refused
        (bad user name or password, or any answer other than 2xx).
    """

    def __init__(
        self,
        login_url: str,
        user: str,
        password: str,
        realm: str = DEFAULT_REALM,
        *,
        timeout: Timeout | float | tuple[float | None, float | None] | None = None,
    ) -> None:
        self.login_url = login_url
        self.user = user
        self.password = password
        self.realm = realm
        self.timeout = Timeout.coerce(timeout)
        self._lock = threading.Lock()
        self._login_done = threading.Condition(self._lock)
        self._logging_in = False  # a login is under way (outside the lock)
        self._generation = 0  # 0: never logged in; +1 on every successful login
        self._cookies = RequestsCookieJar()  # set by the latest login
        self._attempts = 0  # logins finished, successful or not
        self._failure: DICOMTrolleyError | None = None  # of the latest attempt

    def __repr__(self) -> str:
        return (
            f"VitreaAuth(login_url={redact_url(self.login_url)!r}, "
            f"user={self.user!r}, realm={self.realm!r}, password=***)"
        )

    def __getstate__(self) -> dict[str, Any]:
        # requests sessions can be pickled; a lock cannot.
        state = self.__dict__.copy()
        del state["_lock"], state["_login_done"]
        state["_logging_in"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._login_done = threading.Condition(self._lock)

    @property
    def generation(self) -> int:
        """How many times this auth has logged in successfully."""
        with self._lock:
            return self._generation

    # -- requests' auth protocol ---------------------------------------------

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        """Before sending: add the latest session cookie, watch for a 401."""
        with self._lock:
            attempts = self._attempts
            self._wait_for_login()  # a login under way: go out with its cookie
            state = _State(self._generation, attempts)
            cookies = self._cookies
        if state.generation:
            _set_cookies(r, cookies)
        # The login belongs to the HTTP session, and Vitrea expects kept-alive
        # connections (as dicomtrolley 4.1.0 asked for).
        r.headers["Connection"] = "Keep-Alive"
        r.hooks["response"].append(partial(self._on_response, state))
        return r

    def _on_response(
        self, sent: _State, r: requests.Response, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """After an answer: on 401 log in (once for all threads) and resend once."""
        if r.status_code != 401:
            return r
        adapter: BaseAdapter | None = getattr(r, "connection", None)
        if adapter is None:  # not sent by a requests adapter: cannot log in here
            return r
        send_kwargs = {key: kwargs[key] for key in _SEND_KEYS if key in kwargs}
        _discard(r)
        logger.debug(
            "%s %s answered 401: renewing the Vitrea session",
            r.request.method,
            redact_url(r.request.url),
        )
        cookies, login_response = self._renew(sent, adapter, send_kwargs)

        retry = r.request.copy()
        if not _rewind(retry):
            logger.warning(
                "cannot send %s %s again after logging in: its body was a stream",
                retry.method,
                redact_url(retry.url),
            )
            if login_response is not None:
                r.history.append(login_response)
            return r
        _set_cookies(retry, cookies)
        answer = adapter.send(retry, **send_kwargs)
        if login_response is not None:
            # requests copies the cookies of every response in the history into
            # the session, so the session's cookie jar follows the login too.
            answer.history.append(login_response)
        if answer.status_code == 401:
            logger.warning(
                "%s %s answered 401 again after logging in as %r",
                retry.method,
                redact_url(retry.url),
                self.user,
            )
        return answer

    def response_hook(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        """On a 401 answer, log in and send the request again once (4.1.0 name).

        Requests sent through this auth already get this treatment; call it
        yourself only for answers to requests sent some other way. kwargs are
        those requests passes to response hooks (timeout, verify ...).
        """
        with self._lock:
            state = _State(self._generation, self._attempts)
        return self._on_response(state, r, **kwargs)

    # -- logging in ----------------------------------------------------------

    def log_in(self, session: requests.Session) -> None:
        """Log in now, through session's adapter and TLS/proxy settings.

        Saves one wasted 401 on the first request, and reports a wrong password
        right away. The session's cookie jar receives the new session cookie.
        """
        settings = session.merge_environment_settings(
            self.login_url, {}, None, None, None
        )
        send_kwargs = {
            "verify": settings.get("verify", True),
            "cert": settings.get("cert"),
            "proxies": settings.get("proxies") or {},
        }
        adapter = session.get_adapter(self.login_url)
        with self._lock:
            self._wait_for_login()
            self._logging_in = True
        response, cookies = self._log_in_now(adapter, send_kwargs)
        session.cookies.update(cookies)
        response.close()

    def do_login_call(
        self, connection: BaseAdapter, **send_kwargs: Any
    ) -> requests.Response:
        """Send the login request through connection; the 2xx answer or an error.

        Kept from dicomtrolley 4.1.0. It does not change this auth's session
        generation; :meth:`log_in` does.
        """
        request = requests.Request(
            "POST",
            self.login_url,
            headers={
                "X-Userid": self.user,
                "X-Password": self.password,
                "X-Realm": self.realm,
            },
        ).prepare()
        what = f"Vitrea login as {self.user!r}"
        send_kwargs = {**send_kwargs, "stream": False}
        send_kwargs["timeout"] = self.timeout.as_requests()
        try:
            response = connection.send(request, **send_kwargs)
            response.content  # noqa: B018  (small; frees the connection)
        except requests.RequestException as error:
            raise map_requests_error(error, "POST", self.login_url, what) from error
        if not is_framed("POST", response.status_code, response.headers):
            response.close()  # a cut header block may have lost its Set-Cookie
            raise unframed_error(self.login_url, what)
        if not 200 <= response.status_code < 300:
            failure = error_for_response(response, what)
            response.close()
            raise DICOMTrolleyAuthError(  # worded as 4.1.0: "login failed. 401: ..."
                self._without_password(
                    f"login failed. {response.status_code}: {response.reason}. "
                    f"{failure.message}"
                ),
                url=self.login_url,
                status_code=response.status_code,
            )
        if not response.cookies:
            logger.warning(
                "Vitrea login at %s set no cookie", redact_url(self.login_url)
            )
        return response

    def _renew(
        self,
        sent: _State,
        adapter: BaseAdapter,
        send_kwargs: Mapping[str, Any],
    ) -> tuple[RequestsCookieJar, requests.Response | None]:
        """The current cookies, logging in first if the 401 was for them.

        Threads that meet a 401 while another one logs in do not log in again:
        after a successful login they resend with its cookie, after a refused
        one they raise the same error (a burst of refused logins could lock
        the account).
        """
        with self._lock:
            self._wait_for_login()
            if self._generation != sent.generation:
                return self._cookies, None  # another thread logged in meanwhile
            failure = self._failure
            if failure is not None and self._attempts != sent.attempts:
                raise type(failure)(
                    failure.message,
                    url=failure.url,
                    status_code=failure.status_code,
                )
            self._logging_in = True
        response, cookies = self._log_in_now(adapter, send_kwargs)
        return cookies, response

    def _wait_for_login(self) -> None:
        """Wait (holding the lock) until no login is under way."""
        while self._logging_in:
            self._login_done.wait()

    def _log_in_now(
        self, adapter: BaseAdapter, send_kwargs: Mapping[str, Any]
    ) -> tuple[requests.Response, RequestsCookieJar]:
        """Log in; the caller has set _logging_in. Records the outcome."""
        logger.info("logging in to %s as %r", redact_url(self.login_url), self.user)
        response: requests.Response | None = None
        failure: DICOMTrolleyError | None = None
        fresh = RequestsCookieJar()
        try:
            response = self.do_login_call(adapter, **send_kwargs)
            fresh.update(response.cookies)
        except DICOMTrolleyError as error:
            failure = error
            raise
        finally:
            with self._lock:
                self._attempts += 1
                self._failure = failure
                if response is not None:
                    self._cookies = fresh
                    self._generation += 1
                self._logging_in = False
                self._login_done.notify_all()
        return response, fresh

    def _without_password(self, text: str) -> str:
        """text with the password masked, should the server have echoed it."""
        return _mask(text, self.password)


class _State(NamedTuple):
    """What a request was prepared with: session generation and login attempts."""

    generation: int
    attempts: int


def _mask(text: str, secret: str) -> str:
    """text with every occurrence of secret replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


def _set_cookies(request: requests.PreparedRequest, login: CookieJar) -> None:
    """Rebuild the Cookie header of request with the login cookies on top.

    requests computes the header once, at preparation, from the session's jar;
    a request that must carry a newer session cookie needs it rebuilt.
    """
    merged = RequestsCookieJar()
    own = getattr(request, "_cookies", None)
    if isinstance(own, CookieJar):
        merged.update(own)
    merged.update(login)
    request.headers.pop("Cookie", None)
    request.prepare_cookies(merged)


def _rewind(request: requests.PreparedRequest) -> bool:
    """True when request's body can be sent again (rewound if it is a file)."""
    body = request.body
    if body is None or isinstance(body, bytes | str):
        return True
    if getattr(request, "_body_position", None) is None:
        return False  # a generator or a file that could not tell its position
    try:
        rewind_body(request)
    except UnrewindableBodyError:
        return False
    return True


def _discard(response: requests.Response) -> None:
    """Read and release an answer that will be replaced (keeps the connection)."""
    with contextlib.suppress(requests.RequestException, RuntimeError):
        response.content  # noqa: B018
    response.close()
