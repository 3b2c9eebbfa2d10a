"""The one place where dicomtrolley talks HTTP: timeouts, retries, errors, pools.

Protocol adapters (QIDO-RS, WADO-RS, WADO-URI, MINT, RAD-69) build requests and
hand them to :class:`HttpTransport`; they never call ``session.get`` themselves.
Sessions stay plain :class:`requests.Session` objects so that every requests auth
plugin (NTLM, Kerberos, OAuth, Vitrea login) keeps working.

- :class:`Timeout` is a value object: connect and read timeouts, on by default.
- :class:`Retry` is immutable, like urllib3's: :meth:`Retry.increment` returns a
  new object that records the attempt. Backoff is exponential with jitter and a
  cap, ``Retry-After`` is honoured, and only idempotent methods are retried.
- Every failure becomes a :class:`~dicomtrolley.exceptions.DICOMTrolleyError`
  naming the URL (without credentials) and the HTTP status.
"""

from __future__ import annotations

import email.utils
import http
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timezone
from typing import Any, TypeVar

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from dicomtrolley.body import (
    Deadline,
    GuardedBody,
    declared_length,
    is_framed,
    unframed_error,
)
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
from dicomtrolley.logs import get_module_logger

logger = get_module_logger("transport")

T = TypeVar("T")


@dataclass(frozen=True)
class Timeout:
    """Timeouts in seconds for one request and its answer.

    ``connect`` bounds making the connection. ``read`` is the longest wait for
    the next bytes from the server, not for the whole answer. ``total`` and
    ``min_rate`` bound the whole answer, from sending the request to its last
    byte: ``total`` seconds plus one second per ``min_rate`` bytes of the
    answer (its declared size, or what arrived so far when it declares none),
    so a large study is given the time it needs while a server trickling a byte
    at a time is given up on (:class:`~dicomtrolley.body.Deadline`). ``None``
    disables one: ``total=None`` means no overall deadline, ``min_rate=None``
    a fixed one of ``total`` seconds whatever the size.
    """

    connect: float | None = 10.0
    read: float | None = 120.0
    total: float | None = 300.0
    min_rate: float | None = 10_000.0

    def as_requests(self) -> tuple[float | None, float | None]:
        """The ``timeout=`` argument for requests."""
        return (self.connect, self.read)

    def deadline(self, start: float, declared: int | None = None) -> Deadline:
        """The deadline of an answer requested at start (``time.monotonic()``)."""
        return Deadline(
            start=start, total=self.total, min_rate=self.min_rate, declared=declared
        )

    @classmethod
    def coerce(
        cls, value: Timeout | float | tuple[float | None, float | None] | None
    ) -> Timeout:
        """Accept a Timeout, one number for connect and read, or a (connect, read) pair."""
        if value is None:
            return cls()
        if isinstance(value, Timeout):
            return value
        if isinstance(value, tuple):
            return cls(connect=value[0], read=value[1])
        return cls(connect=float(value), read=float(value))


@dataclass(frozen=True)
class RequestHistory:
    """One failed attempt, as recorded by :meth:`Retry.increment`."""

    method: str
    url: str | None
    error: str | None
    status: int | None


