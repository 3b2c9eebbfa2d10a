"""Attribute matching and Accept headers: pure functions, no server."""

from __future__ import annotations

import pytest

from dicomtrolley.emulator.attributes import Level, is_uid, tag_of
from dicomtrolley.emulator.matching import MatchingError, make_condition
from dicomtrolley.emulator.media import parse_accept, split_outside_quotes

NAME = {
    "00100010": {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
    }
}


def matches(keyword: str, value: str, attrs: dict[str, object]) -> bool:
    tag = tag_of(keyword)
    assert tag is not None
    condition = make_condition(tag, value)
    return True if condition is None else condition.matches(attrs)


def element(keyword: str, vr: str, *values: object) -> dict[str, object]:
    tag = tag_of(keyword)
    assert tag is not None
    return {tag: {"vr": vr, "Value": list(values)} if values else {"vr": vr}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Yamada^Tarou", True),
        ("yamada^tarou", True),
        ("YAMADA*", True),
        ("山田^太郎", True),
        ("Yamada^Tarou=山田^太郎", True),
        ("*太郎", True),
        ("Yamada", False),
        ("Y?mada^Tarou", True),
        ("", True),
        ("*", True),
    ],
)
def test_person_names(value: str, expected: bool) -> None:
    assert matches("PatientName", value, NAME) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ABC", True),
        ("abc", False),
        ("A*", True),
        ("A?C", True),
        ("A?", False),
        ("A.C", False),  # regex characters are literal
        ("*", True),
    ],
)
def test_case_sensitive_strings(value: str, expected: bool) -> None:
    assert matches("PatientID", value, element("PatientID", "LO", "ABC")) is expected


def test_absent_and_empty_attributes_match_only_universally() -> None:
    empty = element("PatientID", "LO")
    assert not matches("PatientID", "A*", empty)
    assert not matches("PatientID", "A*", {})
    assert matches("PatientID", "*", {})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CT", True),
        ("MR", True),
        ("US", False),
        ("US\\MR", True),
        ("US,CT", True),
        ("U?,C?", True),
    ],
)
def test_lists_and_multi_values(value: str, expected: bool) -> None:
    modalities = element("ModalitiesInStudy", "CS", "CT", "MR")
    assert matches("ModalitiesInStudy", value, modalities) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20210315", True),
        ("20210101-20211231", True),
        ("20210316-20211231", False),
        ("-20210315", True),
        ("20210315-", True),
        ("20210316-", False),
    ],
)
def test_date_ranges(value: str, expected: bool) -> None:
    assert (
        matches("StudyDate", value, element("StudyDate", "DA", "20210315")) is expected
    )


def test_time_ranges() -> None:
    time = element("StudyTime", "TM", "093000")
    assert matches("StudyTime", "0900-0959", time)
    assert matches("StudyTime", "09-10", time)
    assert not matches("StudyTime", "10-", time)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyDate", "2021"),
        ("StudyDate", "20210101-2021"),
        ("StudyDate", "-"),
        ("ProcedureCodeSequence", "x"),
        ("ImageType", "ORIGINAL"),  # not indexed
    ],
)
def test_unusable_keys(keyword: str, value: str) -> None:
    tag = tag_of(keyword)
    assert tag is not None
    with pytest.raises(MatchingError):
        make_condition(tag, value)


def test_levels_and_exact_values() -> None:
    condition = make_condition("0020000E", "1.2,1.3")
    assert condition is not None
    assert condition.level == Level.SERIES
    assert condition.exact_values == {"1.2", "1.3"}
    wildcard = make_condition("0020000E", "1.2*")
    assert wildcard is not None and wildcard.exact_values is None
    instance = make_condition("00080070", "X")  # Manufacturer: an instance attribute
    assert instance is not None and instance.level == Level.INSTANCE


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("1.2.3", True),
        ("1.02.3", True),
        ("1", True),
        ("1." + "2" * 62, True),
        ("1." + "2" * 63, False),
        ("", False),
        ("1..2", False),
        (".1", False),
        ("1.", False),
        ("1.2a", False),
        ("..", False),
        ("1/2", False),
    ],
)
def test_uids(text: str, valid: bool) -> None:
    assert is_uid(text) is valid


def test_accept_headers() -> None:
    header = (
        'multipart/related; type="application/dicom"; transfer-syntax=*;q=0.5, '
        'multipart/related; type="application/dicom, odd"; q=0.9, */*;q=0'
    )
    ranges = parse_accept(header)
    assert [r.q for r in ranges] == [0.9, 0.5, 0.0]
    assert ranges[0].params == {"type": "application/dicom, odd"}
    assert ranges[1].params == {"type": "application/dicom", "transfer-syntax": "*"}
    assert not ranges[2].acceptable
    assert parse_accept("") == []
    assert split_outside_quotes('a,"b,\\"c",d', ",") == ["a", '"b,\\"c"', "d"]
