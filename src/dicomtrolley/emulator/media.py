"""``Accept`` headers (RFC 9110 section 12.5.1) for the DICOMweb service.

``multipart/related; type="application/dicom"; transfer-syntax=*, */*;q=0.1``
becomes a list of :class:`MediaRange`, best first. Parameter values may be quoted
(and contain commas and semicolons inside quotes); names are compared in lower
case. Ranges with ``q=0`` are kept but marked unacceptable.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header."""

    type: str  # lower case, e.g. "multipart/related" or "*/*"
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def acceptable(self) -> bool:
        return self.q > 0


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """text split at separator, except inside double quotes (with \\ escapes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in value:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def parse_media_type(text: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; name=value ...`` as (lower-case type, parameters)."""
    head, *rest = split_outside_quotes(text, ";")
    params: dict[str, str] = {}
    for item in rest:
        name, _, value = item.partition("=")
        if name.strip():
            params[name.strip().lower()] = _unquote(value)
    return head.strip().lower(), params


def parse_accept(header: str) -> list[MediaRange]:
    """The media ranges of an Accept header, highest q first (stable)."""
    ranges: list[MediaRange] = []
    for item in split_outside_quotes(header, ","):
        if not item.strip():
            continue
        media_type, params = parse_media_type(item)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        ranges.append(MediaRange(media_type, params, min(max(q, 0.0), 1.0)))
    return sorted(ranges, key=lambda r: -r.q)
