"""MINT search answers (XML bytes) into MintStudy → MintSeries → MintInstance trees.

The fixtures follow the shape of Vitrea Connection 8.2 answers: default namespace
``http://medical.nema.org/mint``, lower-case hex tags, ``attr`` elements after the
child ``series``/``instance`` elements, no whitespace between elements.
"""

from __future__ import annotations

import time
from typing import Any
from xml.etree import ElementTree

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import DSfloat, PersonName

from dicomtrolley.core import DICOMObjectLevels, InstanceReference, Study
from dicomtrolley.exceptions import DICOMTrolleyError, ResponseFormatError
from dicomtrolley.formats.mint_xml import (
    MINT_NAMESPACE,
    MintInstance,
    MintSeries,
    MintStudy,
    MintXMLParser,
    parse_attribs,
    parse_mint_xml,
)

NS = f'xmlns="{MINT_NAMESPACE}"'
STUDY_1 = "1.2.840.114350.2.357.2.798268.2.125886546.1"
STUDY_2 = "1.2.840.114350.2.357.3.798268.2.126847153.1"
SERIES_1 = "1.2.40.0.13.1.202066129828111990737107018349786560571"
SERIES_2 = "1.2.840.113663.1500.1.460388269.2.1.20201105.84519.348"
SOP_1 = "1.2.840.113663.1500.1.460388269.3.1.20201105.84758.490"
SOP_2 = "1.2.840.113663.1500.1.460388269.3.11.20201105.85329.902"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def attr(tag: str, vr: str, val: str | None = None) -> str:
    value = "" if val is None else f' val="{val}"'
    return f'<attr tag="{tag}" vr="{vr}"{value} />'


def study_xml(uid: str, inner: str, uuid: str = "85997945-c585-4570") -> str:
    return (
        f'<study studyUUID="{uuid}" version="1" '
        f'lastModified="2021-03-09T06:42:04.825Z">{inner}</study>'
    )


def results(*studies: str, level: str = "STUDY", ns: str = NS) -> bytes:
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f'<studySearchResults {ns} queryLevel="{level}" '
        'queryfields="PatientName=B*" includefields="StudyInstanceUID,PatientName">'
        + "".join(studies)
        + "</studySearchResults>"
    ).encode()


# The three levels, as Vitrea sends them (attrs after the children).
STUDY_LEVEL = results(
    study_xml(
        STUDY_1,
        attr("00100020", "LO", "1892052")
        + attr("00100010", "PN", "TEST^K.J.M.")
        + attr("0020000d", "UI", STUDY_1),
        uuid="35997945-c535-4570-3c1f-3514f27695e9",
    ),
    study_xml(
        STUDY_2,
        attr("00100020", "LO", "1892052")
        + attr("00100010", "PN", "BEELDEN^W^I L")
        + attr("0020000d", "UI", STUDY_2),
        uuid="c19a038a-fe0f-4e4b-b690-a895bd8db1e2",
    ),
)
SERIES_LEVEL = results(
    study_xml(
        STUDY_1,
        f"<series>{attr('0020000e', 'UI', SERIES_1)}</series>"
        f"<series>{attr('0020000e', 'UI', SERIES_2)}</series>"
        + attr("00100020", "LO", "1392052")
        + attr("0020000d", "UI", STUDY_1),
    ),
    level="SERIES",
)
INSTANCE_LEVEL = results(
    study_xml(
        STUDY_1,
        "<series><instance>"
        + attr("00080018", "UI", SOP_1)
        + attr("00020010", "UI", JPEG_BASELINE)
        + "</instance><instance>"
        + attr("00080018", "UI", SOP_2)
        + attr("00020010", "UI", "1.2.840.10008.1.2.4.70")
        + "</instance>"
        + attr("0020000e", "UI", SERIES_1)
        + "</series>"
        + attr("00100020", "LO", "1392052")
        + attr("00100010", "PN", "BEELDENZORG^W^I L")
        + attr("0020000d", "UI", STUDY_1),
    ),
    level="INSTANCE",
)


def same_tree(left: list[MintStudy], right: list[MintStudy]) -> bool:
    """Equal UIDs, data and children, and the same MINT attributes."""
    return left == right and [(s.mint_uuid, s.last_modified) for s in left] == [
        (s.mint_uuid, s.last_modified) for s in right
    ]


