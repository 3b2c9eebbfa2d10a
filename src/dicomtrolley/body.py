"""An HTTP answer's body: read under a deadline, believed only when proven complete.

http.client, and so requests, takes a connection closed by the server as the
end of whatever it was reading. A header block cut after its first lines looks
complete, and a body without a declared length ends wherever the connection
ended. Two rules of dicomtrolley close that gap for every protocol:

- **Framing.** An answer is complete only when its end is proven: the
  ``Content-Length`` was reached, the last chunk of a chunked body arrived, the
  answer has no body by definition (1xx, 204, 304, HEAD), or, for a multipart
  body, the close delimiter was parsed (the multipart reader checks that). An
  answer whose only end is the connection's end (:func:`is_framed` false) is an
  :class:`~dicomtrolley.exceptions.IncompleteResponseError`: transient, so it
  is retried. A header block cut anywhere leaves either no framing at all or a
  framing that the (empty) body does not meet, so it is caught by one rule or
  the other. Conversely, one byte of body proves the header block complete.
- **Deadline.** :class:`~dicomtrolley.transport.Timeout` ``read`` bounds each
  wait for bytes; :class:`Deadline` bounds the whole answer, so a server that
  trickles a byte at a time is given up on. The deadline counts from sending
  the request and is checked after each read of the body, so it is overshot by
  at most one ``read`` timeout. http.client reads the status line and headers
  itself: a server trickling its header block is bounded there only by the
  ``read`` timeout per byte and http.client's limits on header size.

:class:`GuardedBody` wraps ``response.raw`` (requests reads through it too, as
it duck-types urllib3's ``stream``), applies the deadline and turns urllib3's
read errors into dicomtrolley's. Written here because neither requests nor
urllib3 has a total timeout for reading an answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3.exceptions

from dicomtrolley.exceptions import (
    DICOMTrolleyConnectionError,
    DICOMTrolleyError,
    DICOMTrolleyTimeoutError,
    IncompleteResponseError,
)

BODILESS_STATUSES = frozenset({204, 304})


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length of an answer that is not chunked, else None."""
    if is_chunked(headers):
        return None
    value = (headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() else None


def is_chunked(headers: Mapping[str, str]) -> bool:
    """True when the body is sent in chunks (its end is the zero-length chunk)."""
    codings = (headers.get("Transfer-Encoding") or "").lower()
    return "chunked" in codings


def has_body(method: str, status: int) -> bool:
    """False for answers that never have a body (RFC 9110 6.4.1)."""
    return not (
        method.upper() == "HEAD" or 100 <= status < 200 or status in BODILESS_STATUSES
    )


def is_framed(method: str, status: int, headers: Mapping[str, str]) -> bool:
    """True when the answer itself says where it ends (or that it has no body)."""
    return (
        not has_body(method, status)
        or is_chunked(headers)
        or declared_length(headers) is not None
    )


def content_of(response: Any) -> bytes:
    """The body of a response-like object: ``content``, else ``text`` as UTF-8.

    Parsers of whole answers take any object with ``content`` or ``text`` (and
    ``status_code``), as dicomtrolley 4.1.0's did, not only requests' Response.
    """
    content = getattr(response, "content", None)
    if isinstance(content, bytes | bytearray | memoryview):
        return bytes(content)
    text = getattr(response, "text", None)
    return text.encode("utf-8") if isinstance(text, str) else b""


def unframed_error(
    url: str | None, what: str = "", uids: tuple[str, ...] = ()
) -> IncompleteResponseError:
    """The error for an answer whose end cannot be proven."""
    prefix = f"{what}: " if what else ""
    return IncompleteResponseError(
        f"{prefix}answer cannot be proven complete: it has no Content-Length and "
        "is not chunked, so the connection's end is its only end (a cut header "
        "block looks like this)",
        url=url,
        uids=uids,
    )


@dataclass
class Deadline:
    """When the whole of one answer must have arrived (monotonic clock).

    ``total`` seconds from the start of the request, plus one second per
    ``min_rate`` bytes of the answer: its Content-Length when declared, else
    what has arrived so far (an answer of unknown size must keep up an average
    of ``min_rate`` bytes per second after the first ``total`` seconds).
    ``total=None`` means no deadline; ``min_rate=None`` a fixed one.
    """

    start: float
    total: float | None
    min_rate: float | None = None
    declared: int | None = None

    def limit(self, received: int) -> float:
        """The deadline for an answer of which received bytes have arrived."""
        if self.total is None:
            return math.inf
        size = max(self.declared or 0, received)
        extra = size / self.min_rate if self.min_rate else 0.0
        return self.start + self.total + extra

    def expired(self, received: int) -> bool:
        return time.monotonic() > self.limit(received)

    def allowed(self, received: int) -> float:
        """Seconds the answer is allowed in all, for messages."""
        return self.limit(received) - self.start


class GuardedBody:
    """``response.raw`` read under a :class:`Deadline`, with dicomtrolley errors.

    Every read returns as soon as some bytes arrive (urllib3's ``read1``) so
    that the deadline is checked between them. Errors: a read timeout is a
    :class:`DICOMTrolleyTimeoutError`, a connection closed or reset before the
    declared end an :class:`IncompleteResponseError`, the deadline passed a
    :class:`DICOMTrolleyTimeoutError`. Everything else is passed on to the
    wrapped object, so requests can close and release it as usual.
    """

    def __init__(
        self,
        raw: Any,
        deadline: Deadline,
        *,
        url: str | None = None,
        what: str = "",
        uids: tuple[str, ...] = (),
    ) -> None:
        self.wrapped = raw
        self.deadline = deadline
        self.received = 0
        self.url = url
        self.what = what
        self.uids = uids

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def _error(self, error: Exception) -> DICOMTrolleyError:
        prefix = f"{self.what}: " if self.what else ""
        context: dict[str, Any] = {"url": self.url, "uids": self.uids}
        if isinstance(error, urllib3.exceptions.ReadTimeoutError):
            return DICOMTrolleyTimeoutError(
                f"{prefix}server stopped sending (read timeout)", **context
            )
        if isinstance(error, urllib3.exceptions.ProtocolError):  # reset, cut
            return IncompleteResponseError(
                f"{prefix}connection broke before the answer was complete "
                f"({self.received} bytes received): {error}",
                **context,
            )
        return DICOMTrolleyConnectionError(
            f"{prefix}reading the answer failed: {error}", **context
        )

    def _check_deadline(self) -> None:
        if self.deadline.expired(self.received):
            prefix = f"{self.what}: " if self.what else ""
            raise DICOMTrolleyTimeoutError(
                f"{prefix}answer took longer than its total deadline of "
                f"{self.deadline.allowed(self.received):.1f} s "
                f"({self.received} bytes received)",
                url=self.url,
                uids=self.uids,
            )

    def read1(self, amt: int = -1, decode_content: bool | None = None) -> bytes:
        """What has arrived, up to amt bytes (b"" at the end)."""
        self._check_deadline()
        read = getattr(self.wrapped, "read1", None)
        try:
            if read is None:  # not urllib3 2: a file-like object
                chunk = self.wrapped.read(amt if amt and amt > 0 else None)
            else:
                size = amt if amt and amt > 0 else 65536
                chunk = read(size, decode_content=decode_content)
        except DICOMTrolleyError:
            raise
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise self._error(error) from error
        self.received += len(chunk)
        if chunk:
            self._check_deadline()
        return bytes(chunk)

    def read(
        self,
        amt: int | None = None,
        decode_content: bool | None = None,
        cache_content: bool = False,
    ) -> bytes:
        """Up to amt bytes (all when None), gathered under the deadline."""
        pieces: list[bytes] = []
        wanted = amt if amt is not None and amt >= 0 else None
        got = 0
        while wanted is None or got < wanted:
            chunk = self.read1(
                (wanted - got) if wanted is not None else 1 << 20,
                decode_content=decode_content,
            )
            if not chunk:
                break
            pieces.append(chunk)
            got += len(chunk)
        return b"".join(pieces)

    def stream(
        self, amt: int | None = 1 << 16, decode_content: bool | None = None
    ) -> Iterator[bytes]:
        """The body in chunks as they arrive (what requests' iter_content uses)."""
        size = amt if amt and amt > 0 else 1 << 16
        while True:
            chunk = self.read1(size, decode_content=decode_content)
            if not chunk:
                return
            yield chunk
