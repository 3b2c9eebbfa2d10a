"""Fast construction of pydicom objects, shared by the search answer parsers.

The DICOM JSON parser (:mod:`dicomtrolley.formats.dicom_json`, QIDO-RS) and the
MINT XML parser (:mod:`dicomtrolley.formats.mint_xml`) turn answers with
thousands of results into pydicom :class:`~pydicom.dataset.Dataset` objects. They
convert every value for its VR themselves and then build the objects with the
functions here:

* :func:`make_dataset`: an empty ``Dataset``; parsers put elements into its
  ``_dict`` directly, calling :func:`set_private_creator` for private tags where
  ``Dataset.__setitem__`` would name the creator;
* :func:`make_element`: a ``DataElement`` holding a converted value;
* :func:`make_multi`: a ``DataElement`` holding a ``MultiValue`` of converted
  values;
* :func:`person_name`, :func:`empty_person_name`: ``PersonName`` values;
* :func:`make_uid`: a ``UID`` value;
* :func:`gc_paused`: pauses Python's cyclic garbage collector while an answer
  is parsed;
* :func:`dictionary_vr` and the VR groups ``TEXT_VRS``, ``INT_VRS``,
  ``FLOAT_VRS`` and ``DATETIME_VRS``, which both parsers go by.

Why hand-written: pydicom's own constructors are correct but slow for bulk
answers. ``DataElement``, ``MultiValue``, ``PersonName`` and ``UID`` run
Python-level ``__init__`` logic (value conversion, validation against the VR
rules of PS3.5), and ``Dataset`` checks keywords in ``__setattr__`` and tags and
private blocks in ``__setitem__``;
:meth:`Dataset.from_json <pydicom.dataset.Dataset.from_json>` adds a converter
object and a signature inspection per element. The builders here set the same
attributes directly, with no per-element validation. That, with the collector
paused, is what makes the parsers fast: ``benchmarks/dicom_json_micro.py``
measured the DICOM JSON parser at about 10 times the speed of ``json.loads`` plus
``Dataset.from_json`` for a 10,000 instance answer (0.36 s against 3.7 s on a 2
core machine; 8 times with the collector paused for both), and
``benchmarks/search_parse.py`` a 10,000 instance MINT search in about a fifth of
the time dicomtrolley 4.1.0 needed (ElementTree, then a ``DataElement`` per
attribute through ``Dataset.__setitem__``).

The price is that values are not validated: under pydicom's ``RAISE`` reading
validation mode pydicom would refuse values that these builders accept (in the
default ``WARN`` mode it would only warn). Both parsers still make ``IS`` and
``DS`` values from text with pydicom's own constructors, which check them.

The shortcuts rely on which attributes pydicom's constructors set. At import
time each one is checked to build an object equal, attribute for attribute, to
one built the normal way; :data:`SHORTCUTS` records the outcome. Where a future
pydicom differs, the public name is bound to the normal constructor instead:
slower, still right.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Final

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import PersonName

__all__ = [
    "DATETIME_VRS",
    "FLOAT_VRS",
    "INT_VRS",
    "SHORTCUTS",
    "TEXT_VRS",
    "dictionary_vr",
    "empty_person_name",
    "gc_paused",
    "make_dataset",
    "make_element",
    "make_multi",
    "make_uid",
    "person_name",
    "set_private_creator",
]

# VR groups (PS3.5 table 6.2-1): the string VRs whose values stay text, unless
# pydicom.config.datetime_conversion makes DA/DT/TM objects of the date/time VRs;
# the binary integer and float VRs.
TEXT_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UR", "UT"}
)
DATETIME_VRS: Final = frozenset({"DA", "DT", "TM"})
INT_VRS: Final = frozenset({"SL", "SS", "SV", "UL", "US", "UV"})
FLOAT_VRS: Final = frozenset({"FD", "FL"})

_new = object.__new__
_new_str = str.__new__
_setattr = object.__setattr__


# ------------------------------------------------------------ garbage collector

_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_paused_by_us = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large answer is converted.

    Parsing allocates hundreds of thousands of containers (elements, datasets,
    decoded JSON dicts and lists); every 700 of them the collector runs and the
    older generations are walked again and again as the heap grows: for 10,000
    instances that is about as much time as the conversion itself. Parsing
    makes next to no cyclic garbage (reference counting frees what is dropped),
    so the pause costs no memory. Safe with threads: the first of
    concurrent parses pauses the collector and the last one resumes it, and only
    if it was running before.
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


# ------------------------------------------------------------------- elements


def _element_slow(tag: BaseTag, vr: str, value: Any, mode: int) -> DataElement:
    return DataElement(tag, vr, value, already_converted=True, validation_mode=mode)


def _element_fast(tag: BaseTag, vr: str, value: Any, mode: int) -> DataElement:
    """A DataElement with value (converted for vr already), without checks."""
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
    elem = make_element(tag, vr, None, mode)
    elem._value = MultiValue(elem._convert, items)
    return elem


def _multi_fast(tag: BaseTag, vr: str, items: list[Any], mode: int) -> DataElement:
    """A DataElement whose value is a MultiValue of items (converted already)."""
    elem = _element_fast(tag, vr, None, mode)
    multi: MultiValue[Any] = _new(MultiValue)
    # Items are converted already; the constructor serves later appends.
    multi._constructor = elem._convert
    multi._list = items
    elem._value = multi
    return elem


def dictionary_vr(tag: BaseTag) -> str:
    """The VR for an element sent without one: the dictionary's, UN if unknown."""
    if tag & 0x10000:
        return "UN"
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def set_private_creator(
    elements: MutableMapping[BaseTag, Any], tag: BaseTag, elem: DataElement
) -> None:
    """As ``Dataset.__setitem__``: name a private element's creator, if known.

    elements is the ``_dict`` of the dataset that elem (at tag) goes into.
    """
    creator = BaseTag((tag & 0xFFFF0000) | ((tag & 0xFF00) >> 8))
    if creator != tag and creator in elements:
        elem.private_creator = elements[creator].value


