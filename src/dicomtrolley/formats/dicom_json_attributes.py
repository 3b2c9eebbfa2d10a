"""DICOM JSON objects (PS3.18 F.2.2) into pydicom Datasets, attribute by attribute.

A DICOM JSON object maps an eight digit hexadecimal tag to an attribute object
``{"vr": ..., "Value": [...]}`` or ``{"vr": ..., "InlineBinary": ...}`` /
``{"vr": ..., "BulkDataURI": ...}``. :func:`build_dataset` turns one decoded
object into a :class:`~pydicom.dataset.Dataset`, with a handler per VR that
makes the attribute's ``DataElement``; :mod:`dicomtrolley.formats.dicom_json`
decodes whole QIDO-RS answers and calls it per object. The objects are built
with the shortcuts of :mod:`dicomtrolley.formats.fast_dataset`, which is where
the speed comes from.

The results are meant to be equal, element by element, to what
``Dataset.from_json`` builds: same tags, VRs, value types (``UID``,
``PersonName``, ``IS``, ``DSfloat``, ``MultiValue``, ``Sequence`` ...) and values,
with pydicom's configuration (empty values, date/time conversion, ``DS`` as
``Decimal``) honoured. Where they differ, on purpose:

* Values are not validated against the VR rules of PS3.5 (length, character
  repertoire). In pydicom's default ``WARN`` reading mode that only costs
  warnings; under ``RAISE`` pydicom would refuse such values and this module does
  not. ``IS`` and ``DS`` values go through pydicom's own ``IS``/``DS``
  constructors and are validated by them.
* ``IS`` and ``DS`` given as JSON strings keep their original text, as F.2.3
  intends ("to preserve the original format"): ``"007"`` becomes ``IS`` 7 whose
  ``str()`` is ``"007"``; pydicom goes through ``int()``/``float()`` and gives
  ``"7"``. The numbers are equal. An ``IS`` JSON number with a fraction (``5.7``)
  becomes pydicom's ``ISfloat`` instead of being truncated to 5. An ``IS``/``DS``
  string that is no number at all is kept as the string (pydicom would fail on
  the whole dataset), unless pydicom's reading validation mode is ``RAISE``.
* Lenient where pydicom raises or guesses: a missing ``"vr"`` is looked up in
  pydicom's data dictionary (``UN`` for private and unknown tags); ``"Value":
  null`` counts as no value; numbers in string VRs are turned into strings; an
  ``AT`` value that is no tag becomes ``None`` with a warning (as in pydicom);
  ``Value`` wins when an attribute carries more than one of ``Value``,
  ``InlineBinary`` and ``BulkDataURI`` (pydicom picks one at random).
* ``BulkDataURI``: the element is kept with pydicom's empty value for its VR,
  without pydicom's "no bulk data URI handler" warning, and the URI is dropped.
  QIDO-RS answers rarely carry bulk data; a client that needs it should use
  ``Dataset.from_json`` with a ``bulk_data_uri_handler``.

``UN`` and the ambiguous VRs (``"US or SS"`` ...), date/time elements when
``pydicom.config.datetime_conversion`` is on, and ``InlineBinary`` on non-binary
VRs are rare in QIDO-RS answers and are handed to
:meth:`pydicom.dataelem.DataElement.from_json` itself; LUT Descriptor
multi-values, which pydicom treats specially, to the ``DataElement``
constructor.

Errors: an attribute that is not DICOM JSON (bad tag, unknown VR, value of the
wrong kind) raises :class:`~dicomtrolley.exceptions.ResponseFormatError` naming
the tag, with a short quote (:func:`snippet`) of the offending value.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any, Final, cast

import pydicom.tag
from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.misc import warn_and_log
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import DS, IS, PersonName

from dicomtrolley.exceptions import ResponseFormatError
from dicomtrolley.formats.fast_dataset import (
    DATETIME_VRS,
    FLOAT_VRS,
    INT_VRS,
    TEXT_VRS,
    dictionary_vr,
    empty_person_name,
    make_dataset,
    make_element,
    make_multi,
    make_uid,
    person_name,
    set_private_creator,
)

__all__ = ["Context", "build_dataset", "snippet"]

_SNIPPET_CHARS: Final = 100
_TAG_CACHE_MAX: Final = 65536

# VR groups (PS3.5 table 6.2-1, PS3.18 table F.2.3-1), besides fast_dataset's.
# String VRs whose single value pydicom does not split on backslashes.
_NO_SPLIT_VRS: Final = frozenset({"LT", "ST", "UT"})
_BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_DELEGATED_VRS: Final = frozenset(
    {"UN", "US or SS", "US or OW", "US or SS or OW", "OB or OW"}
)
# VRs whose single string value is used as it is (UI: as a stripped UID).
_PLAIN_VRS: Final = TEXT_VRS | {"UI"}
_VALUE_KEYS: Final = ("Value", "InlineBinary", "BulkDataURI")

# (0028,1101-1103) and similar: multi-values pydicom builds in its own way.
_LUT_DESCRIPTOR_TAGS: Final[frozenset[int]] = frozenset(
    getattr(pydicom.tag, "_LUT_DESCRIPTOR_TAGS", ())
)

_TAG_RE: Final = re.compile(r"[0-9A-Fa-f]{8}")
_TAG_CACHE: dict[str, BaseTag] = {}

_new_int = int.__new__


# ---------------------------------------------------------------- configuration


class Context:
    """pydicom settings read once per answer, so they stay the same for all items.

    Make one per answer (or per object) and pass it to :func:`build_dataset`.
    """

    __slots__ = ("ds_decimal", "empty_text", "handlers", "mode", "plain_vrs")

    def __init__(self) -> None:
        self.mode: int = pydicom_config.settings.reading_validation_mode
        # "" normally, None with config.use_none_as_empty_text_VR_value
        self.empty_text = cast("str | None", empty_value_for_VR("LO"))
        self.ds_decimal: bool = pydicom_config.use_DS_decimal
        if pydicom_config.datetime_conversion:
            # DA/DT/TM become pydicom DA/DT/TM objects: pydicom's job.
            self.handlers = _HANDLERS_DATETIME
            self.plain_vrs = _PLAIN_VRS - DATETIME_VRS
        else:
            self.handlers = _HANDLERS
            self.plain_vrs = _PLAIN_VRS


# --------------------------------------------------------- datasets and elements


def build_dataset(obj: dict[str, Any], ctx: Context) -> Dataset:
    """The Dataset for one decoded DICOM JSON object (SQ items included).

    Raises
    ------
    ResponseFormatError
        If an attribute of `obj` is not DICOM JSON. A pydicom call may still
        raise ``ValueError`` and the like, and deep nesting ``RecursionError``:
        callers turn those into a ResponseFormatError.
    """
    ds = make_dataset()
    elements = ds._dict
    handlers = ctx.handlers
    plain_vrs = ctx.plain_vrs
    mode = ctx.mode
    tag_cache = _TAG_CACHE
    new_element = make_element
    new_uid = make_uid
    for key, attribute in obj.items():
        tag = tag_cache.get(key)
        if tag is None:
            tag = _parse_tag(key)
        if type(attribute) is not dict and not isinstance(attribute, dict):
            raise _error(key, "attribute must be a JSON object", attribute)
        vr = attribute.get("vr")
        if type(vr) is not str:
            if vr is None:
                vr = dictionary_vr(tag)
            elif isinstance(vr, str):
                vr = str.__str__(vr)  # a plain str, e.g. from pydicom's VR enum
            else:
                raise _error(key, f"unknown VR {snippet(vr)}", attribute)
        values = attribute.get("Value")
        if (
            vr in plain_vrs
            and type(values) is list
            and len(values) == 1
            and type(value := values[0]) is str
            and "\\" not in value
        ):
            # The common case, inline: one string value of a string VR.
            if vr == "UI":
                value = new_uid(value.strip())
            elem = new_element(tag, vr, value, mode)
        else:
            handler = handlers.get(vr)
            if handler is None:
                raise _error(key, f"unknown VR {snippet(vr)}", attribute)
            elem = handler(tag, key, vr, attribute, ctx)
        if tag & 0x10000:
            # Private tag: as Dataset.__setitem__, name its private creator if
            # the creator element (gggg,00xx) came before it.
            set_private_creator(elements, tag, elem)
        elements[tag] = elem
        if vr == "SQ":
            # As Dataset.__setitem__: pass Pixel Representation down to items.
            ds._set_pixel_representation(elem)
    return ds


def _parse_tag(key: str) -> BaseTag:
    if not isinstance(key, str) or len(key) != 8 or not _TAG_RE.fullmatch(key):
        raise ResponseFormatError(
            f"attribute name {snippet(key)} is not a tag of 8 hexadecimal digits"
        )
    tag = BaseTag(int(key, 16))
    if len(_TAG_CACHE) < _TAG_CACHE_MAX:
        _TAG_CACHE[key] = tag
    return tag


def _values(key: str, attribute: dict[str, Any]) -> list[Any] | None:
    """The "Value" array, or None when there is none (or it is null)."""
    values = attribute.get("Value")
    if values is None or isinstance(values, list):
        return values
    raise _error(key, '"Value" must be a JSON array', values)


def _empty_element(tag: BaseTag, key: str, vr: str, ctx: Context) -> DataElement:
    """The element Dataset.from_json makes for an attribute without a value."""
    value: Any
    if vr == "SQ":
        value = Sequence()
    else:
        value = empty_value_for_VR(vr)
        if value is not None:
            if vr == "UI":
                value = make_uid("")
            elif vr == "PN":
                value = empty_person_name(ctx.mode)
    return make_element(tag, vr, value, ctx.mode)


def _no_value(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: Context
) -> DataElement:
    """An attribute with no "Value": empty, or InlineBinary for pydicom."""
    if attribute.get("InlineBinary") is not None:
        return _delegate(tag, key, vr, attribute, ctx)
    return _empty_element(tag, key, vr, ctx)


# ---------------------------------------------------------------- VR handlers
# Each handler turns one attribute object into a DataElement with the value
# Dataset.from_json would give it: the "Value" items converted as
# JsonDataElementConverter does, then typed as DataElement's value setter does
# (one item: the item, a str with backslashes: split; more: a MultiValue).


def _text(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: Context
) -> DataElement:
    values = _values(key, attribute)
    if not values:
        return _no_value(tag, key, vr, attribute, ctx)
    if len(values) == 1:
        value = values[0]
        if type(value) is not str:
            value = _text_item(key, value, ctx)
        if value and vr not in _NO_SPLIT_VRS and "\\" in value:
            return make_multi(tag, vr, value.split("\\"), ctx.mode)
        return make_element(tag, vr, value, ctx.mode)
    items = [v if type(v) is str else _text_item(key, v, ctx) for v in values]
    return make_multi(tag, vr, items, ctx.mode)


def _ui(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: Context
) -> DataElement:
    values = _values(key, attribute)
    if not values:
        return _no_value(tag, key, vr, attribute, ctx)
    if len(values) == 1:
        value = values[0]
        if type(value) is not str:
            value = _text_item(key, value, ctx)
            if value is None:
                return make_element(tag, vr, None, ctx.mode)
        if "\\" in value:
            items = [make_uid(v.strip()) for v in value.split("\\")]
            return make_multi(tag, vr, items, ctx.mode)
        return make_element(tag, vr, make_uid(value.strip()), ctx.mode)
    uids: list[UID | None] = []
    for value in values:
        if type(value) is not str:
            value = _text_item(key, value, ctx)
        uids.append(None if value is None else make_uid(value.strip()))
    return make_multi(tag, vr, uids, ctx.mode)


def _pn(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: Context
) -> DataElement:
    values = _values(key, attribute)
    if not values:
        return _no_value(tag, key, vr, attribute, ctx)
    mode = ctx.mode
    if len(values) == 1:
        name = _pn_item(key, values[0])
        if name is None:
            return _empty_element(tag, key, vr, ctx)
        if "\\" in name:
            parts = [person_name(part, mode) for part in name.split("\\")]
            return make_multi(tag, vr, parts, mode)
        return make_element(tag, vr, person_name(name, mode), mode)
    names: list[PersonName | None] = []
    for value in values:
        name = _pn_item(key, value)
        if name is not None:
            names.append(person_name(name, mode))
        elif ctx.empty_text is None:
            names.append(None)
        else:
            names.append(empty_person_name(mode))
    return make_multi(tag, vr, names, mode)


def _numbers(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: Context
) -> DataElement:
    values = _values(key, attribute)
    if not values:
        return _no_value(tag, key, vr, attribute, ctx)
    number = float if vr in FLOAT_VRS else int
    try:
        if len(values) == 1:
            value = values[0]
            if value is not None and type(value) is not number:
                value = number(value)
            return make_element(tag, vr, value, ctx.mode)
        items = [v if v is None or type(v) is number else number(v) for v in values]
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise _error(key, f"{vr} values must be numbers", values) from exc
    if tag in _LUT_DESCRIPTOR_TAGS:
        # pydicom treats their first value as US whatever the VR: its job.
        return DataElement(tag, vr, items, validation_mode=ctx.mode)
    return make_multi(tag, vr, items, ctx.mode)


def _per_value(
    convert: Callable[[str, Any, Context], Any],
) -> Callable[[BaseTag, str, str, dict[str, Any], Context], DataElement]:
    """An element builder that converts each value with convert (IS, DS, AT)."""

    def build(
        tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: Context
    ) -> DataElement:
        values = _values(key, attribute)
        if not values:
            return _no_value(tag, key, vr, attribute, ctx)
        if len(values) == 1:
            return make_element(tag, vr, convert(key, values[0], ctx), ctx.mode)
        return make_multi(tag, vr, [convert(key, v, ctx) for v in values], ctx.mode)

    return build


def _sequence(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: Context
) -> DataElement:
    values = _values(key, attribute)
    if not values:
        # No items, or a BulkDataURI in place of them (Orthanc does that).
        return make_element(tag, vr, Sequence(), ctx.mode)
    items: list[Dataset] = []
    for item in values:
        if isinstance(item, dict):
            items.append(build_dataset(item, ctx))
        elif item is None:
            items.append(make_dataset())
        else:
            raise _error(key, "SQ items must be JSON objects", item)
    return make_element(tag, vr, Sequence(items), ctx.mode)


def _binary(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: Context
) -> DataElement:
    data = attribute.get("InlineBinary")
    if data is None:
        if attribute.get("Value") is not None:
            # Not DICOM JSON (F.2.2 allows no "Value" here); leave it to pydicom.
            return _delegate(tag, key, vr, attribute, ctx)
        return _empty_element(tag, key, vr, ctx)
    if isinstance(data, list):
        # PS3.18 F.4 shows the base64 string inside an array; accept both.
        if not data:
            return _empty_element(tag, key, vr, ctx)
        data = data[0]
    if not isinstance(data, str):
        raise _error(key, '"InlineBinary" must be a base64 string', data)
    try:
        # Not validating, like pydicom: characters outside base64 are skipped.
        value = base64.b64decode(data)
    except ValueError as exc:  # binascii.Error, or non-ASCII characters
        raise _error(key, f'"InlineBinary" is not base64 ({exc})', data) from exc
    return make_element(tag, vr, value, ctx.mode)


def _delegate(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: Context
) -> DataElement:
    """Leave rare cases to pydicom's own DataElement.from_json."""
    value_key = next((k for k in _VALUE_KEYS if attribute.get(k) is not None), None)
    value = attribute[value_key] if value_key is not None else [""]
    try:
        return DataElement.from_json(Dataset, key, vr, value, value_key, _no_bulk_data)
    except Exception as exc:
        raise _error(key, f"{vr} attribute not understood ({exc})", attribute) from exc


