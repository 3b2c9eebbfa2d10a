"""Tests for the streaming multipart/related parser (dicomtrolley.formats.multipart)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dicomtrolley.exceptions import (
    IncompleteResponseError,
    MultipartContentError,
    TransientError,
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

Part = tuple[dict[str, str], bytes]

BOUNDARY = b"9e4f1b2c-DICOM-boundary"


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def collect(events: Iterable[Event], parts: list[Part], state: list[int]) -> None:
    """Add events to ``parts``, checking that they come in a valid order.

    ``state[0]`` is 1 while inside a part, 0 between parts.
    """
    for event in events:
        if isinstance(event, PartStart):
            assert state[0] == 0, "PartStart inside a part"
            parts.append((event.headers, b""))
            state[0] = 1
        elif isinstance(event, PartData):
            assert state[0] == 1, "PartData outside a part"
            assert isinstance(event.data, bytes | memoryview)
            assert len(event.data) > 0, "empty PartData"
            headers, body = parts[-1]
            parts[-1] = (headers, body + bytes(event.data))
        else:
            assert isinstance(event, PartEnd)
            assert state[0] == 1, "PartEnd outside a part"
            state[0] = 0


def parse_chunks(
    chunks: Iterable[bytes | bytearray | memoryview], boundary: bytes = BOUNDARY
) -> list[Part]:
    """Feed all chunks, then close; return the reassembled parts."""
    parser = MultipartParser(boundary)
    parts: list[Part] = []
    state = [0]
    for chunk in chunks:
        collect(parser.feed(chunk), parts, state)
    assert parser.finished
    collect(parser.close(), parts, state)
    assert state[0] == 0
    assert parser.parts_completed == len(parts)
    assert parser.buffered == 0
    return parts


def build(
    parts: list[Part],
    boundary: bytes = BOUNDARY,
    *,
    eol: bytes = b"\r\n",
    preamble: bytes = b"",
    epilogue: bytes = b"",
) -> bytes:
    """A multipart body holding ``parts``."""
    out = [preamble + eol if preamble else b""]
    for headers, body in parts:
        out.append(b"--" + boundary + eol)
        for name, value in headers.items():
            out.append(f"{name}: {value}".encode("latin-1") + eol)
        out.append(eol + body + eol)
    out.append(b"--" + boundary + b"--" + epilogue)
    return b"".join(out)


SMALL_PARTS: list[Part] = [
    (
        {"content-type": "application/dicom", "content-location": "/a/1"},
        b"DICM\x00\x01\r\n--" + BOUNDARY[:5] + b"\r\n\r\n",
    ),
    ({}, b""),
    (
        {"content-type": "application/dicom"},
        b"xx--" + BOUNDARY + b" and more \n- -\r",
    ),
]
SMALL = build(SMALL_PARTS, preamble=b"This is the preamble.", epilogue=b"\r\nepilogue")


# --------------------------------------------------------------------------- #
# Content-Type
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "value, expected",
    [
        (
            'multipart/related; type="application/dicom"; boundary=abc',
            ("multipart/related", {"type": "application/dicom", "boundary": "abc"}),
        ),
        (
            "Multipart/Related;Type=application/dicom;BOUNDARY=AbC",
            ("multipart/related", {"type": "application/dicom", "boundary": "AbC"}),
        ),
        (
            '  multipart/related ;  boundary = "a;b c" ;  type="x" ; ',
            ("multipart/related", {"boundary": "a;b c", "type": "x"}),
        ),
        (
            r'multipart/related; boundary="a\"b\\c"; start="<x>"',
            ("multipart/related", {"boundary": 'a"b\\c', "start": "<x>"}),
        ),
        (
            "multipart/related; charset; boundary=; ;;type=a",
            ("multipart/related", {"charset": "", "boundary": "", "type": "a"}),
        ),
        ("application/json", ("application/json", {})),
        ("", ("", {})),
        ('text/plain; a="unterminated', ("text/plain", {"a": "unterminated"})),
        ('text/plain; a="q" trailing; b=2', ("text/plain", {"a": "q", "b": "2"})),
    ],
)
def test_parse_content_type(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_content_type(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("multipart/related; boundary=abc", b"abc"),
        ('multipart/related; type="application/dicom"; boundary="a b:c"', b"a b:c"),
        ("MULTIPART/RELATED; Boundary=XyZ; type=application/dicom", b"XyZ"),
        ('multipart/related;boundary="==_1;2"', b"==_1;2"),
        ("multipart/mixed; boundary=" + "b" * 200, b"b" * 200),
    ],
)
def test_boundary_from_content_type(value: str, expected: bytes) -> None:
    assert boundary_from_content_type(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "multipart/related",
        "multipart/related; type=application/dicom",
        'multipart/related; boundary=""',
        "multipart/related; boundary=",
        "application/dicom; boundary=abc",
        "text/html",
        "",
        "multipart/related; boundary=" + "b" * 201,
        "multipart/related; boundary=caf\u20ac",
    ],
)
def test_boundary_from_content_type_errors(value: str) -> None:
    with pytest.raises(MultipartContentError, match="xpected"):
        boundary_from_content_type(value)


@pytest.mark.parametrize("boundary", [b"", "", b"a\r\nb", "a\nb"])
def test_bad_boundary_for_parser(boundary: bytes | str) -> None:
    with pytest.raises(MultipartContentError):
        MultipartParser(boundary)


# --------------------------------------------------------------------------- #
# small message, every way of cutting it
# --------------------------------------------------------------------------- #


def test_small_message_whole() -> None:
    assert parse_chunks([SMALL]) == SMALL_PARTS


def test_small_message_byte_by_byte() -> None:
    assert parse_chunks([SMALL[i : i + 1] for i in range(len(SMALL))]) == SMALL_PARTS


def test_small_message_split_at_every_offset() -> None:
    for cut in range(len(SMALL) + 1):
        assert parse_chunks([SMALL[:cut], SMALL[cut:]]) == SMALL_PARTS, cut


def test_small_message_split_in_three_at_many_offsets() -> None:
    for a in range(0, len(SMALL), 3):
        for b in range(a, len(SMALL), 5):
            chunks = [SMALL[:a], SMALL[a:b], SMALL[b:]]
            assert parse_chunks(chunks) == SMALL_PARTS, (a, b)


def test_boundary_as_str() -> None:
    parser = MultipartParser(BOUNDARY.decode())
    events = parser.feed(SMALL)
    assert parser.finished
    assert sum(isinstance(e, PartEnd) for e in events) == 3


def test_bytearray_and_memoryview_input() -> None:
    half = len(SMALL) // 2
    chunks: list[bytes | bytearray | memoryview] = [
        bytearray(SMALL[:half]),
        memoryview(SMALL)[half:],
    ]
    assert parse_chunks(chunks) == SMALL_PARTS


# --------------------------------------------------------------------------- #
# generated messages
# --------------------------------------------------------------------------- #

# RFC 2046 bcharsnospace; a space may appear, but not last.
BCHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=?"


@st.composite
def boundaries(draw: st.DrawFn) -> bytes:
    inner = draw(st.text(alphabet=BCHARS + " ", max_size=69))
    last = draw(st.sampled_from(BCHARS))
    return (inner + last).encode()


@st.composite
def bodies(draw: st.DrawFn, boundary: bytes) -> bytes:
    prefixes = [boundary[:k] for k in range(1, len(boundary))]
    tricky = st.sampled_from(
        [b"\r\n", b"\n", b"\r", b"--", b"-", b"\r\n--", b"\n--", b"\r\n\r\n", b" "]
        + [b"--" + p for p in prefixes]
        + [b"\r\n--" + p for p in prefixes]
    )
    pieces = draw(st.lists(st.one_of(st.binary(max_size=40), tricky), max_size=12))
    return b"".join(pieces)


HEADER_NAMES = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20
)
HEADER_VALUES = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40
).map(str.strip)


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, list[Part], bytes]:
    boundary = draw(boundaries())
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    parts: list[Part] = []
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        headers = draw(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4))
        body = draw(bodies(boundary))
        assume(boundary not in body)
        if eol == b"\n":
            # With bare-LF delimiters a trailing CR cannot be told from a CRLF.
            assume(not body.endswith(b"\r"))
        parts.append((headers, body))
    preamble = draw(st.sampled_from([b"", b"preamble", b"x--" + boundary]))
    epilogue = draw(st.binary(max_size=20))
    message = build(parts, boundary, eol=eol, preamble=preamble, epilogue=epilogue)
    return boundary, parts, message


@settings(max_examples=400, deadline=None)
@given(
    generated=messages(),
    sizes=st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=50),
)
def test_generated_messages_in_random_chunks(
    generated: tuple[bytes, list[Part], bytes], sizes: list[int]
) -> None:
    boundary, parts, message = generated
    chunks = []
    pos = 0
    i = 0
    while pos < len(message):
        size = sizes[i % len(sizes)]
        chunks.append(message[pos : pos + size])
        pos += size
        i += 1
    assert parse_chunks(chunks, boundary) == parts


@settings(max_examples=100, deadline=None)
@given(generated=messages(), data=st.data())
def test_generated_messages_truncated(
    generated: tuple[bytes, list[Part], bytes], data: st.DataObject
) -> None:
    boundary, _, message = generated
    end = message.index(b"--" + boundary + b"--") + len(boundary) + 4
    cut = data.draw(st.integers(min_value=0, max_value=end - 1))
    parser = MultipartParser(boundary)
    parser.feed(message[:cut])
    assert not parser.finished
    with pytest.raises(IncompleteResponseError):
        parser.close()


# --------------------------------------------------------------------------- #
# truncation
# --------------------------------------------------------------------------- #


def test_truncated_at_every_offset_raises_incomplete() -> None:
    end = SMALL.index(b"--" + BOUNDARY + b"--") + len(BOUNDARY) + 4
    for cut in range(end):
        parser = MultipartParser(BOUNDARY)
        parser.feed(SMALL[:cut])
        assert not parser.finished
        with pytest.raises(IncompleteResponseError) as info:
            parser.close()
        assert isinstance(info.value, TransientError)
        assert not isinstance(info.value, MultipartContentError)
        assert "--" + BOUNDARY.decode() + "--" in str(info.value)
    # From the closing delimiter on, the body is complete.
    for cut in range(end, len(SMALL) + 1):
        parser = MultipartParser(BOUNDARY)
        parser.feed(SMALL[:cut])
        assert parser.finished
        assert parser.close() == []


def test_truncated_byte_by_byte_raises_incomplete() -> None:
    end = SMALL.index(b"--" + BOUNDARY + b"--") + len(BOUNDARY) + 3
    parser = MultipartParser(BOUNDARY)
    for i in range(end):
        parser.feed(SMALL[i : i + 1])
    with pytest.raises(IncompleteResponseError, match="after 3 complete part"):
        parser.close()


def test_empty_body_is_incomplete() -> None:
    parser = MultipartParser(BOUNDARY)
    with pytest.raises(IncompleteResponseError, match="empty"):
        parser.close()


def test_close_twice_and_feed_after_close() -> None:
    parser = MultipartParser(BOUNDARY)
    parser.feed(SMALL[:50])
    with pytest.raises(IncompleteResponseError, match="part 1"):
        parser.close()
    with pytest.raises(IncompleteResponseError, match="part 1"):
        parser.close()
    with pytest.raises(MultipartContentError):
        parser.feed(b"more")


# --------------------------------------------------------------------------- #
# tolerance and edge cases
# --------------------------------------------------------------------------- #


def test_lf_only_line_endings() -> None:
    message = build(SMALL_PARTS[:2], eol=b"\n", preamble=b"pre")
    assert parse_chunks([message]) == SMALL_PARTS[:2]
    assert (
        parse_chunks([message[i : i + 1] for i in range(len(message))])
        == (SMALL_PARTS[:2])
    )


def test_mixed_line_endings() -> None:
    message = (
        b"--" + BOUNDARY + b"\n"
        b"Content-Type: a\r\n"
        b"X-Other: b\n"
        b"\r\n"
        b"body one\n"
        b"--" + BOUNDARY + b"\r\n"
        b"\n"
        b"body two\r\n"
        b"--" + BOUNDARY + b"--"
    )
    expected = [
        ({"content-type": "a", "x-other": "b"}, b"body one"),
        ({}, b"body two"),
    ]
    for cut in range(len(message) + 1):
        assert parse_chunks([message[:cut], message[cut:]]) == expected


def test_preamble_and_epilogue_are_ignored() -> None:
    preamble = b"ignore me\r\n--not-the-boundary\r\n" + b"x" * 1000
    epilogue = b"\r\n--" + BOUNDARY + b"\r\nContent-Type: late\r\n\r\nlate\r\n"
    message = build(SMALL_PARTS, preamble=preamble, epilogue=epilogue)
    assert parse_chunks([message]) == SMALL_PARTS
    parser = MultipartParser(BOUNDARY)
    parser.feed(message)
    assert parser.finished
    assert parser.feed(b"\r\n--" + BOUNDARY + b"\r\n\r\nmore") == []
    assert parser.buffered == 0
    assert parser.close() == []


def test_transport_padding_after_boundary() -> None:
    message = (
        b"--" + BOUNDARY + b" \t \r\n"
        b"Content-Type: a\r\n\r\n"
        b"one\r\n"
        b"--" + BOUNDARY + b"\t\n"
        b"\r\n"
        b"two\r\n"
        b"--" + BOUNDARY + b"--  \r\n"
    )
    expected = [({"content-type": "a"}, b"one"), ({}, b"two")]
    for cut in range(len(message) + 1):
        assert parse_chunks([message[:cut], message[cut:]]) == expected


def test_empty_parts() -> None:
    b = b"--" + BOUNDARY
    message = (
        b + b"\r\n"  # part without headers or body: no blank line at all
        b"\r\n" + b + b"\r\n"  # blank line, no body
        b"\r\n"
        b"\r\n" + b + b"\r\n"  # headers, no blank-line-separated body
        b"Content-Type: x\r\n"
        b"\r\n" + b + b"\r\n"  # headers, blank line, empty body
        b"Content-Type: y\r\n"
        b"\r\n"
        b"\r\n" + b + b"--"
    )
    expected: list[Part] = [
        ({}, b""),
        ({}, b""),
        ({"content-type": "x"}, b""),
        ({"content-type": "y"}, b""),
    ]
    for cut in range(len(message) + 1):
        assert parse_chunks([message[:cut], message[cut:]]) == expected


def test_no_parts() -> None:
    assert parse_chunks([b"--" + BOUNDARY + b"--\r\n"]) == []
    assert parse_chunks([b"preamble\r\n--" + BOUNDARY + b"--"]) == []


def test_boundary_in_body_without_line_break_does_not_split() -> None:
    body = b"a--" + BOUNDARY + b"\r\n-- " + BOUNDARY + b"--" + BOUNDARY + b"--"
    message = build([({"a": "b"}, body)])
    assert parse_chunks([message]) == [({"a": "b"}, body)]


def test_boundary_prefix_at_chunk_ends() -> None:
    body = (b"\r\n--" + BOUNDARY[:-1] + b"x") * 50
    message = build([({}, body), ({}, body)])
    for size in (1, 2, 3, 7, len(BOUNDARY), len(BOUNDARY) + 3, len(BOUNDARY) + 4):
        chunks = [message[i : i + size] for i in range(0, len(message), size)]
        assert parse_chunks(chunks) == [({}, body), ({}, body)]


def test_header_names_lower_cased_values_stripped_repeats_joined() -> None:
    message = (
        b"--" + BOUNDARY + b"\r\n"
        b"Content-Type:   application/dicom  \r\n"
        b"X-Thing: one\r\n"
        b"x-thing:two\r\n"
        b"X-Folded: first\r\n"
        b"   second\r\n"
        b"\r\n"
        b"body\r\n"
        b"--" + BOUNDARY + b"--"
    )
    assert parse_chunks([message]) == [
        (
            {
                "content-type": "application/dicom",
                "x-thing": "one, two",
                "x-folded": "first second",
            },
            b"body",
        )
    ]


def test_part_data_streams_and_events_are_in_order() -> None:
    parser = MultipartParser(BOUNDARY)
    head = b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n\r\n"
    events = parser.feed(head + b"A" * 1000)
    assert isinstance(events[0], PartStart)
    assert events[0].headers == {"content-type": "application/dicom"}
    assert isinstance(events[1], PartData)
    assert len(events[1].data) >= 1000 - len(BOUNDARY) - 3
    assert parser.parts_completed == 0
    events = parser.feed(b"B" * 10 + b"\r\n--" + BOUNDARY + b"--")
    assert isinstance(events[-1], PartEnd)
    assert parser.parts_completed == 1
    assert parser.finished


# --------------------------------------------------------------------------- #
# malformed bodies
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "message",
    [
        b"--" + BOUNDARY + b"x\r\n\r\nbody\r\n--" + BOUNDARY + b"--",
        b"--" + BOUNDARY + b"\r\n\r\nbody\r\n--" + BOUNDARY + b"extra\r\n",
        b"--" + BOUNDARY + b"\r\n\r\nbody\r\n--" + BOUNDARY + b"-x",
        b"--" + BOUNDARY + b"\rx\r\n\r\nbody",
        b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nbody",
        b"--" + BOUNDARY + b"\r\n: no name\r\n\r\nbody",
    ],
)
def test_malformed_raises_multipart_content_error(message: bytes) -> None:
    for chunks in ([message], [message[i : i + 1] for i in range(len(message))]):
        parser = MultipartParser(BOUNDARY)
        with pytest.raises(MultipartContentError) as info:
            for chunk in chunks:
                parser.feed(chunk)
        assert not isinstance(info.value, IncompleteResponseError)
        assert "xpected" in str(info.value)
        # A failed parser stays failed.
        with pytest.raises(MultipartContentError):
            parser.feed(b"more")
        with pytest.raises(MultipartContentError):
            parser.close()


def test_header_block_too_large() -> None:
    head = b"--" + BOUNDARY + b"\r\n" + b"X-Big: " + b"a" * 2000 + b"\r\n\r\nbody"
    parser = MultipartParser(BOUNDARY, max_header_bytes=1000)
    with pytest.raises(MultipartContentError, match="longer than 1000"):
        parser.feed(head)
    parser = MultipartParser(BOUNDARY, max_header_bytes=1000)
    with pytest.raises(MultipartContentError, match="longer than 1000"):
        for i in range(0, len(head), 7):
            parser.feed(head[i : i + 7])
            assert parser.buffered <= 1000 + 10
    # Just under the limit is fine.
    head = b"--" + BOUNDARY + b"\r\n" + b"X-Big: " + b"a" * 900 + b"\r\n\r\nbody"
    parser = MultipartParser(BOUNDARY, max_header_bytes=1000)
    assert isinstance(parser.feed(head)[0], PartStart)


# --------------------------------------------------------------------------- #
# bounded memory
# --------------------------------------------------------------------------- #


def test_memory_is_bounded_by_the_chunk_not_the_part() -> None:
    chunk_size = 2**20
    # End each chunk with a near-delimiter so the parser must hold some back.
    chunk = bytes(chunk_size - len(BOUNDARY) - 4) + b"\r\n--" + BOUNDARY[:-1] + b"!"
    parser = MultipartParser(BOUNDARY)
    events = parser.feed(b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n")
    events += parser.feed(b"\r\n")
    assert [type(e) for e in events] == [PartStart]
    limit = len(BOUNDARY) + 4
    received = 0
    for _ in range(50):  # a 50 MB part
        passed_on = sum(
            len(e.data) for e in parser.feed(chunk) if isinstance(e, PartData)
        )
        assert passed_on >= chunk_size - limit
        received += passed_on
        assert parser.buffered <= limit
    events = parser.feed(b"\r\n--" + BOUNDARY + b"--")
    received += sum(len(e.data) for e in events if isinstance(e, PartData))
    assert isinstance(events[-1], PartEnd)
    assert received == 50 * chunk_size
    assert parser.buffered == 0


def test_buffered_counts_only_received_bytes() -> None:
    parser = MultipartParser(BOUNDARY)
    assert parser.buffered == 0
    parser.feed(b"-")
    assert parser.buffered == 1
    parser.feed(b"-" + BOUNDARY[:3])
    assert parser.buffered == 5
    parser.feed(b"x" * 1000)
    assert parser.buffered < len(BOUNDARY) + 3


def test_large_chunks_are_passed_on_without_copying() -> None:
    parser = MultipartParser(BOUNDARY)
    parser.feed(b"--" + BOUNDARY + b"\r\n\r\n")
    chunk = bytes(range(256)) * 4096
    events = parser.feed(chunk)
    events += parser.feed(chunk)
    data = [e.data for e in events if isinstance(e, PartData)]
    assert isinstance(data[0], memoryview)
    assert isinstance(data[-1], memoryview)
    assert data[-1].obj is chunk
