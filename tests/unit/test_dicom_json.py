"""Tests for dicomtrolley.formats.dicom_json, the DICOM JSON (PS3.18 Annex F) parser.

The main property: for DICOM JSON that pydicom can read, ``parse_dicom_json`` and
``dataset_from_json_dict`` build datasets equal to ``pydicom.Dataset.from_json``,
element by element (tag, VR, value type and value), down to the dataset and
element attributes. Documented differences are tested as such.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gc
import json
import threading
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pydicom.valuerep import DA, IS, DSdecimal, DSfloat, ISfloat, PersonName

from dicomtrolley.exceptions import ResponseFormatError
from dicomtrolley.formats import dicom_json_attributes, fast_dataset
from dicomtrolley.formats.dicom_json import dataset_from_json_dict, parse_dicom_json

# ------------------------------------------------------------------ comparison


def pydicom_from_json(obj: dict[str, Any]) -> Dataset:
    """pydicom's own conversion, without its warnings about odd values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Dataset.from_json(copy.deepcopy(obj))


def ours_from_json(obj: dict[str, Any]) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dataset_from_json_dict(obj)


def dataset_state(ds: Dataset) -> dict[str, Any]:
    return {k: v for k, v in vars(ds).items() if k != "_dict"}


def assert_same_dataset(ours: Dataset, theirs: Dataset, path: str = "") -> None:
    assert type(ours) is type(theirs), path
    assert list(ours.keys()) == list(theirs.keys()), path
    assert dataset_state(ours) == dataset_state(theirs), path
    for their_elem in theirs:  # a Dataset iterates over its elements
        tag = their_elem.tag
        assert_same_element(ours[tag], theirs[tag], f"{path}{tag}")


def assert_same_element(ours: DataElement, theirs: DataElement, path: str) -> None:
    assert type(ours) is type(theirs), path
    assert ours.tag == theirs.tag, path
    assert isinstance(ours.tag, pydicom.tag.BaseTag), path
    assert ours.VR == theirs.VR, path
    assert ours.private_creator == theirs.private_creator, path
    assert ours.validation_mode == theirs.validation_mode, path
    assert ours.is_undefined_length == theirs.is_undefined_length, path
    assert ours.file_tell == theirs.file_tell, path
    assert vars(ours).keys() == vars(theirs).keys(), path
    assert ours.VM == theirs.VM, path
    assert ours.is_empty == theirs.is_empty, path
    assert_same_value(ours.VR, ours.value, theirs.value, path)


def assert_same_value(vr: str, ours: Any, theirs: Any, path: str) -> None:
    if isinstance(theirs, Sequence):
        assert type(ours) is Sequence, path
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_dataset(a, b, f"{path}[{i}]")
        return
    if isinstance(theirs, MultiValue):
        assert type(ours) is MultiValue, path
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_value(vr, a, b, f"{path}[{i}]")
        # A later append goes through the same conversion as in pydicom's.
        assert constructor_name(ours) == constructor_name(theirs), path
        return
    if vr in ("IS", "DS") and theirs is not None and theirs != "":
        # Same class and number; str() may differ (strings keep their format).
        assert type(ours) is type(theirs), path
        assert float(ours) == float(theirs), path
        return
    assert type(ours) is type(theirs), (path, ours, theirs)
    if isinstance(theirs, PersonName):
        assert str(ours) == str(theirs), path
        assert ours.components == theirs.components, path
        assert ours.encodings == theirs.encodings, path
    assert ours == theirs, (path, ours, theirs)


def constructor_name(value: MultiValue[Any]) -> str:
    constructor = getattr(value._constructor, "__func__", value._constructor)
    return str(constructor.__qualname__)


def assert_equivalent(obj: dict[str, Any]) -> Dataset:
    """Both ways of converting `obj` agree; returns ours."""
    theirs = pydicom_from_json(obj)
    ours = ours_from_json(obj)
    assert_same_dataset(ours, theirs)
    # The same through the body parser, after a JSON round trip.
    (parsed,) = parse_body([obj])
    assert_same_dataset(parsed, pydicom_from_json(json.loads(json.dumps(obj))))
    return ours


