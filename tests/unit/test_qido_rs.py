"""QIDO-RS search against a fake DICOMweb server: wire details and error paths."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.exceptions import (
    ClientHTTPError,
    DICOMTrolleyAuthError,
    DICOMTrolleyConnectionError,
    DICOMTrolleyTimeoutError,
    ResponseFormatError,
    ServerHTTPError,
)
from dicomtrolley.qido_rs import HierarchicalQuery, QidoRS, RelationalQuery
from dicomtrolley.transport import Retry, Timeout
from tests.fakes import (
    FakeServer,
    Recorded,
    Reply,
    html_reply,
    json_reply,
    unused_url,
)

ROOT = "/dicom-web"
STUDY = "1.2.826.0.1.3680043.8.498.100"
SERIES = "1.2.826.0.1.3680043.8.498.101"
NO_RETRY = Retry(total=0, backoff_factor=0)


def study_json(uid: str) -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [uid]},
        "00100020": {"vr": "LO", "Value": ["PAT1"]},
    }


def many_studies(count: int) -> list[dict[str, Any]]:
    return [study_json(f"{STUDY}.{n}") for n in range(1, count + 1)]


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def qido(fake: FakeServer, session: requests.Session, **kwargs: Any) -> QidoRS:
    kwargs.setdefault("retry", NO_RETRY)
    return QidoRS(session, fake.url + ROOT + "/", **kwargs)


def only(fake: FakeServer) -> Recorded:
    assert len(fake.requests) == 1, [r.target for r in fake.requests]
    return fake.requests[0]


# --------------------------------------------------------------------------- #
# What goes on the wire
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("query", "path", "query_string"),
    [
        (
            HierarchicalQuery(
                PatientName="Doe^J*",
                min_study_date=datetime(2020, 1, 1),
                max_study_date=datetime(2020, 12, 31),
                include_fields=["PatientBirthDate", "StudyDescription"],
            ),
            "/studies",
            "StudyDate=20200101-20201231&includefield=PatientBirthDate"
            "&includefield=StudyDescription&PatientName=Doe%5EJ*",
        ),
        (
            HierarchicalQuery(StudyInstanceUID=STUDY, query_level="SERIES"),
            f"/studies/{STUDY}/series",
            "",
        ),
        (
            HierarchicalQuery(
                StudyInstanceUID=STUDY,
                SeriesInstanceUID=SERIES,
                query_level="INSTANCE",
                include_fields=["Rows"],
            ),
            f"/studies/{STUDY}/series/{SERIES}/instances",
            "includefield=Rows",
        ),
        (
            RelationalQuery(PatientID="P*", query_level="SERIES"),
            "/series",
            "PatientID=P*",
        ),
        (
            RelationalQuery(AccessionNumber="A1", query_level="INSTANCE"),
            "/instances",
            "AccessionNumber=A1",
        ),
        (
            RelationalQuery(
                StudyInstanceUID=STUDY, PatientID="P1", query_level="INSTANCE"
            ),
            f"/studies/{STUDY}/instances",
            "PatientID=P1",
        ),
        (
            RelationalQuery(
                StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, query_level="SERIES"
            ),
            "/series",
            f"StudyInstanceUID={STUDY}&SeriesInstanceUID={SERIES}",
        ),
        (
            HierarchicalQuery(PatientID="*", limit=5, offset=10),
            "/studies",
            "PatientID=*&limit=5&offset=10",
        ),
        # a plain Query goes hierarchical when it can, relational when it must
        (
            Query(StudyInstanceUID=STUDY, query_level=QueryLevels.SERIES),
            f"/studies/{STUDY}/series",
            "",
        ),
        (
            Query(PatientID="P1", query_level=QueryLevels.SERIES),
            "/series",
            "PatientID=P1",
        ),
        (
            Query(StudyInstanceUID=STUDY, query_level=QueryLevels.INSTANCE),
            f"/studies/{STUDY}/instances",
            "",
        ),
    ],
    ids=[
        "study-dates-includefields-wildcard",
        "hierarchical-series",
        "hierarchical-instances",
        "relational-series",
        "relational-instances",
        "relational-instances-of-study",
        "relational-series-with-uids",
        "limit-offset",
        "plain-query-series",
        "plain-query-relational-series",
        "plain-query-instances-of-study",
    ],
)
def test_url_path_and_query_string(
    session: requests.Session, query: Query, path: str, query_string: str
) -> None:
    with FakeServer(lambda request: Reply(204)) as fake:
        assert qido(fake, session).find_studies(query) == []
    request = only(fake)
    assert request.method == "GET"
    assert request.path == ROOT + path
    assert request.query == query_string


def test_limit_and_offset_are_left_out_when_not_set(session: requests.Session) -> None:
    with FakeServer(lambda request: Reply(204)) as fake:
        qido(fake, session).find_studies(HierarchicalQuery(PatientID="P1"))
    names = [name for name, _ in only(fake).params]
    assert names == ["PatientID"]


def test_accept_header_asks_for_dicom_json(session: requests.Session) -> None:
    with FakeServer(lambda request: Reply(204)) as fake:
        qido(fake, session).find_studies(Query())
    accept = only(fake).headers["Accept"]
    first = accept.split(",")[0].strip()
    assert first == "application/dicom+json"


# --------------------------------------------------------------------------- #
# Empty answers
# --------------------------------------------------------------------------- #


def test_204_gives_no_results_and_no_second_page(session: requests.Session) -> None:
    with FakeServer({ROOT + "/studies": Reply(204)}) as fake:
        assert qido(fake, session).find_studies(Query(PatientID="none")) == []
    assert len(fake.requests) == 1


def test_empty_200_body_gives_no_results(session: requests.Session) -> None:
    empty = Reply(200, b"", {"Content-Type": "application/dicom+json"})
    with FakeServer({ROOT + "/studies": empty}) as fake:
        assert qido(fake, session).find_studies(Query(PatientID="none")) == []
    assert len(fake.requests) == 1


def test_results_become_studies(session: requests.Session) -> None:
    with FakeServer({ROOT + "/studies": json_reply(many_studies(2))}) as fake:
        studies = qido(fake, session, auto_page=False).find_studies(Query())
    assert [study.uid for study in studies] == [f"{STUDY}.1", f"{STUDY}.2"]
    assert studies[0].data.PatientID == "PAT1"


# --------------------------------------------------------------------------- #
# Paging
# --------------------------------------------------------------------------- #


MORE = '299 pacs: "There are {n} additional results that can be requested"'


def capped_server(
    results: list[dict[str, Any]], cap: int, honour_offset: bool
) -> FakeServer:
    """Answers at most cap results, from offset when honour_offset.

    A capped answer says so as PS3.18 8.3.4.4.1 asks: a Warning header with the
    number of results left.
    """

    def handler(request: Recorded) -> Reply:
        offset = int(request.param("offset") or 0) if honour_offset else 0
        page = results[offset : offset + cap]
        remaining = len(results) - offset - len(page)
        if not page:
            return Reply(204)
        reply = json_reply(page)
        if remaining > 0:
            headers = {**reply.headers, "Warning": MORE.format(n=remaining)}
            reply = Reply(200, reply.body, headers)
        return reply

    return FakeServer({ROOT + "/studies": handler})


@pytest.mark.parametrize(
    ("total", "offsets"),
    [(10, [None, "3", "6", "9"]), (9, [None, "3", "6"]), (3, [None]), (4, [None, "3"])],
)
def test_automatic_paging_collects_every_page(
    session: requests.Session, total: int, offsets: list[str | None]
) -> None:
    results = many_studies(total)
    with capped_server(results, cap=3, honour_offset=True) as fake:
        studies = qido(fake, session).find_studies(Query(PatientID="PAT1"))
    assert [study.uid for study in studies] == [
        f"{STUDY}.{n}" for n in range(1, total + 1)
    ]
    assert [request.param("offset") for request in fake.requests] == offsets
    assert all(request.param("PatientID") == "PAT1" for request in fake.requests)
    assert all(request.param("limit") is None for request in fake.requests)


def test_paging_stops_when_the_server_ignores_offset(session: requests.Session) -> None:
    with capped_server(many_studies(10), cap=3, honour_offset=False) as fake:
        studies = qido(fake, session).find_studies(Query())
    assert [study.uid for study in studies] == [f"{STUDY}.{n}" for n in (1, 2, 3)]
    assert [request.param("offset") for request in fake.requests] == [None, "3"]


def test_explicit_limit_sends_exactly_one_request(session: requests.Session) -> None:
    with capped_server(many_studies(10), cap=3, honour_offset=True) as fake:
        studies = qido(fake, session).find_studies(HierarchicalQuery(limit=3))
    assert len(studies) == 3
    assert only(fake).param("limit") == "3"
    assert only(fake).param("offset") is None


def test_paging_off_sends_one_request(session: requests.Session) -> None:
    with capped_server(many_studies(10), cap=3, honour_offset=True) as fake:
        studies = qido(fake, session, auto_page=False).find_studies(Query())
    assert len(studies) == 3
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------- #
# Answers that are not DICOM JSON
# --------------------------------------------------------------------------- #


def test_html_page_with_200_is_a_format_error_naming_the_url(
    session: requests.Session,
) -> None:
    page = html_reply(200, "Login", "Please log in to continue")
    with (
        FakeServer({ROOT + "/studies": page}) as fake,
        pytest.raises(ResponseFormatError) as caught,
    ):
        qido(fake, session).find_studies(Query(PatientID="P1"))
    url = f"{fake.url}{ROOT}/studies?PatientID=P1"
    assert caught.value.url == url
    assert url in str(caught.value)
    assert "text/html" in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [b'[{"0020000D": {"vr": "UI", "Value": ["1.2', b'{"not": "a list"}', b"[1, 2]"],
    ids=["cut-json", "object", "not-objects"],
)
def test_malformed_json_is_a_format_error(
    session: requests.Session, body: bytes
) -> None:
    reply = Reply(200, body, {"Content-Type": "application/dicom+json"})
    with (
        FakeServer({ROOT + "/studies": reply}) as fake,
        pytest.raises(ResponseFormatError) as caught,
    ):
        qido(fake, session).find_studies(Query())
    assert caught.value.url == f"{fake.url}{ROOT}/studies"
    assert "DICOM JSON" in str(caught.value)


# --------------------------------------------------------------------------- #
# HTTP errors and network trouble
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (503, Retry(total=2, backoff_factor=0)),
        (500, Retry(total=2, backoff_factor=0, status_forcelist=frozenset({500}))),
    ],
)
def test_server_error_is_retried_then_raised(
    session: requests.Session, status: int, retry: Retry
) -> None:
    failing = html_reply(status, "Request failed", "internal trouble")
    with (
        FakeServer({ROOT + "/studies": failing}) as fake,
        pytest.raises(ServerHTTPError) as caught,
    ):
        qido(fake, session, retry=retry).find_studies(Query())
    assert len(fake.requests) == retry.total + 1
    assert caught.value.status_code == status
    assert caught.value.url == f"{fake.url}{ROOT}/studies"
    assert "Request failed" in str(caught.value)


def test_server_error_then_success(session: requests.Session) -> None:
    answers = iter([Reply(503), json_reply(many_studies(2))])
    with FakeServer({ROOT + "/studies": lambda request: next(answers)}) as fake:
        studies = qido(fake, session, retry=Retry(backoff_factor=0)).find_studies(
            Query()
        )
    assert len(studies) == 2
    assert len(fake.requests) == 2  # 503, then the results (not capped: no paging)


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, ClientHTTPError), (400, ClientHTTPError), (401, DICOMTrolleyAuthError)],
)
def test_client_errors_are_not_retried(
    session: requests.Session, status: int, error: type[Exception]
) -> None:
    refused = html_reply(status, "Refused", "no")
    with (
        FakeServer({ROOT + "/studies": refused}) as fake,
        pytest.raises(error) as caught,
    ):
        qido(fake, session, retry=Retry(total=3, backoff_factor=0)).find_studies(
            Query()
        )
    assert len(fake.requests) == 1
    assert getattr(caught.value, "status_code", None) == status
    assert f"{fake.url}{ROOT}/studies" in str(caught.value)
    if error is ClientHTTPError:
        assert not isinstance(caught.value, DICOMTrolleyAuthError)


def test_connection_cut_mid_answer_is_retried(session: requests.Session) -> None:
    body = json_reply(many_studies(3)).body
    answers = iter(
        [
            Reply(200, body, {"Content-Type": "application/dicom+json"}, cut_after=40),
            json_reply(many_studies(3)),
        ]
    )
    with FakeServer({ROOT + "/studies": lambda request: next(answers)}) as fake:
        studies = qido(fake, session, retry=Retry(backoff_factor=0)).find_studies(
            Query()
        )
    assert len(studies) == 3
    assert len(fake.requests) == 2  # the cut answer, then the whole one


def test_connection_refused(session: requests.Session) -> None:
    url = unused_url()
    searcher = QidoRS(session, url, retry=Retry(total=1, backoff_factor=0))
    with pytest.raises(DICOMTrolleyConnectionError) as caught:
        searcher.find_studies(Query())
    assert not isinstance(caught.value, DICOMTrolleyTimeoutError)
    assert f"{url}/studies" in str(caught.value)
    assert "refused" in str(caught.value).lower()


def test_read_timeout(session: requests.Session) -> None:
    slow = json_reply(many_studies(1), wait=5)
    with FakeServer({ROOT + "/studies": slow}) as fake:
        searcher = qido(
            fake,
            session,
            timeout=Timeout(connect=2, read=0.5),
            retry=Retry(total=1, backoff_factor=0),
        )
        with pytest.raises(DICOMTrolleyTimeoutError) as caught:
            searcher.find_studies(Query())
    assert len(fake.requests) == 2  # timeouts are transient: tried again once
    assert f"{fake.url}{ROOT}/studies" in str(caught.value)
