"""Streaming multipart/related parser for DICOMweb WADO-RS and RAD-69 MTOM answers.

A sans-I/O, push-style parser: hand it the response body in chunks of any size
with :meth:`MultipartParser.feed` and it returns events (:class:`PartStart`,
:class:`PartData`, :class:`PartEnd`) as soon as the bytes for them have arrived.
Part bodies are passed on as they come in, so memory stays bounded by the chunk
size, not by the part size, and every byte is scanned a constant number of times
(``bytes.find`` over the new bytes plus a carried tail shorter than the
delimiter), so the work is linear in the size of the body.

The syntax is that of RFC 2046 section 5.1 (multipart media types) as used by
RFC 2387 (multipart/related). The parser is a little more tolerant than the RFC:
it accepts bare LF line endings in header blocks and around delimiters, and
transport padding (spaces and tabs) after the boundary on a delimiter line.

It is written by hand because no maintained library offers an incremental,
push-style multipart/related parser with bounded memory that fits here: the
standard library's :mod:`email` parser needs the whole message, and the
streaming parsers on PyPI are built for multipart/form-data (RFC 7578); the
``multipart`` package's ``PushMultipartParser``, for one, rejects parts without
a ``Content-Disposition: form-data`` header, which WADO-RS and MTOM parts do not
carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from dicomtrolley.exceptions import IncompleteResponseError, MultipartContentError

__all__ = [
    "Event",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "boundary_from_content_type",
    "parse_content_type",
]

#: Longest boundary accepted. RFC 2046 allows 70 characters; some servers use more.
MAX_BOUNDARY_LENGTH = 200

_CR = 13
_LF = 10
_DASH = 45
_PADDING = b" \t"


# --------------------------------------------------------------------------- #
# Content-Type header
# --------------------------------------------------------------------------- #


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type header value into media type and parameters.

    ``'multipart/related; type="application/dicom"; boundary=abc'`` gives
    ``("multipart/related", {"type": "application/dicom", "boundary": "abc"})``.

    The media type and the parameter names are lower-cased; parameter values keep
    their case. Quoted values may contain ``;`` and backslash escapes. Extra
    whitespace, empty parameters and a trailing ``;`` are ignored; a parameter
    without a value (``name`` or ``name=``) gets the value ``""``. When a
    parameter is repeated, the last one wins. Never raises.
    """
    head, _, rest = value.partition(";")
    media_type = head.strip().lower()
    params: dict[str, str] = {}
    i = 0
    n = len(rest)
    while i < n:
        # The name runs up to '=' or ';'.
        j = i
        while j < n and rest[j] not in "=;":
            j += 1
        name = rest[i:j].strip().lower()
        if j >= n or rest[j] == ";":
            if name:
                params[name] = ""
            i = j + 1
            continue
        # rest[j] == "=": read the value, quoted or not.
        k = j + 1
        while k < n and rest[k] in " \t":
            k += 1
        if k < n and rest[k] == '"':
            chars: list[str] = []
            k += 1
            while k < n and rest[k] != '"':
                if rest[k] == "\\" and k + 1 < n:
                    k += 1
                chars.append(rest[k])
                k += 1
            param_value = "".join(chars)
            # Skip the closing quote and anything up to the next ';'.
            end = rest.find(";", k)
            i = n if end < 0 else end + 1
        else:
            end = rest.find(";", k)
            if end < 0:
                end = n
            param_value = rest[k:end].strip()
            i = end + 1
        if name:
            params[name] = param_value
    return media_type, params


def boundary_from_content_type(value: str) -> bytes:
    """The multipart boundary of a Content-Type header value, as bytes.

    Raises
    ------
    MultipartContentError
        If the media type is not ``multipart/*``, or the boundary parameter is
        missing, empty, longer than 200 characters, or not encodable as bytes.
    """
    media_type, params = parse_content_type(value)
    if not media_type.startswith("multipart/"):
        raise MultipartContentError(
            f"Expected a multipart/* Content-Type, got {value!r}"
        )
    boundary = params.get("boundary", "")
    if not boundary:
        raise MultipartContentError(
            f"Expected a boundary parameter in the multipart Content-Type, "
            f"got {value!r}"
        )
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise MultipartContentError(
            f"Multipart boundary is {len(boundary)} characters long, expected at "
            f"most {MAX_BOUNDARY_LENGTH} (RFC 2046 allows 70)"
        )
    return _boundary_bytes(boundary)


