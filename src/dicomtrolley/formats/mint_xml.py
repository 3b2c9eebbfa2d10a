"""MINT study search answers (XML) into MintStudy → MintSeries → MintInstance trees.

A MINT server (Vitrea Connection) answers ``GET {mint}/studies`` with XML in the
``http://medical.nema.org/mint`` namespace::

    <studySearchResults xmlns="http://medical.nema.org/mint" ...>
      <study studyUUID="..." version="1" lastModified="2021-08-09T06:42:04.325Z">
        <series>
          <instance><attr tag="00080018" vr="UI" val="1.2.3.4.5"/></instance>
          <attr tag="0020000e" vr="UI" val="1.2.3.4"/>
        </series>
        <attr tag="0020000d" vr="UI" val="1.2.3"/>
      </study>
    </studySearchResults>

Series appear only at SERIES and INSTANCE level, instances only at INSTANCE
level. This module is sans-I/O: :func:`parse_mint_xml` turns a whole body into
studies, :class:`MintXMLParser` does the same from chunks (``feed``/``close``).
It is lenient where servers differ: the MINT namespace or none, element names in
any case, ``attr`` elements before or after the child ``series``/``instance``
elements, tags of 8 hex digits in either case, a missing ``val`` (an empty
value), several values joined by ``\\``, VRs it does not know (the text is
kept). SQ attributes may hold ``item`` elements with their own ``attr``
children. A declared encoding that Python does not know is read as UTF-8.

Safety: the expat parser is set up by ``defusedxml`` with document type
declarations forbidden (a MINT answer has none; without a DTD there are no
entity declarations to expand and no external entities to fetch), and with its
guards against entity declarations and external references in place. Only the
element handlers are replaced by this module's own, which build the objects
directly, without an intermediate element tree and without pydicom's and
pydantic's checking constructors (the shortcuts of
:mod:`dicomtrolley.formats.fast_dataset`, and one for pydantic's
``model_construct`` here; all checked at import to build equal objects, else not
used): ``benchmarks/search_parse.py``
measured a 10,000 instance search in about a fifth of the time dicomtrolley
4.1.0 needed (ElementTree, then a pydicom ``DataElement`` per attribute through
``Dataset.__setitem__``).

Values are converted for their VR as pydicom does when it is given the text
(``UI`` → ``UID``, ``PN`` → ``PersonName``, ``IS`` → ``IS`` ...; see
:mod:`dicomtrolley.formats.mint_xml_values`). Errors raise
:class:`~dicomtrolley.exceptions.ResponseFormatError`: malformed XML, an HTML
page, a root other than ``studySearchResults``, a bad ``tag``, a document type
declaration, or a study, series or instance without its UID.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from collections.abc import Callable, MutableMapping
from typing import Any, ClassVar, Final
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError
from pydantic import BaseModel
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from dicomtrolley.core import DICOMObject, Instance, Series, Study
from dicomtrolley.exceptions import ResponseFormatError
from dicomtrolley.formats.fast_dataset import (
    gc_paused,
    make_dataset,
    make_element,
    make_uid,
    set_private_creator,
)
from dicomtrolley.formats.mint_xml_values import (
    SERIES_UID_TAG,
    SOP_UID_TAG,
    STUDY_UID_TAG,
    TAG_CACHE,
    Context,
    convert_attr,
    parse_tag,
)

__all__ = [
    "MINT_NAMESPACE",
    "MintAttribute",
    "MintInstance",
    "MintObject",
    "MintSeries",
    "MintStudy",
    "MintXMLParser",
    "parse_attribs",
    "parse_mint_xml",
]

MINT_NAMESPACE: Final = "http://medical.nema.org/mint"
_NS: Final = "{" + MINT_NAMESPACE + "}"

_Elements = MutableMapping[BaseTag, Any]  # a Dataset's _dict


# ------------------------------------------------------------------ the model


class MintObject(DICOMObject):
    """A study, series or instance read from MINT XML."""

    xml_element: ClassVar[str]


class MintInstance(Instance, MintObject):
    """An instance from a MINT search (INSTANCE level)."""

    xml_element: ClassVar[str] = _NS + "instance"
    parent: MintSeries

    @classmethod
    def init_from_element(cls, element: Element, parent: MintSeries) -> MintInstance:
        """An instance from an ``instance`` element of a parsed tree."""
        built = _replay(element, _INSTANCE, parent)
        assert isinstance(built, MintInstance)
        return built


class MintSeries(Series, MintObject):
    """A series from a MINT search (SERIES or INSTANCE level)."""

    xml_element: ClassVar[str] = _NS + "series"
    instances: list[MintInstance]
    parent: MintStudy

    @classmethod
    def init_from_element(cls, element: Element, parent: MintStudy) -> MintSeries:
        """A series (and its instances) from a ``series`` element."""
        built = _replay(element, _SERIES, parent)
        assert isinstance(built, MintSeries)
        return built


class MintStudy(Study, MintObject):
    """A study from a MINT search, with MINT's own id and modification time.

    ``mint_uuid`` is the ``studyUUID`` attribute (MINT's id, not a DICOM UID);
    ``last_modified`` the ``lastModified`` attribute as sent (ISO 8601, UTC).
    """

    xml_element: ClassVar[str] = _NS + "study"
    mint_uuid: str
    last_modified: str
    series: list[MintSeries]

    @classmethod
    def init_from_element(cls, element: Element) -> MintStudy:
        """A study (and its series and instances) from a ``study`` element."""
        built = _replay(element, _STUDY, None)
        assert isinstance(built, MintStudy)
        return built

    def dump_content(self) -> str:
        """All attributes of the study, its series and instances, for a quick look."""
        output = [str(self.data)]
        for series in self.series:
            output.append(str(series.data))
            output.extend(str(instance.data) for instance in series.instances)
        return "\n".join(output)


class MintAttribute:
    """A DICOM element in MINT XML: ``<attr tag="00100020" vr="LO" val="001"/>``."""

    xml_element = _NS + "attr"


MintInstance.model_rebuild()
MintSeries.model_rebuild()
MintStudy.model_rebuild()


def _construct_slow(cls: type[BaseModel], values: dict[str, Any]) -> Any:
    return cls.model_construct(**values)


def _construct_fast(cls: type[BaseModel], values: dict[str, Any]) -> Any:
    # What model_construct does for a model without defaults, aliases or
    # private attributes, without its loop over the fields.
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _construct_agrees() -> bool:
    """True when _construct_fast builds what model_construct builds."""
    names = (
        "__dict__",
        "__pydantic_fields_set__",
        "__pydantic_extra__",
        "__pydantic_private__",
    )
    try:
        data = Dataset()
        study = {"uid": "1", "data": data, "series": [], "mint_uuid": "u"}
        study["last_modified"] = "t"
        checks: list[tuple[type[BaseModel], dict[str, Any]]] = [(MintStudy, study)]
        slow_study = _construct_slow(MintStudy, dict(study))
        series = {"uid": "2", "data": data, "parent": slow_study, "instances": []}
        checks.append((MintSeries, series))
        checks.append((MintInstance, {"uid": "3", "data": data, "parent": None}))
        return all(
            getattr(_construct_slow(cls, dict(v)), name, None)
            == getattr(_construct_fast(cls, dict(v)), name, None)
            for cls, v in checks
            for name in names
        )
    except Exception:
        return False


_construct: Callable[[type[BaseModel], dict[str, Any]], Any] = (
    _construct_fast if _construct_agrees() else _construct_slow
)


# ------------------------------------------------------------- the tree builder

# Element kinds, by local name (any case); elements in another namespace are
# _OTHER and skipped with everything inside them.
_OTHER, _RESULTS, _STUDY, _SERIES, _INSTANCE, _ATTR, _ITEM, _SEQUENCE = range(8)
_LOCAL_KINDS: Final = {
    "studysearchresults": _RESULTS,
    "study": _STUDY,
    "series": _SERIES,
    "instance": _INSTANCE,
    "attr": _ATTR,
    "item": _ITEM,
}
_KIND_CACHE: dict[str, int] = {}
_NOT_CONVERTED: Final = object()  # a value left to convert_attr
_PARENT_KIND: Final = {_STUDY: _RESULTS, _SERIES: _STUDY, _INSTANCE: _SERIES}
_KIND_NAMES: Final = {
    _RESULTS: "studySearchResults",
    _STUDY: "study",
    _SERIES: "series",
    _INSTANCE: "instance",
}


def _kind_of(name: str) -> int:
    """The kind of an element named ``uri}local``, ``{uri}local`` or ``local``."""
    kind = _KIND_CACHE.get(name)
    if kind is not None:
        return kind
    namespace, separator, local = name.rpartition("}")
    kind = _LOCAL_KINDS.get(local.lower(), _OTHER)
    if separator and namespace.lstrip("{").rstrip("/").lower() != MINT_NAMESPACE:
        kind = _OTHER
    if len(_KIND_CACHE) < 1024:
        _KIND_CACHE[name] = kind
    return kind


def _attr_fields(attrs: list[str]) -> tuple[str | None, str | None, str | None]:
    """tag, vr and val from an attribute list, names in any case."""
    found: dict[str, str] = {}
    for index in range(0, len(attrs) - 1, 2):
        found[attrs[index].rpartition("}")[2].lower()] = attrs[index + 1]
    return found.get("tag"), found.get("vr"), found.get("val")


def _attribute(attrs: list[str], wanted: str) -> str:
    """One XML attribute's value from an attribute list (name in any case)."""
    for index in range(0, len(attrs) - 1, 2):
        if attrs[index].rpartition("}")[2].lower() == wanted:
            return attrs[index + 1]
    return ""