def parse_body(objs: list[dict[str, Any]]) -> list[Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse_dicom_json(json.dumps(objs).encode())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------ equivalence cases

# One attribute per case: (id, tag, attribute object).
ATTRIBUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("AE", "00080054", {"vr": "AE", "Value": ["STORESCP"]}),
    ("AS", "00101010", {"vr": "AS", "Value": ["042Y"]}),
    ("CS", "00080060", {"vr": "CS", "Value": ["CT"]}),
    ("CS-multi", "00080008", {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]}),
    ("CS-backslash", "00080008", {"vr": "CS", "Value": ["ORIGINAL\\PRIMARY"]}),
    ("CS-null-item", "00080008", {"vr": "CS", "Value": ["A", None, "B"]}),
    ("CS-only-null", "00080060", {"vr": "CS", "Value": [None]}),
    ("DA", "00080020", {"vr": "DA", "Value": ["20240131"]}),
    ("DT", "0008002A", {"vr": "DT", "Value": ["20240131101530.123456+0100"]}),
    ("TM", "00080030", {"vr": "TM", "Value": ["101530.123"]}),
    ("LO", "00100020", {"vr": "LO", "Value": ["PAT-001"]}),
    ("LO-padded", "00100020", {"vr": "LO", "Value": [" PAT 001 "]}),
    ("LO-non-ascii", "00081030", {"vr": "LO", "Value": ["Thorax \u00fcber Abdomen"]}),
    ("LT-backslash", "00204000", {"vr": "LT", "Value": ["a\\b stays one value"]}),
    ("SH", "00080050", {"vr": "SH", "Value": ["ACC123"]}),
    ("ST", "00081010", {"vr": "ST", "Value": ["Station\\One"]}),
    ("UC", "00189910", {"vr": "UC", "Value": ["long", "values"]}),
    ("UR", "00081190", {"vr": "UR", "Value": ["https://pacs/studies/1.2.3"]}),
    ("UT", "00400280", {"vr": "UT", "Value": ["Unlimited text"]}),
    ("UI", "00080018", {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}),
    ("UI-padded", "00080018", {"vr": "UI", "Value": ["1.2.3 "]}),
    ("UI-multi", "00081150", {"vr": "UI", "Value": ["1.2.3", "1.2.4"]}),
    ("UI-backslash", "00081150", {"vr": "UI", "Value": ["1.2.3\\1.2.4 "]}),
    ("UI-empty-string", "00080018", {"vr": "UI", "Value": [""]}),
    ("UI-null-item", "00081150", {"vr": "UI", "Value": ["1.2", None]}),
    ("PN-alphabetic", "00100010", {"vr": "PN", "Value": [{"Alphabetic": "Doe^J"}]}),
    (
        "PN-umlauts",
        "00100010",
        {"vr": "PN", "Value": [{"Alphabetic": "M\u00fcller^J\u00fcrgen"}]},
    ),
    (
        "PN-japanese",
        "00100010",
        {
            "vr": "PN",
            "Value": [
                {
                    "Alphabetic": "Yamada^Tarou",
                    "Ideographic": "\u5c71\u7530^\u592a\u90ce",
                    "Phonetic": "\u3084\u307e\u3060^\u305f\u308d\u3046",
                }
            ],
        },
    ),
    (
        "PN-ideographic-only",
        "00100010",
        {"vr": "PN", "Value": [{"Ideographic": "\u5c71\u7530^\u592a\u90ce"}]},
    ),
    (
        "PN-phonetic-only",
        "00100010",
        {"vr": "PN", "Value": [{"Phonetic": "\u3084\u307e\u3060"}]},
    ),
    (
        "PN-trailing-empty-groups",
        "00100010",
        {
            "vr": "PN",
            "Value": [{"Alphabetic": "Doe", "Ideographic": "", "Phonetic": ""}],
        },
    ),
    ("PN-empty-object", "00100010", {"vr": "PN", "Value": [{}]}),
    ("PN-null-item", "00100010", {"vr": "PN", "Value": [None]}),
    (
        "PN-multi",
        "00081060",
        {"vr": "PN", "Value": [{"Alphabetic": "A^B"}, {"Alphabetic": "C^D"}, None]},
    ),
    ("PN-backslash", "00081060", {"vr": "PN", "Value": [{"Alphabetic": "A^B\\C^D"}]}),
    ("PN-plain-string", "00100010", {"vr": "PN", "Value": ["Doe^John"]}),
    ("US", "00280010", {"vr": "US", "Value": [512]}),
    ("US-multi", "00280034", {"vr": "US", "Value": [1, 1]}),
    ("US-float", "00280010", {"vr": "US", "Value": [512.0]}),
    ("US-string", "00280010", {"vr": "US", "Value": ["512"]}),
    ("SS", "00281052", {"vr": "SS", "Value": [-1024]}),
    ("US-LUT-descriptor", "00281101", {"vr": "US", "Value": [256, 0, 16]}),
    ("UL", "00081160", {"vr": "UL", "Value": [1, 2, 3]}),
    ("SL", "00209241", {"vr": "SL", "Value": [-5]}),
    ("SV", "00720082", {"vr": "SV", "Value": [-9007199254740993]}),
    ("SV-string", "00720082", {"vr": "SV", "Value": ["-9007199254740993"]}),
    ("UV", "00720083", {"vr": "UV", "Value": ["18446744073709551615"]}),
    ("FL", "00186030", {"vr": "FL", "Value": [0.5]}),
    ("FL-int", "00186030", {"vr": "FL", "Value": [2]}),
    ("FD", "00189087", {"vr": "FD", "Value": [1.5, -2.25, 1e300]}),
    ("FD-null-item", "00189087", {"vr": "FD", "Value": [1.5, None]}),
    ("IS-number", "00200013", {"vr": "IS", "Value": [7]}),
    ("IS-multi", "00181310", {"vr": "IS", "Value": [0, 256, 256, 0]}),
    ("IS-float-integral", "00200013", {"vr": "IS", "Value": [7.0]}),
    ("IS-large", "00200013", {"vr": "IS", "Value": [2**40]}),
    ("IS-null", "00200013", {"vr": "IS", "Value": [None]}),
    ("DS-float", "00180050", {"vr": "DS", "Value": [2.5]}),
    ("DS-int", "00180050", {"vr": "DS", "Value": [3]}),
    ("DS-multi", "00280030", {"vr": "DS", "Value": [0.488281, 0.488281]}),
    ("DS-string", "00180050", {"vr": "DS", "Value": ["2.50"]}),
    ("DS-null", "00180050", {"vr": "DS", "Value": [None]}),
    ("IS-string", "00200013", {"vr": "IS", "Value": ["42"]}),
    ("AT", "00209165", {"vr": "AT", "Value": ["00100020"]}),
    ("AT-multi", "00209165", {"vr": "AT", "Value": ["00100020", "7FE00010"]}),
    ("AT-lowercase", "00209165", {"vr": "AT", "Value": ["7fe00010"]}),
    ("OB", "00420011", {"vr": "OB", "InlineBinary": b64(b"\x00\x01\x02\x03")}),
    ("OB-in-array", "00420011", {"vr": "OB", "InlineBinary": [b64(b"\xff\xfe")]}),
    ("OB-backslash-byte", "00420011", {"vr": "OB", "InlineBinary": b64(b"a\\b")}),
    ("OW", "00281201", {"vr": "OW", "InlineBinary": b64(b"\x00\x01" * 8)}),
    ("OF", "00640009", {"vr": "OF", "InlineBinary": b64(b"\x00\x00\x80\x3f")}),
    ("OD", "00720073", {"vr": "OD", "InlineBinary": b64(b"\x00" * 8)}),
    ("OL", "00660040", {"vr": "OL", "InlineBinary": b64(b"\x01\x00\x00\x00")}),
    ("OV", "00720080", {"vr": "OV", "InlineBinary": b64(b"\x01" * 8)}),
    ("OB-empty-base64", "00420011", {"vr": "OB", "InlineBinary": ""}),
    ("UN-known-tag", "00100020", {"vr": "UN", "InlineBinary": b64(b"PAT01 ")}),
    ("UN-unknown-tag", "00110010", {"vr": "UN", "InlineBinary": b64(b"\x01\x02")}),
    ("UN-value", "00100020", {"vr": "UN", "Value": ["PAT01"]}),
    ("US-or-SS", "00280106", {"vr": "US or SS", "Value": [0]}),
    ("OB-or-OW", "00281201", {"vr": "OB or OW", "InlineBinary": b64(b"\x00\x01")}),
    ("SQ-empty", "00081115", {"vr": "SQ", "Value": []}),
    ("SQ-empty-item", "00081115", {"vr": "SQ", "Value": [{}]}),
    ("SQ-null-item", "00081115", {"vr": "SQ", "Value": [None]}),
    (
        "SQ-nested",
        "00081115",
        {
            "vr": "SQ",
            "Value": [
                {
                    "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
                    "00081199": {
                        "vr": "SQ",
                        "Value": [
                            {
                                "00081150": {"vr": "UI", "Value": ["1.2.840.1"]},
                                "00081155": {"vr": "UI", "Value": ["1.2.3.4.5"]},
                                "00100010": {
                                    "vr": "PN",
                                    "Value": [{"Alphabetic": "M\u00fcller"}],
                                },
                            },
                            {"00081155": {"vr": "UI", "Value": ["1.2.3.4.6"]}},
                        ],
                    },
                },
                {"0020000E": {"vr": "UI"}},
            ],
        },
    ),
]