# --------------------------------------------------------------------------- #
# The three query levels
# --------------------------------------------------------------------------- #


def test_study_level_answer() -> None:
    studies = parse_mint_xml(STUDY_LEVEL)
    assert [s.uid for s in studies] == [STUDY_1, STUDY_2]
    first = studies[0]
    assert isinstance(first, MintStudy)
    assert isinstance(first, Study)
    assert first.mint_uuid == "35997945-c535-4570-3c1f-3514f27695e9"
    assert first.last_modified == "2021-03-09T06:42:04.825Z"
    assert first.series == []
    assert first.max_object_depth() == DICOMObjectLevels.STUDY
    assert first.data.PatientID == "1892052"
    assert first.data.PatientName == "TEST^K.J.M."
    assert isinstance(first.data.PatientName, PersonName)
    assert first.data.PatientName.family_name == "TEST"
    assert isinstance(first.data.StudyInstanceUID, UID)
    assert str(first) == f"MintStudy {STUDY_1}"


def test_series_level_answer_attrs_after_series() -> None:
    (study,) = parse_mint_xml(SERIES_LEVEL)
    assert study.uid == STUDY_1
    assert study.data.PatientID == "1392052"
    assert [s.uid for s in study.series] == [SERIES_1, SERIES_2]
    for series in study.series:
        assert isinstance(series, MintSeries)
        assert series.parent is study
        assert series.instances == []
        assert series.data.SeriesInstanceUID == series.uid
    assert study.max_object_depth() == DICOMObjectLevels.SERIES


def test_instance_level_answer() -> None:
    (study,) = parse_mint_xml(INSTANCE_LEVEL)
    (series,) = study.series
    assert series.uid == SERIES_1
    assert [i.uid for i in series.instances] == [SOP_1, SOP_2]
    first = series.instances[0]
    assert isinstance(first, MintInstance)
    assert first.parent is series
    assert first.root() is study
    assert first.data.TransferSyntaxUID == JPEG_BASELINE
    assert first.data.SOPInstanceUID == SOP_1
    assert study.contained_references(DICOMObjectLevels.INSTANCE) == (
        InstanceReference(STUDY_1, SERIES_1, SOP_1),
        InstanceReference(STUDY_1, SERIES_1, SOP_2),
    )
    assert study[SERIES_1][SOP_2] is series.instances[1]
    assert "BEELDENZORG^W^I L" in study.dump_content()


def test_empty_result() -> None:
    assert parse_mint_xml(results()) == []
    assert parse_mint_xml(f"<studySearchResults {NS}/>".encode()) == []


def test_whitespace_and_comments_between_elements() -> None:
    pretty = INSTANCE_LEVEL.replace(b"><", b">\n   <!-- c -->\n  <")
    assert same_tree(parse_mint_xml(pretty), parse_mint_xml(INSTANCE_LEVEL))


# --------------------------------------------------------------------------- #
# Lenient about what servers vary
# --------------------------------------------------------------------------- #


def test_no_namespace() -> None:
    plain = INSTANCE_LEVEL.replace(NS.encode(), b"")
    assert b"xmlns" not in plain
    assert same_tree(parse_mint_xml(plain), parse_mint_xml(INSTANCE_LEVEL))


def test_prefixed_namespace() -> None:
    body = (
        f'<m:studySearchResults xmlns:m="{MINT_NAMESPACE}">'
        '<m:study studyUUID="u" lastModified="t">'
        f'<m:attr tag="0020000d" vr="UI" val="{STUDY_1}"/>'
        "</m:study></m:studySearchResults>"
    ).encode()
    (study,) = parse_mint_xml(body)
    assert study.uid == STUDY_1
    assert study.mint_uuid == "u"


@pytest.mark.parametrize("case", [str.upper, str.title, str.lower])
def test_element_and_attribute_names_in_any_case(case: Any) -> None:
    body = INSTANCE_LEVEL.decode()
    for name in ("studySearchResults", "study", "series", "instance", "attr"):
        body = body.replace(f"<{name}", f"<{case(name)}")
        body = body.replace(f"</{name}>", f"</{case(name)}>")
    for name in ("tag", "vr", "val", "studyUUID", "lastModified"):
        body = body.replace(f' {name}="', f' {case(name)}="')
    studies = parse_mint_xml(body.encode())
    assert same_tree(studies, parse_mint_xml(INSTANCE_LEVEL))


