"""dicomtrolley.http: 4.1.0's multipart helpers over the streaming parser."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import requests
import urllib3

from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    IncompleteResponseError,
    MultipartContentError,
)
from dicomtrolley.http import (
    HTMLPart,
    HTTPMultiPartStream,
    PartIterator,
    SafeChunks,
    parse_headers,
    split_on_find,
)
from tests.fakes import multipart_body

BOUNDARY = "b0und4ry"
PARTS = [b"\x00first body\r\n--not-a-boundary", b"second", b""]


def body(parts: list[bytes] = PARTS) -> bytes:
    return multipart_body(parts, BOUNDARY)


def response(content: bytes, content_type: str | None = None) -> requests.Response:
    answer = requests.Response()
    answer.status_code = 200
    answer.headers["Content-Type"] = (
        content_type
        if content_type is not None
        else f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
    )
    answer.raw = urllib3.HTTPResponse(body=io.BytesIO(content), preload_content=False)
    answer.encoding = None
    return answer


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    return iter([data[i : i + size] for i in range(0, len(data), size)])


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_stream_gives_every_part_at_any_chunk_size(size: int) -> None:
    parts = list(HTTPMultiPartStream(response(body()), stream_chunk_size=size))
    assert [p.content for p in parts] == PARTS
    assert all(p.headers["content-type"] == "application/dicom" for p in parts)
    assert parts[1].headers["Content-Length"] == "6"
    assert parts[0].headers["Content-Type"] == "application/dicom"
    assert parts[0].encoding == "utf-8"


def test_stream_refuses_a_non_multipart_answer() -> None:
    with pytest.raises(MultipartContentError, match="multipart"):
        HTTPMultiPartStream(response(b"{}", "application/json"))
    with pytest.raises(MultipartContentError, match="boundary"):
        HTTPMultiPartStream(response(b"", "multipart/related"))


def test_stream_boundary() -> None:
    assert HTTPMultiPartStream(response(body())).boundary == BOUNDARY.encode()


def test_a_cut_body_raises_instead_of_dropping_the_last_part() -> None:
    stream = HTTPMultiPartStream(response(body()[:-40]))
    assert next(stream).content == PARTS[0]
    with pytest.raises(IncompleteResponseError):
        list(stream)


def test_part_iterator_gives_raw_parts_that_html_part_reads() -> None:
    raw = list(PartIterator(chunks(body(), 5), b"--" + BOUNDARY.encode()))
    parts = [HTMLPart(r, None) for r in raw]
    assert [p.content for p in parts] == PARTS
    assert parts[1].text == "second"
    assert parts[1].headers["Content-Type"] == "application/dicom"


def test_part_iterator_accepts_a_bare_boundary_and_scans_without_reading() -> None:
    iterator = PartIterator(chunks(body(), 1000), BOUNDARY.encode())
    assert iterator.scan_for_part() is None
    first = next(iterator)
    assert first.endswith(PARTS[0])
    assert iterator.scan_for_part() is not None  # read in the same chunk
    assert iterator.last_scanned == len(body())


def test_part_iterator_maps_a_broken_connection() -> None:
    def broken() -> Iterator[bytes]:
        yield body()[:30]
        raise requests.exceptions.ChunkedEncodingError("connection broken")

    with pytest.raises(IncompleteResponseError) as caught:
        list(PartIterator(broken(), BOUNDARY.encode()))
    assert isinstance(caught.value, DICOMTrolleyError)


def test_html_part_needs_a_blank_line() -> None:
    with pytest.raises(MultipartContentError, match="CR-LF-CR-LF"):
        HTMLPart(b"Content-Type: text/plain\r\nno blank line", "utf-8")
    headerless = HTMLPart(b"\r\n\r\nbody", "latin-1")
    assert headerless.content == b"body"
    assert dict(headerless.headers) == {}


def test_safe_chunks_joins_small_chunks() -> None:
    class Tiny:
        def iter_content(self, chunk_size: int) -> Iterator[bytes]:
            return iter([b"ab", b"cd", b"ef", b"g"])

    assert list(SafeChunks(Tiny(), 3)) == [b"abcd", b"efg"]  # type: ignore[arg-type]


def test_split_on_find_and_parse_headers() -> None:
    assert split_on_find(b"a::b::c", b"::") == (b"a", b"b::c")
    assert split_on_find("abc", "x") == ("abc", "")
    assert parse_headers(b"A: 1\r\nB: two words\r\n", "utf-8") == [
        ("A", "1"),
        ("B", "two words"),
    ]