# Every VR without a value: no "Value", an empty "Value", and (where the VR
# allows it) a BulkDataURI in place of the value.
EMPTY_VRS = {
    "AE": "00080054",
    "AS": "00101010",
    "AT": "00209165",
    "CS": "00080060",
    "DA": "00080020",
    "DS": "00180050",
    "DT": "0008002A",
    "FD": "00189087",
    "FL": "00186030",
    "IS": "00200013",
    "LO": "00100020",
    "LT": "00204000",
    "OB": "00420011",
    "OD": "00720073",
    "OF": "00640009",
    "OL": "00660040",
    "OV": "00720080",
    "OW": "00281201",
    "PN": "00100010",
    "SH": "00080050",
    "SL": "00209241",
    "SQ": "00081115",
    "SS": "00281052",
    "ST": "00081010",
    "SV": "00720082",
    "TM": "00080030",
    "UC": "00189910",
    "UI": "00080018",
    "UL": "00081160",
    "UN": "00110010",
    "UR": "00081190",
    "US": "00280010",
    "UT": "00400280",
    "UV": "00720083",
}
BULK_DATA_VRS = {"DS", "FL", "FD", "IS", "LT", "OB", "OD", "OF", "OL", "OV", "OW"} | {
    "SL",
    "SS",
    "ST",
    "SV",
    "UC",
    "UL",
    "UN",
    "US",
    "UT",
    "UV",
}


@pytest.mark.parametrize(
    ("tag", "attribute"),
    [pytest.param(tag, attribute, id=name) for name, tag, attribute in ATTRIBUTES],
)
def test_attribute_equivalent_to_pydicom(tag: str, attribute: dict[str, Any]) -> None:
    assert_equivalent({tag: attribute})