def test_attrs_before_children_give_the_same_tree() -> None:
    before = results(
        study_xml(
            STUDY_1,
            attr("00100020", "LO", "1392052")
            + attr("00100010", "PN", "BEELDENZORG^W^I L")
            + attr("0020000d", "UI", STUDY_1)
            + "<series>"
            + attr("0020000e", "UI", SERIES_1)
            + "<instance>"
            + attr("00080018", "UI", SOP_1)
            + attr("00020010", "UI", JPEG_BASELINE)
            + "</instance><instance>"
            + attr("00080018", "UI", SOP_2)
            + attr("00020010", "UI", "1.2.840.10008.1.2.4.70")
            + "</instance></series>",
        )
    )
    assert same_tree(parse_mint_xml(before), parse_mint_xml(INSTANCE_LEVEL))


def test_attrs_between_children() -> None:
    body = results(
        study_xml(
            STUDY_1,
            f"<series>{attr('0020000e', 'UI', SERIES_1)}</series>"
            + attr("0020000d", "UI", STUDY_1)
            + f"<series>{attr('0020000e', 'UI', SERIES_2)}</series>"
            + attr("00100020", "LO", "P"),
        )
    )
    (study,) = parse_mint_xml(body)
    assert [s.uid for s in study.series] == [SERIES_1, SERIES_2]
    assert study.data.PatientID == "P"


def test_upper_case_hex_tags() -> None:
    body = results(
        study_xml(
            STUDY_1, attr("0020000D", "UI", STUDY_1) + attr("0008103E", "LO", "X")
        )
    )
    (study,) = parse_mint_xml(body)
    assert study.uid == STUDY_1
    assert study.data.SeriesDescription == "X"


def test_missing_val_is_an_empty_value() -> None:
    body = results(
        study_xml(
            STUDY_1,
            attr("0020000d", "UI", STUDY_1)
            + attr("00100010", "PN")
            + attr("00100020", "LO")
            + attr("00080020", "DA", "")
            + attr("00201208", "IS")
            + attr("00280010", "US")
            + attr("00081032", "SQ")
            + attr("00080018", "UI"),
        )
    )
    data = parse_mint_xml(body)[0].data
    assert data.PatientID == ""
    assert data.StudyDate == ""
    assert isinstance(data.PatientName, PersonName)
    assert str(data.PatientName) == ""
    assert data.NumberOfStudyRelatedInstances is None
    assert data.Rows is None
    assert isinstance(data.ProcedureCodeSequence, Sequence)
    assert len(data.ProcedureCodeSequence) == 0
    assert data.SOPInstanceUID == ""
    assert "PatientBirthDate" not in data  # not sent: not there


def test_multiple_values() -> None:
    body = results(
        study_xml(
            STUDY_1,
            attr("0020000d", "UI", STUDY_1)
            + attr("00080061", "CS", "CT\\SR\\PR")
            + attr("00080062", "UI", "1.2.3\\1.2.4")
            + attr("00201200", "IS", "1\\2")
            + attr("00280034", "IS", "4\\3")
            + attr("00281050", "DS", "40\\400.5")
            + attr("00080090", "PN", "Doe^J\\Roe^R")
            + attr("00280010", "US", "1\\2")
            + attr("00324000", "LT", "a\\b"),
        )
    )
    data = parse_mint_xml(body)[0].data
    assert isinstance(data.ModalitiesInStudy, MultiValue)
    assert list(data.ModalitiesInStudy) == ["CT", "SR", "PR"]
    assert list(data.SOPClassesInStudy) == ["1.2.3", "1.2.4"]
    assert all(isinstance(uid, UID) for uid in data.SOPClassesInStudy)
    assert list(data.NumberOfPatientRelatedStudies) == [1, 2]
    assert list(data.PixelAspectRatio) == [4, 3]
    assert list(data.WindowCenter) == [40, 400.5]
    assert all(isinstance(value, DSfloat) for value in data.WindowCenter)
    assert [str(name) for name in data.ReferringPhysicianName] == ["Doe^J", "Roe^R"]
    assert list(data.Rows) == [1, 2]
    assert data.StudyComments == "a\\b"  # LT: a backslash is text, not a separator