@dataclass(frozen=True)
class Retry:
    """How often and when to try a request again. Immutable.

    Parameters
    ----------
    total:
        How many retries at most (0 = try once).
    backoff_factor:
        Sleep ``backoff_factor * 2 ** (n - 1)`` seconds before retry n (plus jitter).
    backoff_max:
        Never sleep longer than this between tries (also caps ``Retry-After``).
    backoff_jitter:
        Add up to this many seconds of random jitter to each sleep.
    status_forcelist:
        HTTP statuses that are retried (for idempotent methods).
    allowed_methods:
        Methods that may be retried. POST is excluded by default: it may not be
        idempotent on every server.
    respect_retry_after:
        Honour a ``Retry-After`` header on 429/503 answers.
    """

    total: int = 3
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.25
    status_forcelist: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    allowed_methods: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS"})
    respect_retry_after: bool = True
    history: tuple[RequestHistory, ...] = field(default=(), compare=False)

    @property
    def exhausted(self) -> bool:
        """True when no retry is left."""
        return self.total < 0

    def is_retryable_method(self, method: str) -> bool:
        return method.upper() in self.allowed_methods

    def is_retryable_status(self, method: str, status: int) -> bool:
        return self.is_retryable_method(method) and status in self.status_forcelist

    def increment(
        self,
        method: str,
        url: str | None,
        *,
        error: BaseException | None = None,
        status: int | None = None,
    ) -> Retry:
        """A new Retry with one try fewer and this attempt in its history."""
        entry = RequestHistory(
            method=method,
            url=redact_url(url),
            error=None if error is None else str(error),
            status=status,
        )
        return replace(self, total=self.total - 1, history=(*self.history, entry))

    def backoff_time(self) -> float:
        """Seconds to sleep before the next try, given the history so far."""
        tries = len(self.history)
        if tries == 0 or self.backoff_factor <= 0:
            return 0.0
        base = min(self.backoff_max, self.backoff_factor * 2.0 ** (tries - 1))
        jitter = random.uniform(0, self.backoff_jitter) if self.backoff_jitter else 0.0
        return min(self.backoff_max, base + jitter)

    def retry_after(self, response: requests.Response | None) -> float | None:
        """Seconds asked for by a ``Retry-After`` header, capped by backoff_max."""
        if response is None or not self.respect_retry_after:
            return None
        value = response.headers.get("Retry-After")
        if not value:
            return None
        if re.fullmatch(r"\s*\d+\s*", value):
            seconds = float(value)
        else:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None  # malformed header: fall back to backoff
            if parsed.tzinfo is None:  # "-0000": an HTTP-date is always UTC
                parsed = parsed.replace(tzinfo=timezone.utc)
            seconds = parsed.timestamp() - time.time()
        return float(max(0.0, min(self.backoff_max, seconds)))

    def sleep(self, response: requests.Response | None = None) -> None:
        """Sleep before the next try: Retry-After when given, else backoff."""
        delay = self.retry_after(response)
        if delay is None:
            delay = self.backoff_time()
        if delay > 0:
            time.sleep(delay)


DEFAULT_TIMEOUT = Timeout()
DEFAULT_RETRY = Retry()
NO_RETRY = Retry(total=0)


def _snippet(response: requests.Response, limit: int = 300) -> str:
    """A short, single-line excerpt of an error body (HTML reduced to its text)."""
    raw = b""
    try:
        stream = getattr(response, "raw", None)
        if getattr(response, "_content_consumed", False) or stream is None:
            raw = (getattr(response, "content", None) or b"")[:4096]
        else:
            raw = response.raw.read(4096, decode_content=True) or b""
    except Exception:  # the body of an error answer is a courtesy, never required
        raw = b""
    text = raw.decode("utf-8", errors="replace")
    if "<" in text and ">" in text:
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", text, flags=re.I | re.S)
        body = re.sub(r"<[^>]+>", " ", body)
        text = (title.group(1) + ": " if title else "") + body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "unknown status"


def error_for_response(
    response: requests.Response, what: str = "", uids: tuple[str, ...] = ()
) -> DICOMTrolleyError:
    """The DICOMTrolleyError for an HTTP error answer (status >= 400)."""
    status = response.status_code
    url = redact_url(getattr(response, "url", None)) or "the server"
    reason = getattr(response, "reason", None) or _phrase(status)
    detail = _snippet(response)
    prefix = f"{what}: " if what else ""
    message = f"{prefix}Calling {url} failed ({status} - {reason})"
    if detail:
        message += f": {detail}"
    cls: type[HTTPStatusError] | type[DICOMTrolleyAuthError]
    if status in (401, 403):
        cls = DICOMTrolleyAuthError
    elif status == 429 or status >= 500:
        cls = ServerHTTPError
    else:
        cls = ClientHTTPError
    return cls(message, url=url, status_code=status, uids=uids)


