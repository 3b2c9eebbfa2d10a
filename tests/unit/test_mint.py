"""MINT search: MintQuery validation and parameters, and Mint against a fake server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest
import requests
from pydantic import ValidationError

from dicomtrolley.core import (
    DICOMObjectLevels,
    ExtendedQuery,
    Query,
    QueryLevels,
    Searcher,
)
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyConnectionError,
    DICOMTrolleyError,
    ResponseFormatError,
    ServerHTTPError,
    UnSupportedParameterError,
)
from dicomtrolley.fields import (
    InstanceLevel,
    SeriesLevel,
    SeriesLevelPromotable,
    StudyLevel,
)
from dicomtrolley.mint import (
    Mint,
    MintInstance,
    MintQuery,
    MintQueryLevels,
    MintSeries,
    MintStudy,
    get_valid_fields,
    parse_mint_studies_response,
)
from dicomtrolley.qido_rs import HierarchicalQuery
from dicomtrolley.transport import Retry
from tests.fakes import FakeServer, Recorded, Reply, html_reply, unused_url

ROOT = "/rest/api/vault/mint"
STUDIES = ROOT + "/studies"
STUDY = "1.2.826.0.1.3680043.8.498.100"
SERIES = "1.2.826.0.1.3680043.8.498.101"
SOP = "1.2.826.0.1.3680043.8.498.102"
NO_RETRY = Retry(total=0, backoff_factor=0)

INSTANCE_ANSWER = (
    "<?xml version='1.0' encoding='UTF-8'?>"
    '<studySearchResults xmlns="http://medical.nema.org/mint" queryLevel="INSTANCE">'
    '<study studyUUID="85997945-c585" version="1" '
    'lastModified="2021-03-09T06:42:04.825Z"><series><instance>'
    f'<attr tag="00080018" vr="UI" val="{SOP}" />'
    '<attr tag="00020010" vr="UI" val="1.2.840.10008.1.2.4.50" />'
    f'</instance><attr tag="0020000e" vr="UI" val="{SERIES}" /></series>'
    '<attr tag="00100020" vr="LO" val="1392052" />'
    f'<attr tag="0020000d" vr="UI" val="{STUDY}" /></study></studySearchResults>'
).encode()
EMPTY_ANSWER = b'<studySearchResults xmlns="http://medical.nema.org/mint"/>'


def xml_reply(body: bytes, content_type: str = "application/xml") -> Reply:
    return Reply(200, body, {"Content-Type": content_type})


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def mint(fake: FakeServer, session: requests.Session, **kwargs: Any) -> Mint:
    kwargs.setdefault("retry", NO_RETRY)
    return Mint(session, fake.url + ROOT + "/", **kwargs)


def only(fake: FakeServer) -> Recorded:
    assert len(fake.requests) == 1, [r.target for r in fake.requests]
    return fake.requests[0]


# --------------------------------------------------------------------------- #
# MintQuery
# --------------------------------------------------------------------------- #


def test_mint_query_is_an_extended_query_with_limit() -> None:
    query = MintQuery()
    assert isinstance(query, ExtendedQuery)
    assert query.limit == 0
    assert query.query_level == QueryLevels.STUDY
    with pytest.raises(ValidationError):
        MintQuery(offset=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("given", ["min_study_date", "max_study_date"])
def test_study_dates_both_or_neither(given: str) -> None:
    with pytest.raises(ValidationError, match="Both need to be given"):
        MintQuery(**{given: datetime(2020, 1, 1)})
    MintQuery(min_study_date=datetime(2020, 1, 1), max_study_date=datetime(2020, 2, 1))


@pytest.mark.parametrize(
    ("level", "field"),
    [
        ("STUDY", "PatientBirthDate"),
        ("SERIES", "Modality"),
        ("SERIES", "StationName"),  # promotable to series
        ("INSTANCE", "Rows"),
        ("INSTANCE", "SeriesDescription"),
        ("INSTANCE", "NumberOfStudyRelatedInstances"),
    ],
)
def test_include_fields_valid_for_the_level(level: str, field: str) -> None:
    query = MintQuery(query_level=level, include_fields=[field])
    assert query.include_fields == [field]


@pytest.mark.parametrize(
    ("level", "field"),
    [
        ("STUDY", "SeriesInstanceUID"),
        ("STUDY", "Modality"),
        ("STUDY", "Rows"),
        ("SERIES", "Rows"),
        ("SERIES", "SOPInstanceUID"),
        ("INSTANCE", "PixelData"),  # a keyword, but MINT does not return it
    ],
)
def test_include_fields_rejected_name_the_level_and_what_it_allows(
    level: str, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        MintQuery(query_level=level, include_fields=["PatientID", field])
    message = str(caught.value)
    assert f'"{field}" is not a valid include field for query level {level}' in (
        message
    )
    allowed = message.split(f"Valid fields for {level}: ")[1]
    for keyword in sorted(get_valid_fields(level))[:5]:
        assert keyword in allowed
    assert "PatientID" in allowed


def test_include_fields_must_be_dicom_keywords() -> None:
    with pytest.raises(ValidationError, match="not a valid DICOM keyword"):
        MintQuery(include_fields=["NoSuchKeyword"])


def test_valid_fields_per_level() -> None:
    assert get_valid_fields(QueryLevels.STUDY) == StudyLevel.fields
    assert get_valid_fields("SERIES") == (
        StudyLevel.fields | SeriesLevel.fields | SeriesLevelPromotable.fields
    )
    assert get_valid_fields(MintQueryLevels.INSTANCE) == (
        StudyLevel.fields
        | SeriesLevel.fields
        | SeriesLevelPromotable.fields
        | InstanceLevel.fields
    )
    get_valid_fields("STUDY").add("changed")  # a copy: the fields stay as they are
    assert "changed" not in StudyLevel.fields
    with pytest.raises(ValueError, match="Unknown query level"):
        get_valid_fields("IMAGE")


def test_query_levels_translate() -> None:
    assert {"STUDY", "SERIES", "INSTANCE"} == MintQueryLevels.ALL
    assert MintQueryLevels.translate(QueryLevels.INSTANCE) == "INSTANCE"
    assert MintQueryLevels.translate("SERIES") == MintQueryLevels.SERIES
    with pytest.raises(ValueError):
        MintQueryLevels.translate("PATIENT")


def test_as_parameters_every_field() -> None:
    query = MintQuery(
        StudyInstanceUID=STUDY,
        AccessionNumber="A1",
        PatientName="Doe^J*",
        PatientID="P*",
        ModalitiesInStudy="CT",
        SeriesInstanceUID=SERIES,
        InstitutionName="Hospital",
        PatientSex="F",
        StudyDescription="Thorax*",
        SeriesDescription="Axial",
        InstitutionalDepartmentName="Radiology",
        PatientBirthDate=date(1970, 3, 4),
        min_study_date=datetime(2020, 1, 1, 13, 30),
        max_study_date=datetime(2020, 12, 31),
        query_level=QueryLevels.INSTANCE,
        include_fields=["Rows", "Columns"],
        limit=25,
    )
    assert query.as_parameters() == {
        "StudyInstanceUID": STUDY,
        "AccessionNumber": "A1",
        "PatientName": "Doe^J*",
        "PatientID": "P*",
        "ModalitiesInStudy": "CT",
        "SeriesInstanceUID": SERIES,
        "InstitutionName": "Hospital",
        "PatientSex": "F",
        "StudyDescription": "Thorax*",
        "SeriesDescription": "Axial",
        "InstitutionalDepartmentName": "Radiology",
        "PatientBirthDate": "19700304",
        "min_study_date": "20200101",
        "max_study_date": "20201231",
        "QueryLevel": "INSTANCE",
        "IncludeFields": "Rows,Columns",
        "limit": 25,
    }
    assert str(query) == str(query.as_parameters())


def test_as_parameters_minimal() -> None:
    assert MintQuery().as_parameters() == {"QueryLevel": "STUDY"}
    assert MintQuery(PatientID="1", limit=0).as_parameters() == {
        "PatientID": "1",
        "QueryLevel": "STUDY",
    }


def test_init_from_query() -> None:
    query = Query(
        PatientID="P1",
        query_level=QueryLevels.SERIES,
        include_fields=["Modality"],
        min_study_date=datetime(2021, 1, 1),
        max_study_date=datetime(2021, 1, 2),
    )
    converted = MintQuery.init_from_query(query)
    assert isinstance(converted, MintQuery)
    assert converted.as_parameters() == {
        "PatientID": "P1",
        "min_study_date": "20210101",
        "max_study_date": "20210102",
        "QueryLevel": "SERIES",
        "IncludeFields": "Modality",
    }


@pytest.mark.parametrize(
    "query",
    [
        HierarchicalQuery(PatientID="P", offset=5),
        Query(include_fields=["Rows"]),  # an instance field at STUDY level
    ],
    ids=["qido-offset", "field-for-level"],
)
def test_queries_mint_cannot_express(query: Query) -> None:
    with pytest.raises(UnSupportedParameterError):
        MintQuery.init_from_query(query)
    with pytest.raises(UnSupportedParameterError):
        Mint(requests.Session(), "http://unused").find_studies(query)


def test_not_a_query() -> None:
    with pytest.raises(UnSupportedParameterError, match="Expecting Query"):
        Mint(requests.Session(), "http://unused").find_studies("PatientID=1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# Mint on the wire
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("query", "query_string"),
    [
        (Query(), "QueryLevel=STUDY"),
        (
            Query(PatientName="B*", query_level=QueryLevels.INSTANCE),
            "PatientName=B*&QueryLevel=INSTANCE",
        ),
        (
            MintQuery(
                PatientName="Doe^J*",
                PatientBirthDate=date(1970, 3, 4),
                min_study_date=datetime(2020, 1, 1),
                max_study_date=datetime(2020, 12, 31),
                query_level="SERIES",
                include_fields=["Modality", "SeriesDescription"],
                limit=10,
            ),
            "PatientName=Doe%5EJ*&PatientBirthDate=19700304"
            "&min_study_date=20200101&max_study_date=20201231&QueryLevel=SERIES"
            "&IncludeFields=Modality,SeriesDescription&limit=10",
        ),
        (
            MintQuery(StudyDescription="CT thorax & abdomen", PatientID="a b"),
            "PatientID=a%20b&StudyDescription=CT%20thorax%20%26%20abdomen"
            "&QueryLevel=STUDY",
        ),
    ],
    ids=["plain", "wildcard", "everything", "encoded"],
)
def test_query_string_and_accept_header(
    session: requests.Session, query: Query, query_string: str
) -> None:
    with FakeServer({STUDIES: xml_reply(EMPTY_ANSWER)}) as fake:
        assert mint(fake, session).find_studies(query) == []
    request = only(fake)
    assert request.method == "GET"
    assert request.path == STUDIES
    assert request.query == query_string
    assert request.headers["Accept"] == "application/xml"


def test_answer_becomes_linked_mint_objects(session: requests.Session) -> None:
    with FakeServer({STUDIES: xml_reply(INSTANCE_ANSWER, "text/xml")}) as fake:
        searcher = mint(fake, session)
        assert isinstance(searcher, Searcher)
        studies = searcher.find_studies(
            MintQuery(StudyInstanceUID=STUDY, query_level="INSTANCE")
        )
    (study,) = studies
    assert isinstance(study, MintStudy)
    assert (study.uid, study.mint_uuid) == (STUDY, "85997945-c585")
    assert study.last_modified == "2021-03-09T06:42:04.825Z"
    series = study[SERIES]
    assert isinstance(series, MintSeries)
    instance = series[SOP]
    assert isinstance(instance, MintInstance)
    assert instance.parent is series and series.parent is study
    assert study.max_object_depth() == DICOMObjectLevels.INSTANCE
    assert instance.data.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"


def test_find_study_by_id_asks_for_the_level(session: requests.Session) -> None:
    with FakeServer({STUDIES: xml_reply(INSTANCE_ANSWER)}) as fake:
        study = mint(fake, session).find_study_by_id(STUDY, QueryLevels.INSTANCE)
    assert study.uid == STUDY
    assert only(fake).query == f"StudyInstanceUID={STUDY}&QueryLevel=INSTANCE"


def test_find_study_needs_exactly_one(session: requests.Session) -> None:
    with (
        FakeServer({STUDIES: xml_reply(EMPTY_ANSWER)}) as fake,
        pytest.raises(DICOMTrolleyError, match="found none"),
    ):
        mint(fake, session).find_study(Query(PatientID="nobody"))


def test_no_content_is_no_studies(session: requests.Session) -> None:
    with FakeServer({STUDIES: Reply(204)}) as fake:
        assert mint(fake, session).find_studies(Query()) == []


def test_url_and_str(session: requests.Session) -> None:
    searcher = Mint(session, "https://vitrea/rest/api/vault/mint/")
    assert searcher.url == "https://vitrea/rest/api/vault/mint"
    assert str(searcher) == "Mint at https://vitrea/rest/api/vault/mint"


# --------------------------------------------------------------------------- #
# Errors: Vitrea answers HTML pages
# --------------------------------------------------------------------------- #


def test_401_html_is_an_auth_error(session: requests.Session) -> None:
    page = html_reply(401, "Unauthorized", "you need to log in")
    with (
        FakeServer({STUDIES: page}) as fake,
        pytest.raises(DICOMTrolleyAuthError) as caught,
    ):
        mint(fake, session).find_studies(Query(PatientID="P1"))
    assert caught.value.status_code == 401
    assert caught.value.url == f"{fake.url}{STUDIES}?PatientID=P1&QueryLevel=STUDY"
    assert "you need to log in" in str(caught.value)


def test_500_html_is_a_server_error_after_retries(session: requests.Session) -> None:
    page = html_reply(500, "Error 500 Request failed.", "Request failed.")
    retry = Retry(total=1, backoff_factor=0, status_forcelist=frozenset({500}))
    with (
        FakeServer({STUDIES: page}) as fake,
        pytest.raises(ServerHTTPError) as caught,
    ):
        mint(fake, session, retry=retry).find_studies(Query())
    assert len(fake.requests) == 2
    assert caught.value.status_code == 500
    assert caught.value.url == f"{fake.url}{STUDIES}?QueryLevel=STUDY"
    assert "Request failed" in str(caught.value)


def test_server_error_then_answer(session: requests.Session) -> None:
    answers = iter([html_reply(503, "busy"), xml_reply(INSTANCE_ANSWER)])
    retry = Retry(total=2, backoff_factor=0)
    with FakeServer({STUDIES: lambda request: next(answers)}) as fake:
        studies = mint(fake, session, retry=retry, timeout=5).find_studies(Query())
    assert [s.uid for s in studies] == [STUDY]
    assert len(fake.requests) == 2


def test_200_html_is_a_format_error(session: requests.Session) -> None:
    page = html_reply(200, "Login", "you need to log in")
    with (
        FakeServer({STUDIES: page}) as fake,
        pytest.raises(ResponseFormatError) as caught,
    ):
        mint(fake, session).find_studies(Query())
    assert caught.value.url == f"{fake.url}{STUDIES}?QueryLevel=STUDY"
    assert caught.value.status_code == 200
    assert "text/html" in str(caught.value)
    assert "Login" in str(caught.value)


def test_200_html_labelled_as_xml_is_a_format_error(session: requests.Session) -> None:
    page = html_reply(200, "Error 500 Request failed.").body
    with (
        FakeServer({STUDIES: xml_reply(page)}) as fake,
        pytest.raises(ResponseFormatError, match="HTML page") as caught,
    ):
        mint(fake, session).find_studies(Query())
    assert caught.value.url == f"{fake.url}{STUDIES}?QueryLevel=STUDY"


@pytest.mark.parametrize(
    "body",
    [
        INSTANCE_ANSWER[:-30],
        b"",
        b'{"studies": []}',
        b"<studySearchResults><study>",
        b'<other xmlns="http://medical.nema.org/mint"/>',
    ],
    ids=["cut", "empty", "json", "unclosed", "wrong-root"],
)
def test_malformed_xml_is_a_format_error(
    session: requests.Session, body: bytes
) -> None:
    with (
        FakeServer({STUDIES: xml_reply(body)}) as fake,
        pytest.raises(ResponseFormatError) as caught,
    ):
        mint(fake, session).find_studies(Query())
    assert caught.value.url == f"{fake.url}{STUDIES}?QueryLevel=STUDY"
    assert "MINT" in str(caught.value)


def test_xml_bomb_is_refused_not_expanded(session: requests.Session) -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE r ['
        b'<!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {chr(98 + n)} "{("&" + chr(97 + n) + ";") * 16}">'.encode()
            for n in range(8)
        )
        + b']><studySearchResults xmlns="http://medical.nema.org/mint">'
        b'<study studyUUID="u" lastModified="t">'
        b'<attr tag="00100020" vr="LO" val="&i;"/>'
        b'<attr tag="0020000d" vr="UI" val="1.2.3"/></study></studySearchResults>'
    )
    start = time.perf_counter()
    with (
        FakeServer({STUDIES: xml_reply(bomb)}) as fake,
        pytest.raises(ResponseFormatError, match="document type declaration"),
    ):
        mint(fake, session).find_studies(Query())
    assert time.perf_counter() - start < 2.0


def test_connection_refused(session: requests.Session) -> None:
    with pytest.raises(DICOMTrolleyConnectionError):
        Mint(session, unused_url() + ROOT, retry=NO_RETRY).find_studies(Query())


# --------------------------------------------------------------------------- #
# parse_mint_studies_response (4.1.0 took the requests Response)
# --------------------------------------------------------------------------- #


def test_parse_mint_studies_response_takes_response_bytes_or_text(
    session: requests.Session,
) -> None:
    with FakeServer({STUDIES: xml_reply(INSTANCE_ANSWER)}) as fake:
        response = session.get(fake.url + STUDIES)
    from_response = parse_mint_studies_response(response)
    from_bytes = parse_mint_studies_response(INSTANCE_ANSWER)
    from_text = parse_mint_studies_response(INSTANCE_ANSWER.decode())
    assert from_response == from_bytes == from_text
    assert [s.uid for s in from_response] == [STUDY]
    with pytest.raises(DICOMTrolleyError):
        parse_mint_studies_response(b"<html>not xml")


def test_4_1_0_names_importable() -> None:
    import dicomtrolley.mint as module

    for name in (
        "Mint",
        "MintQuery",
        "MintQueryLevels",
        "MintAttribute",
        "MintObject",
        "MintStudy",
        "MintSeries",
        "MintInstance",
        "parse_attribs",
        "parse_mint_studies_response",
        "get_valid_fields",
    ):
        assert hasattr(module, name), name
    assert sorted(module.__all__) == module.__all__