@pytest.mark.parametrize(
    ("tag", "vr", "text"),
    [
        (0x00100020, "LO", "PAT 001"),
        (0x00080060, "CS", "CT"),
        (0x00080020, "DA", "20240131"),
        (0x00080030, "TM", "101530.123"),
        (0x0008002A, "DT", "20240131101530"),
        (0x00080050, "SH", "ACC1"),
        (0x00081030, "LO", "Thorax, with contrast"),
        (0x00101010, "AS", "042Y"),
        (0x00080054, "AE", "PACS"),
        (0x00081190, "UR", "http://x/y?a=1&b=2"),
        (0x00324000, "LT", "long text"),
        (0x00204000, "LT", "a\\b"),
        (0x0020000D, "UI", "1.2.3"),
        (0x00100010, "PN", "Müller^Jürgen=ミュラー^ユルゲン"),
        (0x00200013, "IS", "42"),
        (0x00200013, "IS", "007"),
        (0x00281050, "DS", "1.50"),
        (0x00080061, "CS", "CT\\SR"),
    ],
)
def test_values_as_pydicom_converts_text(tag: int, vr: str, text: str) -> None:
    """Each string VR gives what pydicom's DataElement(tag, vr, text) gives."""
    escaped = text.replace("&", "&amp;")
    body = results(
        study_xml(
            STUDY_1, attr("0020000d", "UI", STUDY_1) + attr(f"{tag:08x}", vr, escaped)
        )
    )
    got = parse_mint_xml(body)[0].data[tag]
    expected = DataElement(tag, vr, text)
    assert got == expected
    assert got.VR == vr  # noqa: SIM300
    assert type(got.value) is type(expected.value)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize(
    ("tag", "vr", "text", "value"),
    [
        (0x00280010, "US", "512", 512),
        (0x00280103, "US", "0", 0),
        (0x00181310, "US", "0\\256\\256\\0", [0, 256, 256, 0]),
        (0x00080000, "UL", "4294967295", 4294967295),
        (0x00280106, "SS", "-5", -5),
        (0x00189219, "SL", "-7", -7),
        (0x00189087, "FD", "1000.5", 1000.5),
        (0x00189461, "FL", "2.5", 2.5),
        (0x00209165, "AT", "00100020", BaseTag(0x00100020)),
    ],
)
def test_binary_number_vrs_become_numbers(
    tag: int, vr: str, text: str, value: Any
) -> None:
    body = results(
        study_xml(
            STUDY_1, attr("0020000d", "UI", STUDY_1) + attr(f"{tag:08x}", vr, text)
        )
    )
    got = parse_mint_xml(body)[0].data[tag]
    assert got.VR == vr  # noqa: SIM300
    assert (list(got.value) if isinstance(value, list) else got.value) == value
    assert type(value if not isinstance(value, list) else value[0]) is type(
        got.value if not isinstance(value, list) else got.value[0]
    )


@pytest.mark.filterwarnings("ignore:Invalid value for VR IS")
def test_odd_vrs_and_values_are_tolerated() -> None:
    body = results(
        study_xml(
            STUDY_1,
            attr("0020000d", "UI", STUDY_1)
            + attr("00100020", "lo", "lower-case vr")
            + '<attr tag="00100021" val="no vr"/>'
            + attr("00091010", "XX", "unknown vr")
            + attr("00280010", "US", "not a number")
            + attr("00200013", "IS", "1.5.6")
            + attr("7fe00010", "OB", "text for bytes")
            + attr("00280100", "US or SS", "16"),
        )
    )
    data = parse_mint_xml(body)[0].data
    assert data.PatientID == "lower-case vr"
    assert data["PatientID"].VR == "LO"
    assert data["IssuerOfPatientID"].VR == "LO"  # from the data dictionary
    assert data.IssuerOfPatientID == "no vr"
    assert data[0x00091010].value == "unknown vr"
    assert data[0x00091010].VR == "XX"
    assert data.Rows == "not a number"  # kept as sent
    assert data.InstanceNumber == "1.5.6"
    assert data[0x7FE00010].value == "text for bytes"
    assert data[0x00280100].value == "16"


def test_private_elements_know_their_creator() -> None:
    body = results(
        study_xml(
            STUDY_1,
            attr("0020000d", "UI", STUDY_1)
            + attr("00090010", "LO", "ACME 1.0")
            + attr("00091001", "LO", "private value"),
        )
    )
    data = parse_mint_xml(body)[0].data
    assert data[0x00091001].private_creator == "ACME 1.0"
    assert data.private_block(0x0009, "ACME 1.0")[0x01].value == "private value"