def map_requests_error(
    error: requests.RequestException, method: str, url: str, what: str
) -> DICOMTrolleyError:
    prefix = f"{what}: " if what else ""
    shown = redact_url(url)
    if isinstance(error, requests.Timeout) or _is_read_timeout(error):
        return DICOMTrolleyTimeoutError(
            f"{prefix}{method} {shown} timed out ({type(error).__name__})", url=url
        )
    if isinstance(
        error, requests.ConnectionError | requests.exceptions.ChunkedEncodingError
    ):
        return DICOMTrolleyConnectionError(
            f"{prefix}{method} {shown} failed: {_reason(error)}", url=url
        )
    return PermanentError(
        f"{prefix}{method} {shown} could not be sent: {_reason(error)}", url=url
    )


def _is_read_timeout(error: requests.RequestException) -> bool:
    """True for requests' ConnectionError that wraps a read timeout.

    requests raises ``ConnectionError(ReadTimeoutError)`` (not ``ReadTimeout``)
    when the server stops sending in the middle of a body it reads itself.
    """
    return isinstance(error, requests.ConnectionError) and any(
        isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in error.args
    )


def _reason(error: BaseException) -> str:
    """The innermost useful reason of a requests/urllib3 error, without URLs."""
    text = str(error)
    for pattern in (
        r"\[Errno -?\d+\][^'\")\]]*",
        r"Connection refused",
        r"reset by peer",
    ):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip()
    text = re.sub(r"https?://\S+", "<url>", text)
    # urllib3's "Max retries exceeded with url: /path?query" (may hold secrets)
    text = re.sub(r"(with url: )\S+", r"\1<url>", text)
    return text[:200] or type(error).__name__


