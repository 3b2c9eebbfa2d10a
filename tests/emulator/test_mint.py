"""MINT search on the wire: raw XML bytes read with defusedxml, no dicomtrolley client.

Checks the format of PROTOCOLS.md (namespace, root and echo attributes, levels,
``attr`` elements, default attributes) and the query rules (include fields per
level, limit, wildcards, date ranges in both spellings, parameter names in any
case, 400 pages for bad queries).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from dicomtrolley.emulator import Emulator
from dicomtrolley.synthetic import SeriesSpec, StudySpec, synthetic_uid, write_studies
from tests.emulator.conftest import (
    MINT_NS,
    DemoData,
    attrs_of,
    login,
    mint,
    mint_xml,
)

TAG = re.compile(r"[0-9a-f]{8}")


@pytest.fixture(scope="module")
def session(emulator: Emulator) -> Iterator[requests.Session]:
    with login(emulator) as logged_in:
        yield logged_in


def studies_of(root: Any) -> list[Any]:
    return list(root.iterfind(MINT_NS + "study"))


def study_uids(response: requests.Response) -> set[str]:
    return {
        attrs_of(study)["0020000d"]["val"] for study in studies_of(mint_xml(response))
    }


# -- the document -------------------------------------------------------------------


def test_root_namespace_and_echo_attributes(
    session: requests.Session, emulator: Emulator
) -> None:
    response = mint(
        session,
        emulator,
        "PatientID=DTR001&StudyDescription=CT*&QueryLevel=STUDY"
        "&IncludeFields=PatientName,StudyDate",
    )
    assert response.headers["Content-Type"].startswith("application/xml")
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8"')
    assert (
        b'<studySearchResults xmlns="http://medical.nema.org/mint"' in response.content
    )
    root = mint_xml(response)
    assert root.tag == MINT_NS + "studySearchResults"
    assert root.attrib == {
        "QueryLevel": "STUDY",
        "queryfields": "PatientID=DTR001&StudyDescription=CT*",
        "includefields": "PatientName,StudyDate",
    }


def test_no_includefields_echo_without_include_fields(
    session: requests.Session, emulator: Emulator
) -> None:
    root = mint_xml(mint(session, emulator, "QueryLevel=STUDY"))
    assert root.attrib == {"QueryLevel": "STUDY", "queryfields": ""}
    assert len(studies_of(root)) == 5


def test_study_element_attributes(
    session: requests.Session, emulator: Emulator, demo: DemoData
) -> None:
    smith = demo.study("DTR004")
    root = mint_xml(mint(session, emulator, "PatientID=DTR004&QueryLevel=STUDY"))
    (study,) = studies_of(root)
    assert uuid.UUID(study.get("studyUUID"))
    assert study.get("version") == "1"
    stamp = study.get("lastModified")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    newest = max(
        path.stat().st_mtime_ns
        for path in demo.by_uid.values()
        if smith.study_uid in path.parts
    )
    expected = datetime.fromtimestamp(newest / 1e9, timezone.utc)
    assert (
        stamp
        == expected.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{expected.microsecond // 1000:03d}Z"
    )


@pytest.mark.parametrize("level", ["STUDY", "SERIES", "INSTANCE"])
def test_levels_present_only_as_asked_with_default_attributes(
    session: requests.Session, emulator: Emulator, demo: DemoData, level: str
) -> None:
    doe_ct = demo.study("DTR001", "CT")
    root = mint_xml(
        mint(
            session, emulator, f"StudyInstanceUID={doe_ct.study_uid}&QueryLevel={level}"
        )
    )
    (study,) = studies_of(root)
    assert attrs_of(study) == {
        "0020000d": {"tag": "0020000d", "vr": "UI", "val": doe_ct.study_uid}
    }
    series = list(study.iterfind(MINT_NS + "series"))
    instances = list(study.iterfind(f"{MINT_NS}series/{MINT_NS}instance"))
    if level == "STUDY":
        assert series == []
        return
    assert {attrs_of(s)["0020000e"]["val"] for s in series} == {
        s.series_uid for s in doe_ct.series
    }
    assert all(list(attrs_of(s)) == ["0020000e"] for s in series)
    if level == "SERIES":
        assert instances == []
        return
    assert len(instances) == doe_ct.instance_count
    for instance in instances:
        attrs = attrs_of(instance)
        assert list(attrs) == ["00080018", "00020010"]
        path = demo.by_uid[attrs["00080018"]["val"]]
        syntax = pydicom.dcmread(
            path, stop_before_pixels=True
        ).file_meta.TransferSyntaxUID
        assert attrs["00020010"] == {"tag": "00020010", "vr": "UI", "val": syntax}


def test_attr_elements_on_the_wire(
    session: requests.Session, emulator: Emulator, demo: DemoData
) -> None:
    response = mint(
        session,
        emulator,
        "PatientID=DTR001&StudyDescription=CT*&QueryLevel=STUDY"
        "&IncludeFields=PatientName,ModalitiesInStudy,NumberOfStudyRelatedInstances",
    )
    doe_ct = demo.study("DTR001", "CT")
    body = response.content
    assert b'<attr tag="00100010" vr="PN" val="Doe^John"/>' in body
    # several values joined with a backslash; numbers as text
    assert b'<attr tag="00080061" vr="CS" val="CT\\OT"/>' in body
    assert b'<attr tag="00201208" vr="IS" val="23"/>' in body
    assert f'<attr tag="0020000d" vr="UI" val="{doe_ct.study_uid}"/>'.encode() in body
    # children first, default attribute last
    (study,) = studies_of(mint_xml(response))
    assert list(attrs_of(study)) == ["00100010", "00080061", "00201208", "0020000d"]
    assert all(TAG.fullmatch(tag) for tag in attrs_of(study))


def test_non_ascii_values_are_utf8(
    session: requests.Session, emulator: Emulator
) -> None:
    response = mint(
        session, emulator, "PatientID=DTR00*&QueryLevel=STUDY&IncludeFields=PatientName"
    )
    assert 'val="Müller^Jürgen"'.encode() in response.content
    assert 'val="Yamada^Tarou=山田^太郎=やまだ^たろう"'.encode() in response.content


# -- include fields -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "field"),
    [
        ("STUDY", "PatientBirthDate"),
        ("SERIES", "PatientBirthDate"),
        ("SERIES", "SeriesDescription"),
        ("SERIES", "Manufacturer"),  # promotable
        ("INSTANCE", "Rows"),
        ("INSTANCE", "SeriesNumber"),
        ("INSTANCE", "StudyDescription"),
    ],
)
def test_allowed_include_fields(
    session: requests.Session, emulator: Emulator, level: str, field: str
) -> None:
    response = mint(
        session, emulator, f"PatientID=DTR004&QueryLevel={level}&IncludeFields={field}"
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("level", "field"),
    [
        ("STUDY", "SeriesDescription"),
        ("STUDY", "Rows"),
        ("SERIES", "Rows"),
        ("SERIES", "SOPClassUID"),
        ("INSTANCE", "ImageType"),  # a DICOM keyword, but not a MINT field
        ("STUDY", "NoSuchKeyword"),
    ],
)
def test_denied_include_fields_are_400_pages_naming_the_field(
    session: requests.Session, emulator: Emulator, level: str, field: str
) -> None:
    response = mint(
        session, emulator, f"QueryLevel={level}&IncludeFields=PatientName,{field}"
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"<h2>HTTP ERROR 400</h2>" in response.content
    assert field.encode() in response.content


def test_included_fields_go_to_their_level(
    session: requests.Session, emulator: Emulator
) -> None:
    root = mint_xml(
        mint(
            session,
            emulator,
            "PatientID=DTR004&QueryLevel=INSTANCE"
            "&IncludeFields=SeriesDescription,Rows&IncludeFields=StudyID,Manufacturer",
        )
    )
    (study,) = studies_of(root)
    assert list(attrs_of(study)) == ["00200010", "0020000d"]
    for series in study.iterfind(MINT_NS + "series"):
        assert list(attrs_of(series)) == ["0008103e", "0020000e"]
        for instance in series.iterfind(MINT_NS + "instance"):
            assert list(attrs_of(instance)) == [
                "00280010",
                "00080070",
                "00080018",
                "00020010",
            ]
            assert attrs_of(instance)["00280010"]["val"] == "64"


def test_promotable_fields_on_series_at_series_level(
    session: requests.Session, emulator: Emulator
) -> None:
    root = mint_xml(
        mint(
            session,
            emulator,
            "PatientID=DTR004&QueryLevel=SERIES&IncludeFields=Manufacturer",
        )
    )
    for series in root.iterfind(f"{MINT_NS}study/{MINT_NS}series"):
        assert attrs_of(series)["00080070"]["val"] == "dicomtrolley"


@pytest.fixture
def odd_data(tmp_path: Path, make_emulator: Callable[..., Emulator]) -> Emulator:
    """One study with an empty PatientBirthDate and markup in its description."""
    series = SeriesSpec(synthetic_uid("odd-series"), 1, "CT", "a & b", 1)
    study = StudySpec(
        patient_id="ODD1",
        patient_name="Odd^Person",
        study_uid=synthetic_uid("odd-study"),
        description="<\"quoted\"> & 'more'",
        series=(series,),
        patient_birth_date="",
    )
    write_studies(tmp_path, [study])
    return make_emulator(tmp_path)


def test_absent_attribute_omitted_empty_attribute_without_val(
    odd_data: Emulator,
) -> None:
    with login(odd_data) as session:
        response = mint(
            session,
            odd_data,
            "QueryLevel=STUDY&IncludeFields=PatientBirthDate,IssuerOfPatientID,StudyDescription",
        )
    assert b'<attr tag="00100030" vr="DA"/>' in response.content
    (study,) = studies_of(mint_xml(response))
    attrs = attrs_of(study)
    assert "00100021" not in attrs  # IssuerOfPatientID: not in the files
    assert "val" not in attrs["00100030"]
    assert attrs["00081030"]["val"] == "<\"quoted\"> & 'more'"


# -- matching ---------------------------------------------------------------------------


def test_limit(session: requests.Session, emulator: Emulator) -> None:
    assert (
        len(studies_of(mint_xml(mint(session, emulator, "QueryLevel=STUDY&limit=2"))))
        == 2
    )
    assert (
        len(studies_of(mint_xml(mint(session, emulator, "QueryLevel=STUDY&limit=0"))))
        == 5
    )
    root = mint_xml(mint(session, emulator, "QueryLevel=INSTANCE&limit=1"))
    assert len(studies_of(root)) == 1
    assert (
        len(list(root.iterfind(f"{MINT_NS}study/{MINT_NS}series/{MINT_NS}instance")))
        > 1
    )


@pytest.mark.parametrize(
    ("query", "patients"),
    [
        ("PatientName=doe*", ["DTR001", "DTR001"]),  # PN: case-insensitive
        ("PatientName=D?e^John", ["DTR001", "DTR001"]),
        ("PatientName=*ller*", ["DTR002"]),
        ("PatientName=山田*", ["DTR003"]),  # an ideographic component group
        ("PatientID=DTR00?", ["DTR001", "DTR001", "DTR002", "DTR003", "DTR004"]),
        ("PatientID=dtr001", []),  # not PN: case-sensitive
        ("PatientID=*", ["DTR001", "DTR001", "DTR002", "DTR003", "DTR004"]),
        ("StudyDescription=CT*", ["DTR001", "DTR003", "DTR004"]),
        ("ModalitiesInStudy=MR", ["DTR001", "DTR002"]),
        ("ModalitiesInStudy=OT\\MR", ["DTR001", "DTR001", "DTR002"]),
        ("SeriesDescription=Scout", ["DTR001"]),
        ("AccessionNumber=ACC0005", ["DTR004"]),
        ("PatientSex=F", ["DTR004"]),
        ("PatientBirthDate=19651224", ["DTR002"]),
        ("InstitutionName=Klinikum*", ["DTR002"]),
        ("InstitutionalDepartmentName=MSK", ["DTR001"]),
    ],
)
def test_matching(
    session: requests.Session, emulator: Emulator, query: str, patients: list[str]
) -> None:
    root = mint_xml(
        mint(session, emulator, f"{query}&QueryLevel=STUDY&IncludeFields=PatientID")
    )
    found = sorted(attrs_of(study)["00100020"]["val"] for study in studies_of(root))
    assert found == patients


def test_series_matching_narrows_series(
    session: requests.Session, emulator: Emulator
) -> None:
    root = mint_xml(
        mint(
            session,
            emulator,
            "SeriesDescription=T1*&QueryLevel=SERIES&IncludeFields=SeriesDescription",
        )
    )
    descriptions = sorted(
        attrs_of(series)["0008103e"]["val"]
        for series in root.iterfind(f"{MINT_NS}study/{MINT_NS}series")
    )
    assert descriptions == ["T1 axial", "T1 sag"]


@pytest.mark.parametrize(
    "dates",
    [
        "min_study_date=20220101&max_study_date=20231231",
        "minStudyDate=20220101&maxStudyDate=20231231",
        "MIN_STUDY_DATE=2022-01-01&MaxStudyDate=2023-12-31",
    ],
)
def test_date_range_in_both_spellings(
    session: requests.Session, emulator: Emulator, demo: DemoData, dates: str
) -> None:
    response = mint(session, emulator, f"{dates}&QueryLevel=STUDY")
    expected = {
        s.study_uid for s in demo.studies if "20220101" <= s.study_date <= "20231231"
    }
    assert len(expected) == 3
    assert study_uids(response) == expected
    assert mint_xml(response).get("queryfields") == dates


@pytest.mark.parametrize(
    "query",
    [
        "patientid=DTR004&querylevel=study",
        "PATIENTID=DTR004&QUERYLEVEL=STUDY",
        "Patient_ID=DTR004&Query_Level=Study",
    ],
)
def test_parameter_names_match_case_insensitively(
    session: requests.Session, emulator: Emulator, demo: DemoData, query: str
) -> None:
    response = mint(session, emulator, query)
    assert study_uids(response) == {demo.study("DTR004").study_uid}
    assert mint_xml(response).get("QueryLevel") == "STUDY"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("PatientID=DTR001", b"QueryLevel"),
        ("QueryLevel=PATIENT", b"PATIENT"),
        ("QueryLevel=STUDY&Foo=1", b"Foo"),
        ("QueryLevel=STUDY&limit=ten", b"ten"),
        ("QueryLevel=STUDY&min_study_date=20200101", b"together"),
        ("QueryLevel=STUDY&min_study_date=2020&max_study_date=2021", b"2020"),
        ("QueryLevel=STUDY&PatientBirthDate=1970", b"1970"),
    ],
)
def test_bad_queries_are_400_pages(
    session: requests.Session, emulator: Emulator, query: str, named: bytes
) -> None:
    response = mint(session, emulator, query)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert named in response.content


def test_no_match_is_an_empty_result(
    session: requests.Session, emulator: Emulator
) -> None:
    root = mint_xml(mint(session, emulator, "PatientID=NOBODY&QueryLevel=INSTANCE"))
    assert studies_of(root) == []
    assert root.get("QueryLevel") == "INSTANCE"
