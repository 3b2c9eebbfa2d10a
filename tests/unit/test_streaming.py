"""Reading DICOM parts out of HTTP answers (dicomtrolley.streaming)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import accumulate
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from dicomtrolley.core import InstanceReference
from dicomtrolley.download import DownloadReport, SaveJob
from dicomtrolley.exceptions import (
    DICOMParseError,
    DICOMTrolleyConnectionError,
    DICOMTrolleyTimeoutError,
    IncompleteResponseError,
    MultipartContentError,
    ResponseFormatError,
    ServerHTTPError,
)
from dicomtrolley.formats.multipart import Event, PartData, PartEnd, PartStart
from dicomtrolley.storage import InstanceWriter, StorageDir
from dicomtrolley.streaming import (
    datasets_from_parts,
    iter_body,
    iter_parts,
    save_answer_with_retry,
    save_parts,
)
from dicomtrolley.transport import Retry, read_with_retry
from tests.fakes import (
    FakeServer,
    RecordingProgress,
    Reply,
    dicom_file,
    multipart_body,
    multipart_reply,
    tree,
)

STUDY = "1.2.826.0.1.3680043.8.498.400"
SERIES = "1.2.826.0.1.3680043.8.498.400.1"
WHAT = "test download"
UIDS = (STUDY, SERIES)


def sop(n: int) -> str:
    return f"{SERIES}.{n}"


def part_file(n: int) -> bytes:
    return dicom_file(STUDY, SERIES, sop(n))


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@contextmanager
def answer(
    session: requests.Session, reply: Reply, read_timeout: float = 5.0
) -> Iterator[tuple[FakeServer, requests.Response]]:
    """A fake server answering reply, and its streamed answer to GET /x."""
    with FakeServer(lambda request: reply) as fake:
        response = session.get(fake.url + "/x", stream=True, timeout=(2, read_timeout))
        with response:
            yield fake, response


def collect_parts(events: Iterator[Event]) -> list[tuple[dict[str, str], bytes]]:
    parts: list[tuple[dict[str, str], bytes]] = []
    for event in events:
        if isinstance(event, PartStart):
            parts.append((event.headers, b""))
        elif isinstance(event, PartData):
            headers, body = parts[-1]
            parts[-1] = (headers, body + bytes(event.data))
    return parts


def local_response(body: bytes, headers: dict[str, str]) -> requests.Response:
    """A streamed response that reads from memory and never checks Content-Length."""
    response = requests.Response()
    response.status_code = 200
    response.url = "http://pacs.example/wado?objectUID=1.2.3"
    response.headers = CaseInsensitiveDict(headers)
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(body),
        headers=headers,
        status=200,
        preload_content=False,
        enforce_content_length=False,
    )
    return response


# --------------------------------------------------------------------------- #
# iter_parts
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("quoted", [True, False], ids=["quoted", "unquoted"])
def test_multipart_parts_arrive_whole_from_pieces(
    session: requests.Session, quoted: bool
) -> None:
    files = [part_file(n) for n in (1, 2, 3)]
    reply = multipart_reply(
        files, "pieces-b", quoted=quoted, piece_size=97, delay=0.001
    )
    with answer(session, reply) as (_fake, response):
        parts = collect_parts(iter_parts(response, 64, what=WHAT))
    assert [body for _, body in parts] == files
    assert all(headers["content-type"] == "application/dicom" for headers, _ in parts)


def test_single_part_answer(session: requests.Session) -> None:
    body = part_file(1)
    with answer(
        session, Reply(200, body, {"Content-Type": "application/dicom"}, piece_size=50)
    ) as (_fake, response):
        parts = collect_parts(iter_parts(response, 1000))
    assert parts == [({"content-type": "application/dicom"}, body)]


def test_single_part_shorter_than_content_length_on_the_wire(
    session: requests.Session,
) -> None:
    reply = Reply(
        200, part_file(1), {"Content-Type": "application/dicom"}, cut_after=200
    )
    with (
        answer(session, reply) as (fake, response),
        pytest.raises(IncompleteResponseError) as caught,
    ):
        list(iter_parts(response, 64, what=WHAT, uids=UIDS))
    assert caught.value.url == fake.url + "/x"
    assert caught.value.uids == UIDS
    assert str(caught.value).startswith(WHAT)


@pytest.mark.parametrize("what", [WHAT, ""])
def test_single_part_shorter_than_content_length_in_the_headers(what: str) -> None:
    """iter_parts checks Content-Length itself when the transport did not."""
    response = local_response(
        b"DICM-ish", {"Content-Type": "application/dicom", "Content-Length": "100"}
    )
    with pytest.raises(IncompleteResponseError) as caught:
        list(iter_parts(response, 4, what=what, uids=UIDS))
    message = str(caught.value)
    assert "8 of 100 bytes" in message
    assert caught.value.url == response.url
    assert caught.value.uids == UIDS
    assert message.startswith(what) if what else not message.startswith(":")


def test_compressed_single_part_is_not_measured_against_content_length() -> None:
    response = local_response(
        b"12345678",
        {
            "Content-Type": "application/dicom",
            "Content-Length": "100",
            "Content-Encoding": "identity, br-unknown",
        },
    )
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(b"12345678"),
        status=200,
        preload_content=False,
        enforce_content_length=False,
    )
    parts = collect_parts(iter_parts(response, 4))
    assert parts == [({"content-type": "application/dicom"}, b"12345678")]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json", "text/html; charset=utf-8", None]
)
def test_unsupported_content_type(
    session: requests.Session, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with (
        answer(session, Reply(200, b"something else", headers)) as (fake, response),
        pytest.raises(ResponseFormatError) as caught,
    ):
        list(iter_parts(response, 64, what=WHAT, uids=UIDS))
    message = str(caught.value)
    assert (content_type or "no Content-Type") in message
    assert message.startswith(f"{WHAT}: ")
    assert caught.value.url == fake.url + "/x"
    assert caught.value.uids == UIDS


def test_multipart_without_boundary(session: requests.Session) -> None:
    reply = Reply(
        200,
        multipart_body([part_file(1)], "b"),
        {"Content-Type": 'multipart/related; type="application/dicom"'},
    )
    with (
        answer(session, reply) as (fake, response),
        pytest.raises(MultipartContentError) as caught,
    ):
        list(iter_parts(response, 64, what=WHAT, uids=UIDS))
    assert str(caught.value).startswith(f"{WHAT}: ")
    assert "boundary" in str(caught.value)
    assert caught.value.url == fake.url + "/x"
    assert caught.value.uids == UIDS


# --------------------------------------------------------------------------- #
# iter_body: what arrived before trouble is passed on
# --------------------------------------------------------------------------- #


def test_bytes_before_a_cut_are_passed_on(session: requests.Session) -> None:
    body = bytes(range(256)) * 40
    reply = Reply(200, body, {"Content-Type": "application/dicom"}, cut_after=3000)
    received = bytearray()
    with (
        answer(session, reply) as (_fake, response),
        pytest.raises(IncompleteResponseError),
    ):
        for chunk in iter_body(response, 1_048_576, what=WHAT):
            received += chunk
    assert bytes(received) == body[:3000]


def test_read_timeout_in_the_middle_of_the_body(session: requests.Session) -> None:
    body = bytes(range(256)) * 8
    reply = Reply(
        200, body, {"Content-Type": "application/dicom"}, piece_size=1024, delay=3
    )
    received = bytearray()
    with (
        answer(session, reply, read_timeout=0.3) as (_fake, response),
        pytest.raises(DICOMTrolleyTimeoutError) as caught,
    ):
        for chunk in iter_body(response, 1_048_576, what=WHAT, uids=UIDS):
            received += chunk
    assert bytes(received) == body[:1024]
    assert caught.value.uids == UIDS
    assert isinstance(caught.value, DICOMTrolleyConnectionError)


def test_connection_reset_in_the_middle_of_the_body(session: requests.Session) -> None:
    reply = multipart_reply(
        [part_file(1), part_file(2)], chunked=True, piece_size=300, cut_after=900
    )
    with (
        answer(session, reply) as (fake, response),
        pytest.raises(IncompleteResponseError) as caught,
    ):
        list(iter_parts(response, 4096, what=WHAT, uids=UIDS))
    assert "connection broke" in str(caught.value)
    assert caught.value.url == fake.url + "/x"


# --------------------------------------------------------------------------- #
# save_parts
# --------------------------------------------------------------------------- #


class SpyStorage(StorageDir):
    """StorageDir that remembers every writer it opened."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writers: list[InstanceWriter] = []

    def open_writer(
        self, path: str | Path, expected: InstanceReference | None = None
    ) -> InstanceWriter:
        writer = super().open_writer(path, expected)
        self.writers.append(writer)
        return writer