# --------------------------------------------------------------------- values


def _person_name_slow(name: str, mode: int) -> PersonName:
    return PersonName(name, validation_mode=mode)


def _person_name_fast(name: str, mode: int) -> PersonName:
    """A PersonName from its DICOM string (component groups split by "=")."""
    components = name.split("=")
    while components and not components[-1]:
        components.pop()
    person: PersonName = _new(PersonName)
    person._components = tuple(components)
    person.validation_mode = mode
    person.original_string = None  # type: ignore[assignment]  # as PersonName(str)
    person.encodings = None
    return person


def empty_person_name(mode: int) -> PersonName:
    """pydicom's empty PN value: PersonName(PersonName("")), components ("",)."""
    if person_name is _person_name_fast:
        person = _person_name_fast("", mode)
        person._components = ("",)
        return person
    return PersonName(PersonName(""), validation_mode=mode)


def _uid_fast(value: str) -> UID:
    """A UID from value (stripped already), without UID's own __new__."""
    uid: UID = _new_str(UID, value)
    return uid


# ------------------------------------------------------------------- datasets


def _dataset_slow() -> Dataset:
    return Dataset()


# Filled in by _shortcuts_agree: the state of a new Dataset, and the dicts in it
# that each Dataset needs its own copy of.
_DATASET_STATE: dict[str, Any] = {}
_DATASET_FRESH: tuple[tuple[str, dict[str, Any]], ...] = ()


def _dataset_fast() -> Dataset:
    """An empty Dataset: a copy of a new one's state, without Dataset.__init__."""
    ds: Dataset = _new(Dataset)
    state = _DATASET_STATE.copy()
    for name, template in _DATASET_FRESH:
        state[name] = template.copy()
    _setattr(ds, "__dict__", state)
    return ds


# ------------------------------------------------------ checked at import time


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


# Which shortcuts are in use ("element", "multi", "person_name", "uid",
# "dataset"): True where the shortcut builds what pydicom's constructor builds.
SHORTCUTS: Final[Mapping[str, bool]] = MappingProxyType(_shortcuts_agree())

# The builders: the shortcuts where they agree with pydicom, else its constructors.
make_element = _element_fast if SHORTCUTS["element"] else _element_slow
make_multi = _multi_fast if SHORTCUTS["multi"] and SHORTCUTS["element"] else _multi_slow
person_name = _person_name_fast if SHORTCUTS["person_name"] else _person_name_slow
make_dataset = _dataset_fast if SHORTCUTS["dataset"] else _dataset_slow
make_uid: Callable[[str], UID] = _uid_fast if SHORTCUTS["uid"] else UID
