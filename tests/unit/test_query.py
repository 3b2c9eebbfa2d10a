"""Query and ExtendedQuery: fields, validation and conversion between query types."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pydantic import ValidationError

from dicomtrolley.core import ExtendedQuery, Query, QueryLevels
from dicomtrolley.exceptions import UnSupportedParameterError


class LimitQuery(Query):
    """A searcher-specific query type, like MintQuery or QidoRSQueryBase."""

    limit: int = 0


def test_query_defaults() -> None:
    query = Query()
    for keyword in (
        "StudyInstanceUID",
        "AccessionNumber",
        "PatientName",
        "PatientID",
        "ModalitiesInStudy",
        "SeriesInstanceUID",
    ):
        assert getattr(query, keyword) == ""
    assert query.query_level is QueryLevels.STUDY
    assert query.min_study_date is None
    assert query.max_study_date is None
    assert query.include_fields == []
    assert Query().include_fields is not query.include_fields  # no shared default


def test_extended_query_defaults() -> None:
    query = ExtendedQuery()
    for keyword in (
        "InstitutionName",
        "PatientSex",
        "StudyDescription",
        "SeriesDescription",
        "InstitutionalDepartmentName",
    ):
        assert getattr(query, keyword) == ""
    assert query.PatientBirthDate is None
    assert ExtendedQuery(PatientBirthDate="1980-01-02").PatientBirthDate == date(
        1980, 1, 2
    )


@pytest.mark.parametrize("level", ["STUDY", "SERIES", "INSTANCE"])
def test_query_level_accepts_strings(level: str) -> None:
    assert Query(query_level=level).query_level is QueryLevels(level)


def test_bad_query_level_is_refused() -> None:
    with pytest.raises(ValidationError):
        Query(query_level="PATIENT")


def test_dates_are_parsed() -> None:
    query = Query(min_study_date="2020-01-02", max_study_date=datetime(2021, 3, 4))
    assert query.min_study_date == datetime(2020, 1, 2)
    assert query.max_study_date == datetime(2021, 3, 4)


def test_unknown_arguments_are_refused() -> None:
    with pytest.raises(ValidationError, match="PatientSex"):
        Query(PatientSex="F")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="patient_id"):
        Query(patient_id="1")  # type: ignore[call-arg]


def test_include_fields_must_be_dicom_keywords() -> None:
    assert Query(include_fields=["PatientName", "Modality"]).include_fields == [
        "PatientName",
        "Modality",
    ]
    with pytest.raises(ValidationError, match="NotAKeyword is not a valid DICOM"):
        Query(include_fields=["PatientName", "NotAKeyword"])
    with pytest.raises(ValidationError):
        Query(include_fields=["patientname"])  # keywords are case-sensitive
    assert Query(include_fields=None).include_fields is None


def test_validate_keyword() -> None:
    Query.validate_keyword("SOPInstanceUID")
    Query.validate_keyword("CommandGroupLength")  # tag (0000,0000) is falsy
    with pytest.raises(ValueError, match="Nope"):
        Query.validate_keyword("Nope")


def test_init_from_query_copies_filled_values() -> None:
    query = Query(
        PatientID="123",
        query_level="SERIES",
        min_study_date=datetime(2020, 1, 1),
        max_study_date=datetime(2020, 2, 1),
        include_fields=["Modality"],
    )
    extended = ExtendedQuery.init_from_query(query)
    assert type(extended) is ExtendedQuery
    assert extended.PatientID == "123"
    assert extended.query_level is QueryLevels.SERIES
    assert extended.min_study_date == datetime(2020, 1, 1)
    assert extended.max_study_date == datetime(2020, 2, 1)
    assert extended.include_fields == ["Modality"]
    assert extended.PatientSex == ""


def test_init_from_query_of_the_same_type_returns_it() -> None:
    query = ExtendedQuery(PatientSex="F")
    assert ExtendedQuery.init_from_query(query) is query


def test_init_from_query_down_to_a_type_without_the_parameter_is_refused() -> None:
    with pytest.raises(UnSupportedParameterError) as info:
        Query.init_from_query(ExtendedQuery(PatientSex="F", PatientID="1"))
    message = str(info.value)
    assert "PatientSex" in message
    assert "ExtendedQuery" in message
    with pytest.raises(UnSupportedParameterError):
        LimitQuery.init_from_query(ExtendedQuery(StudyDescription="CHEST"))
    with pytest.raises(UnSupportedParameterError, match="limit"):
        ExtendedQuery.init_from_query(LimitQuery(limit=5))


def test_init_from_query_ignores_unset_extra_parameters() -> None:
    """Defaults (empty, 0, None) of the source type are not 'set' parameters."""
    plain = Query.init_from_query(ExtendedQuery(PatientID="1"))
    assert type(plain) is Query
    assert plain.PatientID == "1"
    assert Query.init_from_query(LimitQuery(PatientName="A*")).PatientName == "A*"


def test_filled_fields_and_short_string() -> None:
    query = ExtendedQuery(PatientID="123", PatientSex="F")
    assert query.filled_fields() == {
        "PatientID": "123",
        "PatientSex": "F",
        "query_level": QueryLevels.STUDY,
    }
    text = query.to_short_string()
    assert text.startswith("ExtendedQuery: ")
    assert "'PatientID': '123'" in text
    assert "'query_level': 'STUDY'" in text
    assert "AccessionNumber" not in text
    assert "INSTANCE" in Query(query_level="INSTANCE").to_short_string()


def test_queries_compare_and_dump_by_value() -> None:
    assert Query(PatientID="1") == Query(PatientID="1")
    assert Query(PatientID="1") != Query(PatientID="2")
    dumped = Query(PatientID="1", query_level="SERIES").model_dump()
    assert dumped["PatientID"] == "1"
    assert dumped["query_level"] == "SERIES"


def test_dicom_dates_are_read_as_dates_not_timestamps() -> None:
    """pydantic reads "20220101" as seconds since 1970; a DICOM date is meant."""
    query = Query(min_study_date="20220101", max_study_date="20220203")
    assert query.min_study_date == datetime(2022, 1, 1)
    assert query.max_study_date == datetime(2022, 2, 3)
    assert ExtendedQuery(PatientBirthDate="19800102").PatientBirthDate == date(
        1980, 1, 2
    )
    with pytest.raises(ValidationError, match="not a valid YYYYMMDD date"):
        Query(min_study_date="20221399")