@pytest.mark.parametrize(("vr", "tag"), sorted(EMPTY_VRS.items()))
def test_empty_attribute_equivalent_to_pydicom(vr: str, tag: str) -> None:
    assert_equivalent({tag: {"vr": vr}})
    if vr not in ("OB", "OD", "OF", "OL", "OV", "OW", "UN"):
        assert_equivalent({tag: {"vr": vr, "Value": []}})
    if vr in BULK_DATA_VRS:
        assert_equivalent({tag: {"vr": vr, "BulkDataURI": "https://pacs/bulk/1"}})


def test_all_attributes_in_one_dataset_equivalent() -> None:
    obj: dict[str, Any] = {}
    for _, tag, attribute in ATTRIBUTES:
        obj.setdefault(tag, attribute)
    ds = assert_equivalent(dict(sorted(obj.items())))
    assert len(ds) == len(obj)


def test_typical_values_have_pydicom_types() -> None:
    ds = dataset_from_json_dict(
        {
            "00080018": {"vr": "UI", "Value": ["1.2.3"]},
            "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]},
            "00100010": {
                "vr": "PN",
                "Value": [{"Alphabetic": "M\u00fcller^J\u00fcrgen"}],
            },
            "00200013": {"vr": "IS", "Value": [3]},
            "00180050": {"vr": "DS", "Value": [1.25]},
            "00209165": {"vr": "AT", "Value": ["00100020"]},
            "00081115": {"vr": "SQ", "Value": [{}]},
        }
    )
    assert type(ds.SOPInstanceUID) is UID
    assert ds.SOPInstanceUID.is_valid
    assert type(ds.ImageType) is MultiValue and list(ds.ImageType) == [
        "ORIGINAL",
        "PRIMARY",
    ]
    assert type(ds.PatientName) is PersonName
    assert ds.PatientName.family_name == "M\u00fcller"
    assert ds.PatientName.given_name == "J\u00fcrgen"
    assert type(ds.InstanceNumber) is IS and ds.InstanceNumber == 3
    assert type(ds.SliceThickness) is DSfloat and ds.SliceThickness == 1.25
    assert ds["00209165"].value == 0x00100020
    assert type(ds.ReferencedSeriesSequence) is Sequence
    assert type(ds.ReferencedSeriesSequence[0]) is Dataset
    # Multi-values keep converting what is appended later, as pydicom's do.
    ds.ImageType.append("AXIAL")
    ds.add_new("00081150", "UI", "1.2")
    assert ds.ImageType[-1] == "AXIAL"


def test_private_creator_is_set_as_by_pydicom() -> None:
    obj = {
        "00090010": {"vr": "LO", "Value": ["ACME 1.0"]},
        "00091001": {"vr": "LO", "Value": ["private value"]},
        "00091101": {"vr": "US", "Value": [3]},  # block 11 has no creator
        "00110010": {"vr": "LO", "Value": ["OTHER"]},
        "00111005": {"vr": "UN", "InlineBinary": b64(b"\x01\x00")},
    }
    ds = assert_equivalent(obj)
    assert ds[0x00091001].private_creator == "ACME 1.0"
    assert ds[0x00091101].private_creator is None
    assert ds[0x00111005].private_creator == "OTHER"


def test_pixel_representation_passed_to_sequence_items_as_by_pydicom() -> None:
    obj = {
        "00280103": {"vr": "US", "Value": [1]},
        "00289110": {"vr": "SQ", "Value": [{"00280030": {"vr": "DS", "Value": [1]}}]},
    }
    ds = assert_equivalent(obj)
    assert ds._pixel_rep == 1
    assert ds.PixelMeasuresSequence[0]._pixel_rep == 1


def qido_instance(study: int, series: int, instance: int) -> dict[str, Any]:
    """An instance level QIDO-RS result as servers send them."""
    study_uid = f"1.2.826.0.1.3680043.8.498.{study}"
    series_uid = f"{study_uid}.{series}"
    sop_uid = f"{series_uid}.{instance}"
    return {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00080018": {"vr": "UI", "Value": [sop_uid]},
        "00080020": {"vr": "DA", "Value": ["20240131"]},
        "00080030": {"vr": "TM", "Value": ["101530"]},
        "00080050": {"vr": "SH"},
        "00080056": {"vr": "CS", "Value": ["ONLINE"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "00081190": {
            "vr": "UR",
            "Value": [f"https://pacs/studies/{study_uid}/series/{series_uid}"],
        },
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00100020": {"vr": "LO", "Value": ["PAT1"]},
        "0020000D": {"vr": "UI", "Value": [study_uid]},
        "0020000E": {"vr": "UI", "Value": [series_uid]},
        "00200013": {"vr": "IS", "Value": [instance]},
        "00280010": {"vr": "US", "Value": [512]},
        "00280011": {"vr": "US", "Value": [512]},
    }


def test_qido_answer_equivalent_to_pydicom() -> None:
    objs = [qido_instance(1, s, i) for s in range(3) for i in range(1, 20)]
    body = json.dumps(objs).encode("utf-8")
    ours = parse_dicom_json(body)
    assert len(ours) == len(objs)
    for a, obj in zip(ours, json.loads(body), strict=True):
        assert_same_dataset(a, pydicom_from_json(obj))


def bundled_test_files() -> list[Path]:
    """pydicom's bundled test files.

    Not ``pydicom.data.get_testdata_files``: that also tries to download more
    files from GitHub, and unit tests do not use the network.
    """
    return sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))


