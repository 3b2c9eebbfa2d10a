"""Reading DICOM instances out of HTTP answers as they arrive.

Shared by the downloaders that receive files over HTTP (WADO-RS, WADO-URI,
RAD-69). The body is read in chunks; a multipart answer goes through the
sans-I/O :class:`~dicomtrolley.formats.multipart.MultipartParser`, a single-part
``application/dicom`` answer is one part. Each part is either written to its
file while it arrives (:func:`save_parts`, memory bounded by the chunk size) or
collected in memory and parsed (:func:`datasets_from_parts`).
:func:`dicomtrolley.transport.read_with_retry` starts an exchange again when its
body breaks off.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import requests
import urllib3.exceptions
from pydicom.dataset import Dataset

from dicomtrolley.body import GuardedBody, declared_length, has_body, is_chunked
from dicomtrolley.core import InstanceReference
from dicomtrolley.download import Progress, SaveJob
from dicomtrolley.exceptions import (
    DICOMParseError,
    DICOMTrolleyConnectionError,
    DICOMTrolleyError,
    DICOMTrolleyTimeoutError,
    IncompleteResponseError,
    ResponseFormatError,
)
from dicomtrolley.formats.multipart import (
    Event,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
    parse_content_type,
)
from dicomtrolley.logs import get_module_logger
from dicomtrolley.storage import DICOMDiskStorage, InstanceWriter
from dicomtrolley.transport import Retry, read_with_retry

logger = get_module_logger("streaming")

SINGLE_PART_TYPES = {"application/dicom", "application/octet-stream"}


def iter_body(
    response: requests.Response,
    chunk_size: int,
    *,
    what: str = "",
    uids: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """The response body in chunks, with transport errors as DICOMTrolleyErrors.

    Each chunk is what has arrived, up to chunk_size bytes (``read1``): a read
    never waits for a full chunk, so the bytes received before a connection
    breaks are passed on (and the parts they complete are kept) instead of
    being lost with the unfinished read.
    """
    prefix = _prefix(what)
    raw = response.raw
    read = getattr(raw, "read1", None) or raw.read  # urllib3 1.x has no read1
    try:
        while True:
            chunk = read(chunk_size, decode_content=True)
            if not chunk:
                break
            if progress is not None:
                progress.advance_bytes(len(chunk))
            yield chunk
    except urllib3.exceptions.ReadTimeoutError as error:
        raise DICOMTrolleyTimeoutError(
            f"{prefix}server stopped sending (read timeout)",
            url=response.url,
            uids=uids,
        ) from error
    except urllib3.exceptions.ProtocolError as error:  # reset, IncompleteRead
        raise IncompleteResponseError(
            f"{prefix}connection broke before the answer was complete: {error}",
            url=response.url,
            uids=uids,
        ) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise DICOMTrolleyConnectionError(
            f"{prefix}reading the answer failed: {error}", url=response.url, uids=uids
        ) from error


def iter_parts(
    response: requests.Response,
    chunk_size: int,
    *,
    what: str = "",
    uids: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> Iterator[Event]:
    """Part events of a multipart or single-part DICOM answer, as bytes arrive."""
    prefix = _prefix(what)
    content_type = response.headers.get("Content-Type", "")
    media_type, _ = parse_content_type(content_type) if content_type else ("", {})
    body = iter_body(response, chunk_size, what=what, uids=uids, progress=progress)
    if media_type.startswith("multipart/"):
        try:
            try:
                boundary = boundary_from_content_type(content_type)
            except ResponseFormatError:
                # A header block cut inside Content-Type looks like a bad
                # header; only a body that arrives proves the cut is not ours
                prove_headers_complete(response, what=what, uids=uids)
                raise
            parser = MultipartParser(boundary)
            received = 0
            for chunk in body:
                received += len(chunk)
                yield from parser.feed(chunk)
                if parser.finished:
                    break
            yield from parser.close()
        except (ResponseFormatError, IncompleteResponseError) as error:
            error.url = error.url or response.url
            error.uids = error.uids or uids
            if what and not error.message.startswith(what):
                error.message = f"{what}: {error.message}"
                error.args = (error.message,)
            raise
        # The close delimiter proves the answer complete: what follows (an
        # epilogue, a Content-Length that over-states, a connection closed
        # early) cannot take it back.
        _finish(response, body, received)
        return
    if media_type in SINGLE_PART_TYPES:
        yield PartStart(headers={"content-type": media_type})
        # Content-Length counts the bytes sent: it says nothing about the
        # decoded size when the answer is compressed (gzip can make it larger)
        encoding = response.headers.get("Content-Encoding", "identity")
        expected = response.headers.get("Content-Length", "").strip()
        if encoding.strip().lower() not in ("", "identity"):
            expected = ""
        received = 0
        for chunk in body:
            received += len(chunk)
            yield PartData(chunk)
        if expected.isdigit() and received < int(expected):
            raise IncompleteResponseError(
                f"{prefix}answer ended after {received} of {expected} bytes",
                url=response.url,
                uids=uids,
            )
        yield PartEnd()
        return
    prove_headers_complete(response, what=what, uids=uids)
    raise ResponseFormatError(
        f"{prefix}Expected multipart response (multipart/related or "
        "application/dicom), got "
        f"{content_type or 'no Content-Type'}",
        url=response.url,
        uids=uids,
    )


EPILOGUE_LIMIT = 65536


def _finish(response: requests.Response, body: Iterator[bytes], received: int) -> None:
    """Let a finished multipart answer end, without waiting on a broken server.

    Reading to the answer's end lets the connection be used again. That read
    is immediate for a Content-Length that has been reached and for the last
    chunk of a chunked answer, which a server sends right after the close
    delimiter. A Content-Length that over-states the body could keep it
    waiting for a read timeout: then (and for an answer framed by the
    connection's end) the connection is dropped instead. Errors are ignored.
    """
    headers = response.headers
    identity = headers.get("Content-Encoding", "identity").strip().lower() in (
        "",
        "identity",
    )
    declared = declared_length(headers)
    if declared is not None and not (identity and received >= declared):
        _close(body)  # over-stated, or compressed: do not wait for more
        return
    if declared is None and not is_chunked(headers):
        _close(body)
        return
    drained = 0
    try:
        for chunk in body:
            drained += len(chunk)
            if drained > EPILOGUE_LIMIT:
                break
    except DICOMTrolleyError as error:
        logger.debug("after the close delimiter: %s", error)
    finally:
        _close(body)


def _close(body: Iterator[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


def prove_headers_complete(
    response: requests.Response, *, what: str = "", uids: tuple[str, ...] = ()
) -> None:
    """Raise IncompleteResponseError if the header block may have been cut.

    Called before a header's value is held against the server (an unexpected
    Content-Type): a header block cut short ends the connection, so the body
    is then empty and short of its declared length. One byte of body, or an
    empty body that the answer declared empty, proves the headers complete.
    """
    raw = response.raw
    read = getattr(raw, "read1", None) or raw.read
    try:
        first = read(1, decode_content=True)
    except DICOMTrolleyError:
        if isinstance(raw, GuardedBody):
            raise
        first = b""
    except (urllib3.exceptions.HTTPError, OSError):
        first = b""
    if first:
        return
    method = response.request.method if response.request else "GET"
    declared = declared_length(response.headers)
    if declared == 0 or not has_body(method or "GET", response.status_code):
        return
    raise IncompleteResponseError(
        f"{_prefix(what)}answer ended inside its headers or before its body",
        url=response.url,
        uids=uids,
    )


class PartFile:
    """One part on its way to storage: the one path by which WADO-RS, WADO-URI
    and RAD-69 write what they receive.

    Its bytes go to a temporary file in the output folder; :meth:`finish`
    verifies the file (against the instance expected, when known), gives it
    its name and tells on_saved; :meth:`discard` removes it.
    """

    def __init__(
        self,
        storage: DICOMDiskStorage,
        output_dir: str | Path,
        on_saved: Callable[[Path, int], None],
        expected: InstanceReference | None = None,
    ) -> None:
        self.writer: InstanceWriter = storage.open_writer(output_dir, expected=expected)
        self.on_saved = on_saved

    def write(self, data: bytes | memoryview) -> None:
        self.writer.write(data)

    def finish(self, expected: InstanceReference | None = None) -> Path:
        """The part is complete: verify, name and report its file.

        expected: the instance the part turned out to be (RAD-69 learns it from
        the SOAP root, after the part), checked instead of the one given first.
        """
        if expected is not None:
            self.writer.expected = expected
        path = self.writer.commit()
        self.on_saved(path, self.writer.bytes_written)
        return path

    def discard(self) -> None:
        self.writer.abort()


def save_parts(
    events: Iterator[Event],
    storage: DICOMDiskStorage,
    output_dir: str | Path,
    *,
    on_saved: Callable[[Path, int], None],
    expected: InstanceReference | None = None,
    part_filter: Callable[[dict[str, str]], bool] | None = None,
) -> int:
    """Write each part to its own file while it arrives. Returns parts saved.

    A part whose headers part_filter rejects (e.g. RAD-69's SOAP root part) is
    skipped. A part that fails verification raises; earlier parts stay saved.
    """
    part: PartFile | None = None
    saved = 0
    try:
        for event in events:
            if isinstance(event, PartData):
                if part is not None:
                    part.write(event.data)
            elif isinstance(event, PartStart):
                if part_filter is None or part_filter(event.headers):
                    part = PartFile(storage, output_dir, on_saved, expected)
            elif part is not None:  # PartEnd
                done, part = part, None
                done.finish()
                saved += 1
    finally:
        if part is not None:
            part.discard()
    return saved


def datasets_from_parts(
    events: Iterator[Event], what: str = "", uids: tuple[str, ...] = ()
) -> Iterator[Dataset]:
    """Each part read into memory and parsed as a DICOM file."""
    buffer: io.BytesIO | None = None
    for event in events:
        if isinstance(event, PartStart):
            buffer = io.BytesIO()
        elif isinstance(event, PartData):
            if buffer is not None:
                buffer.write(event.data)
        elif buffer is not None:
            buffer.seek(0)
            yield read_dataset(buffer, what, uids)
            buffer = None


def read_dataset(
    source: io.BytesIO, what: str = "", uids: tuple[str, ...] = ()
) -> Dataset:
    """A complete DICOM file from memory, or DICOMParseError."""
    try:
        return pydicom.dcmread(source)
    except DICOMTrolleyError:
        raise
    except Exception as error:  # pydicom raises assorted errors on garbage
        raise DICOMParseError(
            f"{_prefix(what)}answer is not a DICOM file: {error}", uids=uids
        ) from error


def _prefix(what: str) -> str:
    return f"{what}: " if what else ""


class _RetriedAnswerProgress:
    """Progress of one answer that may be fetched again: each byte shown once.

    A retry receives the answer again from its first byte. A new attempt moves
    the display only past the furthest byte an earlier attempt reached, so the
    bar never goes back and stays live, and ends at the size of the answer that
    was kept. A Content-Length is added to the total once, not per attempt.
    Used by one thread at a time (one answer); the wrapped Progress is shared.
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._shown = 0  # furthest byte of the answer shown so far
        self._received = 0  # bytes received by the current attempt
        self._announced = 0  # largest Content-Length added to the total

    def new_attempt(self) -> None:
        """A new attempt starts receiving the answer from its first byte."""
        self._received = 0

    def announce(self, nbytes: int) -> None:
        """An attempt's Content-Length: added to the total if it grew."""
        if nbytes > self._announced:
            self._progress.add_total(nbytes=nbytes - self._announced)
            self._announced = nbytes

    def add_total(self, instances: int = 0, nbytes: int = 0) -> None:
        self._progress.add_total(instances=instances, nbytes=nbytes)

    def advance_bytes(self, nbytes: int) -> None:
        self._received += nbytes
        if self._received > self._shown:
            self._progress.advance_bytes(self._received - self._shown)
            self._shown = self._received

    def instance_done(self, nbytes: int = 0, skipped: bool = False) -> None:
        self._progress.instance_done(nbytes, skipped=skipped)


def save_answer_with_retry(
    open_response: Callable[[], requests.Response],
    retry: Retry,
    job: SaveJob,
    *,
    chunk_size: int,
    what: str,
    uids: tuple[str, ...],
    expected: InstanceReference | None = None,
    announce_length: bool = False,
) -> None:
    """Fetch one answer and stream every instance in it to its file.

    A body that breaks off is fetched again under retry
    (:func:`~dicomtrolley.transport.read_with_retry`); a file saved again by a
    retry is reported once, and the bytes of an answer received again are
    shown once. With announce_length, the answer's Content-Length is added to
    the progress total. An answer that holds no instance is an error.
    """
    reported: set[Path] = set()
    shown = _RetriedAnswerProgress(job.progress)

    def on_saved(path: Path, nbytes: int) -> None:
        if path not in reported:
            reported.add(path)
            job.saved(path, nbytes)

    def read(response: requests.Response) -> None:
        shown.new_attempt()
        length = response.headers.get("Content-Length", "")
        if announce_length and length.isdigit():
            shown.announce(int(length))
        events = iter_parts(response, chunk_size, what=what, uids=uids, progress=shown)
        if not save_parts(
            events, job.storage, job.output_dir, on_saved=on_saved, expected=expected
        ):
            raise ResponseFormatError(
                f"{what}: the answer held no instances", url=response.url, uids=uids
            )

    read_with_retry(open_response, read, retry, what=what)
