"""MINT study search as Vitrea Connection answers it: ``GET /rest/api/vault/mint/studies``.

Request: DICOM keywords as parameter names (PatientName, PatientID,
AccessionNumber, StudyInstanceUID, SeriesInstanceUID, ModalitiesInStudy,
InstitutionName, PatientSex, StudyDescription, SeriesDescription,
InstitutionalDepartmentName, PatientBirthDate), ``QueryLevel`` (required),
``IncludeFields`` (comma-joined keywords, may repeat), ``limit`` (studies; 0 or
absent: all) and ``min_study_date``/``max_study_date`` (YYYYMMDD, both or
neither). Parameter names match case-insensitively and without underscores, so
``minStudyDate`` and ``QUERYLEVEL`` work too; when a parameter is repeated the
first one counts. Values match as in :mod:`~dicomtrolley.emulator.matching`
(wildcards, case-insensitive person names, ``CT\\MR`` lists). Unknown parameters,
unknown or disallowed include fields and malformed values: 400 with an HTML page
that names the culprit.

Response (namespace ``http://medical.nema.org/mint``)::

    <studySearchResults xmlns=... QueryLevel="SERIES" queryfields="PatientID=1"
                        includefields="PatientName">
      <study studyUUID="..." version="1" lastModified="2024-02-29T23:59:59.000Z">
        <series><attr tag="0020000e" vr="UI" val="1.2.3"/></series>
        <attr tag="00100010" vr="PN" val="Doe^John"/>
        <attr tag="0020000d" vr="UI" val="1.2"/>
      </study>
    </studySearchResults>

``queryfields`` echoes the matching parameters as ``name=value`` joined by
``&``, names as the client spelled them; ``includefields`` echoes the include
fields comma-joined and is left out when none were asked for. Children
(``series``, ``instance``) come before a level's ``attr`` elements, as in
recordings of Vitrea; included attributes come in the order asked, the level's
default attribute(s) last. Each included attribute goes to the level that holds
it (study, series or instance); at SERIES level the promotable instance
attributes go to the series, and only when every instance agrees. An attribute
absent from the data is left out; one present without a value has no ``val``;
several values are joined with ``\\``. Sequences nest ``item`` elements holding
``attr`` elements (an assumption: no recording shows one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from dicomtrolley.emulator.attributes import (
    INSTANCE_TAGS,
    PROMOTABLE_TAGS,
    SERIES_TAGS,
    SERIES_UID,
    SOP_UID,
    STUDY_TAGS,
    STUDY_UID,
    TRANSFER_SYNTAX_UID,
    Level,
    keyword_of,
    resolve_attribute,
    tag_of,
)
from dicomtrolley.emulator.index import StudyRecord
from dicomtrolley.emulator.matching import (
    Condition,
    MatchingError,
    StudyMatch,
    make_condition,
    search,
)
from dicomtrolley.emulator.server import HTTPError, Request, Response, Route
from dicomtrolley.emulator.service import Service
from dicomtrolley.fields import (
    InstanceLevel,
    SeriesLevel,
    SeriesLevelPromotable,
    StudyLevel,
)

MINT_ROOT = "/rest/api/vault/mint"
MINT_NAMESPACE = "http://medical.nema.org/mint"
CONTENT_TYPE = "application/xml;charset=UTF-8"

SEARCH_KEYWORDS = (
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "ModalitiesInStudy",
    "InstitutionName",
    "PatientSex",
    "StudyDescription",
    "SeriesDescription",
    "InstitutionalDepartmentName",
    "PatientBirthDate",
)
_QUERY_LEVEL, _INCLUDE, _LIMIT = "QueryLevel", "IncludeFields", "limit"
_MIN_DATE, _MAX_DATE = "min_study_date", "max_study_date"


def _normal(name: str) -> str:
    return name.replace("_", "").lower()


_PARAMETERS = {
    _normal(name): name
    for name in (*SEARCH_KEYWORDS, _QUERY_LEVEL, _INCLUDE, _LIMIT, _MIN_DATE, _MAX_DATE)
}

#: Include fields allowed per query level (dicomtrolley.fields, Vitrea 8.2 manual).
ALLOWED_FIELDS: Mapping[Level, frozenset[str]] = {
    Level.STUDY: frozenset(StudyLevel.fields),
    Level.SERIES: frozenset(
        StudyLevel.fields | SeriesLevel.fields | SeriesLevelPromotable.fields
    ),
    Level.INSTANCE: frozenset(
        StudyLevel.fields
        | SeriesLevel.fields
        | SeriesLevelPromotable.fields
        | InstanceLevel.fields
    ),
}
_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})(T.*)?")


@dataclass(frozen=True)
class MintQuery:
    """A parsed MINT search: what to match, how deep, what to return."""

    level: Level
    conditions: tuple[Condition, ...]
    include: tuple[str, ...]  # DICOM JSON tags, in the order asked
    query_fields: str  # the queryfields echo
    include_fields: str  # the includefields echo ("" when none were asked)
    limit: int = 0


def parse_query(parameters: Sequence[tuple[str, str]]) -> MintQuery:
    """A MintQuery from the decoded query string; HTTPError 400 when malformed."""
    given: dict[str, tuple[str, str]] = {}
    order: list[str] = []
    includes: list[str] = []
    for name, value in parameters:
        canonical = _PARAMETERS.get(_normal(name))
        if canonical is None:
            raise _bad(f"Unknown query parameter '{name}'")
        if canonical == _INCLUDE:
            includes.extend(f.strip() for f in value.split(",") if f.strip())
        elif canonical not in given:
            given[canonical] = (name, value)
            order.append(canonical)

    level_text = given.get(_QUERY_LEVEL, ("", ""))[1].strip().upper()
    if not level_text:
        raise _bad("QueryLevel is required: STUDY, SERIES or INSTANCE")
    if level_text not in Level.__members__:
        raise _bad(f"Invalid QueryLevel '{level_text}': use STUDY, SERIES or INSTANCE")
    level = Level(level_text)

    limit_text = given.get(_LIMIT, ("", "0"))[1].strip() or "0"
    if not limit_text.isdigit():
        raise _bad(f"Invalid limit '{limit_text}': expected a whole number")

    conditions: list[Condition] = []
    for keyword in SEARCH_KEYWORDS:
        if keyword in given:
            conditions.extend(_condition(keyword, given[keyword][1]))
    dates = [given[key][1].strip() for key in (_MIN_DATE, _MAX_DATE) if key in given]
    dates = [date for date in dates if date]
    if len(dates) == 1:
        raise _bad("min_study_date and max_study_date must be given together")
    if dates:
        low, high = (_date(date) for date in dates)
        conditions.extend(_condition("StudyDate", f"{low}-{high}"))

    include: list[str] = []
    for name in includes:
        tag = resolve_attribute(name)
        keyword = keyword_of(tag) if tag else ""
        if not keyword:
            raise _bad(f"Unknown IncludeFields attribute '{name}'")
        if keyword not in ALLOWED_FIELDS[level]:
            raise _bad(
                f"IncludeFields attribute '{keyword}' is not allowed at QueryLevel "
                f"{level.value}"
            )
        if tag not in include:
            include.append(str(tag))

    echo = [
        f"{given[key][0]}={given[key][1]}"
        for key in order
        if key not in (_QUERY_LEVEL, _LIMIT) and given[key][1].strip()
    ]
    return MintQuery(
        level=level,
        conditions=tuple(conditions),
        include=tuple(include),
        query_fields="&".join(echo),
        include_fields=",".join(includes),
        limit=int(limit_text),
    )


def _bad(message: str) -> HTTPError:
    return HTTPError(400, message)


def _condition(keyword: str, value: str) -> list[Condition]:
    tag = tag_of(keyword)
    assert tag is not None
    try:
        condition = make_condition(tag, value)
    except MatchingError as error:
        raise _bad(f"Invalid value for {keyword}: {error}") from None
    return [condition] if condition else []


def _date(text: str) -> str:
    match = _DATE.fullmatch(text)
    if not match:
        raise _bad(f"Invalid study date '{text}': expected YYYYMMDD")
    return "".join(match.group(1, 2, 3))


# -- the answer -----------------------------------------------------------------


def render(matches: Sequence[StudyMatch], query: MintQuery) -> bytes:
    """The studySearchResults document for the matches (limit applied here)."""
    level = query.level
    include = query.include
    root = (
        f'<studySearchResults xmlns="{MINT_NAMESPACE}" '
        f"QueryLevel={_quote(level.value)} queryfields={_quote(query.query_fields)}"
    )
    if query.include_fields:
        root += f" includefields={_quote(query.include_fields)}"
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>', root + ">"]
    study_tags = _order(include, STUDY_TAGS, (STUDY_UID,))
    series_own = SERIES_TAGS | PROMOTABLE_TAGS if level == Level.SERIES else SERIES_TAGS
    series_tags = _order(include, series_own, (SERIES_UID,))
    instance_tags = _order(include, INSTANCE_TAGS, (SOP_UID, TRANSFER_SYNTAX_UID))
    selected = matches[: query.limit] if query.limit else matches
    for match in selected:
        out.append(_study_open(match.record))
        if level != Level.STUDY:
            for series in match.series:
                out.append("<series>")
                if level == Level.INSTANCE:
                    for instance in series.instances:
                        out.append("<instance>")
                        out.extend(_attrs(instance.attrs, instance_tags))
                        out.append("</instance>")
                out.extend(_attrs(series.record.attrs, series_tags))
                out.append("</series>")
        out.extend(_attrs(match.record.attrs, study_tags))
        out.append("</study>")
    out.append("</studySearchResults>")
    return "".join(out).encode("utf-8")


def _order(
    include: Sequence[str], own: frozenset[str], defaults: Sequence[str]
) -> list[str]:
    """The tags a level returns: its included ones as asked, then its defaults."""
    return [t for t in include if t in own and t not in defaults] + list(defaults)


def _study_open(study: StudyRecord) -> str:
    modified = study.last_modified
    stamp = (
        modified.strftime("%Y-%m-%dT%H:%M:%S") + f".{modified.microsecond // 1000:03d}Z"
    )
    return (
        f"<study studyUUID={_quote(study.uuid)} version={_quote(str(study.version))} "
        f"lastModified={_quote(stamp)}>"
    )


def _attrs(attrs: Mapping[str, Any], tags: Sequence[str]) -> list[str]:
    return [_attr(tag, attrs[tag]) for tag in tags if tag in attrs]


def _attr(tag: str, element: Mapping[str, Any]) -> str:
    vr = str(element.get("vr", "UN"))
    head = f"<attr tag={_quote(tag.lower())} vr={_quote(vr)}"
    values = element.get("Value")
    if vr == "SQ":
        items = [
            "<item>" + "".join(_attr(t, e) for t, e in sorted(item.items())) + "</item>"
            for item in values or ()
            if isinstance(item, Mapping)
        ]
        return f"{head}>{''.join(items)}</attr>" if items else f"{head}/>"
    if not values:
        return f"{head}/>"
    return f"{head} val={_quote(chr(92).join(_text(v) for v in values))}/>"


def _text(value: Any) -> str:
    """One DICOM JSON value as DICOM text (PN groups joined with '=')."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        groups = [
            str(value.get(k, "")) for k in ("Alphabetic", "Ideographic", "Phonetic")
        ]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)
    return str(value)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def _quote(text: str) -> str:
    """text as a double-quoted XML attribute value."""
    return '"' + escape(_NOT_XML.sub("", text), _ENTITIES) + '"'


class MintService(Service):
    """``GET {MINT_ROOT}/studies``: MINT study search."""

    name = "mint"

    def routes(self) -> Sequence[Route]:
        return [Route("GET", f"{MINT_ROOT}/studies/?", self.studies)]

    def studies(self, request: Request) -> Response:
        query = parse_query(request.query)
        matches = search(self.emulator.index, query.conditions, query.level)
        return Response(200, render(matches, query), CONTENT_TYPE)
