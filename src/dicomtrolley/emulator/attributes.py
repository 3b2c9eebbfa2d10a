"""Which DICOM attributes the emulator indexes, and at which level each one lives.

The vocabulary is that of :mod:`dicomtrolley.fields` (the attributes a Vitrea MINT
server returns per level), plus what QIDO-RS answers by default (PS3.18 table
10.6.3-3) and what the index computes itself (``ModalitiesInStudy``, the
``NumberOf...Related...`` counts, ``SOPClassesInStudy``, ``InstanceAvailability``).

Attribute values are kept as DICOM JSON (PS3.18 Annex F): a mapping from an
upper-case eight digit hexadecimal tag to ``{"vr": ..., "Value": [...]}``. An
attribute present without a value has no ``"Value"``; an absent one has no key.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicomtrolley.fields import (
    InstanceLevel,
    SeriesLevel,
    SeriesLevelPromotable,
    StudyLevel,
)

#: A DICOM JSON object: tag -> attribute object.
JsonDataset = dict[str, Any]


class Level(str, Enum):
    """The three levels of the DICOM information model the emulator serves."""

    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "INSTANCE"

    @property
    def depth(self) -> int:
        """0 for STUDY, 1 for SERIES, 2 for INSTANCE."""
        return _DEPTH[self]


_DEPTH = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}


def tag_of(keyword: str) -> str | None:
    """The DICOM JSON tag (``"0020000D"``) of a keyword, or None if unknown."""
    tag = tag_for_keyword(keyword)
    return None if tag is None else f"{tag:08X}"


def keyword_of(tag: str) -> str:
    """The keyword of a DICOM JSON tag (``""`` for private or unknown tags)."""
    return str(keyword_for_tag(int(tag, 16)) or "")


def vr_of(tag: str) -> str:
    """The VR of a tag from pydicom's dictionary (first choice if ambiguous)."""
    try:
        return str(dictionary_VR(int(tag, 16))).split(" ")[0]
    except KeyError:
        return "UN"


def resolve_attribute(name: str) -> str | None:
    """A keyword or an eight digit hex tag as a DICOM JSON tag, else None."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return name.upper()
    return tag_of(name)


def _tags(keywords: set[str]) -> frozenset[str]:
    tags = {tag_of(keyword) for keyword in keywords}
    return frozenset(tag for tag in tags if tag is not None)


STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
SOP_CLASS_UID = "00080016"
TRANSFER_SYNTAX_UID = "00020010"
MODALITY = "00080060"
RETRIEVE_URL = "00081190"

#: Attributes of the study (and patient), MINT's StudyLevel plus QIDO defaults.
STUDY_TAGS = _tags(StudyLevel.fields | {"TimezoneOffsetFromUTC"})
#: Attributes of the series.
SERIES_TAGS = _tags(SeriesLevel.fields | {"RequestAttributesSequence"})
#: Instance attributes that a series carries when all its instances agree.
PROMOTABLE_TAGS = _tags(SeriesLevelPromotable.fields)
#: Attributes of the instance.
INSTANCE_TAGS = _tags(InstanceLevel.fields)
#: Attributes taken from the file meta information rather than the dataset.
FILE_META_TAGS = frozenset({TRANSFER_SYNTAX_UID, "00020016"})
#: Everything read from each file's header (PixelRepresentation resolves the
#: "US or SS" VRs of pixel value attributes).
INDEXED_TAGS = STUDY_TAGS | SERIES_TAGS | INSTANCE_TAGS | {"00280103"}

#: What QIDO-RS returns at each level when no includefield asks for more
#: (PS3.18 table 10.6.3-3; RetrieveURL is added by the DICOMweb service).
QIDO_DEFAULTS: Mapping[Level, frozenset[str]] = {
    Level.STUDY: _tags(
        {
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "InstanceAvailability",
            "ModalitiesInStudy",
            "ReferringPhysicianName",
            "TimezoneOffsetFromUTC",
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyInstanceUID",
            "StudyID",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        }
    ),
    Level.SERIES: _tags(
        {
            "Modality",
            "TimezoneOffsetFromUTC",
            "SeriesDescription",
            "SeriesInstanceUID",
            "SeriesNumber",
            "NumberOfSeriesRelatedInstances",
            "PerformedProcedureStepStartDate",
            "PerformedProcedureStepStartTime",
            "RequestAttributesSequence",
        }
    ),
    Level.INSTANCE: _tags(
        {
            "SOPClassUID",
            "SOPInstanceUID",
            "InstanceAvailability",
            "TimezoneOffsetFromUTC",
            "InstanceNumber",
            "Rows",
            "Columns",
            "BitsAllocated",
            "NumberOfFrames",
        }
    ),
}


def level_of(tag: str) -> Level | None:
    """The level that holds an attribute, or None if the emulator does not index it.

    Promotable attributes (Manufacturer ...) are instance attributes here; a
    series carries them only when all its instances agree.
    """
    if tag in STUDY_TAGS:
        return Level.STUDY
    if tag in SERIES_TAGS:
        return Level.SERIES
    if tag in INSTANCE_TAGS or tag in PROMOTABLE_TAGS:
        return Level.INSTANCE
    return None


def project(attrs: Mapping[str, Any], tags: frozenset[str]) -> JsonDataset:
    """The attributes of attrs whose tags are in tags."""
    return {tag: value for tag, value in attrs.items() if tag in tags}


def first_value(attrs: Mapping[str, Any], tag: str) -> Any:
    """The first value of an attribute, or None when absent or empty."""
    element = attrs.get(tag)
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    return values[0] if isinstance(values, list) and values else None


_UID_CHARS = frozenset("0123456789.")


def is_uid(text: str) -> bool:
    """True for 1 to 64 characters of digits in dot-separated groups.

    Lenient about leading zeros (seen in the wild), strict about everything that
    could turn a UID into a path: no empty groups, no other characters.
    """
    return 0 < len(text) <= 64 and set(text) <= _UID_CHARS and "" not in text.split(".")