def _boundary_bytes(boundary: bytes | str) -> bytes:
    """Validate a boundary and return it as bytes (str is encoded as Latin-1)."""
    if isinstance(boundary, str):
        try:
            raw = boundary.encode("latin-1")
        except UnicodeEncodeError:
            raise MultipartContentError(
                f"Expected a multipart boundary of ASCII characters, got {boundary!r}"
            ) from None
    else:
        raw = bytes(boundary)
    if not raw:
        raise MultipartContentError("Expected a multipart boundary, got an empty one")
    if b"\r" in raw or b"\n" in raw:
        raise MultipartContentError(
            f"Expected a multipart boundary without line breaks, got {raw!r}"
        )
    return raw


# --------------------------------------------------------------------------- #
# Events
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class PartStart:
    """The headers of a new part have been read.

    ``headers`` maps lower-cased header names to values stripped of surrounding
    whitespace, decoded as Latin-1. A header that occurs more than once has its
    values joined with ``", "``, in order; obsolete folded lines are unfolded.
    """

    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class PartData:
    """A piece of the body of the current part.

    ``data`` may be a :class:`memoryview` into the chunk given to
    :meth:`MultipartParser.feed`. It is valid only until the next call to
    ``feed()``: write it out or copy it (``bytes(data)``) right away.
    """

    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete (its closing delimiter has been seen)."""


Event: TypeAlias = PartStart | PartData | PartEnd

_PART_END = PartEnd()

# Parser states.
_PREAMBLE = 0  # looking for the first delimiter
_AFTER_BOUNDARY = 1  # boundary seen: padding, then line break or "--" must follow
_HEADERS = 2  # reading a part's header block
_BODY = 3  # passing on a part's body, looking for the next delimiter
_DONE = 4  # closing delimiter seen; the rest is epilogue
_FAILED = 5  # a MultipartContentError was raised
_CLOSED = 6  # close() was called before the closing delimiter


class MultipartParser:
    """Incremental, sans-I/O parser for a multipart (RFC 2046 5.1) body.

    Feed it the body in chunks of any size; each :meth:`feed` returns the events
    that the new bytes complete. Call :meth:`close` at the end of the input: it
    raises :class:`IncompleteResponseError` if the closing delimiter
    (``--boundary--``) was never seen. Malformed bodies raise
    :class:`MultipartContentError`.

    For a part, the events are one :class:`PartStart`, zero or more
    :class:`PartData` and one :class:`PartEnd`. Body bytes are passed on as soon
    as they cannot be the start of a delimiter: the parser keeps back fewer than
    ``len(boundary) + 4`` bytes of a body between calls (see :attr:`buffered`).
    Header blocks are kept whole until complete, up to ``max_header_bytes``.

    Passing ``bytes`` to :meth:`feed` is zero-copy; ``bytearray`` and
    ``memoryview`` chunks are copied first.
    """

    def __init__(self, boundary: bytes | str, *, max_header_bytes: int = 65536) -> None:
        self._boundary = _boundary_bytes(boundary)
        # A delimiter is CRLF "--" boundary; searching for LF "--" boundary also
        # finds the bare-LF form, and a CR just before it is dropped from the body.
        self._needle = b"\n--" + self._boundary
        self._max_header_bytes = max_header_bytes
        self._state = _PREAMBLE
        # Unconsumed bytes kept between feed() calls. The leading LF stands for
        # the start of the stream, where the first delimiter needs no line break.
        self._carry = b"\n"
        # In _BODY: how many leading bytes of _carry are not body (0 or 1).
        self._skip = 0
        # In _HEADERS: the header block so far, after a LF that ended the
        # delimiter line.
        self._header_buf = bytearray()
        self._parts_completed = 0
        self._received = 0
        self._incomplete_message = ""

    # -- public properties ---------------------------------------------------

    @property
    def parts_completed(self) -> int:
        """How many parts have ended (:class:`PartEnd` events returned)."""
        return self._parts_completed

    @property
    def finished(self) -> bool:
        """True once the closing delimiter ``--boundary--`` has been seen."""
        return self._state == _DONE

    @property
    def buffered(self) -> int:
        """How many received bytes the parser holds that it has not passed on."""
        # min(): before the first delimiter, _carry may still hold the LF that
        # stands for the start of the stream, which was not received.
        return min(len(self._carry) + len(self._header_buf), self._received)

    # -- public methods ------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse the next chunk of the body and return the events it completes.

        Data after the closing delimiter (the epilogue) is ignored.

        Raises
        ------
        MultipartContentError
            If the body is malformed, or the parser failed or was closed before.
        """
        state = self._state
        if state == _DONE:
            return []
        if state >= _FAILED:
            raise MultipartContentError(
                "Multipart parser cannot take more data: it was closed or failed "
                "earlier"
            )
        chunk = data if isinstance(data, bytes) else bytes(data)
        if not chunk:
            return []
        self._received += len(chunk)
        try:
            if state == _HEADERS:
                return self._feed_headers(chunk)
            carry = self._carry
            if not carry:
                return self._run(chunk, 0, 0, [])
            needle_len = len(self._needle)
            if (
                state == _BODY
                and len(chunk) >= needle_len
                and (carry + chunk[:needle_len]).find(self._needle) < 0
            ):
                # No delimiter starts in the carried tail: pass it on and scan
                # the chunk itself, without copying it.
                events: list[Event] = []
                if len(carry) > self._skip:
                    events.append(PartData(carry[self._skip :]))
                self._carry = b""
                return self._run(chunk, 0, 0, events)
            self._carry = b""
            return self._run(carry + chunk, 0, self._skip, [])
        except MultipartContentError:
            self._state = _FAILED
            self._carry = b""
            self._header_buf.clear()
            raise

    def close(self) -> list[Event]:
        """Signal the end of the body.

        Returns no events if the closing delimiter was seen (all events have
        already been returned by :meth:`feed`).

        Raises
        ------
        IncompleteResponseError
            If the body ended before the closing delimiter ``--boundary--``.
        """
        state = self._state
        if state == _DONE:
            return []
        if state == _FAILED:
            raise MultipartContentError("Multipart parser failed earlier")
        if state == _CLOSED:
            raise IncompleteResponseError(self._incomplete_message)
        if state == _PREAMBLE:
            where = (
                "the body is empty"
                if not self._received
                else f"no delimiter '--{self._boundary_text}' was found in "
                f"{self._received} bytes"
            )
        elif state == _HEADERS:
            where = f"it ended in the headers of part {self._parts_completed + 1}"
        elif state == _BODY:
            where = f"it ended in the body of part {self._parts_completed + 1}"
        else:
            where = f"it ended after {self._parts_completed} complete part(s)"
        self._state = _CLOSED
        self._carry = b""
        self._header_buf.clear()
        self._incomplete_message = (
            f"Multipart body is incomplete: expected the closing delimiter "
            f"'--{self._boundary_text}--', but {where}"
        )
        raise IncompleteResponseError(self._incomplete_message)

    # -- internals -----------------------------------------------------------

    @property
    def _boundary_text(self) -> str:
        return self._boundary.decode("latin-1")

    def _run(
        self, buf: bytes | bytearray, pos: int, body_start: int, events: list[Event]
    ) -> list[Event]:
        """Consume ``buf`` from ``pos``; keep what cannot be decided yet.

        In _BODY, ``body_start`` is where the body bytes in ``buf`` begin;
        ``pos`` may be one less (the LF ending the header block, which can also
        serve as the line break of a delimiter that follows an empty body).
        """
        needle = self._needle
        needle_len = len(needle)
        n = len(buf)
        view = memoryview(buf)
        state = self._state
        while True:
            if state == _BODY:
                i = buf.find(needle, pos)
                if i < 0:
                    # The last needle_len - 1 bytes may start a delimiter, and
                    # the byte before them may be its CR: keep needle_len bytes.
                    keep = max(n - needle_len, pos)
                    if keep > body_start:
                        events.append(PartData(view[body_start:keep]))
                    self._carry = bytes(buf[keep:])
                    self._skip = max(body_start - keep, 0)
                    break
                end = i
                if end > body_start and buf[end - 1] == _CR:
                    end -= 1
                if end > body_start:
                    events.append(PartData(view[body_start:end]))
                events.append(_PART_END)
                self._parts_completed += 1
                pos = i + needle_len
                state = _AFTER_BOUNDARY
            elif state == _AFTER_BOUNDARY:
                while pos < n and buf[pos] in _PADDING:
                    pos += 1
                if pos >= n:
                    self._carry = b""
                    break
                c = buf[pos]
                if c == _LF:
                    pos += 1
                    state = _HEADERS
                    continue
                if c != _CR and c != _DASH:
                    raise self._bad_delimiter_line(buf[pos : pos + 16])
                if pos + 1 >= n:
                    self._carry = bytes(buf[pos:])
                    break
                following = buf[pos + 1]
                if c == _CR and following == _LF:
                    pos += 2
                    state = _HEADERS
                elif c == _DASH and following == _DASH:
                    state = _DONE
                    self._carry = b""
                    break
                else:
                    raise self._bad_delimiter_line(buf[pos : pos + 16])
            elif state == _HEADERS:
                # buf[pos - 1] is the LF that ended the delimiter line.
                term, body_lf = self._find_header_end(buf, pos - 1, pos, n)
                if term < 0:
                    self._header_buf = bytearray(b"\n")
                    self._header_buf += view[pos:]
                    break
                events.append(PartStart(self._parse_headers(buf[pos : term + 1])))
                pos = body_lf
                body_start = body_lf + 1
                state = _BODY
            elif state == _PREAMBLE:
                i = buf.find(needle, pos)
                if i < 0:
                    self._carry = bytes(buf[max(n - needle_len + 1, pos) :])
                    break
                pos = i + needle_len
                state = _AFTER_BOUNDARY
            else:  # pragma: no cover - _DONE breaks out above
                break
        self._state = state
        return events

    def _feed_headers(self, chunk: bytes) -> list[Event]:
        """Add a chunk to a header block that started in an earlier chunk."""
        header_buf = self._header_buf
        scanned = len(header_buf)
        header_buf += chunk
        term, body_lf = self._find_header_end(
            header_buf, max(scanned - 2, 0), 1, len(header_buf)
        )
        if term < 0:
            return []
        events: list[Event] = [PartStart(self._parse_headers(header_buf[1 : term + 1]))]
        rest = header_buf[body_lf:]  # a new bytearray, starting with the LF
        self._header_buf = bytearray()
        self._state = _BODY
        return self._run(rest, 0, 1, events)

    def _find_header_end(
        self, buf: bytes | bytearray, start: int, block_start: int, n: int
    ) -> tuple[int, int]:
        """Find the blank line that ends a header block.

        ``buf[block_start - 1]`` is the LF that ended the delimiter line, so an
        empty header block is found like any other. Returns the index of the LF
        ending the last header line (or that delimiter-line LF) and the index of
        the LF ending the blank line, or ``(-1, -1)`` if the block is not yet
        complete.

        Raises
        ------
        MultipartContentError
            If the block is longer than ``max_header_bytes``.
        """
        limit = min(n, block_start + self._max_header_bytes)
        crlf = buf.find(b"\n\r\n", start, limit)
        if crlf >= 0:
            lf = buf.find(b"\n\n", start, crlf + 2)
            if lf >= 0:
                return lf, lf + 1
            return crlf, crlf + 2
        lf = buf.find(b"\n\n", start, limit)
        if lf >= 0:
            return lf, lf + 1
        if n - block_start >= self._max_header_bytes:
            raise MultipartContentError(
                f"Header block of multipart part {self._parts_completed + 1} is "
                f"longer than {self._max_header_bytes} bytes: expected a blank "
                f"line ending the headers"
            )
        return -1, -1

    def _parse_headers(self, block: bytes | bytearray) -> dict[str, str]:
        """Parse ``Name: value`` lines (LF or CRLF ended) into a dict."""
        headers: dict[str, str] = {}
        last = ""
        for raw_line in bytes(block).decode("latin-1").split("\n"):
            line = raw_line.rstrip("\r")
            if not line:
                continue
            if line[0] in " \t" and last:
                # An obsolete folded continuation line (RFC 5322 2.2.3).
                headers[last] = f"{headers[last]} {line.strip()}".strip()
                continue
            name, colon, value = line.partition(":")
            name = name.strip().lower()
            if not colon or not name:
                raise MultipartContentError(
                    f"Malformed header line in multipart part "
                    f"{self._parts_completed + 1}: expected 'Name: value', "
                    f"got {line[:80]!r}"
                )
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
            last = name
        return headers

    def _bad_delimiter_line(self, found: bytes | bytearray) -> MultipartContentError:
        return MultipartContentError(
            f"Malformed multipart delimiter after part {self._parts_completed}: "
            f"expected a line break or '--' after '--{self._boundary_text}', "
            f"got {bytes(found)!r}"
        )
