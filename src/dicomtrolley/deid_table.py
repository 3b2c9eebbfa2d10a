"""PS3.15 Table E.1-1 as data, and what the Basic Profile does to each attribute.

The table (Application Level Confidentiality Profile Attributes) is not typed
in here. Two packages of the ``dicomtrolley[deid]`` extra supply it as data:

- ``dicom-anonymizer`` (Kitware, kept up to date with the standard: its tables
  are scraped from each edition's Part 15) ships the Basic Profile column of
  edition :data:`EDITION` (PS3.15 2026c): the action of every attribute.
- ``dicom-standard`` (0.1.0, the 2020 edition, its only release) ships the
  option columns as well (Retain Device Identity, Retain UIDs, Retain
  Longitudinal Temporal Information with Modified Dates ...): used for the
  options of the attributes it lists.

The newer edition lists about 220 attributes the 2020 one does not (Instance
Creation Date and Time among them); their options come from no package. For
them a date or time (VR DA, DT, TM) counts as "C" under the modified-dates
option, as PS3.15 E.3.6 and every date and time of the 2020 table have it;
any other option leaves them to the Basic Profile (removed or emptied: the
safe side).

Action codes (PS3.15 E.1.1): ``X`` remove, ``Z`` zero length (or a dummy),
``D`` a dummy value, ``U`` a UID mapped consistently; a code such as ``X/Z``
leaves the choice to the implementation, which takes the first letter here,
except that a sequence marked ``U*`` (Referenced / Source Image Sequence) is
kept so that the references in it stay valid once their UIDs are mapped.

UIDs are mapped by :mod:`dicomtrolley.deid` after the actions (one keyed
mapping, so a reference and what it refers to always agree). Private
attributes, curves (50xx) and overlay data and comments (60xx,3000 and
60xx,4000) are removed by the de-identifier too; the rows for them here have
no tag.
"""

from __future__ import annotations

import ast
import functools
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_description, dictionary_VR, keyword_for_tag

from dicomtrolley.credentials import ConfigError

#: The edition of PS3.15 whose Basic Profile column is applied.
EDITION = "2026c"
TABLES_PACKAGE = "dicom-anonymizer"
TABLE_FILE = f"dicomfields_{EDITION}.py"
OPTIONS_PACKAGE = "dicom-standard"
OPTIONS_FILE = "confidentiality_profile_attributes.json"
#: dicom-anonymizer's lists of tags, by Basic Profile action code.
_CODES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
#: The option column of the modified-dates option.
DATES_OPTION = "rtnLongModifDatesOpt"
#: Attributes that get the patient's pseudonym instead of the table's action.
PSEUDONYM_KEYWORDS = frozenset({"PatientID", "PatientName"})
#: What is done to an attribute (None: kept; UIDs are mapped afterwards).
REMOVE = "remove"
BLANK = "blank"
DUMMY = "dummy"
SHIFT_DATE = "shift-date"
PSEUDONYM = "pseudonym"


@dataclass(frozen=True)
class ProfileRow:
    """One attribute of Table E.1-1 and what the Basic Profile and options do.

    ``keyword`` is empty for an attribute newer than pydicom's dictionary
    (it is still acted on, by tag).
    """

    tag: int
    keyword: str
    name: str
    basic: str
    #: Option column -> code, e.g. ``{"rtnDevIdOpt": "K"}``.
    options: tuple[tuple[str, str], ...]

    def option(self, column: str) -> str:
        return dict(self.options).get(column, "")

    @property
    def vr(self) -> str:
        return str(dictionary_VR(self.tag)) if self.keyword else ""


def _package_file(package: str, name: str) -> Path:
    try:
        files = metadata.files(package) or []
    except metadata.PackageNotFoundError as error:
        raise ConfigError(
            "de-identification needs the deid extra: pip install "
            f"'dicomtrolley[deid]' ({package} is missing)"
        ) from error
    found = [path for path in files if path.name == name]
    if not found:
        raise ConfigError(f"{package} is installed without {name}")
    return Path(str(found[0].locate()))


