"""Attribute matching (PS3.4 C.2.2.2) and hierarchical search over the index.

Shared by the MINT and QIDO-RS services, which differ only in how they spell a
query. A :class:`Condition` is one matching key:

- universal matching: an empty value or ``*`` matches everything (no Condition);
- single value matching: equal values;
- wildcard matching: ``*`` (any run of characters) and ``?`` (one character);
- list of values: for UI and CS attributes, values separated by ``\\`` (DICOM) or
  ``,`` (QIDO-RS, PS3.18 8.3.4.1) match when any of them matches;
- range matching: for DA, TM and DT, ``from-to``, ``-to`` or ``from-``.

Person names (PN) match case-insensitively, on the whole value or on any one of
its component groups (alphabetic, ideographic, phonetic); everything else is
case-sensitive. A multi-valued attribute matches when any value matches. An
attribute that is absent or empty matches only universal matching.

Conditions on series or instance attributes narrow a study-level search to the
studies that hold a matching series or instance, as MINT does.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dicomtrolley.emulator.attributes import (
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    Level,
    level_of,
    vr_of,
)
from dicomtrolley.emulator.index import (
    DicomIndex,
    InstanceRecord,
    SeriesRecord,
    StudyRecord,
)

_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_LIST_VRS = frozenset({"UI", "CS"})
_RANGE_FORMS = {
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "DT": re.compile(r"\d{4}(\d{2}){0,5}(\.\d{1,6})?([+-]\d{4})?"),
}
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


class MatchingError(ValueError):
    """A matching key that cannot be used (bad date, sequence attribute ...)."""


@dataclass(frozen=True)
class Condition:
    """One matching key: an attribute, the level that holds it, and its value."""

    tag: str
    value: str
    level: Level
    vr: str
    _patterns: tuple[re.Pattern[str], ...] = field(repr=False, compare=False)
    _range: tuple[str, str] | None = field(repr=False, compare=False)
    _exact: frozenset[str] | None = field(repr=False, compare=False)

    @property
    def exact_values(self) -> frozenset[str] | None:
        """The values when this is single-value or list matching without wildcards."""
        return self._exact

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        """True when the attribute in attrs (DICOM JSON) satisfies this key."""
        texts = _texts(attrs.get(self.tag))
        if self.vr == "PN":
            texts = [text.lower() for text in texts]
        if self._range is not None:
            low, high = self._range
            return any(
                (not low or text >= low) and (not high or text[: len(high)] <= high)
                for text in texts
            )
        return any(p.fullmatch(text) for p in self._patterns for text in texts)


def make_condition(
    tag: str, value: str, level: Level | None = None
) -> Condition | None:
    """A Condition for tag=value; None for universal matching.

    ``level`` defaults to the level that holds the attribute. Raises
    MatchingError for attributes that are not indexed, sequences and malformed
    date or time ranges.
    """
    level = level or level_of(tag)
    if level is None:
        raise MatchingError(f"attribute {tag} cannot be matched by this server")
    vr = vr_of(tag)
    text = value.strip()
    if not text or set(text) == {"*"}:
        return None
    if vr == "SQ":
        raise MatchingError(f"sequence attribute {tag} cannot be matched")
    if vr in _RANGE_VRS and "-" in text:
        bounds = _bounds(vr, text)
        if bounds is None:
            raise MatchingError(f"{value!r} is not a {vr} value or range (from-to)")
        return Condition(tag, value, level, vr, (), bounds, None)
    if vr == "DA" and not _RANGE_FORMS["DA"].fullmatch(text) and "*" not in text:
        raise MatchingError(f"{value!r} is not a date (YYYYMMDD)")
    items = [text]
    if vr in _LIST_VRS:
        items = [item.strip() for item in re.split(r"[\\,]", text) if item.strip()]
    if vr == "PN":
        items = [item.lower() for item in items]
    patterns = tuple(_pattern(item) for item in items)
    exact = None if any(c in text for c in "*?") else frozenset(items)
    return Condition(tag, value, level, vr, patterns, None, exact)


def _bounds(vr: str, text: str) -> tuple[str, str] | None:
    """(from, to) of a range; either may be empty, not both. None if malformed."""
    form = _RANGE_FORMS[vr]
    for position, char in enumerate(text):
        if char != "-":
            continue
        low, high = text[:position], text[position + 1 :]
        if (low or high) and all(not v or form.fullmatch(v) for v in (low, high)):
            return low, high
    return None


def _pattern(text: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile("".join(parts), re.DOTALL)


def _texts(element: Any) -> list[str]:
    """The values of a DICOM JSON attribute as strings (PN: whole and groups)."""
    if not isinstance(element, Mapping):
        return []
    texts: list[str] = []
    for value in element.get("Value") or ():
        if isinstance(value, Mapping):
            groups = [str(value.get(name, "")) for name in _PN_GROUPS]
            while groups and not groups[-1]:
                groups.pop()
            texts.append("=".join(groups))
            texts.extend(group for group in groups if group)
        elif value is not None:
            texts.append(str(value))
    return texts


@dataclass
class SeriesMatch:
    """A series and, for instance-level searches, its matching instances."""

    record: SeriesRecord
    instances: list[InstanceRecord] = field(default_factory=list)


@dataclass
class StudyMatch:
    """A study and, for series and instance-level searches, its matching series."""

    record: StudyRecord
    series: list[SeriesMatch] = field(default_factory=list)


def search(
    index: DicomIndex, conditions: Iterable[Condition], depth: Level
) -> list[StudyMatch]:
    """Studies matching every condition, with series and instances down to depth."""
    at: dict[Level, list[Condition]] = {level: [] for level in Level}
    for condition in conditions:
        at[condition.level].append(condition)
    studies = [
        study
        for study in index.studies(_exact(at[Level.STUDY], STUDY_UID))
        if _all(at[Level.STUDY], study.attrs)
    ]
    deepest = max(
        depth.depth,
        Level.SERIES.depth if at[Level.SERIES] else 0,
        Level.INSTANCE.depth if at[Level.INSTANCE] else 0,
    )
    if not studies or deepest == 0:
        return [StudyMatch(study) for study in studies]

    wanted = {study.uid for study in studies}
    series = {
        (one.study_uid, one.uid): SeriesMatch(one)
        for one in index.series(wanted, _exact(at[Level.SERIES], SERIES_UID))
        if _all(at[Level.SERIES], one.attrs)
    }
    if deepest == Level.INSTANCE.depth and series:
        for instance in index.instances(
            wanted,
            {uid for _, uid in series},
            _exact(at[Level.INSTANCE], SOP_UID),
        ):
            found = series.get((instance.study_uid, instance.series_uid))
            if found is not None and _all(at[Level.INSTANCE], instance.attrs):
                found.instances.append(instance)
    by_study: dict[str, list[SeriesMatch]] = {}
    for (study_uid, _), match in series.items():
        if match.instances or not at[Level.INSTANCE]:
            by_study.setdefault(study_uid, []).append(match)
    narrowing = bool(at[Level.SERIES] or at[Level.INSTANCE])
    return [
        StudyMatch(study, by_study.get(study.uid, []))
        for study in studies
        if study.uid in by_study or not narrowing
    ]


def _exact(conditions: Sequence[Condition], tag: str) -> Collection[str] | None:
    """The UIDs a UID condition allows exactly (for an indexed lookup), if any."""
    for condition in conditions:
        if condition.tag == tag and condition.exact_values is not None:
            return condition.exact_values
    return None


def _all(conditions: Sequence[Condition], attrs: Mapping[str, Any]) -> bool:
    return all(condition.matches(attrs) for condition in conditions)