def _uid(elements: _Elements, tag: BaseTag) -> str:
    """The UID at tag in a dataset's elements, or ""."""
    elem = elements.get(tag)
    if elem is None:
        return ""
    value = elem._value if type(elem) is DataElement else elem.value
    if type(value) is UID:  # made by this module: stripped already
        return value
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else ""
    return "" if value is None else str(value).strip()


class _Builder:
    """Turns element start/end events into linked MintStudy/Series/Instance objects.

    Events come from expat (names ``uri}local``, attributes as a flat list) or
    from a parsed element tree (:func:`_walk`). ``top`` is the kind of the
    outermost element expected: the results root, or one study, series or
    instance (with ``parent``) for the 4.1.0 ``init_from_element`` methods.
    With ``item``, attrs go into that dataset (for :func:`parse_attribs`).

    The two handlers are closures over the parse state rather than methods:
    expat calls them for every element, and that is where the time goes.
    """

    def __init__(
        self, top: int = _RESULTS, parent: Any = None, item: Dataset | None = None
    ) -> None:
        self.ctx = Context()
        self.studies: list[MintStudy] = []
        self.top = top
        self.parent = parent
        self.built: Any = None
        self.started = item is not None
        # frames: (kind, object, its attrs' elements or None)
        self._stack: list[tuple[int, Any, _Elements | None]] = []
        if item is not None:
            self._stack.append((_ITEM, item, item._dict))
        self.element_start, self.element_end = self._handlers()

    def _handlers(
        self,
    ) -> tuple[Callable[[str, list[str]], None], Callable[[str], None]]:
        stack = self._stack
        ctx = self.ctx
        mode = ctx.mode
        kinds = _KIND_CACHE
        tags = TAG_CACHE
        new_element = make_element
        new_uid = make_uid
        convert = convert_attr
        plain_vrs = ctx.plain_vrs
        caches = ctx.caches
        items = ctx.items
        uids = ctx.uids
        open_frame = self._open
        new_dataset = make_dataset
        construct = _construct
        caller_parent = self.parent
        finish = self._finish
        skip = 0  # depth inside an element whose content is ignored
        elements: _Elements | None = stack[-1][2] if stack else None

        def element_start(name: str, attrs: list[str]) -> None:
            nonlocal skip, elements
            if skip:
                skip += 1
                return
            kind = kinds.get(name)
            if kind is None:
                kind = _kind_of(name)
            if kind != _ATTR or elements is None:
                if kind == _INSTANCE and stack and stack[-1][0] == _SERIES:
                    # The most common frame, inline (see _open).
                    series = stack[-1][1]
                    data = new_dataset()
                    instance = construct(
                        MintInstance, {"uid": "", "data": data, "parent": series}
                    )
                    if series is not caller_parent:
                        series.instances.append(instance)
                    elements = data._dict
                    stack.append((_INSTANCE, instance, elements))
                elif open_frame(name, kind, attrs):
                    elements = stack[-1][2]
                else:
                    skip = 1  # something else: ignored, with its content
                return
            # An attr of the current study, series, instance or SQ item.
            if (
                len(attrs) == 6
                and attrs[0] == "tag"
                and attrs[2] == "vr"
                and attrs[4] == "val"
            ):
                tag_text: str | None = attrs[1]
                vr: str | None = attrs[3]
                text: str | None = attrs[5]
            else:
                tag_text, vr, text = _attr_fields(attrs)
            tag = tags.get(tag_text) if tag_text is not None else None
            if tag is None:
                tag = parse_tag(tag_text)
            value: Any = _NOT_CONVERTED
            if not text or vr is None or "\\" in text:
                pass  # empty, several values or no VR: convert_attr below
            elif vr == "UI":  # one value of a common VR: converted here
                value = uids.get(text)
                if value is None:
                    value = uids[text] = new_uid(text.strip())
            elif vr in plain_vrs:
                value = text
            elif vr in caches:
                value = caches[vr].get(text)
                if value is None:
                    value = items[vr](text)
            # (vr is None only where nothing was converted; the test tells mypy)
            if value is _NOT_CONVERTED or vr is None:
                if vr is not None and vr.strip().upper() == "SQ":
                    # Its items come as child elements.
                    elem = new_element(tag, "SQ", Sequence(), mode)
                    elements[tag] = elem
                    stack.append((_SEQUENCE, elem.value, None))
                    elements = None
                    return
                elem = convert(tag, vr, text, ctx)
            else:
                elem = new_element(tag, vr, value, mode)
            if tag & 0x10000:
                set_private_creator(elements, tag, elem)
            elements[tag] = elem
            skip = 1  # whatever is inside an attr is ignored

        def element_end(name: str) -> None:
            nonlocal skip, elements
            if skip:
                skip -= 1
                return
            kind, obj, own = stack.pop()
            elements = stack[-1][2] if stack else None
            if kind == _INSTANCE and stack and own is not None:  # common: inline
                elem = own.get(SOP_UID_TAG)
                if elem is not None and type(elem) is DataElement:
                    uid = elem._value
                    if uid and type(uid) is UID:
                        obj.__dict__["uid"] = uid
                        return
            if _STUDY <= kind <= _INSTANCE:
                finish(kind, obj)

        return element_start, element_end

    def close(self) -> list[MintStudy]:
        return self.studies

    def _open(self, name: str, kind: int, attrs: list[str]) -> bool:
        """Push a frame for a study, series, instance or SQ item; False: skip it."""
        stack = self._stack
        if not stack:
            if self.started or kind != self.top:
                local = name.rpartition("}")[2]
                raise ResponseFormatError(
                    f"not a MINT {_KIND_NAMES.get(self.top, 'search')} answer: the "
                    f"XML root element is <{local}>, not <{_KIND_NAMES.get(self.top)}>"
                )
            self.started = True
            if kind == _RESULTS:
                stack.append((_RESULTS, None, None))
                return True
            # One object of a parsed tree: its parent frame is the caller's.
            stack.append((_PARENT_KIND[kind], self.parent, None))
            self._open(name, kind, attrs)
            del stack[0]
            return True
        parent_kind, parent, _ = stack[-1]
        data = make_dataset()
        if kind == _INSTANCE and parent_kind == _SERIES:
            obj = _construct(MintInstance, {"uid": "", "data": data, "parent": parent})
            if parent is not self.parent:  # the caller links its own objects
                parent.instances.append(obj)
        elif kind == _SERIES and parent_kind == _STUDY:
            fields = {"uid": "", "data": data, "parent": parent, "instances": []}
            obj = _construct(MintSeries, fields)
            if parent is not self.parent:
                parent.series.append(obj)
        elif kind == _STUDY and parent_kind == _RESULTS:
            fields = {
                "uid": "",
                "data": data,
                "series": [],
                "mint_uuid": _attribute(attrs, "studyuuid"),
                "last_modified": _attribute(attrs, "lastmodified"),
            }
            obj = _construct(MintStudy, fields)
            self.studies.append(obj)
        elif kind == _ITEM and parent_kind == _SEQUENCE:
            parent.append(data)
            obj = data
        else:
            return False
        stack.append((kind, obj, data._dict))
        return True

    def _finish(self, kind: int, obj: Any) -> None:
        """Give a finished study, series or instance its UID from its attrs."""
        elements = obj.data._dict
        if kind == _INSTANCE:
            uid = _uid(elements, SOP_UID_TAG)
            if not uid:
                raise ResponseFormatError(
                    f"MINT answer: an instance of series {obj.parent.uid or '?'} "
                    "has no SOPInstanceUID (attr 00080018)"
                )
        elif kind == _SERIES:
            uid = _uid(elements, SERIES_UID_TAG)
            if not uid:
                raise ResponseFormatError(
                    "MINT answer: a series has no SeriesInstanceUID (attr 0020000e)"
                )
        else:
            uid = _uid(elements, STUDY_UID_TAG)
            if not uid:
                raise ResponseFormatError(
                    f"MINT answer: study {obj.mint_uuid or '?'} has no "
                    "StudyInstanceUID (attr 0020000d)"
                )
        obj.__dict__["uid"] = uid
        if not self._stack:  # the outermost object of a parsed tree
            self.built = obj


