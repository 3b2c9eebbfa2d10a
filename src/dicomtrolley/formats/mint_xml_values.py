"""MINT ``attr`` elements into pydicom DataElements: tags, VRs and values.

In a MINT answer each DICOM attribute is an element
``<attr tag="00100020" vr="LO" val="001"/>``: the tag as 8 hexadecimal digits
(either case), the VR, and the value as text, several values joined by ``\\``.
:func:`convert_attr` makes the ``DataElement`` for one, converting the text for
its VR as pydicom does when it is given the text: ``UI`` → ``UID``, ``PN`` →
``PersonName``, ``IS``/``DS`` → ``IS``/``DS``, ``US``/``UL``/``SS``/``SL``/
``SV``/``UV`` → ``int``, ``FL``/``FD`` → ``float``, ``AT`` → tag; other text VRs
stay ``str`` (``DA``/``DT``/``TM`` become pydicom date objects when
``pydicom.config.datetime_conversion`` is on), and so do binary, ambiguous and
unknown VRs (the text is kept as sent). A number that does not parse is kept as
the text sent. A missing or empty ``val`` gives pydicom's empty value for the
VR; a missing VR is looked up in pydicom's data dictionary.

The tree builder in :mod:`dicomtrolley.formats.mint_xml` converts the most
common attrs (one value of a text VR, ``UI`` or a cached VR) itself, with the
tables of a :class:`Context`, and hands the rest to :func:`convert_attr`. The
objects are built with the shortcuts of
:mod:`dicomtrolley.formats.fast_dataset`, without pydicom's per-element
validation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import ALLOW_BACKSLASH, DS, IS, PersonName

from dicomtrolley.exceptions import ResponseFormatError
from dicomtrolley.formats.fast_dataset import (
    DATETIME_VRS,
    FLOAT_VRS,
    INT_VRS,
    TEXT_VRS,
    dictionary_vr,
    empty_person_name,
    make_element,
    make_multi,
    make_uid,
    person_name,
)

__all__ = [
    "SERIES_UID_TAG",
    "SOP_UID_TAG",
    "STUDY_UID_TAG",
    "TAG_CACHE",
    "Context",
    "convert_attr",
    "parse_tag",
]

# The UIDs that identify a study, series and instance.
STUDY_UID_TAG: Final = BaseTag(0x0020000D)
SERIES_UID_TAG: Final = BaseTag(0x0020000E)
SOP_UID_TAG: Final = BaseTag(0x00080018)

# String VRs whose value pydicom does not split on backslashes.
_NO_SPLIT_VRS: Final = frozenset(str(vr) for vr in ALLOW_BACKSLASH)


# ----------------------------------------------------------------------- tags

_TAG_RE: Final = re.compile(r"[0-9A-Fa-f]{8}")
_TAG_CACHE_MAX: Final = 65536

# tag text -> tag, filled by parse_tag; the builder looks tags up here first.
# The UID tags are looked up in every dataset: the same objects as keys make
# those look-ups identity hits (BaseTag's __eq__ is Python code).
TAG_CACHE: dict[str, BaseTag] = {
    f"{int(tag):08{case}}": tag
    for tag in (STUDY_UID_TAG, SERIES_UID_TAG, SOP_UID_TAG)
    for case in "xX"
}


def parse_tag(text: str | None) -> BaseTag:
    """The tag in an attr's ``tag`` text (8 hexadecimal digits), cached.

    Raises
    ------
    ResponseFormatError
        If there is no tag, or it is not 8 hexadecimal digits.
    """
    if text is None:
        raise ResponseFormatError("MINT answer: an attr element has no tag")
    stripped = text.strip()
    if not _TAG_RE.fullmatch(stripped):
        raise ResponseFormatError(
            f"MINT attr tag {text[:40]!r} is not 8 hexadecimal digits"
        )
    tag = BaseTag(int(stripped, 16))
    if len(TAG_CACHE) < _TAG_CACHE_MAX:
        TAG_CACHE[text] = tag
    return tag


# --------------------------------------------------------------------- values


class Context:
    """pydicom settings, read once per parse, and the value converters using them.

    ``items`` converts one value (no backslash) of a VR. Converted PN, IS, DS
    and binary number values are cached per parse in ``caches`` and shared
    between elements: they are immutable, and answers repeat them a lot
    (names, instance numbers, rows and columns). ``plain_vrs`` are the VRs
    whose value is the text itself.
    """

    __slots__ = (
        "caches",
        "datetime_conversion",
        "items",
        "mode",
        "plain_vrs",
        "uids",
    )

    def __init__(self) -> None:
        mode: int = pydicom_config.settings.reading_validation_mode
        self.mode = mode
        self.datetime_conversion: bool = bool(pydicom_config.datetime_conversion)
        self.plain_vrs: frozenset[str] = (
            TEXT_VRS - DATETIME_VRS if self.datetime_conversion else TEXT_VRS
        )

        def person(part: str) -> PersonName:
            return person_name(part, mode) if part else empty_person_name(mode)

        converters: dict[str, Callable[[str], Any]] = {
            "PN": person,
            "IS": _number(lambda part: IS(part, mode)),
            "DS": _number(lambda part: DS(part, False, mode)),
            **dict.fromkeys(INT_VRS, _number(int)),
            **dict.fromkeys(FLOAT_VRS, _number(float)),
        }
        self.caches: dict[str, dict[str, Any]] = {vr: {} for vr in converters}
        self.items: dict[str, Callable[[str], Any]] = {
            vr: _cached(convert, self.caches[vr]) for vr, convert in converters.items()
        }
        self.items["UI"] = _to_uid
        self.items["AT"] = _to_tag
        # text -> UID: transfer syntaxes, SOP classes, study and series UIDs
        # repeat; a look-up is cheaper than a new UID.
        self.uids: dict[str, UID] = {}


def _cached(
    convert: Callable[[str], Any], cache: dict[str, Any]
) -> Callable[[str], Any]:
    def item(part: str) -> Any:
        value = cache.get(part)
        if value is None:
            value = convert(part)
            cache[part] = value
        return value

    return item


def _number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A converter for one number; text that is no number is kept as it is."""

    def convert(part: str) -> Any:
        if not part.strip():
            return part
        try:
            return kind(part)
        except (ValueError, TypeError, OverflowError, ArithmeticError):
            return part

    return convert