def _no_bulk_data(tag: str, vr: str, uri: str) -> Any:
    """BulkDataURI handler for pydicom: the empty value, as without a handler."""
    return empty_value_for_VR(vr)


_Handler = Callable[[BaseTag, str, str, dict[str, Any], Context], DataElement]
_HANDLERS: Final[dict[str, _Handler]] = {
    **dict.fromkeys(TEXT_VRS, _text),
    **dict.fromkeys(INT_VRS | FLOAT_VRS, _numbers),
    **dict.fromkeys(_BINARY_VRS, _binary),
    **dict.fromkeys(_DELEGATED_VRS, _delegate),
    "UI": _ui,
    "PN": _pn,
    # the item converters are defined below: look them up at call time
    "IS": _per_value(lambda key, value, ctx: _is_item(key, value, ctx)),
    "DS": _per_value(lambda key, value, ctx: _ds_item(key, value, ctx)),
    "AT": _per_value(lambda key, value, ctx: _at_item(key, value)),
    "SQ": _sequence,
}
# With pydicom.config.datetime_conversion, DA/DT/TM become pydicom DA/DT/TM objects.
_HANDLERS_DATETIME: Final[dict[str, _Handler]] = {
    **_HANDLERS,
    **dict.fromkeys(DATETIME_VRS, _delegate),
}