def files_below(folder: Path) -> list[Path]:
    return sorted(path for path in tree(folder) if path.is_file())


def test_save_parts_aborts_the_open_writer_when_events_raise(tmp_path: Path) -> None:
    first, second = part_file(1), part_file(2)

    def events() -> Iterator[Event]:
        yield PartStart({"content-type": "application/dicom"})
        yield PartData(first)
        yield PartEnd()
        yield PartStart({"content-type": "application/dicom"})
        yield PartData(second[:300])
        raise IncompleteResponseError("cut", uids=UIDS)

    storage = SpyStorage(tmp_path)
    saved: list[tuple[Path, int]] = []
    with pytest.raises(IncompleteResponseError):
        save_parts(
            events(), storage, tmp_path, on_saved=lambda p, n: saved.append((p, n))
        )
    assert len(storage.writers) == 2
    open_one = storage.writers[1]
    assert open_one.bytes_written == 300
    assert not open_one.temp_path.exists()
    [(path, nbytes)] = saved
    assert nbytes == len(first)
    assert files_below(tmp_path) == [path]
    assert path.read_bytes() == first


def test_save_parts_skips_parts_the_filter_rejects(tmp_path: Path) -> None:
    events: list[Event] = [
        PartStart({"content-type": "application/xop+xml"}),
        PartData(b"<soap/>"),
        PartEnd(),
        PartStart({"content-type": "application/dicom"}),
        PartData(part_file(1)),
        PartEnd(),
    ]
    saved: list[Path] = []
    count = save_parts(
        iter(events),
        StorageDir(tmp_path),
        tmp_path,
        on_saved=lambda p, n: saved.append(p),
        part_filter=lambda headers: headers["content-type"] == "application/dicom",
    )
    assert count == 1
    assert files_below(tmp_path) == saved
    assert pydicom.dcmread(saved[0]).SOPInstanceUID == sop(1)