def _to_uid(part: str) -> UID:
    return make_uid(part.strip())


def _to_tag(part: str) -> Any:
    cleaned = part.strip().replace(",", "").strip("()")
    if _TAG_RE.fullmatch(cleaned):
        return BaseTag(int(cleaned, 16))
    return part


# ------------------------------------------------------------------- elements


def _empty(tag: BaseTag, vr: str, ctx: Context) -> DataElement:
    """The element for an attr without a value (missing or empty ``val``)."""
    value: Any
    if vr == "UI":
        value = make_uid("")
    elif vr == "PN":
        value = empty_person_name(ctx.mode)
    elif vr == "SQ":
        value = Sequence()
    else:
        try:
            value = empty_value_for_VR(vr)
        except (ValueError, KeyError):
            value = None
    return make_element(tag, vr, value, ctx.mode)


def _itemwise(tag: BaseTag, vr: str, text: str, ctx: Context) -> DataElement:
    """One converted value, or a MultiValue of them for backslash separated text."""
    item = ctx.items[vr]
    if "\\" not in text:
        return make_element(tag, vr, item(text), ctx.mode)
    return make_multi(tag, vr, [item(part) for part in text.split("\\")], ctx.mode)


def _text(tag: BaseTag, vr: str, text: str, ctx: Context) -> DataElement:
    if vr in _NO_SPLIT_VRS or "\\" not in text:
        return make_element(tag, vr, text, ctx.mode)
    return make_multi(tag, vr, text.split("\\"), ctx.mode)


def _datetime(tag: BaseTag, vr: str, text: str, ctx: Context) -> DataElement:
    if not ctx.datetime_conversion:
        return _text(tag, vr, text, ctx)
    try:  # pydicom DA/DT/TM objects: pydicom's job
        return DataElement(tag, vr, text, validation_mode=ctx.mode)
    except (ValueError, TypeError, OverflowError):
        return _text(tag, vr, text, ctx)


def _as_sent(tag: BaseTag, vr: str, text: str, ctx: Context) -> DataElement:
    """Binary, ambiguous or unknown VRs: keep the text as sent."""
    return make_element(tag, vr, text, ctx.mode)


_Converter = Callable[[BaseTag, str, str, Context], DataElement]
_CONVERTERS: Final[dict[str, _Converter]] = {
    **dict.fromkeys(TEXT_VRS, _text),
    **dict.fromkeys(DATETIME_VRS, _datetime),
    **dict.fromkeys(INT_VRS | FLOAT_VRS | {"UI", "PN", "IS", "DS", "AT"}, _itemwise),
}


def convert_attr(
    tag: BaseTag, vr: str | None, text: str | None, ctx: Context
) -> DataElement:
    """The DataElement for one ``attr``: its ``val`` text converted for its VR.

    vr and text are the ``vr`` and ``val`` XML attributes as sent (None if
    missing). Without text the element has the empty value of its VR (an empty
    Sequence for SQ).
    """
    if not vr:
        vr = dictionary_vr(tag)
    converter = _CONVERTERS.get(vr)
    if converter is None:
        upper = vr.strip().upper()
        if upper in _CONVERTERS or upper == "SQ":
            vr = upper
            converter = _CONVERTERS.get(vr)
    if not text:
        return _empty(tag, vr, ctx)
    if converter is None:
        return _as_sent(tag, vr, text, ctx)
    return converter(tag, vr, text, ctx)