def test_sequence_items() -> None:
    body = results(
        study_xml(
            STUDY_1,
            '<attr tag="00081032" vr="SQ"><item>'
            + attr("00080100", "SH", "CT123")
            + attr("00080102", "SH", "L")
            + "</item><item>"
            + attr("00080100", "SH", "CT456")
            + "</item></attr>"
            + attr("0020000d", "UI", STUDY_1),
        )
    )
    data = parse_mint_xml(body)[0].data
    assert [item.CodeValue for item in data.ProcedureCodeSequence] == [
        "CT123",
        "CT456",
    ]
    assert data.ProcedureCodeSequence[0].CodingSchemeDesignator == "L"
    assert data.StudyInstanceUID == STUDY_1


def test_unknown_elements_and_other_namespaces_are_ignored() -> None:
    body = results(
        study_xml(
            STUDY_1,
            '<note xmlns="urn:other"><attr tag="00100020" vr="LO" val="no"/></note>'
            '<x:attr xmlns:x="urn:other" tag="00100010" vr="PN" val="No^Name"/>'
            "<extra><series>" + attr("0020000e", "UI", SERIES_1) + "</series></extra>"
            '<attr tag="00100020" vr="LO" val="yes"><ignored/></attr>'
            + attr("0020000d", "UI", STUDY_1),
        )
        + '<other studyUUID="x"/>'
    )
    (study,) = parse_mint_xml(body)
    assert study.data.PatientID == "yes"
    assert "PatientName" not in study.data
    assert study.series == []


def test_str_body_is_taken_as_decoded_text() -> None:
    text = INSTANCE_LEVEL.decode().replace("UTF-8", "ISO-8859-1")
    assert same_tree(parse_mint_xml(text), parse_mint_xml(INSTANCE_LEVEL))


def test_declared_encoding_is_honoured() -> None:
    body = (
        results(
            study_xml(
                STUDY_1,
                attr("0020000d", "UI", STUDY_1) + attr("00100010", "PN", "Müller^J"),
            )
        )
        .decode()
        .replace("UTF-8", "ISO-8859-1")
    )
    (study,) = parse_mint_xml(body.encode("latin-1"))
    assert study.data.PatientName == "Müller^J"


def test_unknown_declared_encoding_is_read_as_utf8() -> None:
    """One public Vitrea recording declares encoding='UTF-3'."""
    body = STUDY_LEVEL.replace(b"UTF-8", b"UTF-3")
    assert same_tree(parse_mint_xml(body), parse_mint_xml(STUDY_LEVEL))
    parser = MintXMLParser()
    for offset in range(0, len(body), 7):
        parser.feed(body[offset : offset + 7])
    assert same_tree(parser.close(), parse_mint_xml(STUDY_LEVEL))


# --------------------------------------------------------------------------- #
# Incremental parsing
# --------------------------------------------------------------------------- #

SMALL = results(
    study_xml(
        STUDY_1,
        "<series><instance>"
        + attr("00080018", "UI", SOP_1)
        + "</instance>"
        + attr("0020000e", "UI", SERIES_1)
        + "</series>"
        + attr("00100010", "PN", "Müller^Jürgen")
        + attr("00080061", "CS", "CT\\SR")
        + attr("00100020", "LO")
        + attr("0020000d", "UI", STUDY_1),
        uuid="ü-uuid",
    )
)


def test_feeding_split_at_every_offset() -> None:
    whole = parse_mint_xml(SMALL)
    assert whole[0].data.PatientName == "Müller^Jürgen"
    for offset in range(len(SMALL) + 1):
        parser = MintXMLParser()
        parser.feed(SMALL[:offset])
        parser.feed(SMALL[offset:])
        assert same_tree(parser.close(), whole), offset


def test_feeding_byte_by_byte() -> None:
    parser = MintXMLParser()
    for offset in range(len(INSTANCE_LEVEL)):
        parser.feed(INSTANCE_LEVEL[offset : offset + 1])
    assert same_tree(parser.close(), parse_mint_xml(INSTANCE_LEVEL))