def test_save_parts_checks_the_expected_instance(tmp_path: Path) -> None:
    events: list[Event] = [
        PartStart({}),
        PartData(part_file(2)),
        PartEnd(),
    ]
    expected = InstanceReference(
        study_uid=STUDY, series_uid=SERIES, instance_uid=sop(1)
    )
    with pytest.raises(DICOMParseError) as caught:
        save_parts(
            iter(events),
            StorageDir(tmp_path),
            tmp_path,
            on_saved=lambda p, n: None,
            expected=expected,
        )
    assert sop(1) in caught.value.uids
    assert sop(2) in str(caught.value)
    assert files_below(tmp_path) == []


# --------------------------------------------------------------------------- #
# datasets_from_parts
# --------------------------------------------------------------------------- #


def test_datasets_from_parts_reads_each_part() -> None:
    events: list[Event] = []
    for n in (1, 2):
        data = part_file(n)
        events += [PartStart({}), PartData(data[:100]), PartData(data[100:]), PartEnd()]
    datasets = list(datasets_from_parts(iter(events)))
    assert [ds.SOPInstanceUID for ds in datasets] == [sop(1), sop(2)]


def test_datasets_from_parts_rejects_non_dicom() -> None:
    events: list[Event] = [PartStart({}), PartData(b"<html>no</html>"), PartEnd()]
    with pytest.raises(DICOMParseError) as caught:
        list(datasets_from_parts(iter(events), what=WHAT, uids=UIDS))
    assert str(caught.value).startswith(f"{WHAT}: ")
    assert caught.value.uids == UIDS


# --------------------------------------------------------------------------- #
# read_with_retry
# --------------------------------------------------------------------------- #


