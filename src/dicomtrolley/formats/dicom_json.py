"""DICOM JSON (the "DICOM JSON Model" of PS3.18 Annex F) into pydicom Datasets, fast.

QIDO-RS answers with ``application/dicom+json`` (PS3.18 Annex F.2) are a JSON array
with one object per match; each object maps an eight digit hexadecimal tag to an
attribute object ``{"vr": ..., "Value": [...]}`` or ``{"vr": ..., "InlineBinary":
...}`` / ``{"vr": ..., "BulkDataURI": ...}`` (F.2.2). :func:`parse_dicom_json`
turns such a body into a list of :class:`pydicom.dataset.Dataset`;
:func:`dataset_from_json_dict` converts one already decoded object.

Why hand-written: :meth:`pydicom.dataset.Dataset.from_json` is correct but slow
for bulk answers. It creates a converter object per element, inspects a callable's
signature, validates every value and builds each :class:`~pydicom.dataset.Dataset`
through its keyword-checking ``__setattr__``; dicomtrolley 4.1.0 needed 2.4 s to
search 10,000 instances and turn them into a tree, mostly in ``from_json``. This
module parses the body once with :func:`json.loads` and builds the same objects
directly, with the cyclic garbage collector paused while it does (see
:func:`_gc_paused`). ``benchmarks/dicom_json_micro.py`` measured about 10 times
the speed of ``json.loads`` plus ``from_json`` for a 10,000 instance answer
(0.36 s against 3.7 s on a 2 core machine; 8 times with the collector paused
for both).

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

Speed comes from building ``DataElement``, ``Dataset``, ``MultiValue``,
``PersonName`` and ``UID`` objects without their Python-level ``__init__`` logic
(validation, keyword checks). At import time each shortcut is checked to give an
object equal, attribute for attribute, to one built the normal way; if pydicom
ever changes so that they differ, the normal constructors are used instead.

Errors: anything that is not a DICOM JSON array of objects raises
:class:`~dicomtrolley.exceptions.ResponseFormatError` with a short quote of the
offending input; no ``ValueError``/``KeyError``/``TypeError`` escapes.
"""

from __future__ import annotations

import base64
import gc
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, cast

import pydicom.tag
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.misc import warn_and_log
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import DS, IS, PersonName

from dicomtrolley.exceptions import ResponseFormatError

__all__ = ["dataset_from_json_dict", "parse_dicom_json"]

_SNIPPET_CHARS: Final = 100
_TAG_CACHE_MAX: Final = 65536