def test_feed_after_close_and_double_close() -> None:
    parser = MintXMLParser()
    parser.feed(SMALL)
    parser.close()
    with pytest.raises(ResponseFormatError):
        parser.feed(b"<x/>")
    with pytest.raises(ResponseFormatError):
        parser.close()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(
            st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"),
            max_size=12,
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=1, max_value=64),
)
def test_text_values_survive_any_chunking(values: list[str], chunk: int) -> None:
    from xml.sax.saxutils import quoteattr

    text = "\\".join(values)
    body = (
        f"<studySearchResults {NS}><study studyUUID='u' lastModified='t'>"
        f"<attr tag='00081030' vr='LO' val={quoteattr(text)}/>"
        f"<attr tag='0020000d' vr='UI' val='{STUDY_1}'/></study></studySearchResults>"
    ).encode()
    parser = MintXMLParser()
    for offset in range(0, len(body), chunk):
        parser.feed(body[offset : offset + chunk])
    (study,) = parser.close()
    expected = DataElement(0x00081030, "LO", text).value if text else ""
    got = study.data.StudyDescription
    assert (list(got) if isinstance(got, MultiValue) else got) == (
        list(expected) if isinstance(expected, MultiValue) else expected
    )


# --------------------------------------------------------------------------- #
# What is not a MINT answer
# --------------------------------------------------------------------------- #