class Opener:
    """Hands out responses and remembers them, so that closing can be checked."""

    def __init__(self) -> None:
        self.responses: list[Any] = []

    def __call__(self) -> requests.Response:
        response = local_response(b"", {})
        self.responses.append(response)
        return response

    @property
    def all_closed(self) -> bool:
        return all(response.raw.closed for response in self.responses)


def test_read_with_retry_starts_again_after_a_broken_body() -> None:
    opener = Opener()
    failures = iter([IncompleteResponseError("cut"), IncompleteResponseError("cut")])

    def read(response: requests.Response) -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "done"

    assert read_with_retry(opener, read, Retry(total=2, backoff_factor=0)) == "done"
    assert len(opener.responses) == 3
    assert opener.all_closed


def test_read_with_retry_gives_up_after_retry_total() -> None:
    opener = Opener()

    def read(response: requests.Response) -> str:
        raise IncompleteResponseError("cut again")

    with pytest.raises(IncompleteResponseError):
        read_with_retry(opener, read, Retry(total=1, backoff_factor=0))
    assert len(opener.responses) == 2
    assert opener.all_closed


def test_read_with_retry_does_not_retry_permanent_errors() -> None:
    opener = Opener()

    def read(response: requests.Response) -> str:
        raise DICOMParseError("garbage")

    with pytest.raises(DICOMParseError):
        read_with_retry(opener, read, Retry(total=3, backoff_factor=0))
    assert len(opener.responses) == 1
    assert opener.all_closed


def test_read_with_retry_leaves_opening_to_the_transport() -> None:
    calls: list[int] = []

    def failing_open() -> requests.Response:
        calls.append(1)
        raise ServerHTTPError("busy", status_code=503)

    with pytest.raises(ServerHTTPError):
        read_with_retry(failing_open, lambda r: None, Retry(total=3, backoff_factor=0))
    assert calls == [1]


# --------------------------------------------------------------------------- #
# save_answer_with_retry: what the progress display is told
# --------------------------------------------------------------------------- #


def advances_per_request(progress: RecordingProgress) -> list[int]:
    """Bytes advanced while each request's answer came in, request by request."""
    per_request: list[int] = []
    for method, value in progress.calls:
        if method == "mark":
            per_request.append(0)
        elif method == "advance":
            assert isinstance(value, int)
            per_request[-1] += value
    return per_request


@pytest.mark.parametrize(
    "cuts",
    [(-100,), (1500, 700), (700, 1500)],
    ids=["near-the-end", "shorter-second-cut", "longer-second-cut"],
)
def test_retried_answer_shows_each_byte_once(
    session: requests.Session, tmp_path: Path, cuts: tuple[int, ...]
) -> None:
    files = [part_file(1), part_file(2)]
    good = multipart_reply(files)
    size = len(good.body)
    cut_at = [cut % size for cut in cuts]
    answers = iter(
        [multipart_reply(files, cut_after=cut, piece_size=256) for cut in cut_at]
        + [good]
    )
    progress = RecordingProgress()
    report = DownloadReport()
    with FakeServer(lambda request: next(answers)) as fake:

        def open_response() -> requests.Response:
            progress.mark("request")
            return session.get(fake.url + "/x", stream=True, timeout=(2, 5))

        save_answer_with_retry(
            open_response,
            Retry(total=len(cuts), backoff_factor=0),
            SaveJob([], StorageDir(tmp_path), tmp_path, progress, report=report),
            chunk_size=128,
            what=WHAT,
            uids=UIDS,
            announce_length=True,
        )
    assert len(fake.requests) == len(cuts) + 1
    assert len(report.saved) == 2
    # the bytes shown are those of the answer kept, announced once
    assert progress.total("advance") == size
    assert progress.total("bytes_total") == size
    assert progress.values("done") == [len(content) for content in files]
    # the bar moves while a broken answer comes in and never goes back: an
    # answer moves it only past the furthest byte an earlier one reached
    assert all(nbytes > 0 for nbytes in progress.values("advance"))
    furthest = [max(cut_at[: n + 1]) for n in range(len(cut_at))] + [size]
    assert list(accumulate(advances_per_request(progress))) == furthest
