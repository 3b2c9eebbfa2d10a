"""dicomtrolley 4.1.0's multipart helpers, on top of the streaming parser.

:class:`HTTPMultiPartStream` turns a streamed ``multipart/related`` requests
response into :class:`HTMLPart` objects (headers and body of each part);
:class:`PartIterator` does the same for any iterator of byte chunks, giving each
part as raw bytes (its header block, a blank line, its body). Both are thin
wrappers around :class:`dicomtrolley.formats.multipart.MultipartParser`, so the
scan is linear in the size of the body (4.1.0 rescanned its buffer).

dicomtrolley's own downloaders do not use this module: they stream each part to
disk (:mod:`dicomtrolley.streaming`). It is kept for scripts that used it; it
holds one whole part in memory at a time.

Differences from 4.1.0: a part's body no longer ends with the line break that
precedes the next delimiter; a body that ends before its closing delimiter
raises :class:`~dicomtrolley.exceptions.IncompleteResponseError` (transient,
not a :class:`MultipartContentError`) instead of silently losing its last part; a
connection that breaks raises the same error.
"""

from __future__ import annotations

import email.parser
from collections import deque
from collections.abc import Iterator
from typing import Any

import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    IncompleteResponseError,
    MultipartContentError,
)
from dicomtrolley.formats.multipart import (
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
)

__all__ = [
    "DICOMTrolleyError",
    "HTMLPart",
    "HTTPMultiPartStream",
    "MultipartContentError",
    "PartIterator",
    "SafeChunks",
    "parse_headers",
    "split_on_find",
]

_BLANK_LINE = b"\r\n\r\n"


def split_on_find(content: Any, bound: Any) -> tuple[Any, Any]:
    """content before and after the first bound (bytes or str).

    When bound does not occur, all of content comes first and the second part
    is empty (4.1.0 cut off the last character instead).
    """
    before, _, after = content.partition(bound)
    return before, after


def parse_headers(content: bytes, encoding: str) -> list[tuple[str, str]]:
    """``Name: value`` lines (a part's header block) as (name, value) pairs."""
    text = content.decode(encoding)
    return list(email.parser.HeaderParser().parsestr(text).items())


class HTMLPart:
    """One part of a multipart answer: ``headers`` (case-insensitive) and ``content``.

    Parameters
    ----------
    content:
        The raw part: its header lines, a blank line (CR LF CR LF), its body.
    encoding:
        How header lines and :attr:`text` are decoded (default UTF-8).

    Raises
    ------
    MultipartContentError
        When content has no blank line ending a header block.
    """

    def __init__(self, content: bytes, encoding: str | None) -> None:
        self.encoding = encoding or "utf-8"
        if _BLANK_LINE not in content:
            raise MultipartContentError(
                "multipart part content does not contain CR-LF-CR-LF"
            )
        header_block, body = split_on_find(content, _BLANK_LINE)
        self.content: bytes = body
        header_block = header_block.lstrip()
        pairs = parse_headers(header_block, self.encoding) if header_block else []
        self.headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(pairs)

    @classmethod
    def from_parsed(
        cls, headers: dict[str, str], content: bytes, encoding: str | None
    ) -> HTMLPart:
        """A part whose headers and body were already separated (no copy, no reparse)."""
        part = cls.__new__(cls)
        part.encoding = encoding or "utf-8"
        part.content = content
        part.headers = CaseInsensitiveDict(headers)
        return part

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding)

    def __repr__(self) -> str:
        kind = self.headers.get("Content-Type", "no Content-Type")
        return f"<HTMLPart {kind}, {len(self.content)} bytes>"


