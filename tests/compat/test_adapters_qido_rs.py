"""QIDO-RS as a 4.1.0 drop-in: paging only when a server shows a cap, the 4.1.0
methods and names, response-like objects, and the error wording users match on."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from pydantic import ValidationError

from dicomtrolley import qido_rs
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyError,
    NoQueryResultsError,
    ResponseFormatError,
    ServerHTTPError,
)
from dicomtrolley.parsing import DICOMParseTree
from dicomtrolley.qido_rs import (
    HierarchicalQuery,
    QidoRS,
    QidoRSQueryBase,
    RelationalQuery,
)
from dicomtrolley.transport import Retry
from tests.fakes import FakeServer, Recorded, Reply, html_reply

STUDY = "1.2.826.0.1.3680043.8.498.100"
NO_RETRY = Retry(total=0, backoff_factor=0)
MORE = '299 pacs.example: "There are {n} additional results that can be requested"'


def study_json(n: int) -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [f"{STUDY}.{n}"]},
        "00100020": {"vr": "LO", "Value": ["PAT1"]},
    }


def answer(numbers: range | list[int], status: int = 200, **headers: str) -> Reply:
    body = json.dumps([study_json(n) for n in numbers]).encode()
    return Reply(status, body, {"Content-Type": "application/dicom+json", **headers})


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def uids(studies: Any) -> list[str]:
    return [study.uid for study in studies]


def offsets(fake: FakeServer) -> list[str | None]:
    return [request.param("offset") for request in fake.requests]


# --------------------------------------------------------------------------- #
# Paging: only when the answer shows a cap
# --------------------------------------------------------------------------- #


def test_an_ordinary_answer_is_exactly_one_request(session: requests.Session) -> None:
    """No Warning, no 206, no known server limit: nothing more is asked for."""
    with FakeServer({"/studies": answer(range(1, 4))}) as fake:
        studies = QidoRS(session, fake.url, retry=NO_RETRY).find_studies(Query())
    assert uids(studies) == [f"{STUDY}.{n}" for n in (1, 2, 3)]
    assert offsets(fake) == [None]


def test_a_warning_about_something_else_does_not_start_paging(
    session: requests.Session,
) -> None:
    """299 warnings also report ignored keys (PS3.18 8.3.4.1): not a cap."""
    reply = answer(range(1, 4), Warning='299 pacs: "ImageType is not supported"')
    with FakeServer({"/studies": reply}) as fake:
        studies = QidoRS(session, fake.url, retry=NO_RETRY).find_studies(Query())
    assert len(studies) == 3
    assert offsets(fake) == [None]


@pytest.mark.parametrize("refusal", [400, 404, 422])
def test_a_server_refusing_offset_still_gives_the_first_page(
    session: requests.Session, caplog: pytest.LogCaptureFixture, refusal: int
) -> None:
    """A capped first page, then a 4xx to any offset: the first page is the
    result. A 5xx there is a failure, not a refusal: it is raised."""
    status = refusal

    def route(request: Recorded) -> Reply:
        if request.param("offset") is not None:
            return html_reply(status, "Refused", "unknown parameter offset")
        return answer(range(1, 4), Warning=MORE.format(n=5))

    with (
        caplog.at_level(logging.WARNING, logger="trolley"),
        FakeServer({"/studies": route}) as fake,
    ):
        searcher = QidoRS(session, fake.url, retry=NO_RETRY)
        studies = searcher.find_studies(Query())
        assert uids(studies) == [f"{STUDY}.{n}" for n in (1, 2, 3)]
        assert offsets(fake) == [None, "3"]
        assert any("refused offset" in r.getMessage() for r in caplog.records)
        status = 503
        with pytest.raises(ServerHTTPError):
            searcher.find_studies(Query())


def paged_server(
    pages: list[list[int]], signal: Callable[[int], dict[str, str]]
) -> FakeServer:
    """Pages of different sizes; signal(pages_left) gives a page's extra headers."""
    starts = [sum(len(p) for p in pages[:i]) for i in range(len(pages))]

    def route(request: Recorded) -> Reply:
        offset = int(request.param("offset") or 0)
        if offset not in starts:
            return Reply(204)
        index = starts.index(offset)
        reply = answer(pages[index])
        left = len(pages) - index - 1
        extra = signal(left) if left else {}
        status = int(extra.pop("status", "200"))
        return Reply(status, reply.body, {**reply.headers, **extra})

    return FakeServer({"/studies": route})


def test_pages_follow_the_warning_not_the_page_size(session: requests.Session) -> None:
    """A server capping by bytes sends pages of 3, 2 and 2 results, each with the
    PS3.18 Warning while more are left: every page is fetched."""
    pages = [[1, 2, 3], [4, 5], [6, 7]]
    with paged_server(pages, lambda left: {"Warning": MORE.format(n=left)}) as fake:
        studies = QidoRS(session, fake.url, retry=NO_RETRY).find_studies(Query())
    assert uids(studies) == [f"{STUDY}.{n}" for n in range(1, 8)]
    assert offsets(fake) == [None, "3", "5"]
    with paged_server(pages, lambda left: {"Warning": MORE.format(n=left)}) as fake:
        searcher = QidoRS(session, fake.url, retry=NO_RETRY, auto_page=False)
        assert len(searcher.find_studies(Query())) == 3
    assert offsets(fake) == [None]  # auto_page=False: the first page only


