"""Checks on UIDs and other values from servers before they become file names.

A DICOM UID (PS3.5 section 9.1) is at most 64 characters of digits and dots:
components separated by single dots, no leading zero in a multi-digit component.
Anything that a server sends and that ends up in a path goes through here first,
so that no answer can place a file outside the output folder.
"""

from __future__ import annotations

import re

from dicomtrolley.exceptions import InvalidUIDError

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_UID_LENGTH = 64


def is_valid_uid(value: str) -> bool:
    """True when value follows the DICOM UID grammar (PS3.5 9.1)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and _UID_RE.match(value) is not None
    )


def is_path_safe_uid(value: str) -> bool:
    """Lenient check for UIDs seen in the wild (leading zeros, up to 128 characters).

    Only digits and single dots are allowed, so the value can never be ``..``, an
    absolute path or contain a separator.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= 128
        and re.fullmatch(r"[0-9]+(\.[0-9]+)*", value) is not None
    )


def check_uid(value: object, what: str = "UID") -> str:
    """Return value if it can safely be used as a UID and path part, else raise.

    Raises
    ------
    InvalidUIDError
        When value is not a string of digits separated by single dots.
    """
    # UI values are padded to even length with NUL; some servers add spaces too
    text = str(value).strip(" \t\r\n\x00") if value is not None else ""
    if not is_path_safe_uid(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidUIDError(
            f"{what} {shown!r} is not a valid DICOM UID", uids=[shown]
        )
    return text