def _walk(builder: _Builder, node: Element) -> None:
    """Send the events for node and everything in it to builder."""
    name = node.tag if isinstance(node.tag, str) else ""  # comments, PIs
    builder.element_start(name, [text for pair in node.attrib.items() for text in pair])
    for child in node:
        _walk(builder, child)
    builder.element_end(name)


def _replay(element: Element, top: int, parent: Any) -> MintObject:
    """One study, series or instance from a parsed element tree (4.1.0 style)."""
    builder = _Builder(top=top, parent=parent)
    _walk(builder, element)
    built: MintObject = builder.built
    return built


def parse_attribs(element: Element) -> Dataset:
    """The ``attr`` children of a parsed MINT element as a pydicom Dataset.

    element may come from any ElementTree parser; its attrs may be in the MINT
    namespace or none, their names in any case. Other children are ignored.
    """
    dataset = make_dataset()
    builder = _Builder(top=_ITEM, item=dataset)
    for child in element:
        _walk(builder, child)
    return dataset


# --------------------------------------------------------------------- parsing

_SNIPPET_BYTES: Final = 300


class _Target:
    """A defusedxml XMLParser target that only answers close()."""

    def __init__(self, builder: _Builder) -> None:
        self.builder = builder

    def close(self) -> list[MintStudy]:
        return self.builder.close()