# VR groups (PS3.5 table 6.2-1, PS3.18 table F.2.3-1).
_TEXT_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UR", "UT"}
)
# String VRs whose single value pydicom does not split on backslashes.
_NO_SPLIT_VRS: Final = frozenset({"LT", "ST", "UT"})
_INT_VRS: Final = frozenset({"SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS: Final = frozenset({"FD", "FL"})
_BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_DELEGATED_VRS: Final = frozenset(
    {"UN", "US or SS", "US or OW", "US or SS or OW", "OB or OW"}
)
_DATETIME_VRS: Final = frozenset({"DA", "DT", "TM"})
# VRs whose single string value is used as it is (UI: as a stripped UID).
_PLAIN_VRS: Final = _TEXT_VRS | {"UI"}
_VALUE_KEYS: Final = ("Value", "InlineBinary", "BulkDataURI")

# (0028,1101-1103) and similar: multi-values pydicom builds in its own way.
_LUT_DESCRIPTOR_TAGS: Final[frozenset[int]] = frozenset(
    getattr(pydicom.tag, "_LUT_DESCRIPTOR_TAGS", ())
)

_TAG_RE: Final = re.compile(r"[0-9A-Fa-f]{8}")
_TAG_CACHE: dict[str, BaseTag] = {}

_new = object.__new__
_new_str = str.__new__
_new_int = int.__new__
_setattr = object.__setattr__


# --------------------------------------------------------------------------- API


def parse_dicom_json(body: bytes | str) -> list[Dataset]:
    """Parse a QIDO-RS answer, a JSON array of DICOM JSON objects (PS3.18 F.2).

    An empty body (what HTTP 204 No Content brings) gives ``[]``. Python's
    cyclic garbage collector is paused while the body is parsed (see
    :func:`_gc_paused`): it would otherwise walk the growing heap again and
    again, which about doubles the time for large answers.

    Raises
    ------
    ResponseFormatError
        If `body` is not JSON, not an array of objects, or holds an attribute
        that is not DICOM JSON (bad tag, unknown VR, value of the wrong kind).
    """
    if isinstance(body, bytearray | memoryview):
        body = bytes(body)
    if isinstance(body, str):
        if body.startswith("\ufeff"):
            body = body[1:]
    elif not isinstance(body, bytes):
        raise ResponseFormatError(
            f"DICOM JSON body must be bytes or str, not {type(body).__name__}"
        )
    if not body.strip():
        return []
    with _gc_paused():
        return _convert_all(_decode(body))


def _decode(body: bytes | str) -> list[Any]:
    try:
        decoded = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ResponseFormatError(_json_error_message(exc, body)) from exc
    except UnicodeDecodeError as exc:
        raise ResponseFormatError(
            f"DICOM JSON body is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            f"body starts with: {_snippet(body)}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise ResponseFormatError(
            f"DICOM JSON body cannot be decoded ({exc}); "
            f"body starts with: {_snippet(body)}"
        ) from exc
    if not isinstance(decoded, list):
        raise ResponseFormatError(
            "QIDO-RS answer must be a JSON array of DICOM JSON objects, got a JSON "
            f"{_json_type(decoded)}: {_snippet(decoded)}"
        )
    return decoded


def _convert_all(decoded: list[Any]) -> list[Dataset]:
    context = _Context()
    results: list[Dataset] = []
    append = results.append
    for index, obj in enumerate(decoded):
        if not isinstance(obj, dict):
            raise ResponseFormatError(
                f"QIDO-RS answer item {index} must be a JSON object, got a JSON "
                f"{_json_type(obj)}: {_snippet(obj)}"
            )
        try:
            append(_build_dataset(obj, context))
        except ResponseFormatError as exc:
            raise ResponseFormatError(f"item {index}: {exc.message}") from exc
        except RecursionError as exc:
            raise ResponseFormatError(f"item {index}: {_TOO_DEEP}") from exc
        except _UNEXPECTED as exc:
            raise ResponseFormatError(
                f"item {index}: cannot convert {_snippet(obj)}: {exc}"
            ) from exc
    return results


def dataset_from_json_dict(obj: dict[str, Any]) -> Dataset:
    """Convert one decoded DICOM JSON object (PS3.18 F.2.2) into a Dataset.

    Raises
    ------
    ResponseFormatError
        If `obj` is not a DICOM JSON object.
    """
    if not isinstance(obj, dict):
        raise ResponseFormatError(
            "a DICOM JSON object must be a JSON object, got "
            f"{type(obj).__name__}: {_snippet(obj)}"
        )
    try:
        return _build_dataset(obj, _Context())
    except ResponseFormatError:
        raise
    except RecursionError as exc:
        raise ResponseFormatError(_TOO_DEEP) from exc
    except _UNEXPECTED as exc:
        raise ResponseFormatError(f"cannot convert {_snippet(obj)}: {exc}") from exc


# A safety net: every check below raises ResponseFormatError itself; these are
# turned into one if a pydicom call raises something unforeseen.
_UNEXPECTED: Final = (ValueError, TypeError, KeyError, IndexError, OverflowError)
_TOO_DEEP: Final = "DICOM JSON sequences (SQ) are nested too deeply to convert"


# ------------------------------------------------------------ garbage collector

_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_paused_by_us = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large answer is converted.

    Parsing allocates hundreds of thousands of containers (JSON dicts and lists,
    elements, datasets); every 700 of them the collector runs and the older
    generations are walked again and again as the heap grows: for 10,000
    instances that is about as much time as the conversion itself. Parsing
    makes next to no cyclic garbage (reference counting frees the JSON objects),
    so the pause costs no memory. Safe with threads: the first of concurrent
    parses pauses the collector and the last one resumes it, and only if it was
    running before.
    """
    global _gc_pausers, _gc_paused_by_us
    with _gc_lock:
        if _gc_pausers == 0 and gc.isenabled():
            gc.disable()
            _gc_paused_by_us = True
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_paused_by_us:
                _gc_paused_by_us = False
                gc.enable()


# ---------------------------------------------------------------- configuration


class _Context:
    """pydicom settings read once per call, so they stay the same for all items."""

    __slots__ = ("ds_decimal", "empty_text", "handlers", "mode", "plain_vrs")

    def __init__(self) -> None:
        self.mode: int = pydicom_config.settings.reading_validation_mode
        # "" normally, None with config.use_none_as_empty_text_VR_value
        self.empty_text = cast("str | None", empty_value_for_VR("LO"))
        self.ds_decimal: bool = pydicom_config.use_DS_decimal
        if pydicom_config.datetime_conversion:
            # DA/DT/TM become pydicom DA/DT/TM objects: pydicom's job.
            self.handlers = _HANDLERS_DATETIME
            self.plain_vrs = _PLAIN_VRS - _DATETIME_VRS
        else:
            self.handlers = _HANDLERS
            self.plain_vrs = _PLAIN_VRS


# --------------------------------------------------------- datasets and elements


def _build_dataset(obj: dict[str, Any], ctx: _Context) -> Dataset:
    ds = _make_dataset()
    elements = ds._dict
    handlers = ctx.handlers
    plain_vrs = ctx.plain_vrs
    mode = ctx.mode
    tag_cache = _TAG_CACHE
    make_element = _make_element
    make_uid = _make_uid
    for key, attribute in obj.items():
        tag = tag_cache.get(key)
        if tag is None:
            tag = _parse_tag(key)
        if type(attribute) is not dict and not isinstance(attribute, dict):
            raise _error(key, "attribute must be a JSON object", attribute)
        vr = attribute.get("vr")
        if type(vr) is not str:
            if vr is None:
                vr = _dictionary_vr(tag)
            elif isinstance(vr, str):
                vr = str.__str__(vr)  # a plain str, e.g. from pydicom's VR enum
            else:
                raise _error(key, f"unknown VR {_snippet(vr)}", attribute)
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
                value = make_uid(value.strip())
            elem = make_element(tag, vr, value, mode)
        else:
            handler = handlers.get(vr)
            if handler is None:
                raise _error(key, f"unknown VR {_snippet(vr)}", attribute)
            elem = handler(tag, key, vr, attribute, ctx)
        if tag & 0x10000:
            # Private tag: as Dataset.__setitem__, name its private creator if
            # the creator element (gggg,00xx) came before it.
            creator = (tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8)
            if creator != tag and creator in elements:
                creator_elem = cast(DataElement, elements[BaseTag(creator)])
                elem.private_creator = creator_elem.value
        elements[tag] = elem
        if vr == "SQ":
            # As Dataset.__setitem__: pass Pixel Representation down to items.
            ds._set_pixel_representation(elem)
    return ds


def _parse_tag(key: str) -> BaseTag:
    if not isinstance(key, str) or len(key) != 8 or not _TAG_RE.fullmatch(key):
        raise ResponseFormatError(
            f"attribute name {_snippet(key)} is not a tag of 8 hexadecimal digits"
        )
    tag = BaseTag(int(key, 16))
    if len(_TAG_CACHE) < _TAG_CACHE_MAX:
        _TAG_CACHE[key] = tag
    return tag


def _dictionary_vr(tag: BaseTag) -> str:
    """VR for an attribute without "vr": the dictionary's, "UN" if unknown."""
    if tag & 0x10000:
        return "UN"
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _values(key: str, attribute: dict[str, Any]) -> list[Any] | None:
    """The "Value" array, or None when there is none (or it is null)."""
    values = attribute.get("Value")
    if values is None or isinstance(values, list):
        return values
    raise _error(key, '"Value" must be a JSON array', values)


def _empty_element(tag: BaseTag, key: str, vr: str, ctx: _Context) -> DataElement:
    """The element Dataset.from_json makes for an attribute without a value."""
    value: Any
    if vr == "SQ":
        value = Sequence()
    else:
        value = empty_value_for_VR(vr)
        if value is not None:
            if vr == "UI":
                value = _make_uid("")
            elif vr == "PN":
                value = _empty_person_name(ctx.mode)
    return _make_element(tag, vr, value, ctx.mode)


def _no_value(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: _Context
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
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: _Context
) -> DataElement:
    values = _values(key, attribute)
    if not values:
        return _no_value(tag, key, vr, attribute, ctx)
    if len(values) == 1:
        value = values[0]
        if type(value) is not str:
            value = _text_item(key, value, ctx)
        if value and vr not in _NO_SPLIT_VRS and "\\" in value:
            return _make_multi(tag, vr, value.split("\\"), ctx.mode)
        return _make_element(tag, vr, value, ctx.mode)
    items = [v if type(v) is str else _text_item(key, v, ctx) for v in values]
    return _make_multi(tag, vr, items, ctx.mode)


def _ui(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: _Context
) -> DataElement:
    values = _values(key, attribute)
    if not values:
        return _no_value(tag, key, vr, attribute, ctx)
    if len(values) == 1:
        value = values[0]
        if type(value) is not str:
            value = _text_item(key, value, ctx)
            if value is None:
                return _make_element(tag, vr, None, ctx.mode)
        if "\\" in value:
            items = [_make_uid(v.strip()) for v in value.split("\\")]
            return _make_multi(tag, vr, items, ctx.mode)
        return _make_element(tag, vr, _make_uid(value.strip()), ctx.mode)
    uids: list[UID | None] = []
    for value in values:
        if type(value) is not str:
            value = _text_item(key, value, ctx)
        uids.append(None if value is None else _make_uid(value.strip()))
    return _make_multi(tag, vr, uids, ctx.mode)


def _pn(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: _Context
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
            parts = [_person_name(part, mode) for part in name.split("\\")]
            return _make_multi(tag, vr, parts, mode)
        return _make_element(tag, vr, _person_name(name, mode), mode)
    names: list[PersonName | None] = []
    for value in values:
        name = _pn_item(key, value)
        if name is not None:
            names.append(_person_name(name, mode))
        elif ctx.empty_text is None:
            names.append(None)
        else:
            names.append(_empty_person_name(mode))
    return _make_multi(tag, vr, names, mode)


def _numbers(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: _Context
) -> DataElement:
    values = _values(key, attribute)
    if not values:
        return _no_value(tag, key, vr, attribute, ctx)
    number = float if vr in _FLOAT_VRS else int
    try:
        if len(values) == 1:
            value = values[0]
            if value is not None and type(value) is not number:
                value = number(value)
            return _make_element(tag, vr, value, ctx.mode)
        items = [v if v is None or type(v) is number else number(v) for v in values]
    except (ValueError, TypeError, OverflowError) as exc:
        raise _error(key, f"{vr} values must be numbers", values) from exc
    if tag in _LUT_DESCRIPTOR_TAGS:
        # pydicom treats their first value as US whatever the VR: its job.
        return DataElement(tag, vr, items, validation_mode=ctx.mode)
    return _make_multi(tag, vr, items, ctx.mode)


def _per_value(
    convert: Callable[[str, Any, _Context], Any],
) -> Callable[[BaseTag, str, str, dict[str, Any], _Context], DataElement]:
    """An element builder that converts each value with convert (IS, DS, AT)."""

    def build(
        tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: _Context
    ) -> DataElement:
        values = _values(key, attribute)
        if not values:
            return _no_value(tag, key, vr, attribute, ctx)
        if len(values) == 1:
            return _make_element(tag, vr, convert(key, values[0], ctx), ctx.mode)
        return _make_multi(tag, vr, [convert(key, v, ctx) for v in values], ctx.mode)

    return build


def _sequence(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: _Context
) -> DataElement:
    values = _values(key, attribute)
    if not values:
        # No items, or a BulkDataURI in place of them (Orthanc does that).
        return _make_element(tag, vr, Sequence(), ctx.mode)
    items: list[Dataset] = []
    for item in values:
        if isinstance(item, dict):
            items.append(_build_dataset(item, ctx))
        elif item is None:
            items.append(_make_dataset())
        else:
            raise _error(key, "SQ items must be JSON objects", item)
    return _make_element(tag, vr, Sequence(items), ctx.mode)


def _binary(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: _Context
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
    return _make_element(tag, vr, value, ctx.mode)


def _delegate(
    tag: BaseTag, key: str, vr: str, attribute: dict[str, Any], ctx: _Context
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


_Handler = Callable[[BaseTag, str, str, dict[str, Any], _Context], DataElement]
_HANDLERS: Final[dict[str, _Handler]] = {
    **dict.fromkeys(_TEXT_VRS, _text),
    **dict.fromkeys(_INT_VRS | _FLOAT_VRS, _numbers),
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
    **dict.fromkeys(_DATETIME_VRS, _delegate),
}


# ---------------------------------------------------------------- single values


def _text_item(key: str, value: Any, ctx: _Context) -> str | None:
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


def _is_item(key: str, value: Any, ctx: _Context) -> Any:
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
    except (ValueError, TypeError, OverflowError) as exc:
        return _keep_odd_string(key, "IS", value, ctx, exc)


def _ds_item(key: str, value: Any, ctx: _Context) -> Any:
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
        except (ValueError, TypeError, OverflowError) as exc:
            raise _error(
                key, "DS values must be JSON numbers or strings", value
            ) from exc
    try:
        return DS(value, False, ctx.mode)
    except (ValueError, TypeError, OverflowError) as exc:
        return _keep_odd_string(key, "DS", value, ctx, exc)


def _keep_odd_string(
    key: str, vr: str, value: Any, ctx: _Context, exc: Exception
) -> str:
    """An IS/DS value pydicom cannot read: kept as text, unless RAISE mode."""
    if not isinstance(value, str) or ctx.mode == pydicom_config.RAISE:
        raise _error(key, f"invalid {vr} value ({exc})", value) from exc
    if ctx.mode == pydicom_config.WARN:
        warn_and_log(
            f"DICOM JSON attribute {key}: {vr} value {_snippet(value)} is not a "
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
        f"DICOM JSON attribute {key}: invalid AT value {_snippet(value)} - ignoring it"
    )
    return None


# ------------------------------------------------- object construction shortcuts


def _element_slow(tag: BaseTag, vr: str, value: Any, mode: int) -> DataElement:
    return DataElement(tag, vr, value, already_converted=True, validation_mode=mode)


def _element_fast(tag: BaseTag, vr: str, value: Any, mode: int) -> DataElement:
    # The attributes DataElement.__init__ sets, in its order, so that instances
    # share their attribute layout as normal ones do.
    elem: DataElement = _new(DataElement)
    elem.tag = tag
    elem.VR = vr
    elem.validation_mode = mode
    elem._value = value
    elem.file_tell = None
    elem.is_undefined_length = False
    elem.private_creator = None
    return elem


def _multi_slow(tag: BaseTag, vr: str, items: list[Any], mode: int) -> DataElement:
    elem = _make_element(tag, vr, None, mode)
    elem._value = MultiValue(elem._convert, items)
    return elem


def _multi_fast(tag: BaseTag, vr: str, items: list[Any], mode: int) -> DataElement:
    elem = _element_fast(tag, vr, None, mode)
    multi: MultiValue[Any] = _new(MultiValue)
    # Items are converted already; the constructor serves later appends.
    multi._constructor = elem._convert
    multi._list = items
    elem._value = multi
    return elem


def _person_name_slow(name: str, mode: int) -> PersonName:
    return PersonName(name, validation_mode=mode)


def _person_name_fast(name: str, mode: int) -> PersonName:
    components = name.split("=")
    while components and not components[-1]:
        components.pop()
    person: PersonName = _new(PersonName)
    person._components = tuple(components)
    person.validation_mode = mode
    person.original_string = None  # type: ignore[assignment]  # as PersonName(str)
    person.encodings = None
    return person


def _empty_person_name(mode: int) -> PersonName:
    """pydicom's empty PN value: PersonName(PersonName("")), components ("",)."""
    if _person_name is _person_name_fast:
        person = _person_name_fast("", mode)
        person._components = ("",)
        return person
    return PersonName(PersonName(""), validation_mode=mode)


def _uid_fast(value: str) -> UID:
    uid: UID = _new_str(UID, value)
    return uid


def _dataset_slow() -> Dataset:
    return Dataset()


_DATASET_STATE: dict[str, Any] = {}
_DATASET_FRESH: tuple[tuple[str, dict[str, Any]], ...] = ()


def _dataset_fast() -> Dataset:
    ds: Dataset = _new(Dataset)
    state = _DATASET_STATE.copy()
    for name, template in _DATASET_FRESH:
        state[name] = template.copy()
    _setattr(ds, "__dict__", state)
    return ds


def _shortcuts_agree() -> dict[str, bool]:
    """Which shortcuts build objects equal to pydicom's own, in this pydicom."""
    global _DATASET_STATE, _DATASET_FRESH
    agree: dict[str, bool] = {}
    mode = pydicom_config.settings.reading_validation_mode
    tag = BaseTag(0x00100020)
    try:
        normal = DataElement(tag, "LO", "x", validation_mode=mode)
        agree["element"] = vars(normal) == vars(_element_fast(tag, "LO", "x", mode))
    except Exception:
        agree["element"] = False
    try:
        normal = DataElement(tag, "LO", ["x", "y"], validation_mode=mode)
        fast = _multi_fast(tag, "LO", ["x", "y"], mode)
        agree["multi"] = vars(normal.value).keys() == vars(fast.value).keys()
    except Exception:
        agree["multi"] = False
    try:
        agree["person_name"] = all(
            vars(PersonName(name, validation_mode=mode))
            == vars(_person_name_fast(name, mode))
            for name in ("Doe^J", "A=B=", "")
        )
    except Exception:
        agree["person_name"] = False
    try:
        agree["uid"] = vars(UID("1.2")) == vars(_uid_fast("1.2")) == {}
    except Exception:
        agree["uid"] = False
    try:
        state = dict(vars(Dataset()))
        simple = (type(None), bool, int, float, str)
        fresh = {k: v for k, v in state.items() if type(v) is dict}
        agree["dataset"] = all(
            type(v) in simple
            or (k in fresh and all(type(x) in simple for x in v.values()))
            for k, v in state.items()
        )
        if agree["dataset"]:
            _DATASET_STATE = {k: v for k, v in state.items() if k not in fresh}
            _DATASET_FRESH = tuple(fresh.items())
            agree["dataset"] = vars(Dataset()) == vars(_dataset_fast())
    except Exception:
        agree["dataset"] = False
    return agree


_SHORTCUTS: Final = _shortcuts_agree()
_make_element = _element_fast if _SHORTCUTS["element"] else _element_slow
_make_multi = (
    _multi_fast if _SHORTCUTS["multi"] and _SHORTCUTS["element"] else _multi_slow
)
_person_name = _person_name_fast if _SHORTCUTS["person_name"] else _person_name_slow
_make_dataset = _dataset_fast if _SHORTCUTS["dataset"] else _dataset_slow
_make_uid: Callable[[str], UID] = _uid_fast if _SHORTCUTS["uid"] else UID


# ------------------------------------------------------------------- messages


def _error(key: str, problem: str, value: Any) -> ResponseFormatError:
    return ResponseFormatError(
        f"DICOM JSON attribute {key}: {problem}: {_snippet(value)}"
    )


def _snippet(value: Any) -> str:
    """A short quote of some input, at most about 100 characters."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value[: _SNIPPET_CHARS * 4]).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value[: _SNIPPET_CHARS * 4]
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=repr)
        except (ValueError, TypeError, RecursionError):
            text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    if len(text) > _SNIPPET_CHARS:
        text = text[: _SNIPPET_CHARS - 3] + "..."
    return repr(text)


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def _json_error_message(exc: json.JSONDecodeError, body: bytes | str) -> str:
    text = exc.doc if isinstance(exc.doc, str) else ""
    near = text[max(exc.pos - 40, 0) : exc.pos + 40] if text else ""
    message = (
        f"QIDO-RS answer is not valid JSON ({exc.msg} at line {exc.lineno} "
        f"column {exc.colno}); body starts with: {_snippet(body)}"
    )
    if text and exc.pos >= len(text.rstrip()):
        message += " (the body ends early: truncated?)"
    elif near:
        message += f"; near: {_snippet(near)}"
    return message