def test_pydicom_test_files_round_trip_equivalent() -> None:
    """pydicom test files, via to_json_dict, convert as with Dataset.from_json."""
    files = bundled_test_files()
    assert len(files) >= 40
    compared, skipped = 0, []
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                obj = pydicom.dcmread(path).to_json_dict(
                    bulk_data_threshold=4096,
                    bulk_data_element_handler=lambda elem: "https://pacs/bulk",
                )
                theirs = Dataset.from_json(copy.deepcopy(obj))
            except Exception as exc:  # pydicom's own trouble with the file
                skipped.append(f"{path.name}: {exc!r}")
                continue
            ours = dataset_from_json_dict(obj)
            assert_same_dataset(ours, theirs, f"{path.name}:")
            # Also after a trip through JSON text, as a server would send it.
            text = json.dumps(obj)
            (parsed,) = parse_dicom_json(f"[{text}]")
            assert_same_dataset(parsed, Dataset.from_json(text), f"{path.name}:")
        compared += 1
    assert compared >= 0.9 * len(files), skipped


def test_input_is_not_modified() -> None:
    obj = {tag: attribute for _, tag, attribute in ATTRIBUTES}
    before = copy.deepcopy(obj)
    ours_from_json(obj)
    assert obj == before


# -------------------------------------------------- pydicom configuration honoured


@pytest.fixture
def restore_pydicom_config() -> Iterator[None]:
    saved = (
        pydicom_config.datetime_conversion,
        pydicom_config.use_none_as_empty_text_VR_value,
        pydicom_config.use_DS_decimal,
        pydicom_config.settings.reading_validation_mode,
    )
    yield
    (
        pydicom_config.datetime_conversion,
        pydicom_config.use_none_as_empty_text_VR_value,
        pydicom_config.use_DS_decimal,
        pydicom_config.settings.reading_validation_mode,
    ) = saved


def all_attributes() -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for _, tag, attribute in ATTRIBUTES:
        obj.setdefault(tag, attribute)
    return obj


@pytest.mark.usefixtures("restore_pydicom_config")
def test_datetime_conversion_honoured() -> None:
    pydicom_config.datetime_conversion = True
    ds = assert_equivalent(all_attributes())
    assert type(ds.StudyDate) is DA


@pytest.mark.usefixtures("restore_pydicom_config")
def test_none_as_empty_text_value_honoured() -> None:
    pydicom_config.use_none_as_empty_text_VR_value = True
    for vr, tag in EMPTY_VRS.items():
        assert_equivalent({tag: {"vr": vr}})
    assert_equivalent(all_attributes())
    assert dataset_from_json_dict({"00100010": {"vr": "PN"}}).PatientName is None


@pytest.fixture
def ds_decimal() -> Iterator[None]:
    saved = pydicom_config.use_DS_decimal, pydicom_config.allow_DS_float
    pydicom_config.use_DS_decimal = True
    yield
    pydicom_config.use_DS_decimal, pydicom_config.allow_DS_float = saved


@pytest.mark.usefixtures("ds_decimal")
def test_ds_decimal_honoured() -> None:
    pydicom_config.allow_DS_float = True
    ds = assert_equivalent(
        {"00280030": {"vr": "DS", "Value": [0.5, 2]}, "00180050": {"vr": "DS"}}
    )
    assert type(ds.PixelSpacing[0]) is DSdecimal


@pytest.mark.usefixtures("ds_decimal")
def test_ds_decimal_from_json_numbers_without_allow_ds_float() -> None:
    """pydicom refuses to make DSdecimal from JSON numbers here; we use their text."""
    pydicom_config.allow_DS_float = False
    ds = dataset_from_json_dict({"00280030": {"vr": "DS", "Value": [0.1, 2]}})
    assert list(ds.PixelSpacing) == [Decimal("0.1"), Decimal("2.0")]
    assert type(ds.PixelSpacing[0]) is DSdecimal


@pytest.mark.usefixtures("restore_pydicom_config")
@pytest.mark.parametrize("mode", [pydicom_config.IGNORE, pydicom_config.WARN])
def test_validation_mode_stored_as_by_pydicom(mode: int) -> None:
    pydicom_config.settings.reading_validation_mode = mode
    ds = assert_equivalent(all_attributes())
    assert ds["00080018"].validation_mode == mode