# ---------------------------------------------------------------- single values


def _text_item(key: str, value: Any, ctx: Context) -> str | None:
    """A "Value" item of a string VR that is not exactly a str."""
    if value is None:
        return ctx.empty_text
    if isinstance(value, str):
        return value  # a str subclass such as UID, from a dict made in Python
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _error(key, "string values must be JSON strings", value)


def _pn_item(key: str, value: Any) -> str | None:
    """A PN item {"Alphabetic": .., "Ideographic": .., "Phonetic": ..} as A=I=P.

    None for a null item (an empty value).
    """
    if isinstance(value, dict):
        alphabetic = value.get("Alphabetic", "")
        if type(alphabetic) is str and len(value) == 1 and "Alphabetic" in value:
            return alphabetic  # by far the most common case
        groups = [alphabetic]
        # As pydicom: the string ends with the last group present, even if empty;
        # PersonName then drops trailing empty groups.
        if "Phonetic" in value:
            groups += [value.get("Ideographic", ""), value["Phonetic"]]
        elif "Ideographic" in value:
            groups.append(value["Ideographic"])
        for i, group in enumerate(groups):
            if not isinstance(group, str):
                if group is not None:
                    raise _error(key, "PN component groups must be strings", value)
                groups[i] = ""
        return "=".join(groups)
    if isinstance(value, str) or value is None:
        return value  # a str is not DICOM JSON, but some servers send them
    raise _error(key, "PN values must be JSON objects", value)