VITREA_500 = b"""<html>
<head>
<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>
<title>Error 500 Request failed.</title>
</head>
<body><h2>HTTP ERROR 500</h2>
<p>Problem accessing /rest/api/vault/mint/studies. Reason:
<pre>    Request failed.</pre></p><hr><a href="http://eclipse.org/jetty">Powered
 by Jetty:// 9.4.12.v20180830</a><hr/>
</body>
</html>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<studySearchResults xmlns="http://medical.nema.org/mint">
<study studyUUID="u" lastModified="t"><attr tag="00100020" vr="LO" val="&lol9;"/>
<attr tag="0020000d" vr="UI" val="1.2.3"/></study></studySearchResults>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<studySearchResults xmlns="http://medical.nema.org/mint">
<study studyUUID="u" lastModified="t"><attr tag="00100020" vr="LO" val="&secret;"/>
</study></studySearchResults>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE studySearchResults SYSTEM "http://127.0.0.1:9/evil.dtd">
<studySearchResults xmlns="http://medical.nema.org/mint">&ext;</studySearchResults>"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"   \n", "not well-formed"),
        (VITREA_500, "HTML page instead of XML: Error 500 Request failed."),
        (
            b"<!DOCTYPE html><html><head><title>you need to log in</title>",
            "HTML page instead of XML: you need to log in",
        ),
        (b"<html><body><p>Hi</p></body></html>", "HTML page instead of XML"),
        (b"<body><p>Hi</p></body>", "root element is <body>"),
        (b'[{"0020000D": {"vr": "UI"}}]', "not well-formed"),
        (STUDY_LEVEL[:-25], "not well-formed"),
        (STUDY_LEVEL + b"<more/>", "not well-formed"),
        (b"<studySearchResults><study>", "not well-formed"),
        (f"<studies {NS}/>".encode(), "root element is <studies>"),
        (b'<studySearchResults xmlns="urn:other"/>', "root element"),
        (f"<study {NS}/>".encode(), "root element is <study>"),
        (BILLION_LAUGHS, "document type declaration"),
        (EXTERNAL_ENTITY, "document type declaration"),
        (EXTERNAL_DTD, "document type declaration"),
        (b"\xff\xfe<\x00a\x00", "not well-formed"),
    ],
)
def test_not_a_mint_answer(body: bytes, message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ResponseFormatError, match=message) as caught:
        parse_mint_xml(body)
    assert time.perf_counter() - start < 1.0  # no entity expansion
    assert isinstance(caught.value, DICOMTrolleyError)
    assert "lol" * 5 not in str(caught.value)


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        (attr("0020000", "UI", STUDY_1), "not 8 hexadecimal digits"),
        (attr("zzzzzzzz", "UI", STUDY_1), "not 8 hexadecimal digits"),
        ('<attr vr="UI" val="1.2"/>', "has no tag"),
        (attr("00100020", "LO", "P"), "has no StudyInstanceUID"),
        (
            "<series>"
            + attr("00080060", "CS", "CT")
            + "</series>"
            + attr("0020000d", "UI", STUDY_1),
            "series has no SeriesInstanceUID",
        ),
        (
            "<series><instance>"
            + attr("00080016", "UI", "1.2")
            + "</instance>"
            + attr("0020000e", "UI", SERIES_1)
            + "</series>"
            + attr("0020000d", "UI", STUDY_1),
            "has no SOPInstanceUID",
        ),
    ],
)
def test_broken_attrs(inner: str, message: str) -> None:
    with pytest.raises(ResponseFormatError, match=message):
        parse_mint_xml(results(study_xml(STUDY_1, inner)))


def test_missing_study_attributes_are_empty() -> None:
    body = results("<study>" + attr("0020000d", "UI", STUDY_1) + "</study>")
    (study,) = parse_mint_xml(body)
    assert (study.mint_uuid, study.last_modified) == ("", "")


# --------------------------------------------------------------------------- #
# The 4.1.0 element-tree helpers
# --------------------------------------------------------------------------- #


def test_parse_attribs_on_an_element_tree() -> None:
    root = ElementTree.fromstring(SMALL)
    study_element = root[0]
    data = parse_attribs(study_element)
    assert isinstance(data, Dataset)
    assert data.StudyInstanceUID == STUDY_1
    assert list(data.ModalitiesInStudy) == ["CT", "SR"]
    assert data.PatientID == ""
    assert "SeriesInstanceUID" not in data  # attrs of children are not its own


def test_init_from_element() -> None:
    root = ElementTree.fromstring(INSTANCE_LEVEL)
    study = MintStudy.init_from_element(root[0])
    assert same_tree([study], parse_mint_xml(INSTANCE_LEVEL))
    series_element = root[0][0]
    series = MintSeries.init_from_element(series_element, parent=study)
    assert series.parent is study
    assert len(study.series) == 1  # the caller links it, as in 4.1.0
    assert [i.uid for i in series.instances] == [SOP_1, SOP_2]
    assert all(i.parent is series for i in series.instances)
    instance = MintInstance.init_from_element(series_element[1], parent=series)
    assert instance.uid == SOP_2
    assert instance.parent is series
    assert len(series.instances) == 2


def test_xml_element_names_as_in_4_1_0() -> None:
    from dicomtrolley.mint import MintAttribute

    assert MintStudy.xml_element == "{http://medical.nema.org/mint}study"
    assert MintSeries.xml_element == "{http://medical.nema.org/mint}series"
    assert MintInstance.xml_element == "{http://medical.nema.org/mint}instance"
    assert MintAttribute.xml_element == "{http://medical.nema.org/mint}attr"


def test_objects_are_pydantic_models_like_validated_ones() -> None:
    (study,) = parse_mint_xml(INSTANCE_LEVEL)
    validated = MintStudy(
        uid=study.uid,
        data=study.data,
        mint_uuid=study.mint_uuid,
        last_modified=study.last_modified,
        series=[],
    )
    assert study.model_fields_set == validated.model_fields_set
    assert study.model_dump(exclude={"series"}) == validated.model_dump(
        exclude={"series"}
    )
    copied = study.model_copy()
    assert copied.uid == study.uid


def test_without_construction_shortcuts(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom's and pydantic's own constructors give the same tree."""
    from dicomtrolley.formats import fast_dataset, mint_xml, mint_xml_values

    fast = parse_mint_xml(INSTANCE_LEVEL)
    slow = {
        "make_element": fast_dataset._element_slow,
        "make_multi": fast_dataset._multi_slow,
        "person_name": fast_dataset._person_name_slow,
        "make_dataset": fast_dataset._dataset_slow,
        "make_uid": UID,
    }
    # Each module that uses a builder has its own name for it.
    for module in (fast_dataset, mint_xml, mint_xml_values):
        for name, constructor in slow.items():
            if hasattr(module, name):
                monkeypatch.setattr(module, name, constructor)
    monkeypatch.setattr(mint_xml, "_construct", mint_xml._construct_slow)
    slow = parse_mint_xml(INSTANCE_LEVEL)
    assert same_tree(slow, fast)
    element = slow[0].data["PatientName"]
    assert vars(element) == vars(fast[0].data["PatientName"])
    assert slow[0].model_fields_set == fast[0].model_fields_set


def test_construction_shortcuts_are_in_use() -> None:
    from dicomtrolley.formats import fast_dataset, mint_xml

    assert all(fast_dataset.SHORTCUTS.values())
    assert mint_xml._construct is mint_xml._construct_fast