def test_fallback_constructors_equivalent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the construction shortcuts (a future pydicom) the result is the same."""
    slow = {
        "make_element": fast_dataset._element_slow,
        "make_multi": fast_dataset._multi_slow,
        "person_name": fast_dataset._person_name_slow,
        "make_dataset": fast_dataset._dataset_slow,
        "make_uid": UID,
    }
    # Each module that uses a builder has its own name for it.
    for module in (fast_dataset, dicom_json_attributes):
        for name, constructor in slow.items():
            monkeypatch.setattr(module, name, constructor)
    assert_equivalent(all_attributes())
    assert_equivalent(qido_instance(1, 2, 3))


def test_shortcuts_agree_with_this_pydicom() -> None:
    assert dict(fast_dataset.SHORTCUTS) == {
        "element": True,
        "multi": True,
        "person_name": True,
        "uid": True,
        "dataset": True,
    }


# ------------------------------------------------- documented differences


def test_is_and_ds_strings_keep_their_text() -> None:
    ds = dataset_from_json_dict(
        {
            "00200013": {"vr": "IS", "Value": ["007"]},
            "00180050": {"vr": "DS", "Value": ["2.50"]},
        }
    )
    theirs = pydicom_from_json(
        {
            "00200013": {"vr": "IS", "Value": ["007"]},
            "00180050": {"vr": "DS", "Value": ["2.50"]},
        }
    )
    assert ds.InstanceNumber == theirs.InstanceNumber == 7
    assert str(ds.InstanceNumber) == "007" and str(theirs.InstanceNumber) == "7"
    assert ds.SliceThickness == theirs.SliceThickness == 2.5
    assert str(ds.SliceThickness) == "2.50" and str(theirs.SliceThickness) == "2.5"


def test_is_with_fraction_is_not_truncated() -> None:
    with pytest.warns(UserWarning):
        ds = dataset_from_json_dict({"00200013": {"vr": "IS", "Value": [5.5]}})
    assert type(ds.InstanceNumber) is ISfloat and ds.InstanceNumber == 5.5


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize(
    ("vr", "text"), [("IS", "5.0.1"), ("DS", "1,5"), ("IS", "n/a")]
)
def test_is_ds_string_that_is_no_number_is_kept(vr: str, text: str) -> None:
    with pytest.warns(UserWarning, match="kept as a string"):
        ds = dataset_from_json_dict({"00200013": {"vr": vr, "Value": [text]}})
    assert ds["00200013"].value == text


@pytest.mark.usefixtures("restore_pydicom_config")
def test_is_string_that_is_no_number_raises_in_raise_mode() -> None:
    pydicom_config.settings.reading_validation_mode = pydicom_config.RAISE
    with pytest.raises(ResponseFormatError, match="00200013"):
        dataset_from_json_dict({"00200013": {"vr": "IS", "Value": ["n/a"]}})


def test_empty_is_and_ds_strings_are_empty() -> None:
    ds = dataset_from_json_dict(
        {
            "00200013": {"vr": "IS", "Value": [""]},
            "00180050": {"vr": "DS", "Value": [" "]},
        }
    )
    assert ds.InstanceNumber == ""
    assert ds["00180050"].value == " "


def test_missing_vr_taken_from_dictionary() -> None:
    ds = dataset_from_json_dict(
        {
            "00080018": {"Value": ["1.2.3"]},
            "00100010": {"Value": [{"Alphabetic": "Doe^J"}]},
            "00280010": {"Value": [512]},
            "00091001": {"InlineBinary": b64(b"\x01\x02")},
            "00990010": {},
        }
    )
    assert ds["00080018"].VR == "UI" and type(ds.SOPInstanceUID) is UID
    assert ds["00100010"].VR == "PN" and ds.PatientName == "Doe^J"
    assert ds["00280010"].VR == "US" and ds.Rows == 512
    assert ds[0x00091001].VR == "UN" and ds[0x00091001].value == b"\x01\x02"
    assert ds[0x00990010].VR == "UN" and ds[0x00990010].value is None


def test_null_value_is_no_value() -> None:
    ds = dataset_from_json_dict({"00100020": {"vr": "LO", "Value": None}})
    assert ds.PatientID == ""


def test_numbers_in_string_vrs_become_strings() -> None:
    ds = dataset_from_json_dict(
        {
            "00100020": {"vr": "LO", "Value": [12345]},
            "00080018": {"vr": "UI", "Value": [1.2]},
        }
    )
    assert ds.PatientID == "12345"
    assert ds.SOPInstanceUID == "1.2" and type(ds.SOPInstanceUID) is UID


def test_bulk_data_uri_gives_empty_value_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = dataset_from_json_dict(
            {
                "7FE00010": {"vr": "OW", "BulkDataURI": "https://pacs/bulk/1"},
                "00282000": {"vr": "OB", "BulkDataURI": "https://pacs/bulk/2"},
                "00111001": {"vr": "UN", "BulkDataURI": "https://pacs/bulk/3"},
                "00081115": {"vr": "SQ", "BulkDataURI": "https://pacs/bulk/4"},
            }
        )
    assert ds.PixelData is None
    assert ds[0x00282000].is_empty
    assert ds[0x00111001].value is None
    assert ds.ReferencedSeriesSequence == []


def test_value_wins_over_other_value_keys() -> None:
    ds = dataset_from_json_dict(
        {"00100020": {"vr": "LO", "Value": ["X"], "BulkDataURI": "https://pacs/b"}}
    )
    assert ds.PatientID == "X"


def test_invalid_at_value_becomes_none_with_warning() -> None:
    with pytest.warns(UserWarning, match="invalid AT value"):
        ds = dataset_from_json_dict(
            {"00209165": {"vr": "AT", "Value": ["XYZ", "100000000"]}}
        )
    assert list(ds[0x00209165].value) == [None, None]


def test_str_subclasses_and_vr_enum_accepted() -> None:
    """Dicts built in Python (to_json_dict) hold UID, IS and VR enum objects."""
    vr = pydicom.valuerep.VR
    ds = dataset_from_json_dict(
        {
            "00080018": {"vr": vr.UI, "Value": [UID("1.2.3")]},
            "00200013": {"vr": vr.IS, "Value": [IS("12")]},
            "00280010": {"vr": vr.US, "Value": [IS(5)]},
        }
    )
    assert ds.SOPInstanceUID == "1.2.3" and ds.InstanceNumber == 12 and ds.Rows == 5
    assert type(ds["00080018"].VR) is str


# ---------------------------------------------------------------- body parsing


@pytest.mark.parametrize("body", [b"", "", b"  \r\n", b"[]", "[]", "\ufeff[]"])
def test_empty_answers(body: bytes | str) -> None:
    assert parse_dicom_json(body) == []


def test_body_forms() -> None:
    text = json.dumps([qido_instance(1, 1, 1), qido_instance(1, 1, 2)])
    bodies: list[Any] = [text, text.encode(), bytearray(text.encode()), "\ufeff" + text]
    for body in bodies:
        datasets = parse_dicom_json(body)
        assert [ds.InstanceNumber for ds in datasets] == [1, 2]
    # UTF-8 with a byte order mark, and UTF-16, as json.loads detects them.
    assert len(parse_dicom_json(b"\xef\xbb\xbf" + text.encode())) == 2
    assert len(parse_dicom_json(text.encode("utf-16"))) == 2


def test_non_ascii_body_decoded_as_utf8() -> None:
    body = json.dumps(
        [
            {
                "00100010": {
                    "vr": "PN",
                    "Value": [{"Alphabetic": "M\u00fcller^J\u00fcrgen"}],
                }
            }
        ],
        ensure_ascii=False,
    ).encode("utf-8")
    assert parse_dicom_json(body)[0].PatientName == "M\u00fcller^J\u00fcrgen"


# -------------------------------------------------------------------- errors

HTML = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response "
    b"from an upstream server.</p>" + b"x" * 500 + b"</body></html>"
)

BAD_BODIES = {
    "not-json": (b"hello world", "not valid JSON"),
    "html": (HTML, "<!DOCTYPE html>"),
    "object-not-array": (
        json.dumps(qido_instance(1, 1, 1)).encode(),
        "must be a JSON array",
    ),
    "string-not-array": (b'"[]"', "got a JSON string"),
    "null": (b"null", "got a JSON null"),
    "truncated": (json.dumps([qido_instance(1, 1, 1)]).encode()[:-25], "truncated"),
    "truncated-array": (b'[{"00100020": {"vr": "LO", "Value": ["A"]}}', "truncated"),
    "array-of-numbers": (b"[1, 2]", "item 0 must be a JSON object"),
    "bad-tag-letters": (b'[{"0010002G": {"vr": "LO"}}]', "0010002G"),
    "bad-tag-short": (b'[{"0010020": {"vr": "LO"}}]', "8 hexadecimal digits"),
    "bad-tag-prefix": (b'[{"0x100020": {"vr": "LO"}}]', "0x100020"),
    "bad-tag-keyword": (b'[{"PatientID": {"vr": "LO"}}]', "PatientID"),
    "bad-tag-unicode-digits": ('[{"0010002\u0661": {"vr": "LO"}}]'.encode(), "0010"),
    "attribute-not-object": (b'[{"00100020": "PAT1"}]', "must be a JSON object"),
    "unknown-vr": (b'[{"00100020": {"vr": "XX", "Value": ["A"]}}]', "unknown VR 'XX'"),
    "vr-not-string": (b'[{"00100020": {"vr": 5, "Value": ["A"]}}]', "unknown VR"),
    "vr-list": (b'[{"00100020": {"vr": ["LO"], "Value": ["A"]}}]', "unknown VR"),
    "value-not-array": (b'[{"00100020": {"vr": "LO", "Value": "A"}}]', "JSON array"),
    "value-object-in-string-vr": (
        b'[{"00100020": {"vr": "LO", "Value": [{"a": 1}]}}]',
        "JSON strings",
    ),
    "value-bool-in-string-vr": (
        b'[{"00100020": {"vr": "LO", "Value": [true]}}]',
        "0010",
    ),
    "us-not-number": (b'[{"00280010": {"vr": "US", "Value": ["abc"]}}]', "numbers"),
    "fd-object": (b'[{"00189087": {"vr": "FD", "Value": [{}]}}]', "numbers"),
    "is-object": (b'[{"00200013": {"vr": "IS", "Value": [{}]}}]', "IS values"),
    "ds-list": (b'[{"00180050": {"vr": "DS", "Value": [[1]]}}]', "DS values"),
    "ds-bool": (b'[{"00180050": {"vr": "DS", "Value": [true]}}]', "DS values"),
    "pn-number": (b'[{"00100010": {"vr": "PN", "Value": [5]}}]', "PN values"),
    "pn-group-number": (
        b'[{"00100010": {"vr": "PN", "Value": [{"Alphabetic": 5, "Phonetic": "x"}]}}]',
        "component groups",
    ),
    "sq-item-not-object": (b'[{"00081115": {"vr": "SQ", "Value": ["x"]}}]', "SQ items"),
    "sq-nested-bad-tag": (
        b'[{"00081115": {"vr": "SQ", "Value": [{"zz": {"vr": "LO"}}]}}]',
        "'zz'",
    ),
    "bad-base64": (b'[{"00420011": {"vr": "OB", "InlineBinary": "abc"}}]', "base64"),
    "base64-not-string": (b'[{"00420011": {"vr": "OB", "InlineBinary": 5}}]', "base64"),
    "non-ascii-base64": (
        '[{"00420011": {"vr": "OB", "InlineBinary": "\u00e4\u00e4\u00e4\u00e4"}}]'.encode(),
        "base64",
    ),
    "un-bad-base64": (b'[{"00111001": {"vr": "UN", "InlineBinary": "abc"}}]', "0011"),
    "not-utf8": (b'[{"00100020": {"vr": "LO", "Value": ["\xff\xfe\xfd"]}}]', "UTF-8"),
    "deeply-nested": (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    "second-item-bad": (
        json.dumps(
            [qido_instance(1, 1, 1), {"00280010": {"vr": "US", "Value": ["x"]}}]
        ).encode(),
        "item 1",
    ),
}


@pytest.mark.parametrize(("body", "expected"), BAD_BODIES.values(), ids=BAD_BODIES)
def test_bad_bodies_raise_response_format_error(body: bytes, expected: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ResponseFormatError) as info:
            parse_dicom_json(body)
    message = str(info.value)
    assert expected in message
    # Says what was wrong with a short quote, not the whole body.
    assert len(message) < 600, message


def test_error_quotes_the_html_page() -> None:
    with pytest.raises(ResponseFormatError, match="502 Bad Gateway") as info:
        parse_dicom_json(HTML)
    assert "x" * 200 not in str(info.value)


def test_deeply_nested_sequences_raise_response_format_error() -> None:
    item: dict[str, Any] = {}
    for _ in range(3000):
        item = {"00081115": {"vr": "SQ", "Value": [item]}}
    with pytest.raises(ResponseFormatError):
        dataset_from_json_dict(item)


def test_dataset_from_json_dict_rejects_non_objects() -> None:
    with pytest.raises(ResponseFormatError, match="JSON object"):
        dataset_from_json_dict(["00100020"])  # type: ignore[arg-type]


def test_wrong_body_type_raises_response_format_error() -> None:
    with pytest.raises(ResponseFormatError, match="bytes or str"):
        parse_dicom_json(123)  # type: ignore[arg-type]


def test_error_is_a_permanent_dicomtrolley_error() -> None:
    from dicomtrolley.exceptions import DICOMTrolleyError, PermanentError

    with pytest.raises(ResponseFormatError) as info:
        parse_dicom_json(b"{")
    assert isinstance(info.value, PermanentError)
    assert isinstance(info.value, DICOMTrolleyError)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


# A DICOM JSON-ish value of any shape: nothing but a list of datasets or a
# ResponseFormatError may come out.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
VR_NAMES = [*sorted(EMPTY_VRS), "US or SS", "OB or OW", "XX"]
attribute_objects = st.fixed_dictionaries(
    {},
    optional={
        "vr": st.sampled_from(VR_NAMES) | json_values,
        "Value": st.lists(json_values, max_size=3) | json_values,
        "InlineBinary": st.text(max_size=12) | json_values,
        "BulkDataURI": st.text(max_size=12),
    },
)
tags = st.sampled_from(sorted(set(EMPTY_VRS.values()))) | st.text(max_size=9)
dicom_json_objects = st.dictionaries(tags, attribute_objects, max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(dicom_json_objects, max_size=3) | json_values)
def test_fuzz_only_response_format_error_escapes(data: Any) -> None:
    body = json.dumps(data).encode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = parse_dicom_json(body)
        except ResponseFormatError:
            return
    assert all(type(ds) is Dataset for ds in result)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_bytes_only_response_format_error_escapes(body: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(ResponseFormatError):
            parse_dicom_json(body)


# ---------------------------------------------------------- garbage collector


def test_gc_enabled_again_after_parsing_and_after_errors() -> None:
    assert gc.isenabled()
    parse_dicom_json(json.dumps([qido_instance(1, 1, 1)]))
    assert gc.isenabled()
    with pytest.raises(ResponseFormatError):
        parse_dicom_json(b'[{"zz": {}}]')
    assert gc.isenabled()


def test_gc_left_disabled_if_it_was() -> None:
    gc.disable()
    try:
        parse_dicom_json(json.dumps([qido_instance(1, 1, 1)]))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_gc_pause_with_concurrent_parses() -> None:
    body = json.dumps([qido_instance(1, 1, i) for i in range(200)]).encode()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                assert len(parse_dicom_json(body)) == 200
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert gc.isenabled()


@pytest.mark.usefixtures("ds_decimal")
def test_ds_decimal_garbage_is_a_format_error_or_kept_as_text() -> None:
    body = json.dumps([{"00280030": {"vr": "DS", "Value": ["abc"]}}]).encode()
    with pytest.warns(UserWarning, match="not a number"):
        [dataset] = parse_dicom_json(body)
    assert dataset[0x00280030].value == "abc"
    saved = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.RAISE
    try:
        with pytest.raises(ResponseFormatError, match="00280030"):
            parse_dicom_json(body)
    finally:
        pydicom_config.settings.reading_validation_mode = saved