def _basic_codes() -> dict[int, str]:
    """Tag -> Basic Profile code, from dicom-anonymizer's table of EDITION.

    The file is read as data (its lists of ``(group, element)`` literals),
    not imported: nothing of that package runs here.
    """
    path = _package_file(TABLES_PACKAGE, TABLE_FILE)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        codes: dict[int, str] = {}
        for node in tree.body:
            if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                continue
            target = node.targets[0]
            code = _CODES.get(target.id) if isinstance(target, ast.Name) else None
            if code is None:
                continue
            for entry in ast.literal_eval(node.value):
                if len(entry) == 2:  # (group, element); masks are 50xx/60xx
                    codes[(entry[0] << 16) | entry[1]] = code
    except (OSError, SyntaxError, ValueError, TypeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from error
    if len(codes) < 400:
        raise ConfigError(f"{path} holds {len(codes)} attributes, not a table")
    return codes


def _option_columns() -> dict[int, dict[str, Any]]:
    """Tag -> the dicom-standard row (name and option columns)."""
    path = _package_file(OPTIONS_PACKAGE, OPTIONS_FILE)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from error
    rows: dict[int, dict[str, Any]] = {}
    for item in raw:
        digits = str(item.get("id", ""))
        if len(digits) == 8 and all(c in "0123456789abcdefABCDEF" for c in digits):
            rows[int(digits, 16)] = item
    return rows


@functools.lru_cache(maxsize=1)
def all_rows() -> tuple[ProfileRow, ...]:
    """Every attribute of Table E.1-1 (EDITION), with or without a keyword.

    Raises
    ------
    ConfigError
        When a table cannot be found (the ``deid`` extra is not installed).
    """
    options = _option_columns()
    rows: list[ProfileRow] = []
    for tag, code in sorted(_basic_codes().items()):
        keyword = keyword_for_tag(tag) or ""
        known = options.get(tag)
        if known is not None:
            columns = {
                key: str(value)
                for key, value in known.items()
                if key.endswith("Opt") and value
            }
            name = str(known.get("name", ""))
        else:
            columns = {}
            if keyword and dictionary_VR(tag) in ("DA", "DT", "TM"):
                columns[DATES_OPTION] = "C"  # PS3.15 E.3.6: see the module
            name = dictionary_description(tag) if keyword else ""
        rows.append(
            ProfileRow(tag, keyword, name, code, tuple(sorted(columns.items())))
        )
    return tuple(rows)


@functools.lru_cache(maxsize=1)
def profile_rows() -> tuple[ProfileRow, ...]:
    """The attributes of Table E.1-1 that have a DICOM keyword."""
    return tuple(row for row in all_rows() if row.keyword)


@dataclass(frozen=True)
class ProfileOptions:
    """The PS3.15 options on top of the Basic Profile that dicomtrolley offers.

    ``retain_dates``: Retain Longitudinal Temporal Information with Modified
    Dates: dates are shifted by a per-patient offset instead of removed.
    ``retain_device``: Retain Device Identity Option.
    ``retain_uids``: Retain UIDs Option (no UID is mapped).
    """

    retain_dates: bool = False
    retain_device: bool = False
    retain_uids: bool = False

    def describe(self) -> str:
        names = [
            name
            for name, on in (
                ("retain-dates", self.retain_dates),
                ("retain-device", self.retain_device),
                ("retain-uids", self.retain_uids),
            )
            if on
        ]
        return "+".join(["basic", *names])


def row_action(row: ProfileRow, options: ProfileOptions) -> str | None:
    """What the profile does to row's attribute: REMOVE, BLANK, DUMMY,
    SHIFT_DATE, PSEUDONYM, or None (kept; a UID is mapped afterwards)."""
    code = row.basic
    if options.retain_device and row.option("rtnDevIdOpt") == "K":
        return None
    if options.retain_uids and row.option("rtnUIDsOpt") == "K":
        return None
    if "U" in code or (row.vr == "UI" and "D" in code):
        return None  # UIDs: mapped after the actions; U* sequences are kept
    if options.retain_dates and row.option(DATES_OPTION):
        if row.vr in ("DA", "DT"):
            return SHIFT_DATE
        if row.vr == "TM":
            return None  # whole days: the time of day stays
    if row.keyword in PSEUDONYM_KEYWORDS:
        return PSEUDONYM
    if code.startswith("X"):
        return REMOVE
    if code.startswith("Z") or row.vr == "SQ":
        return BLANK
    return DUMMY


def profile_actions(options: ProfileOptions) -> dict[int, str]:
    """Tag -> action (row_action) of every attribute the profile changes."""
    actions: dict[int, str] = {}
    for row in all_rows():
        action = row_action(row, options)
        if action is not None:
            actions[row.tag] = action
    return actions