def test_206_partial_content_pages(session: requests.Session) -> None:
    pages = [[1, 2], [3], [4, 5]]
    with paged_server(pages, lambda left: {"status": "206"}) as fake:
        studies = QidoRS(session, fake.url, retry=NO_RETRY).find_studies(Query())
    assert uids(studies) == [f"{STUDY}.{n}" for n in range(1, 6)]
    assert offsets(fake) == [None, "2", "3"]


def test_a_known_server_limit_pages_full_answers(session: requests.Session) -> None:
    """A server that caps silently: server_limit says how many make a full page."""
    pages = [[1, 2, 3], [4, 5, 6], [7]]
    with paged_server(pages, lambda left: {}) as fake:
        searcher = QidoRS(session, fake.url, retry=NO_RETRY, server_limit=3)
        studies = searcher.find_studies(Query())
    assert uids(studies) == [f"{STUDY}.{n}" for n in range(1, 8)]
    assert offsets(fake) == [None, "3", "6"]


# --------------------------------------------------------------------------- #
# 4.1.0 names and methods
# --------------------------------------------------------------------------- #


def test_4_1_0_validator_methods_exist_and_still_validate() -> None:
    assert callable(QidoRSQueryBase.min_max_study_date_xor)
    assert callable(HierarchicalQuery.uids_should_be_hierarchical)
    assert callable(HierarchicalQuery.uids_should_match_query_level)
    assert callable(RelationalQuery.query_level_should_be_series_or_instance)
    query = HierarchicalQuery(StudyInstanceUID=STUDY, query_level="SERIES")
    assert query.uids_should_match_query_level() is query
    with pytest.raises(ValidationError, match="not hierarchical"):
        HierarchicalQuery(SeriesInstanceUID="1.2.3", StudyInstanceUID="")
    with pytest.raises(ValidationError, match="need to supply a StudyInstanceUID"):
        HierarchicalQuery(query_level=QueryLevels.SERIES)
    with pytest.raises(ValidationError, match="makes no sense"):
        RelationalQuery(query_level=QueryLevels.STUDY)


def test_4_1_0_module_names() -> None:
    assert qido_rs.DICOMParseTree is DICOMParseTree
    assert qido_rs.DICOMTrolleyError is DICOMTrolleyError
    assert qido_rs.Response is requests.Response
    assert isinstance(qido_rs.STUDY_VALUE_ERROR_TEXT, str)


def test_check_for_response_errors() -> None:
    ok = SimpleNamespace(status_code=200, content=b"[]", url="http://pacs/studies")
    QidoRS.check_for_response_errors(ok)
    with pytest.raises(NoQueryResultsError, match="204"):
        QidoRS.check_for_response_errors(SimpleNamespace(status_code=204))


def test_check_for_response_errors_on_a_real_401(session: requests.Session) -> None:
    page = html_reply(401, "Unauthorized", "you need to log in")
    with FakeServer({"/studies": page}) as fake:
        response = session.get(fake.url + "/studies")
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        QidoRS.check_for_response_errors(response)
    assert caught.value.status_code == 401
    assert "Unauthorized" in str(caught.value)
    assert f"{fake.url}/studies" in str(caught.value)


@pytest.mark.parametrize("body_attribute", ["content", "text"])
def test_parse_response_takes_any_response_like_object(body_attribute: str) -> None:
    payload = json.dumps([study_json(1), study_json(2)])
    body: str | bytes = payload.encode() if body_attribute == "content" else payload
    response = SimpleNamespace(status_code=200, **{body_attribute: body})
    datasets = QidoRS.parse_response(response)
    assert [ds.StudyInstanceUID for ds in datasets] == [f"{STUDY}.1", f"{STUDY}.2"]
    assert QidoRS.parse_response(SimpleNamespace(status_code=204, content=b"")) == []


def test_unparseable_answer_says_could_not_parse(session: requests.Session) -> None:
    reply = Reply(200, b"[{not json", {"Content-Type": "application/dicom+json"})
    with (
        FakeServer({"/studies": reply}) as fake,
        pytest.raises(ResponseFormatError, match="Could not parse") as caught,
    ):
        QidoRS(session, fake.url, retry=NO_RETRY).find_studies(Query())
    assert caught.value.url == f"{fake.url}/studies"


def test_http_errors_keep_the_4_1_0_wording(session: requests.Session) -> None:
    """4.1.0: 'Calling <url> failed (401 - Unauthorized)'."""
    with (
        FakeServer({"/studies": html_reply(401, "Login", "no")}) as fake,
        pytest.raises(DICOMTrolleyAuthError) as caught,
    ):
        QidoRS(session, fake.url, retry=NO_RETRY).find_studies(Query())
    assert f"Calling {fake.url}/studies failed (401 - Unauthorized)" in str(
        caught.value
    )