class HttpTransport:
    """Sends requests for protocol adapters with timeouts, retries and error mapping.

    Parameters
    ----------
    session:
        The requests session: carries auth, cookies, certificates and proxies.
    timeout:
        Default :class:`Timeout` for every request.
    retry:
        Default :class:`Retry` policy for every request.
    """

    def __init__(
        self,
        session: requests.Session,
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.session = session
        self.timeout = Timeout.coerce(timeout)
        self.retry = DEFAULT_RETRY if retry is None else retry

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | str | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | str | None = None,
        stream: bool = False,
        what: str = "",
        uids: tuple[str, ...] = (),
        ok_statuses: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send one request; retry transient failures; raise for error statuses.

        Returns the response for any status below 400 and for ``ok_statuses``,
        once it is proven complete (:mod:`dicomtrolley.body`): without
        ``stream`` its body has been read whole under the timeout's deadline,
        and an answer cut anywhere (headers included) was tried again. With
        ``stream=True`` only the framing is checked here (a multipart answer
        may end with its close delimiter instead); the body is read through a
        :class:`~dicomtrolley.body.GuardedBody` under the same deadline, and
        the caller must close the response.
        """
        retry = self.retry
        method = method.upper()
        while True:
            response: requests.Response | None = None
            try:
                response = self._send(method, url, params, headers, data, what, uids)
                status = response.status_code
                if status < 400 or status in ok_statuses:
                    self._complete(response, method, stream, what, uids)
                    return response
            except TransientError as error:
                if response is not None:
                    response.close()
                if not retry.is_retryable_method(method):
                    raise
                retry = retry.increment(method, url, error=error)
                if retry.exhausted:
                    raise
                logger.info("retrying %s %s after %s", method, redact_url(url), error)
                retry.sleep()
                continue
            except BaseException:
                if response is not None:
                    response.close()
                raise
            if retry.is_retryable_status(method, status):
                next_retry = retry.increment(method, url, status=status)
                if not next_retry.exhausted:
                    logger.info(
                        "retrying %s %s after HTTP %s", method, redact_url(url), status
                    )
                    response.close()
                    next_retry.sleep(response)
                    retry = next_retry
                    continue
            failure = error_for_response(response, what, uids)
            response.close()
            raise failure

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | list[tuple[str, Any]] | str | None,
        headers: Mapping[str, str] | None,
        data: bytes | str | None,
        what: str,
        uids: tuple[str, ...],
    ) -> requests.Response:
        """One try: the answer's status and headers, its body not yet read.

        The body is always streamed, through a GuardedBody on ``response.raw``.
        """
        start = time.monotonic()
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                headers=dict(headers or {}),
                data=data,
                stream=True,
                timeout=self.timeout.as_requests(),
            )
        except requests.RequestException as error:
            raise map_requests_error(error, method, url, what) from error
        deadline = self.timeout.deadline(start, declared_length(response.headers))
        response.raw = GuardedBody(
            response.raw, deadline, url=response.url, what=what, uids=uids
        )
        return response

    @staticmethod
    def _complete(
        response: requests.Response,
        method: str,
        stream: bool,
        what: str,
        uids: tuple[str, ...],
    ) -> None:
        """Raise IncompleteResponseError unless the answer can be proven complete."""
        if not is_framed(method, response.status_code, response.headers):
            media_type = response.headers.get("Content-Type", "").lower().strip()
            if not (stream and media_type.startswith("multipart/")):
                raise unframed_error(response.url, what, uids)
        if stream:
            return
        try:
            response.content  # noqa: B018  (read whole, under the deadline)
        except requests.RequestException as error:
            raise map_requests_error(error, method, response.url, what) from error

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def ensure_pool_size(self, size: int) -> None:
        """Make the session keep at least ``size`` connections per host.

        requests keeps 10 by default: more concurrent transfers than that would
        open and drop connections all the time. Only plain HTTPAdapters are
        resized; custom adapters are left as the user configured them.
        """
        ensure_pool_size(self.session, size)


def read_with_retry(
    open_response: Callable[[], requests.Response],
    read: Callable[[requests.Response], T],
    retry: Retry,
    what: str = "",
) -> T:
    """Open an answer and read it; start again when its body breaks off.

    Opening is retried by the transport under its own policy (statuses,
    connections, timeouts), so errors from open_response are raised as they
    come: retrying them here as well would multiply the tries. A
    :class:`TransientError` while reading (a cut connection, a read timeout) is
    retried under retry, and the response is always closed.
    """
    while True:
        response = open_response()
        try:
            return read(response)
        except TransientError as error:
            failure = error
        finally:
            response.close()
        retry = retry.increment("GET", failure.url or response.url, error=failure)
        if retry.exhausted:
            raise failure
        logger.info("retrying %s after %s", what or response.url, failure)
        retry.sleep()


def ensure_pool_size(session: requests.Session, size: int) -> None:
    """Resize the connection pools of a session's plain HTTPAdapters to ``size``."""
    for adapter in session.adapters.values():
        if type(adapter) is not HTTPAdapter:
            continue
        current = int(getattr(adapter, "_pool_maxsize", 10))
        if current >= size:
            continue
        connections = int(getattr(adapter, "_pool_connections", 10))
        block = bool(getattr(adapter, "_pool_block", False))
        adapter.init_poolmanager(connections, size, block=block)
        adapter._pool_maxsize = size  # type: ignore[attr-defined]


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` on every request (OAuth2 access tokens)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r

    def __repr__(self) -> str:  # never show the token
        return "BearerAuth(token=***)"


def new_session(
    auth: requests.auth.AuthBase | tuple[str, str] | None = None,
    *,
    verify: bool | str = True,
    pool_size: int = 10,
) -> requests.Session:
    """A requests session with auth, TLS verification (on) and a pool of pool_size."""
    session = requests.Session()
    if auth is not None:
        session.auth = auth
    session.verify = verify
    ensure_pool_size(session, pool_size)
    return session