class MintXMLParser:
    """Incremental MINT search answer parser: ``feed(bytes)`` chunks, ``close()``.

    Chunks may be split anywhere, also inside a tag or a UTF-8 character.

    Parameters
    ----------
    encoding:
        Overrides the encoding declared in the document (for text that was
        decoded already). By default the declaration is honoured; one that
        Python does not know is read as UTF-8.

    Raises
    ------
    ResponseFormatError
        From feed() or close(), when the bytes are not a MINT search answer.
    """

    def __init__(self, encoding: str | None = None) -> None:
        self._encoding = encoding
        self._start = bytearray()  # the first bytes, for error messages
        self._unparsed_head: bytearray | None = bytearray()  # until the root starts
        self._closed = False
        self._new_parser(encoding)

    def _new_parser(self, encoding: str | None) -> None:
        self._builder = _Builder()
        self._parser = DefusedXMLParser(
            target=_Target(self._builder),
            encoding=encoding,
            forbid_dtd=True,  # MINT has none; no DTD, no entities
            forbid_entities=True,
            forbid_external=True,
        )
        expat = self._parser.parser
        expat.StartElementHandler = self._builder.element_start
        expat.EndElementHandler = self._builder.element_end
        # Text between elements means nothing in MINT: no handler, no calls.
        expat.DefaultHandlerExpand = None
        expat.CharacterDataHandler = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse the next chunk of the answer."""
        if self._closed:
            raise ResponseFormatError("MintXMLParser.feed() called after close()")
        chunk = data if isinstance(data, bytes) else bytes(data)
        if not chunk:
            return
        if len(self._start) < _SNIPPET_BYTES:
            self._start += chunk[: _SNIPPET_BYTES - len(self._start)]
        if self._unparsed_head is not None:
            self._unparsed_head += chunk
        with gc_paused():
            self._run(lambda: self._parser.feed(chunk), closing=False)

    def close(self) -> list[MintStudy]:
        """Finish parsing; the studies found, in document order."""
        if self._closed:
            raise ResponseFormatError("MintXMLParser.close() called twice")
        self._closed = True
        if not self._start:
            raise ResponseFormatError("MINT answer is empty: expected XML")
        with gc_paused():
            studies: list[MintStudy] = self._run(
                lambda: self._parser.close(), closing=True
            )
        return studies

    def _run(self, step: Callable[[], Any], closing: bool) -> Any:
        """Run a feed or close step, turning what goes wrong into our errors."""
        try:
            result = step()
        except LookupError as error:
            head = self._unparsed_head
            if self._encoding is not None or head is None:
                raise ResponseFormatError(
                    f"MINT answer declares an unknown encoding ({error})"
                ) from error
            # An encoding declaration Python does not know (seen: "UTF-3"):
            # start again, reading the bytes as UTF-8.
            self._encoding = "utf-8"
            self._new_parser("utf-8")
            again = bytes(head)
            self._run(lambda: self._parser.feed(again), closing=False)
            return self._run(lambda: self._parser.close(), True) if closing else None
        except (ParseError, xml.parsers.expat.ExpatError) as error:
            message = _syntax_message(error, bytes(self._start))
            raise ResponseFormatError(message) from error
        except ResponseFormatError as error:
            if _looks_like_html(bytes(self._start)):  # an error page as XHTML
                message = _syntax_message(error, bytes(self._start))
                raise ResponseFormatError(message) from error
            raise
        except DefusedXmlException as error:
            if _looks_like_html(bytes(self._start)):  # <!DOCTYPE html>
                message = _syntax_message(error, bytes(self._start))
                raise ResponseFormatError(message) from error
            raise ResponseFormatError(
                "MINT answer refused: it has a document type declaration (DTD), "
                f"which MINT answers never have and which can declare entities "
                f"({error})"
            ) from error
        if self._builder.started:
            self._unparsed_head = None  # the declaration is behind us
        return result


def parse_mint_xml(body: bytes | bytearray | memoryview | str) -> list[MintStudy]:
    """The studies in a MINT study search answer (the whole body at once).

    A ``str`` is taken as already decoded text (its encoding declaration is
    ignored, as ElementTree does).

    Raises
    ------
    ResponseFormatError
        When body is not a MINT search answer.
    """
    if isinstance(body, str):
        parser = MintXMLParser(encoding="utf-8")
        parser.feed(body.encode("utf-8"))
    else:
        parser = MintXMLParser()
        parser.feed(body)
    return parser.close()


def _looks_like_html(head: bytes) -> bool:
    start = head[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html")) or b"<html" in start


def _syntax_message(error: Exception, head: bytes) -> str:
    if head and _looks_like_html(head):
        title = re.search(rb"<title[^>]*>(.*?)</title>", head, re.I | re.S)
        shown = (
            " ".join(title.group(1).decode("utf-8", "replace").split())
            if title
            else _snippet(head)
        )
        return f"MINT server answered an HTML page instead of XML: {shown}"
    return (
        f"MINT answer is not well-formed XML ({error}); starts with: {_snippet(head)}"
    )


def _snippet(head: bytes) -> str:
    text = " ".join(head[:_SNIPPET_BYTES].decode("utf-8", "replace").split())
    if len(text) > 120:
        text = text[:117] + "..."
    return repr(text) if text else "(nothing)"
