"""Answers that cannot be proven complete are retried, never believed (issue 9).

A fake server cuts its answer at every byte offset of the status line and the
header block (and a few in the body), or sends no framing at all. Searches must
never take such an answer as "no results", downloads must never take it as a
permanent format error: each is an IncompleteResponseError (transient), and
with one retry the next, complete answer is used. A multipart answer whose close
delimiter arrived is complete even when the connection then drops.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley.auth import VitreaAuth
from dicomtrolley.body import Deadline, GuardedBody, is_framed
from dicomtrolley.core import InstanceReference, Query, SeriesReference
from dicomtrolley.exceptions import (
    DICOMTrolleyTimeoutError,
    IncompleteResponseError,
    PermanentError,
    TransientError,
)
from dicomtrolley.mint import Mint
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import StorageDir
from dicomtrolley.transport import Retry, Timeout
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.fakes import FakeServer, Recorded, Reply, dicom_file, multipart_reply, tree

STUDY = "1.2.826.0.1.3680043.8.498.900"
SERIES = "1.2.826.0.1.3680043.8.498.900.1"
NO_RETRY = Retry(total=0, backoff_factor=0)
ONE_RETRY = Retry(total=1, backoff_factor=0, backoff_jitter=0)

QIDO_ANSWER = json.dumps(
    [
        {
            "0020000D": {"vr": "UI", "Value": [STUDY]},
            "00100020": {"vr": "LO", "Value": ["PAT-1"]},
        }
    ]
).encode()
MINT_ANSWER = (
    b'<studySearchResults xmlns="http://medical.nema.org/mint">'
    b'<study studyUUID="85997945-c585" lastModified="2021-03-09T06:42:04.825Z">'
    b'<attr tag="0020000d" vr="UI" val="' + STUDY.encode() + b'"/>'
    b"</study></studySearchResults>"
)


def instance(n: int) -> InstanceReference:
    return InstanceReference(
        study_uid=STUDY, series_uid=SERIES, instance_uid=f"{SERIES}.{n}"
    )


def header_offsets(reply: Reply) -> range:
    """Every cut inside the status line and header block, blank line included."""
    return range(len(reply.head()))


class CutFirst:
    """A route whose first answer is cut after `cut` bytes; later ones are whole."""

    def __init__(self, reply: Reply | Callable[[Recorded], Reply], cut: int) -> None:
        self.reply = reply
        self.cut = cut
        self.calls = 0

    def __call__(self, request: Recorded) -> Reply:
        self.calls += 1
        reply = self.reply(request) if callable(self.reply) else self.reply
        if self.calls == 1:
            return Reply(
                reply.status,
                reply.body,
                reply.headers,
                answer_cut_after=self.cut,
            )
        return reply


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


# -- the framing rule, on its own ----------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "headers", "framed"),
    [
        ("GET", 200, {"Content-Length": "10"}, True),
        ("GET", 200, {"Content-Length": "0"}, True),
        ("GET", 200, {"Transfer-Encoding": "chunked"}, True),
        ("GET", 200, {"Transfer-Encoding": "gzip, chunked"}, True),
        ("GET", 200, {}, False),
        ("GET", 200, {"Content-Type": "application/dicom+json"}, False),
        ("GET", 200, {"Content-Length": "12a"}, False),
        ("GET", 204, {}, True),
        ("GET", 304, {}, True),
        ("HEAD", 200, {}, True),
    ],
)
def test_framing_rule(
    method: str, status: int, headers: dict[str, str], framed: bool
) -> None:
    assert is_framed(method, status, headers) is framed


def test_deadline_scales_with_declared_or_received_size() -> None:
    fixed = Deadline(start=100.0, total=10.0)
    assert fixed.limit(0) == fixed.limit(10**9) == 110.0
    scaled = Deadline(start=100.0, total=10.0, min_rate=1000.0, declared=5000)
    assert scaled.limit(0) == 115.0  # the declared size counts from the start
    assert scaled.limit(8000) == 118.0  # more than declared: what arrived counts
    unknown = Deadline(start=100.0, total=10.0, min_rate=1000.0)
    assert unknown.limit(0) == 110.0
    assert unknown.limit(2000) == 112.0
    assert Deadline(start=100.0, total=None).limit(0) == float("inf")


def test_timeout_has_a_total_deadline_by_default() -> None:
    timeout = Timeout()
    assert timeout.total is not None and timeout.total > 0
    assert timeout.min_rate is not None and timeout.min_rate > 0
    deadline = timeout.deadline(start=0.0, declared=timeout.min_rate * 60)
    assert deadline.limit(0) == timeout.total + 60


# -- QIDO-RS --------------------------------------------------------------------


def qido_reply() -> Reply:
    return Reply(200, QIDO_ANSWER, {"Content-Type": "application/dicom+json"})


@pytest.mark.parametrize("cut", header_offsets(qido_reply()))
def test_qido_answer_cut_in_its_headers_is_retried_not_empty(
    session: requests.Session, cut: int
) -> None:
    route = CutFirst(qido_reply(), cut)
    with FakeServer({"/studies": route}) as fake:
        qido = QidoRS(session, fake.url, retry=ONE_RETRY, auto_page=False)
        studies = qido.find_studies(Query())
    assert [study.uid for study in studies] == [STUDY]
    assert route.calls == 2


@pytest.mark.parametrize("cut", [0, 9, 17, 40])
def test_qido_cut_without_retry_is_transient_never_empty(
    session: requests.Session, cut: int
) -> None:
    route = CutFirst(qido_reply(), cut)
    with FakeServer({"/studies": route}) as fake:
        qido = QidoRS(session, fake.url, retry=NO_RETRY, auto_page=False)
        with pytest.raises(TransientError):
            qido.find_studies(Query())
        route.calls = 0
        with pytest.raises(TransientError):  # not a bare DICOMTrolleyError
            qido.find_study(Query())


def test_qido_answer_without_framing_is_incomplete(session: requests.Session) -> None:
    reply = Reply(
        200, QIDO_ANSWER, {"Content-Type": "application/dicom+json"}, unframed=True
    )
    with FakeServer({"/studies": reply}) as fake:
        qido = QidoRS(session, fake.url, retry=ONE_RETRY, auto_page=False)
        with pytest.raises(IncompleteResponseError, match="cannot be proven complete"):
            qido.find_studies(Query())
    assert len(fake.requests) == 2  # tried again, like any transient failure


def test_qido_cut_page_does_not_end_paging_early(session: requests.Session) -> None:
    def page(n: int) -> bytes:
        return json.dumps(
            [{"0020000D": {"vr": "UI", "Value": [f"{STUDY}.{n}.{i}"]}} for i in (1, 2)]
        ).encode()

    calls: list[str] = []

    def route(request: Recorded) -> Reply:
        offset = request.param("offset") or "0"
        calls.append(offset)
        body = {"0": page(0), "2": page(1)}.get(offset, b"[]")
        headers = {"Content-Type": "application/dicom+json"}
        if offset == "0":  # capped, as PS3.18 8.3.4.4.1 says a server shows it
            headers["Warning"] = '299 pacs: "There are 2 additional results"'
        reply = Reply(200, body, headers)
        if offset == "2" and calls.count("2") == 1:
            return Reply(200, body, reply.headers, answer_cut_after=30)
        return reply

    with FakeServer({"/studies": route}) as fake:
        qido = QidoRS(session, fake.url, retry=ONE_RETRY)
        studies = qido.find_studies(Query())
    assert len(studies) == 4
    assert calls == ["0", "2", "2"]


# -- MINT ---------------------------------------------------------------------------


def mint_reply() -> Reply:
    return Reply(200, MINT_ANSWER, {"Content-Type": "application/xml"})


@pytest.mark.parametrize("cut", header_offsets(mint_reply())[::3])
def test_mint_answer_cut_in_its_headers_is_retried(
    session: requests.Session, cut: int
) -> None:
    route = CutFirst(mint_reply(), cut)
    with FakeServer({"/mint/studies": route}) as fake:
        mint = Mint(session, fake.url + "/mint", retry=ONE_RETRY)
        studies = mint.find_studies(Query())
    assert [study.uid for study in studies] == [STUDY]


def test_mint_unframed_answer_is_incomplete(session: requests.Session) -> None:
    reply = Reply(200, MINT_ANSWER, {"Content-Type": "application/xml"}, unframed=True)
    with FakeServer({"/mint/studies": reply}) as fake:
        mint = Mint(session, fake.url + "/mint", retry=NO_RETRY)
        with pytest.raises(IncompleteResponseError):
            mint.find_studies(Query())


# -- WADO-URI -------------------------------------------------------------------


def wado_uri_reply(content_length_first: bool) -> Reply:
    data = dicom_file(STUDY, SERIES, instance(1).instance_uid)
    headers = {"Content-Type": "application/dicom"}
    if content_length_first:
        headers = {"Content-Length": str(len(data)), **headers}
    return Reply(200, data, headers)


@pytest.mark.parametrize("content_length_first", [False, True])
def test_wado_uri_answer_cut_anywhere_in_its_headers_is_retried(
    session: requests.Session, tmp_path: Path, content_length_first: bool
) -> None:
    reply = wado_uri_reply(content_length_first)
    for cut in header_offsets(reply):
        route = CutFirst(reply, cut)
        output = tmp_path / str(cut)
        with FakeServer({"/wado": route}) as fake:
            wado = WadoURI(session, fake.url + "/wado", retry=ONE_RETRY)
            report = wado.save_all([instance(1)], StorageDir(output), output)
        assert not report.failures, (cut, report.failures)
        assert route.calls == 2, cut
        (path,) = report.saved
        assert path.read_bytes() == reply.body


@pytest.mark.parametrize("content_length_first", [False, True])
def test_wado_uri_cut_headers_without_retry_are_transient(
    session: requests.Session, tmp_path: Path, content_length_first: bool
) -> None:
    reply = wado_uri_reply(content_length_first)
    kinds = set()
    for cut in header_offsets(reply):
        with FakeServer({"/wado": CutFirst(reply, cut)}) as fake:
            wado = WadoURI(session, fake.url + "/wado", retry=NO_RETRY)
            report = wado.save_all([instance(1)], StorageDir(tmp_path), tmp_path)
        (failure,) = report.failures
        assert isinstance(failure.error, TransientError), (cut, failure.error)
        kinds.add(type(failure.error).__name__)
        assert failure.uids == (STUDY, SERIES, instance(1).instance_uid)
    assert list(tree(tmp_path)) == []  # nothing saved, nothing partial
    assert kinds <= {"IncompleteResponseError", "DICOMTrolleyConnectionError"}


def test_wado_uri_wrong_content_type_with_a_body_is_still_permanent(
    session: requests.Session, tmp_path: Path
) -> None:
    reply = Reply(200, b"<html>login</html>", {"Content-Type": "text/html"})
    with FakeServer({"/wado": reply}) as fake:
        wado = WadoURI(session, fake.url + "/wado", retry=ONE_RETRY)
        report = wado.save_all([instance(1)], StorageDir(tmp_path), tmp_path)
    (failure,) = report.failures
    assert isinstance(failure.error, PermanentError)
    assert not isinstance(failure.error, TransientError)
    assert len(fake.requests) == 1


# -- WADO-RS ---------------------------------------------------------------------


def series_files(count: int = 3) -> list[bytes]:
    return [dicom_file(STUDY, SERIES, instance(n).instance_uid) for n in range(count)]


@pytest.mark.parametrize("extra", [1, 100, 10_000])
def test_wado_rs_complete_multipart_then_connection_drop_is_complete(
    session: requests.Session, tmp_path: Path, extra: int
) -> None:
    """The close delimiter arrived; Content-Length over-states, connection drops."""
    files = series_files()
    whole = multipart_reply(files)
    declared = len(whole.body) + extra
    headers = {**whole.headers, "Content-Length": str(declared)}
    sent = Reply(200, whole.body, headers)
    reply = Reply(200, whole.body, headers, answer_cut_after=len(sent.wire()))
    series = SeriesReference(study_uid=STUDY, series_uid=SERIES)
    with FakeServer({f"/studies/{STUDY}/series/{SERIES}": reply}) as fake:
        wado = WadoRS(session, fake.url, retry=Retry(total=3, backoff_factor=0))
        report = wado.save_all([series], StorageDir(tmp_path), tmp_path)
    assert not report.failures
    assert len(fake.requests) == 1  # not fetched again
    assert sorted(p.read_bytes() for p in report.saved) == sorted(files)


def test_wado_rs_unframed_multipart_with_close_delimiter_is_complete(
    session: requests.Session, tmp_path: Path
) -> None:
    files = series_files()
    whole = multipart_reply(files)
    reply = Reply(200, whole.body, whole.headers, unframed=True)
    series = SeriesReference(study_uid=STUDY, series_uid=SERIES)
    with FakeServer({f"/studies/{STUDY}/series/{SERIES}": reply}) as fake:
        wado = WadoRS(session, fake.url, retry=NO_RETRY)
        report = wado.save_all([series], StorageDir(tmp_path), tmp_path)
    assert not report.failures
    assert len(report.saved) == 3


def test_wado_rs_unframed_multipart_cut_before_close_is_incomplete(
    session: requests.Session, tmp_path: Path
) -> None:
    files = series_files()
    whole = multipart_reply(files)
    reply = Reply(200, whole.body[:-10], whole.headers, unframed=True)
    series = SeriesReference(study_uid=STUDY, series_uid=SERIES)
    with FakeServer({f"/studies/{STUDY}/series/{SERIES}": reply}) as fake:
        wado = WadoRS(session, fake.url, retry=NO_RETRY)
        report = wado.save_all([series], StorageDir(tmp_path), tmp_path)
    (failure,) = report.failures
    assert isinstance(failure.error, IncompleteResponseError)
    assert not list(tmp_path.rglob("*.partial")) and not [
        p for p in tree(tmp_path) if p.name.startswith(".")
    ]


# -- the total deadline ----------------------------------------------------------------


def test_trickling_server_is_given_up_on_by_the_total_deadline(
    session: requests.Session, tmp_path: Path
) -> None:
    data = dicom_file(STUDY, SERIES, instance(1).instance_uid)
    trickle = Reply(
        200, data, {"Content-Type": "application/dicom"}, piece_size=8, delay=0.02
    )
    timeout = Timeout(connect=5, read=5, total=0.3, min_rate=None)
    with FakeServer({"/wado": trickle}) as fake:
        wado = WadoURI(session, fake.url + "/wado", timeout=timeout, retry=NO_RETRY)
        report = wado.save_all([instance(1)], StorageDir(tmp_path), tmp_path)
    (failure,) = report.failures
    assert isinstance(failure.error, DICOMTrolleyTimeoutError)
    assert "total deadline" in str(failure.error)
    assert not report.saved


def test_trickling_search_is_given_up_on(session: requests.Session) -> None:
    trickle = Reply(
        200,
        QIDO_ANSWER,
        {"Content-Type": "application/dicom+json"},
        piece_size=4,
        delay=0.02,
    )
    timeout = Timeout(connect=5, read=5, total=0.2, min_rate=None)
    with FakeServer({"/studies": trickle}) as fake:
        qido = QidoRS(session, fake.url, timeout=timeout, retry=NO_RETRY)
        with pytest.raises(DICOMTrolleyTimeoutError, match="total deadline"):
            qido.find_studies(Query())


def test_a_fast_answer_is_not_cut_by_a_size_scaled_deadline(
    session: requests.Session, tmp_path: Path
) -> None:
    data = dicom_file(STUDY, SERIES, instance(1).instance_uid, pixel_bytes=60_000)
    reply = Reply(
        200, data, {"Content-Type": "application/dicom"}, piece_size=15_000, delay=0.05
    )
    # 0.1 s fixed would be too short for 4 pieces 50 ms apart; the size adds time
    timeout = Timeout(connect=5, read=5, total=0.1, min_rate=60_000)
    with FakeServer({"/wado": reply}) as fake:
        wado = WadoURI(session, fake.url + "/wado", timeout=timeout, retry=NO_RETRY)
        report = wado.save_all([instance(1)], StorageDir(tmp_path), tmp_path)
    assert not report.failures
    assert pydicom.dcmread(report.saved[0]).SOPInstanceUID == instance(1).instance_uid


def test_guarded_body_reads_whole_and_in_pieces() -> None:
    class Source:
        def __init__(self) -> None:
            self.chunks = [b"abc", b"de", b""]

        def read1(self, amt: int, decode_content: bool | None = None) -> bytes:
            return self.chunks.pop(0)

    body = GuardedBody(Source(), Deadline(start=time.monotonic(), total=60))
    assert body.read() == b"abcde"
    assert body.received == 5
    expired = GuardedBody(Source(), Deadline(start=time.monotonic() - 10, total=1))
    with pytest.raises(DICOMTrolleyTimeoutError):
        expired.read1(10)


# -- login -------------------------------------------------------------------------


def test_login_answer_cut_before_its_cookie_is_retried() -> None:
    """A login answer cut in its header block may have lost its Set-Cookie."""
    login = Reply(200, b"ok", {"Set-Cookie": "JSESSIONID=abc; Path=/"})
    cut = login.head().index(b"Set-Cookie")
    logins = CutFirst(login, cut)

    def studies(request: Recorded) -> Reply:
        if "JSESSIONID=abc" not in request.headers.get("Cookie", ""):
            return Reply(401, b"log in first")
        return qido_reply()

    with (
        FakeServer({"/login": logins, "/studies": studies}) as fake,
        requests.Session() as session,
    ):
        session.auth = VitreaAuth(fake.url + "/login", "user", "secret")
        qido = QidoRS(session, fake.url, retry=ONE_RETRY, auto_page=False)
        assert [s.uid for s in qido.find_studies(Query())] == [STUDY]
        assert logins.calls == 2

    logins = CutFirst(login, cut)
    with (
        FakeServer({"/login": logins, "/studies": studies}) as fake,
        requests.Session() as session,
    ):
        session.auth = VitreaAuth(fake.url + "/login", "user", "secret")
        qido = QidoRS(session, fake.url, retry=NO_RETRY, auto_page=False)
        with pytest.raises(IncompleteResponseError):
            qido.find_studies(Query())