def _is_item(key: str, value: Any, ctx: Context) -> Any:
    if type(value) is int and -0x80000000 <= value <= 0x7FFFFFFF:
        return _new_int(IS, value)  # what IS(value) gives, without its checks
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _error(key, "IS values must be JSON numbers or strings", value)
    if isinstance(value, float):
        if value.is_integer():
            value = int(value)
    elif isinstance(value, int):
        value = int(value)  # a plain int from a subclass
    try:
        return IS(value, ctx.mode)
    except (ValueError, TypeError, ArithmeticError) as exc:
        return _keep_odd_string(key, "IS", value, ctx, exc)


def _ds_item(key: str, value: Any, ctx: Context) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            if isinstance(value, bool):
                raise TypeError("a boolean is no number")
            value = float(value)  # as pydicom: DS from the float of a JSON number
            if ctx.ds_decimal:
                # pydicom makes no DSdecimal from a float (unless allow_DS_float);
                # the float's shortest text is the JSON number as sent.
                value = repr(value)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise _error(
                key, "DS values must be JSON numbers or strings", value
            ) from exc
    try:
        return DS(value, False, ctx.mode)
    except (ValueError, TypeError, ArithmeticError) as exc:
        return _keep_odd_string(key, "DS", value, ctx, exc)


def _keep_odd_string(
    key: str, vr: str, value: Any, ctx: Context, exc: Exception
) -> str:
    """An IS/DS value pydicom cannot read: kept as text, unless RAISE mode."""
    if not isinstance(value, str) or ctx.mode == pydicom_config.RAISE:
        raise _error(key, f"invalid {vr} value ({exc})", value) from exc
    if ctx.mode == pydicom_config.WARN:
        warn_and_log(
            f"DICOM JSON attribute {key}: {vr} value {snippet(value)} is not a "
            "number; kept as a string"
        )
    return value


def _at_item(key: str, value: Any) -> BaseTag | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            number = int(value, 16)
        except ValueError:
            number = -1
        if 0 <= number <= 0xFFFFFFFF:
            return BaseTag(number)
    warn_and_log(
        f"DICOM JSON attribute {key}: invalid AT value {snippet(value)} - ignoring it"
    )
    return None


# ------------------------------------------------------------------- messages


def _error(key: str, problem: str, value: Any) -> ResponseFormatError:
    return ResponseFormatError(
        f"DICOM JSON attribute {key}: {problem}: {snippet(value)}"
    )


def snippet(value: Any) -> str:
    """A short quote of some input (bytes, text or decoded JSON), for messages.

    At most about 100 characters, whitespace runs folded, as a Python literal.
    """
    if isinstance(value, bytes | bytearray):
        text = bytes(value[: _SNIPPET_CHARS * 4]).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value[: _SNIPPET_CHARS * 4]
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=repr)
        except (ValueError, TypeError, ArithmeticError, RecursionError):
            text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    if len(text) > _SNIPPET_CHARS:
        text = text[: _SNIPPET_CHARS - 3] + "..."
    return repr(text)