class SafeChunks:
    """response.iter_content(chunk_size), with small chunks joined up.

    Some servers ignore the chunk size asked for; this hands out chunks of at
    least chunk_size bytes (except the last).
    """

    def __init__(self, response: requests.Response, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self._chunk_iterator = response.iter_content(chunk_size=chunk_size)

    def __iter__(self) -> SafeChunks:
        return self

    def __next__(self) -> bytes:
        collected = bytearray()
        for chunk in self._chunk_iterator:
            collected += chunk
            if len(collected) >= self.chunk_size:
                break
        if not collected:
            raise StopIteration
        return bytes(collected)


class PartIterator:
    """Raw parts (CR LF, header lines, blank line, body) of a multipart body.

    Parameters
    ----------
    bytes_iterator:
        The body, in chunks of any size.
    boundary:
        The delimiter as it appears in the body, ``b"--" + boundary`` (as in
        4.1.0); the bare boundary is accepted too.

    Raises
    ------
    MultipartContentError
        When the body is malformed.
    IncompleteResponseError
        When it ends before its closing delimiter or the connection breaks.
    """

    def __init__(self, bytes_iterator: Iterator[bytes], boundary: bytes) -> None:
        self.boundary = boundary
        bare = boundary[2:] if boundary.startswith(b"--") else boundary
        self._parser = MultipartParser(bare)
        self._bytes_iterator = iter(bytes_iterator)
        self._ready: deque[tuple[dict[str, str], bytes]] = deque()
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._ended = False
        self.last_scanned = 0  # how many bytes of the body have been parsed

    def __iter__(self) -> PartIterator:
        return self

    def __next__(self) -> bytes:
        headers, body = self.next_parsed()
        return _raw_part(headers, body)

    def next_parsed(self) -> tuple[dict[str, str], bytes]:
        """The next part as (headers with lower-case names, body)."""
        while not self._ready:
            if self._ended:
                raise StopIteration
            chunk = self.read_next_chunk()
            if chunk is None:
                self._ended = True
                self._parser.close()  # raises if the closing delimiter is missing
                continue
            self.last_scanned += len(chunk)
            self._take(self._parser.feed(chunk))
        return self._ready.popleft()

    def scan_for_part(self) -> bytes | None:
        """The next part among the bytes read so far, or None (reads nothing)."""
        if not self._ready:
            return None
        return _raw_part(*self._ready.popleft())

    def read_next_chunk(self) -> bytes | None:
        """The next chunk of the body; None at its end."""
        try:
            return next(self._bytes_iterator)
        except StopIteration:
            return None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
            raise IncompleteResponseError(
                f"multipart body broke off: {type(error).__name__}: {error}"
            ) from error

    def _take(self, events: list[PartStart | PartData | PartEnd]) -> None:
        for event in events:
            if isinstance(event, PartStart):
                self._headers = event.headers
                self._body = bytearray()
            elif isinstance(event, PartData):
                self._body += event.data
            else:
                self._ready.append((self._headers, bytes(self._body)))
                self._body = bytearray()


def _raw_part(headers: dict[str, str], body: bytes) -> bytes:
    """A part as 4.1.0's PartIterator gave it: the line break that ended the
    delimiter line, header lines, a blank line, the body."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return b"\r\n" + lines.encode("latin-1") + b"\r\n" + body


class HTTPMultiPartStream:
    """The parts of a streamed multipart requests response, as :class:`HTMLPart`.

    ``for part in HTTPMultiPartStream(response): ...`` reads the response once;
    the stream cannot be iterated again.

    Raises
    ------
    MultipartContentError
        When the response is not multipart or has no boundary (at construction),
        or the body is malformed or incomplete (while iterating).
    """

    def __init__(
        self, response: requests.Response, stream_chunk_size: int = 65536
    ) -> None:
        self.response = response
        self.boundary = self._find_boundary(response)
        self._part_iterator = PartIterator(
            bytes_iterator=SafeChunks(response, stream_chunk_size),
            boundary=b"--" + self.boundary,
        )

    @classmethod
    def _find_boundary(cls, multipart_response: requests.Response) -> bytes:
        content_type = multipart_response.headers.get("content-type", "")
        return boundary_from_content_type(content_type)

    def __iter__(self) -> HTTPMultiPartStream:
        return self

    def __next__(self) -> HTMLPart:
        headers, body = self._part_iterator.next_parsed()
        return HTMLPart.from_parsed(headers, body, self.response.encoding)
