"""Reading the data folder: which files there are, what their headers say, and
what a study and its series look like when their instances are put together.

Pure functions and no database: :mod:`dicomtrolley.emulator.index` stores what
these return.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomtrolley.emulator.attributes import (
    FILE_META_TAGS,
    INDEXED_TAGS,
    MODALITY,
    PROMOTABLE_TAGS,
    SERIES_TAGS,
    SERIES_UID,
    SOP_CLASS_UID,
    SOP_UID,
    STUDY_TAGS,
    STUDY_UID,
    TRANSFER_SYNTAX_UID,
    JsonDataset,
    first_value,
    is_uid,
    project,
    tag_of,
)

logger = logging.getLogger("trolley.emulator.index")

_READ_TAGS = sorted(int(tag, 16) for tag in INDEXED_TAGS - FILE_META_TAGS)
INSTANCE_NUMBER = "00200013"
SERIES_NUMBER = "00200011"


@dataclass(frozen=True)
class ParsedFile:
    """The indexed attributes of one file, and where and what the file is."""

    path: str
    size: int
    mtime_ns: int
    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax: str
    number: int | None
    header: JsonDataset


def walk(root: Path) -> Iterator[tuple[str, tuple[int, int]]]:
    """(path, (size, mtime_ns)) of every regular file below root, dot names skipped."""

    def complain(error: OSError) -> None:
        logger.warning("Cannot read %s: %s", error.filename, error.strerror)

    for folder, dirs, files in os.walk(root, onerror=complain):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            try:
                info = os.stat(path)
            except OSError:
                continue  # vanished, or a broken link
            if stat.S_ISREG(info.st_mode):
                yield path, (info.st_size, info.st_mtime_ns)


def read_header(path: str, size: int, mtime_ns: int) -> ParsedFile | str:
    """The indexed attributes of one file, or why it cannot be indexed."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=_READ_TAGS)
        uids = [_raw_text(ds, tag) for tag in (STUDY_UID, SERIES_UID, SOP_UID)]
        for what, uid in zip(("Study", "Series", "SOP"), uids, strict=True):
            if not uid:
                return f"no {what} Instance UID"
            if not is_uid(uid):
                return f"{what} Instance UID {uid[:80]!r} is not digits and dots"
        header = ds.to_json_dict(suppress_invalid_tags=True)
        meta = getattr(ds, "file_meta", None) or Dataset()
        for element in meta:
            if f"{element.tag:08X}" in FILE_META_TAGS:
                header.update(Dataset({element.tag: element}).to_json_dict())
    except InvalidDicomError:
        return "not a DICOM file (PS3.10 'DICM' prefix missing)"
    except Exception as error:  # any damage in a file must not stop the index
        return f"unreadable DICOM file ({type(error).__name__}: {error})"
    return ParsedFile(
        path=path,
        size=size,
        mtime_ns=mtime_ns,
        study_uid=uids[0],
        series_uid=uids[1],
        sop_uid=uids[2],
        transfer_syntax=str(first_value(header, TRANSFER_SYNTAX_UID) or ""),
        number=as_integer(first_value(header, INSTANCE_NUMBER)),
        header=header,
    )


def _raw_text(ds: Dataset, tag: str) -> str:
    """A UID as stored, without pydicom's value conversion (and its warnings
    about invalid values): padding removed, "" when absent."""
    key = int(tag, 16)
    if key not in ds:
        return ""
    value = ds.get_item(key).value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip(" \0")


def as_integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _merge_first(headers: Iterable[JsonDataset], tags: frozenset[str]) -> JsonDataset:
    """For each tag, the attribute of the first header that has it (with a value
    if any header has one)."""
    merged: JsonDataset = {}
    for header in headers:
        for tag, element in header.items():
            if tag not in tags:
                continue
            if tag not in merged or ("Value" in element and "Value" not in merged[tag]):
                merged[tag] = element
    return merged


def _uniform(headers: Sequence[JsonDataset], tags: frozenset[str]) -> JsonDataset:
    """The attributes among tags that every header has, with the same value."""
    first = project(headers[0], tags)
    return {
        tag: element
        for tag, element in first.items()
        if all(header.get(tag) == element for header in headers[1:])
    }


def _computed(**values: tuple[str, list[Any]]) -> JsonDataset:
    """DICOM JSON attributes from keyword=(vr, values); no values: no "Value"."""
    result: JsonDataset = {}
    for keyword, (vr, items) in values.items():
        tag = tag_of(keyword)
        if tag is not None:
            result[tag] = {"vr": vr, "Value": items} if items else {"vr": vr}
    return result


def summarise(
    headers: Sequence[tuple[str, JsonDataset]],
) -> tuple[JsonDataset, dict[str, JsonDataset]]:
    """The study attributes and the attributes of each series, from the
    (series UID, header) of every instance of one study.

    A study or series attribute comes from the first instance that has it; a
    promotable attribute goes to a series when all its instances agree. The
    index adds ModalitiesInStudy, SOPClassesInStudy, the NumberOf...Related...
    counts and InstanceAvailability (ONLINE).
    """
    by_series: dict[str, list[JsonDataset]] = {}
    for series_uid, header in headers:
        by_series.setdefault(series_uid, []).append(header)
    everything = [header for _, header in headers]
    modalities = {str(v) for h in everything if (v := first_value(h, MODALITY))}
    classes = {str(v) for h in everything if (v := first_value(h, SOP_CLASS_UID))}
    study = _merge_first(everything, STUDY_TAGS)
    study.update(
        _computed(
            ModalitiesInStudy=("CS", sorted(modalities)),
            SOPClassesInStudy=("UI", sorted(classes)),
            NumberOfStudyRelatedSeries=("IS", [len(by_series)]),
            NumberOfStudyRelatedInstances=("IS", [len(everything)]),
            InstanceAvailability=("CS", ["ONLINE"]),
        )
    )
    series: dict[str, JsonDataset] = {}
    for series_uid, series_headers in by_series.items():
        attrs = _merge_first(series_headers, SERIES_TAGS)
        attrs.update(_uniform(series_headers, PROMOTABLE_TAGS))
        attrs.update(
            _computed(NumberOfSeriesRelatedInstances=("IS", [len(series_headers)]))
        )
        series[series_uid] = attrs
    return study, series
