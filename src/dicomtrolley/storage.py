"""Saving instances to disk safely, in a folder layout given by a path template.

Every file is first written to a temporary name inside the output folder, then
checked (it parses as DICOM, no element runs past the end of the file, its UIDs
are valid) and only then renamed to its final name: a crash or a cut connection
never leaves a truncated file under a real name. Values from the server become
path parts only after validation: UIDs must follow the UID grammar, other values
are reduced to safe characters, and the final path must lie inside the output
folder (:class:`~dicomtrolley.exceptions.UnsafePathError` otherwise).

Layouts (``StorageDir`` and ``FlatStorageDir`` are the 4.1.0 names)::

    StorageDir(path)      {StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}
    FlatStorageDir(path)  {SOPInstanceUID}
    TemplateStorage(path, "{PatientID}/{StudyInstanceUID}/{SOPInstanceUID}.dcm")

A storage may have a ``transform`` (:class:`DatasetHook`, or any callable
Dataset -> Dataset): it is applied to every instance a download saves, before
the file is written, whatever the protocol; the path comes from the changed
data set, which is verified (against the UIDs the hook expects) before its
rename. :class:`~dicomtrolley.deid.Deidentifier` is such a hook. The index
keeps each file under its source UIDs, so resume works as without one.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import secrets
import string
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomtrolley.catalog import (
    STATE_FOLDER,
    Catalog,
    crc32,
    crc32_text,
    file_checksum,
)
from dicomtrolley.core import InstanceReference
from dicomtrolley.exceptions import (
    DICOMParseError,
    DICOMTrolleyError,
    InvalidUIDError,
    StorageError,
    UnsafePathError,
)
from dicomtrolley.files import (
    DEID_STATE_NAME,
    TEMP_SUFFIX,
    apply_file_mode,
    file_mode,
    fsync_dir,
    make_temp_file,
    temp_prefix,
)
from dicomtrolley.formats.dataset_walker import (
    DatasetWalker,
    FileHeader,
    character_encoding,
    parse_file_header,
)
from dicomtrolley.logs import get_module_logger
from dicomtrolley.uids import check_uid

logger = get_module_logger("storage")

UID_FIELDS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})
DEFAULT_TEMPLATE = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}"
_UNSAFE_CHARS = re.compile(r"[^\w.\-^ ]", re.UNICODE)
#: The path part for a missing value (dicomtrolley 4.1.0's name for it).
UNKNOWN = "unknown"
#: Set on a data set the storage's transform has changed (never applied twice).
_TRANSFORMED = "_dicomtrolley_transformed"
#: The most bytes of one instance held in memory while a transform waits for
#: it to be complete (``memory_limit``); the environment variable overrides it.
DEFAULT_MEMORY_LIMIT = 1 << 30
MEMORY_LIMIT_ENV = "DICOMTROLLEY_DEID_MEMORY_LIMIT"


class DatasetHook:
    """A change made to every data set a download saves, before it is written.

    Subclass and override ``__call__`` (or give a storage any callable
    Dataset -> Dataset: :func:`as_hook` wraps it). The other methods let a hook
    that changes UIDs keep resume and verification working;
    :class:`~dicomtrolley.deid.Deidentifier` overrides them all.
    """

    def __call__(self, dataset: Dataset) -> Dataset:
        return dataset

    def apply(self, dataset: Dataset) -> tuple[Dataset, Any]:
        """The changed data set and a note for :meth:`saved` (default: None)."""
        return self(dataset), None

    def saved(self, root: Path, path: Path, note: Any) -> None:
        """The changed data set is in its file at path under root."""

    def layout_tag(self) -> str:
        """Added to the storage's layout key: files saved with another hook (or
        none) are not taken as present."""
        return ""

    def expected_reference(self, ref: InstanceReference) -> InstanceReference:
        """The UIDs the written file holds for an instance asked for as ref."""
        return ref

    def present_uids(self, ref: InstanceReference) -> tuple[str, ...]:
        """Index keys under which ref's file may be found (source UID first)."""
        return (ref.instance_uid,)

    def check_folder(self, root: Path) -> None:
        """Raise a DICOMTrolleyError when root must not receive these files."""


class _CallableHook(DatasetHook):
    """A plain callable as a hook."""

    def __init__(self, function: Callable[[Dataset], Dataset]) -> None:
        self.function = function

    def __call__(self, dataset: Dataset) -> Dataset:
        return self.function(dataset)

    def layout_tag(self) -> str:
        name = getattr(self.function, "__qualname__", type(self.function).__name__)
        return f"transform:{name}"


def as_hook(
    transform: DatasetHook | Callable[[Dataset], Dataset] | None,
) -> DatasetHook | None:
    """transform as a DatasetHook (None stays None)."""
    if transform is None or isinstance(transform, DatasetHook):
        return transform
    return _CallableHook(transform)


def _mark_transformed(dataset: Dataset) -> None:
    object.__setattr__(dataset, _TRANSFORMED, True)


class PathTemplate:
    """A validated folder layout such as ``{PatientID}/{StudyInstanceUID}/...``.

    Fields are DICOM keywords; literal text may not contain ``..``, backslashes
    or a leading ``/``. The template must contain ``{SOPInstanceUID}`` so that two
    instances never share a file name.
    """

    def __init__(
        self,
        template: str,
        dots_to_underscores: bool = False,
        missing_as_unknown: bool = False,
    ) -> None:
        self.template = template
        self.dots_to_underscores = dots_to_underscores
        self.missing_as_unknown = missing_as_unknown
        self.fields: tuple[str, ...] = self._validate(template)

    @staticmethod
    def _validate(template: str) -> tuple[str, ...]:
        if not template or template.startswith(("/", "\\")) or "\\" in template:
            raise StorageError(f"path template {template!r} must be a relative path")
        fields: list[str] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as error:
            raise StorageError(f"path template {template!r}: {error}") from error
        for literal, name, spec, conversion in parsed:
            if any(part == ".." for part in literal.split("/")):
                raise StorageError(f"path template {template!r} may not contain '..'")
            if name is None:
                continue
            if spec or conversion or not name.isidentifier():
                raise StorageError(
                    f"path template {template!r}: field {{{name}}} must be a plain "
                    "DICOM keyword (no format spec, conversion or attribute)"
                )
            if not tag_for_keyword(name):
                raise StorageError(
                    f"path template {template!r}: {name!r} is not a DICOM keyword"
                )
            fields.append(name)
        if "SOPInstanceUID" not in fields:
            raise StorageError(
                f"path template {template!r} must contain {{SOPInstanceUID}}"
            )
        if template.endswith("/") or template.split("/")[-1].find("{") < 0:
            raise StorageError(f"path template {template!r} must end in a file name")
        return tuple(fields)

    @property
    def uids_only(self) -> bool:
        """True when the path follows from study, series and instance UIDs alone."""
        return set(self.fields) <= UID_FIELDS

    def render(self, values: dict[str, Any]) -> Path:
        """The relative path for these attribute values (validated, sanitised).

        A missing SOPInstanceUID is refused (files would overwrite each other),
        unless the template was made with ``missing_as_unknown`` (the 4.1.0
        layouts): then it becomes ``unknown``, like every other missing value.
        """
        safe = {
            name: UNKNOWN
            if self.missing_as_unknown and values.get(name) in (None, "")
            else safe_path_part(name, values.get(name))
            for name in self.fields
        }
        if self.dots_to_underscores:
            safe = {name: value.replace(".", "_") for name, value in safe.items()}
        relative = Path(self.template.format(**safe))
        if relative.is_absolute() or any(p in ("..", "") for p in relative.parts):
            raise UnsafePathError(f"path {relative} would leave the output folder")
        return relative

    def __repr__(self) -> str:
        return f"PathTemplate({self.template!r})"


def safe_path_part(keyword: str, value: Any) -> str:
    """value as one path component. UIDs are validated, other values sanitised.

    A missing study or series UID becomes ``unknown`` (as in 4.1.0); a missing
    SOPInstanceUID is an error, since files would overwrite each other.
    """
    if value in (None, "") and keyword != "SOPInstanceUID":
        return UNKNOWN
    if keyword in UID_FIELDS or dictionary_VR(keyword) == "UI":
        try:
            return check_uid(value, keyword)
        except InvalidUIDError as error:
            raise UnsafePathError(str(error), uids=error.uids) from error
    text = "" if value is None else str(value)
    text = _UNSAFE_CHARS.sub("_", text.replace("\x00", "")).strip(" .")
    return (text[:64].rstrip(" .") or "UNKNOWN") if text else "UNKNOWN"


def record_saved(
    root: str | Path,
    path: Path | None,
    dataset: Dataset | None = None,
    *,
    size: int | None = None,
    checksum: str | None = None,
    layout: str | None = None,
) -> None:
    """Put a file that just got its final name under root into root's index.

    The UIDs come from dataset (read from the file when not given); the
    checksum is computed from the file when not given. A path that is not a
    file inside root (a storage that saves elsewhere) is not indexed. An index
    that cannot be written is logged, not raised: the file is saved, and a
    later run without its row fetches it again.
    """
    if path is None:
        return
    try:
        if not path.is_file():
            return
        if dataset is None:
            dataset = verify_dicom_file(path)
        actual = path.stat().st_size
        if checksum is None or size != actual:
            checksum = file_checksum(path)
    except (OSError, DICOMTrolleyError) as error:
        logger.warning("cannot index %s: %s", path, error)
        return
    _index_row(root, path, dataset, actual, checksum, layout)


def _index_row(
    root: str | Path,
    path: Path,
    dataset: Dataset,
    size: int,
    checksum: str | None,
    layout: str | None,
) -> None:
    """Write the index row of the file at path (logged when it cannot be)."""
    try:
        Catalog.for_folder(root).record(
            instance_uid=str(dataset.get("SOPInstanceUID", "") or ""),
            study_uid=str(dataset.get("StudyInstanceUID", "") or ""),
            series_uid=str(dataset.get("SeriesInstanceUID", "") or ""),
            path=path,
            size=size,
            checksum=checksum,
            layout=layout,
        )
    except (OSError, DICOMTrolleyError) as error:
        # the file is saved; without its row a later run fetches it again
        logger.warning("cannot index %s: %s", path, error)


def _inside(root: Path, target: Path) -> Path:
    root_resolved = _resolved_root(str(root))
    resolved = (root_resolved / target).resolve()
    if not resolved.is_relative_to(root_resolved):
        raise UnsafePathError(f"{target} would be written outside {root_resolved}")
    return resolved


@functools.lru_cache(maxsize=64)
def _resolved_root(root: str) -> Path:
    """An output folder resolved, once per process: every instance's target
    is checked against it. (Should the folder become a symlink elsewhere
    meanwhile, its files resolve outside this and are refused.)"""
    return Path(root).resolve()


def verify_dicom_file(path: Path) -> Dataset:
    """Parse the header of a DICOM file and check that no element is truncated.

    Large values are not loaded (as pydicom's defer_size): this reads the header
    and seeks over pixel data, so it costs the same for 1 KB and 1 GB files.
    Little endian files with a file meta header are walked by
    :class:`~dicomtrolley.formats.dataset_walker.DatasetWalker`; anything else
    (no ``DICM`` prefix, big endian, deflated, unknown transfer syntax, a
    structure the walker does not follow) is read with pydicom.

    Raises
    ------
    DICOMParseError
        When the file is not DICOM or an element runs past the end of the file.
    """
    try:
        dataset = _verify_with_walker(path)
    except OSError as error:
        raise DICOMParseError(
            f"{path.name}: not a readable DICOM file: {error}"
        ) from error
    except (ValueError, struct.error) as error:  # a walker bug: pydicom decides
        logger.debug("%s: walker failed (%r), reading with pydicom", path, error)
        dataset = None
    return _verify_with_pydicom(path) if dataset is None else dataset


def verified_dataset(
    walker: DatasetWalker,
    file_meta: FileMetaDataset,
    path: Path,
    preamble: bytes | None = None,
) -> FileDataset:
    """The checked header of the file at path, from a walker fed its data set.

    For code that walked the data set bytes itself while writing them to path
    (``walker`` was created with ``offset`` = where the data set starts in the
    file). Closes the walker. Deferred (large) values are read from path when
    used, as with pydicom.

    Raises
    ------
    DICOMParseError
        When the data set is incomplete or holds no elements.
    """
    try:
        elements = walker.elements()
    except DICOMParseError as error:
        raise DICOMParseError(f"{path.name}: truncated: {error}") from error
    if elements is None:  # a long top-level sequence was not kept
        return _verify_with_pydicom(path)
    if not elements:
        raise DICOMParseError(f"{path.name}: DICOM file holds no data elements")
    implicit = walker.implicit_vr  # pydicom keeps the transfer syntax's here
    try:
        encoding = character_encoding(elements)
        result = FileDataset(str(path), elements, preamble, file_meta, implicit, True)
        result.set_original_encoding(implicit, True, encoding)
    except Exception as error:  # pydicom decoding (0008,0005) on garbage
        raise DICOMParseError(
            f"{path.name}: not a readable DICOM file: {error}"
        ) from error
    return result


#: The first read: the whole header of most files; big values are then seeked
#: over. Later reads (walking items of undefined-length elements) are larger.
_FIRST_BLOCK = 16 * 1024
_READ_BLOCK = 64 * 1024


def _verify_with_walker(path: Path) -> FileDataset | None:
    """verify_dicom_file for little endian files; None: let pydicom decide."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        first = os.read(fd, min(size, _FIRST_BLOCK))
        header = _file_header(first, at_eof=len(first) >= size)
        if header is None:
            return None
        start = header.dataset_offset
        walker = DatasetWalker(implicit_vr=header.implicit_vr, offset=start)
        try:
            walker.feed(first[start:])
            _feed_rest(walker, fd, len(first), size)
        except DICOMParseError:
            return None  # pydicom may still read it (implicit VR switches ...)
    finally:
        os.close(fd)
    return verified_dataset(walker, header.file_meta, path, header.preamble)


class _WalkableHeader(NamedTuple):
    preamble: bytes
    file_meta: FileMetaDataset
    dataset_offset: int
    implicit_vr: bool


def _file_header(first: bytes, at_eof: bool) -> _WalkableHeader | None:
    """The file header when the walker can check the data set after it."""
    try:
        header = parse_file_header(first, at_eof=at_eof)
    except DICOMParseError:
        return None
    return None if header is None else _walkable(header, first)


def _walkable(header: FileHeader, first: bytes | bytearray) -> _WalkableHeader | None:
    """header (of the file whose first bytes are first) when the walker can
    check the data set after it."""
    if header.transfer_syntax is None:
        return None
    implicit = _walker_syntax(header.transfer_syntax)
    start = header.dataset_offset
    if implicit is None or first[start : start + 2] == b"\x00\x00":
        return None  # pydicom reads command set elements (0000,eeee) at the start
    return _WalkableHeader(header.preamble, header.file_meta, start, implicit)


@functools.lru_cache(maxsize=64)
def _walker_syntax(syntax: str) -> bool | None:
    """Implicit VR (True/False) of a transfer syntax the walker reads, else None.

    Little endian, not deflated and known to pydicom: Implicit and Explicit VR
    Little Endian and the encapsulated syntaxes.
    """
    uid = UID(syntax)
    if uid.is_private or not uid.is_transfer_syntax:
        return None
    if not uid.is_little_endian or uid.is_deflated or "Deflate" in uid.name:
        return None
    return bool(uid.is_implicit_VR)


def _feed_rest(walker: DatasetWalker, fd: int, position: int, size: int) -> None:
    """Feed the file from position on, seeking over what the walker skips."""
    while position < size:
        skip = min(walker.skippable, size - position)
        if skip:
            walker.skip(skip)
            position += skip
            os.lseek(fd, position, os.SEEK_SET)
            continue
        block = os.read(fd, min(_READ_BLOCK, size - position))
        if not block:
            return
        walker.feed(block)
        position += len(block)


_META_LENGTH = struct.Struct("<4s2sHL")  # (0002,0000) UL, explicit VR LE


def _meta_end(head: bytearray) -> int:
    """Where the data set starts by the File Meta Information Group Length
    at the start of head (a PS3.10 file's first bytes), when it is there and
    plausible; else 0 (parse_file_header finds the end)."""
    if len(head) < 144:
        return 0
    tag, vr, length, value = _META_LENGTH.unpack_from(head, 132)
    if tag != b"\x02\x00\x00\x00" or vr != b"UL" or length != 4:
        return 0
    return 144 + int(value)


class StreamCheck:
    """verify_dicom_file's checks and the file's CRC-32, made while its bytes
    are written, so that nothing is read back.

    :meth:`feed` takes every byte of the file in order. The walker of
    :func:`_verify_with_walker` follows the data set as it passes (large
    values are counted, not looked at); :meth:`verified` then gives what
    :func:`verify_dicom_file` would give for the complete file, or None when
    the walker could not decide (not little endian, a structure it does not
    follow, the file meta too long): the caller then verifies the file on
    disk, where pydicom decides, exactly as before.
    """

    __slots__ = ("_head", "_header", "_meta", "_undecided", "_walker", "crc", "size")

    def __init__(self) -> None:
        self.crc = 0
        self.size = 0
        self._head: bytearray | None = bytearray()  # until the file meta is read
        self._meta: FileHeader | None = None
        self._header: _WalkableHeader | None = None
        self._walker: DatasetWalker | None = None
        self._undecided = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.crc = crc32(data, self.crc)
        self.size += len(data)
        if self._undecided:
            return
        try:
            if self._walker is not None:
                self._walker.feed(data)
                return
            head = self._head
            assert head is not None
            head += data
            self._start(head)
        except Exception:  # a walker bug: the file on disk decides (pydicom)
            self._give_up()

    def _start(self, head: bytearray) -> None:
        """Read the file header once it is all in head; then start the walker."""
        header = self._meta
        if header is None:
            if len(head) < _meta_end(head) + 2:  # not all there: no parse yet
                if len(head) > _FIRST_BLOCK:
                    self._give_up()
                return
            try:
                header = self._meta = parse_file_header(head, at_eof=False)
            except DICOMParseError:
                self._give_up()
                return
        if header is None or len(head) < header.dataset_offset + 2:
            if len(head) > _FIRST_BLOCK:  # as verify_dicom_file: pydicom decides
                self._give_up()
            return
        walkable = _walkable(header, head)
        if walkable is None:
            self._give_up()
            return
        self._header = walkable
        self._head = None
        start = walkable.dataset_offset
        self._walker = DatasetWalker(implicit_vr=walkable.implicit_vr, offset=start)
        self._walker.feed(memoryview(head)[start:])

    def _give_up(self) -> None:
        self._undecided = True
        self._head = None
        self._walker = None

    def verified(self, path: Path) -> FileDataset | None:
        """The checked header of the file at path (which holds every byte fed);
        None: the walker could not decide, use :func:`verify_dicom_file`.

        Raises
        ------
        DICOMParseError
            When the data set is incomplete or holds no elements.
        """
        walker, header = self._walker, self._header
        if self._undecided or walker is None or header is None:
            return None
        return verified_dataset(walker, header.file_meta, path, header.preamble)


def new_temp_file(folder: Path) -> tuple[int, Path]:
    """A new temporary file in folder, named as by
    :func:`~dicomtrolley.files.make_temp_file` and with the same mode (0666
    less the umask), made in one system call: open for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    while True:
        path = folder / f"{temp_prefix()}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:  # 64 random bits: never, but not impossible
            continue


def _fsync_file(path: Path) -> None:
    """Flush the file at path to stable storage."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify_with_pydicom(path: Path) -> FileDataset:
    """verify_dicom_file as done with ``pydicom.dcmread`` (any transfer syntax)."""
    try:
        size = path.stat().st_size
        dataset = pydicom.dcmread(path, defer_size=4096)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as error:
        raise DICOMParseError(
            f"{path.name}: not a readable DICOM file: {error}"
        ) from error
    except Exception as error:  # pydicom raises assorted errors on garbage
        raise DICOMParseError(
            f"{path.name}: not a readable DICOM file: {error}"
        ) from error
    _check_element_ends(dataset, size, path.name)
    return dataset


def _check_element_ends(dataset: FileDataset, size: int, name: str) -> None:
    """DICOMParseError when an element read by pydicom runs past size bytes,
    or bytes are left after the last complete one (a cut element header)."""
    if not dataset:
        raise DICOMParseError(f"{name}: DICOM file holds no data elements")
    syntax = dataset.file_meta.get("TransferSyntaxUID") if dataset.file_meta else None
    if _is_deflated(syntax):
        # positions refer to the inflated stream; zlib has checked completeness
        return
    end = 0
    for element in dataset._dict.values():
        if not isinstance(element, RawDataElement) or element.length == 0xFFFFFFFF:
            end = -1  # undefined length: where it ends is not known here
            continue
        end = element.value_tell + element.length
        if end > size:
            raise DICOMParseError(
                f"{name}: truncated: element {element.tag} ends at byte "
                f"{end}, file has {size} bytes"
            )
    if 0 < end < size:
        # pydicom stops quietly at a partial element header: the file was cut
        # inside the header of the element after the last complete one
        raise DICOMParseError(
            f"{name}: truncated: {size - end} byte(s) after the last complete element"
        )


def read_dicom_bytes(data: bytes, name: str) -> FileDataset:
    """A complete DICOM file held in memory, parsed (every value read).

    The checks of :func:`verify_dicom_file`: the walker for little endian
    files, else pydicom's element positions.

    Raises
    ------
    DICOMParseError
        When data is not DICOM or an element runs past its end.
    """
    try:
        walked = _walk_bytes(data)
    except DICOMParseError as error:
        raise DICOMParseError(f"{name}: truncated: {error}") from error
    except (ValueError, struct.error):  # a walker bug: pydicom decides
        walked = False
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except Exception as error:  # pydicom raises assorted errors on garbage
        raise DICOMParseError(f"{name}: not a readable DICOM file: {error}") from error
    if not walked:
        _check_element_ends(dataset, len(data), name)
    elif not dataset:
        raise DICOMParseError(f"{name}: DICOM file holds no data elements")
    return dataset


def _walk_bytes(data: bytes) -> bool:
    """True when the walker found data a complete file; False when it cannot
    tell (pydicom decides). DICOMParseError when it is truncated."""
    view = memoryview(data)
    try:
        header = _file_header(data, at_eof=True)
    except DICOMParseError:
        return False
    if header is None:
        return False
    walker = DatasetWalker(implicit_vr=header.implicit_vr, offset=header.dataset_offset)
    position, size = header.dataset_offset, len(view)
    try:
        while position < size:
            skip = min(walker.skippable, size - position)
            if skip:
                walker.skip(skip)
                position += skip
                continue
            block = view[position : position + _READ_BLOCK]
            walker.feed(block)
            position += len(block)
    except DICOMParseError:
        return False  # pydicom may still read it (implicit VR switches ...)
    return walker.elements() is not None


def _is_deflated(syntax: Any) -> bool:
    """Whether syntax is a deflated transfer syntax (False for garbage)."""
    try:
        return syntax is not None and bool(UID(syntax).is_deflated)
    except (TypeError, ValueError):  # several values; not a transfer syntax
        return False


class InstanceWriter:
    """Receives one instance's bytes; commit() verifies, names and renames the file.

    The temporary file lives in the output folder itself, so the final rename is
    atomic (same file system).

    With a storage ``transform`` the received bytes are held in memory instead
    (at most the storage's ``memory_limit``): only the changed data set is
    written, so no byte of what arrived reaches the disk. An instance larger
    than the limit fails (:class:`InstanceTooLargeError`).
    """

    def __init__(
        self,
        storage: DICOMDiskStorage,
        root: Path,
        expected: InstanceReference | None = None,
        fsync: bool = False,
        received: Path | None = None,
        check: StreamCheck | None = None,
    ) -> None:
        self.storage = storage
        self.root = root
        self.expected = expected
        self.fsync = fsync
        self.bytes_written = 0
        #: CRC-32 and walk of the bytes as they are written (verify_dicom_file
        #: on the file at commit only when it cannot decide)
        self._check = StreamCheck() if check is None else check
        self._checksum: str | None = None  # of a file the transform wrote
        self._file: IO[bytes] | None = None
        #: the received bytes, while a transform waits for them (else None)
        self._chunks: list[bytes] | None = None
        self.memory_limit = 0
        #: a complete file made by new_temp_file, taken over as it is
        self._adopted = False
        if received is not None and storage.transform is None:
            self.temp_path = received
            self.bytes_written = self._check.size
            self._adopted = True
            return
        try:
            root.mkdir(parents=True, exist_ok=True)
            if storage.transform is not None:
                self._chunks = []
                self.memory_limit = storage.memory_limit
                # reserved for the changed file; nothing is there before commit
                name = f"{temp_prefix()}{secrets.token_hex(8)}{TEMP_SUFFIX}"
                self.temp_path = root / name
                return
            fd, self.temp_path = new_temp_file(root)
        except OSError as error:
            raise StorageError(f"cannot create a file in {root}: {error}") from error
        self._file = os.fdopen(fd, "wb")

    @property
    def in_memory(self) -> bool:
        """True while the received bytes are held in memory (a transform)."""
        return self._chunks is not None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._chunks is not None:
            self._hold(data)
            return
        if self._file is None:
            raise StorageError("write after commit or abort")
        try:
            self._file.write(data)
        except OSError as error:
            self.abort()
            raise StorageError(f"cannot write {self.temp_path}: {error}") from error
        self._check.feed(data)
        self.bytes_written += len(data)

    def _hold(self, data: bytes | bytearray | memoryview) -> None:
        chunks = self._chunks
        assert chunks is not None
        if self.bytes_written + len(data) > self.memory_limit:
            prefix = b"".join([*chunks[:64], bytes(data[: 1 << 20])])[: 1 << 20]
            self.abort()
            uids = self._expected_uids() or uids_in_prefix(prefix)
            raise InstanceTooLargeError(
                f"instance {uids[0] if uids else '(UID not known yet)'} is larger "
                f"than {self.memory_limit} bytes, the most a transform (e.g. "
                f"--deidentify) holds in memory: raise {MEMORY_LIMIT_ENV} or the "
                "storage's memory_limit",
                uids=uids,
            )
        chunks.append(bytes(data))
        self.bytes_written += len(data)

    def _close(self) -> None:
        if self._adopted and self.fsync:
            _fsync_file(self.temp_path)
        if self._file is not None:
            try:
                self._file.flush()
                if self.fsync:
                    os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = None

    def commit(self) -> Path:
        """Verify the complete file and move it to its final name. Returns that path.

        The file gets the umask's mode, and the output folder's index
        (:mod:`dicomtrolley.catalog`) a row for it, right after the rename.
        With a storage ``transform``, the instance held in memory is parsed,
        changed and written; the path and the checks are those of the changed
        data set, the index row has the UIDs received.
        """
        uids = self._expected_uids()
        try:
            hook = self.storage.transform
            if self._chunks is not None and hook is not None:
                source, dataset, note = self._transform(hook, uids)
            else:
                self._close()
                size = self.temp_path.stat().st_size
                if not self._adopted and size != self.bytes_written:
                    # a file some caller put at temp_path by rename (mkstemp
                    # makes 0600); our own files have the umask's mode
                    apply_file_mode(self.temp_path)
                walked = size == self._check.size == self.bytes_written
                verified = self._check.verified(self.temp_path) if walked else None
                if verified is None:
                    dataset = verify_dicom_file(self.temp_path)
                else:
                    dataset = verified
                _check_instance(dataset, self.expected, uids)
                source, hook, note = dataset, None, None
            planned = self.storage.planned_path(dataset, self.root)
            if planned is not None:
                # the row first, then the rename: a crash in between leaves a
                # row whose file is not there (fetched again), never a file
                # without its row (fetched twice)
                size = self.temp_path.stat().st_size
                _index_row(
                    self.root,
                    planned,
                    source,
                    size,
                    self._checksum
                    or (
                        crc32_text(self._check.crc)
                        if size == self._check.size == self.bytes_written
                        else file_checksum(self.temp_path)
                    ),
                    self.storage.layout_key(),
                )
            noted = False
            if planned is not None and _renames_to_plan(self.storage):
                target = planned  # what commit_file does, without a second render
                target.parent.mkdir(parents=True, exist_ok=True)
                if hook is not None:  # before the rename, as the index row: a
                    # kill between the two keeps the record (read once if repeated)
                    hook.saved(self.root, target, note)
                    noted = True
                os.replace(self.temp_path, target)
            else:
                target = self.storage.commit_file(self.temp_path, dataset, self.root)
            if self.fsync:
                fsync_dir(target.parent)
            if planned is None:  # the storage decided where: index what it made
                record_saved(
                    self.root,
                    target,
                    source if hook is not None else None,
                    layout=self.storage.layout_key(),
                )
            if hook is not None and not noted:
                hook.saved(self.root, target, note)
            return target
        except DICOMTrolleyError as error:
            self.abort()
            if not error.uids and uids:
                error.uids = uids
            raise
        except OSError as error:
            self.abort()
            raise StorageError(
                f"cannot save {self.temp_path}: {error}", uids=uids
            ) from error
        except BaseException:  # e.g. a user's save(): never leave the .part file
            self.abort()
            raise

    def _transform(
        self, hook: DatasetHook, uids: tuple[str, ...]
    ) -> tuple[Dataset, Dataset, Any]:
        """Parse the instance held in memory, apply hook, write the result to
        temp_path and verify it. Returns the source UIDs (a data set), the
        written data set and the hook's note."""
        data = self._received()
        name = f"instance {uids[0]}" if uids else "received instance"
        full = read_dicom_bytes(data, name)
        del data
        _check_instance(full, self.expected, uids)
        source = Dataset()  # the UIDs received, for the index
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(source, keyword, full.get(keyword, ""))
        changed, note = hook.apply(full)
        _mark_transformed(changed)
        try:
            encoded = encode_part10(changed)
        except Exception as error:  # pydicom raises ValueError, TypeError ...
            raise StorageError(f"cannot write the changed instance: {error}") from error
        fd = os.open(
            self.temp_path,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
            file_mode(),
        )
        with os.fdopen(fd, "wb") as handle:
            handle.write(encoded)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        self._checksum = crc32_text(crc32(encoded))
        del encoded
        written = verify_dicom_file(self.temp_path)
        expected = self.expected
        _check_instance(
            written,
            None if expected is None else hook.expected_reference(expected),
            uids,
        )
        return source, written, note

    def _received(self) -> bytes:
        """The bytes held in memory (or of a complete file some caller put at
        temp_path by rename), taken: the writer holds them no longer."""
        chunks, self._chunks = self._chunks or [], []
        if not chunks and self.temp_path.exists():
            data = self.temp_path.read_bytes()
            self.temp_path.unlink()
            return data
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def abort(self) -> None:
        """Throw the partial file (or the bytes held in memory) away."""
        if self._chunks is not None:
            self._chunks = []
        try:
            if self._file is not None:
                self._file.close()
                self._file = None
        except OSError:
            pass
        with contextlib.suppress(OSError):
            self.temp_path.unlink(missing_ok=True)

    def _expected_uids(self) -> tuple[str, ...]:
        ref = self.expected
        if ref is None:
            return ()
        return tuple(u for u in (ref.study_uid, ref.series_uid, ref.instance_uid) if u)

    def __enter__(self) -> InstanceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        taken = self._adopted and self.temp_path.exists()  # not committed
        if self._file is not None or self._chunks or taken:
            self.abort()


def _renames_to_plan(storage: DICOMDiskStorage) -> bool:
    """Whether storage's commit_file only renames the file to its planned_path
    (TemplateStorage's own, not a subclass's save or commit_file)."""
    kind = type(storage)
    return (
        isinstance(storage, TemplateStorage)
        and kind.commit_file is TemplateStorage.commit_file
        and kind.save is TemplateStorage.save
        and kind.planned_path is TemplateStorage.planned_path
    )


#: Explicit VR element headers with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)


def encode_part10(dataset: Dataset) -> bytes:
    """dataset as a Part 10 file (preamble, file meta, data set).

    Elements still as they were read (a transform left them alone: most of
    them, pixel data among them) are copied with a header of their own, the
    others encoded by pydicom; several times faster than ``save_as`` on data
    sets of a few hundred elements. Big endian, deflated, or re-encoded data
    sets (another character set or transfer syntax than they were read in)
    go through ``save_as``.
    """
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element, write_file_meta_info

    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    implicit = _walker_syntax(str(syntax)) if syntax else None
    read_as = getattr(dataset, "original_encoding", (None, None))
    if (
        implicit is None
        or read_as != (implicit, True)
        or dataset.original_character_set != dataset._character_set
    ):
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=False)
        return buffer.getvalue()
    assert meta is not None  # a syntax was found in it
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    out.write(getattr(dataset, "preamble", None) or b"\0" * 128)
    out.write(b"DICM")
    write_file_meta_info(out, meta, enforce_standard=False)
    out.is_implicit_VR = implicit
    encodings = dataset.get("SpecificCharacterSet", None)
    for tag in sorted(dataset.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths are not written (PS3.5 7.2)
        element = dataset.get_item(tag)
        header = _raw_header(element, implicit)
        if header is None:
            write_data_element(out, element, encodings)
        else:
            out.write(header)
            out.write(element.value)
    return out.getvalue()


def _raw_header(element: DataElement | RawDataElement, implicit: bool) -> bytes | None:
    """The header to write before an element read earlier and left as it was,
    or None when pydicom must write it (decoded, undefined length ...)."""
    if not isinstance(element, RawDataElement) or element.length == 0xFFFFFFFF:
        return None
    value = element.value
    if not isinstance(value, bytes):
        return None
    tag = int(element.tag)
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value))
    vr = element.VR
    if not vr or len(vr) != 2:
        return None
    if vr in _LONG_VRS:
        return struct.pack(
            "<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)
        )
    if len(value) > 0xFFFF:
        return None
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value))


class InstanceTooLargeError(StorageError):
    """An instance to transform is larger than the storage's memory_limit."""


def uids_in_prefix(prefix: bytes) -> tuple[str, ...]:
    """The SOP instance, series and study UIDs found in the first bytes of a
    DICOM file (as many as it holds; none for garbage)."""
    tags = ["SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"]
    try:
        dataset = pydicom.dcmread(
            io.BytesIO(prefix), force=True, specific_tags=tags, stop_before_pixels=True
        )
        return tuple(str(dataset.get(t, "") or "") for t in tags if dataset.get(t))
    except Exception:  # a cut or broken header: nothing to name
        return ()


def _check_instance(
    dataset: Dataset, expected: InstanceReference | None, uids: tuple[str, ...]
) -> None:
    """DICOMParseError when dataset is not the instance expected."""
    if expected is None:
        return
    got = str(dataset.get("SOPInstanceUID", ""))
    if got != expected.instance_uid:
        raise DICOMParseError(
            f"asked for instance {expected.instance_uid}, "
            f"received {got or 'an instance without SOPInstanceUID'}",
            uids=uids,
        )


def default_memory_limit() -> int:
    """``$DICOMTROLLEY_DEID_MEMORY_LIMIT`` (bytes, or with a K, M or G suffix
    of 1024 steps), else DEFAULT_MEMORY_LIMIT.

    Raises
    ------
    StorageError
        When the variable is not such a size.
    """
    raw = os.environ.get(MEMORY_LIMIT_ENV, "")
    text = raw.strip().upper().removesuffix("B").removesuffix("I")
    if not text:
        return DEFAULT_MEMORY_LIMIT
    scale = 1
    if text[-1] in "KMG":
        scale = 1 << (10 * ("KMG".index(text[-1]) + 1))
        text = text[:-1].strip()
    if not text.isdigit() or int(text) <= 0:
        raise StorageError(
            f"{MEMORY_LIMIT_ENV}={raw!r} is not a size "
            "(bytes, or a number with K, M or G)"
        )
    return int(text) * scale


#: Output folders whose storage has a transform -> its memory_limit.
_in_memory_folders: dict[Path, int] = {}
_in_memory_lock = threading.Lock()


def _hold_in_memory(root: Path, limit: int) -> None:
    with _in_memory_lock:
        _in_memory_folders[root.resolve()] = limit


def memory_limit_for(folder: Path) -> int | None:
    """How much of one instance may be held in memory for folder, when what
    arrives for it must not be written as it came (None: it may).

    True of a folder a storage with a transform checked
    (:meth:`DICOMDiskStorage.check_folder`, done when a download starts), and
    of any folder that holds de-identified data (``.dicomtrolley/deid.json``).
    Receivers that spool instances before a storage takes them (C-GET, the
    C-MOVE storage SCP) ask this first.
    """
    with _in_memory_lock:
        limit = _in_memory_folders.get(Path(folder).resolve())
    if limit is not None:
        return limit
    if (Path(folder) / STATE_FOLDER / DEID_STATE_NAME).exists():
        return default_memory_limit()
    return None


class DICOMDiskStorage:
    """Saves datasets to disk. Subclass and implement save(), or use a template.

    Subclasses that only implement ``save`` still work with streaming downloads:
    the streamed file is verified, read back and handed to ``save``.
    ``transform`` (a :class:`DatasetHook` or a callable Dataset -> Dataset,
    default None) is applied to each instance a download saves.
    """

    fsync: bool = False

    @property
    def memory_limit(self) -> int:
        """The most bytes of one instance held in memory while the transform
        waits for it (default: ``$DICOMTROLLEY_DEID_MEMORY_LIMIT`` or 1 GiB).
        Several workers hold one instance each: about three times this much
        memory per worker at most (received, parsed, written)."""
        limit: int | None = self.__dict__.get("_memory_limit")
        return default_memory_limit() if limit is None else limit

    @memory_limit.setter
    def memory_limit(self, value: int | None) -> None:
        if value is not None and value <= 0:
            raise StorageError(f"memory_limit must be positive, not {value}")
        self.__dict__["_memory_limit"] = value

    @property
    def transform(self) -> DatasetHook | None:
        """The hook applied to each data set before it is written (or None)."""
        hook: DatasetHook | None = self.__dict__.get("_transform")
        return hook

    @transform.setter
    def transform(
        self, value: DatasetHook | Callable[[Dataset], Dataset] | None
    ) -> None:
        self.__dict__["_transform"] = as_hook(value)

    def prepare(self, dataset: Dataset) -> tuple[Dataset, Any]:
        """dataset changed by the transform (once: a changed data set is
        marked) and the note for the hook's ``saved``; as is without one."""
        hook = self.transform
        if hook is None or getattr(dataset, _TRANSFORMED, False):
            return dataset, None
        changed, note = hook.apply(dataset)
        _mark_transformed(changed)
        return changed, note

    def check_folder(self, root: str | Path) -> None:
        """Refuse to write into root when that would mix de-identified and
        identified files (or two de-identifications): the transform decides,
        and without one a folder of de-identified files is refused.

        Raises
        ------
        StorageError
            A folder with de-identified files and no transform here.
        """
        hook = self.transform
        if hook is not None:
            hook.check_folder(Path(root))
            _hold_in_memory(Path(root), self.memory_limit)
        elif (Path(root) / STATE_FOLDER / DEID_STATE_NAME).exists():
            raise StorageError(
                f"{root} holds de-identified files ({STATE_FOLDER}/"
                f"{DEID_STATE_NAME}): download into it with the same "
                "--deidentify profile and key, or into another folder"
            )

    def _tagged(self, key: str) -> str:
        hook = self.transform
        tag = hook.layout_tag() if hook is not None else ""
        return f"{key}|{tag}" if tag else key

    def save(self, dataset: Dataset, path: str | Path | None = None) -> Path | None:
        """Write dataset to disk, under path when given."""
        raise NotImplementedError()

    def open_writer(
        self,
        path: str | Path,
        expected: InstanceReference | None = None,
        *,
        received: Path | None = None,
        check: StreamCheck | None = None,
    ) -> InstanceWriter:
        """A writer for one instance that arrives as a byte stream.

        ``received``: a complete file that is the instance, already written
        under a temporary name (:func:`new_temp_file`) on
        the output folder's file system, and ``check`` what was seen of its
        bytes while they were written (every one of them fed): the writer takes
        that file as its own, nothing is written or read again. Ignored with
        a transform (the writer holds the instance in memory).
        """
        hook = self.transform
        if hook is not None:
            hook.check_folder(Path(path))
            received = check = None
        return InstanceWriter(
            self,
            Path(path),
            expected=expected,
            fsync=self.fsync,
            received=received,
            check=check,
        )

    def commit_file(self, temp_path: Path, dataset: Dataset, root: Path) -> Path:
        """Move a verified temporary file into place. Default: go through save()."""
        full = pydicom.dcmread(temp_path)
        if self.transform is not None:
            _mark_transformed(full)  # already changed: save() must not again
        saved = self.save(full, path=str(root))
        temp_path.unlink(missing_ok=True)
        return saved if saved is not None else root

    def existing_file(
        self, reference: InstanceReference, path: str | Path
    ) -> Path | None:
        """The file of reference if a download already saved it intact under path.

        Asks the index of the output folder (:mod:`dicomtrolley.catalog`,
        built by scanning the folder when it has none): the file must still be
        there with the size it was saved with. Works for every layout and for
        subclasses with their own ``save``/``generate_path``, since the index
        records where each file went.
        """
        hook = self.transform
        keys: tuple[str, ...] = (reference.instance_uid,)
        if hook is not None:
            hook.check_folder(Path(path))
            keys = hook.present_uids(reference)
        catalog = Catalog.for_folder(path)
        for key in keys:
            found = catalog.present(
                key, self.layout_key(), lambda found: self.fits(found, Path(path))
            )
            if found is not None:
                return found
        return None

    def planned_path(self, dataset: Dataset, root: Path) -> Path | None:
        """Where commit_file will put dataset's file, if known beforehand.

        Default None: only commit_file (or the user's save) knows.
        """
        return None

    def layout_key(self) -> str:
        """Names where this storage puts files, for the index: a file saved in
        another layout is not taken as present (the download saves its own
        copy). Default: the class; :class:`TemplateStorage` adds its template;
        a transform adds its :meth:`DatasetHook.layout_tag`."""
        return self._tagged(f"{type(self).__module__}.{type(self).__qualname__}")

    def fits(self, file: Path, root: Path) -> bool:
        """Whether file (found by scanning) is where this storage would put it.

        The default cannot know (only ``save`` knows): False.
        """
        return False


def uses_4_1_0_save(storage: DICOMDiskStorage) -> bool:
    """True when every instance must reach storage as a Dataset through save().

    That is the dicomtrolley 4.1.0 contract: the downloader hands each dataset
    to ``storage.save(dataset, path)``. It holds for a storage whose class
    overrides ``save`` or ``generate_path`` of :class:`TemplateStorage` (or of
    :class:`StorageDir`, :class:`FlatStorageDir`), and for any other
    :class:`DICOMDiskStorage` that does not provide its own ``commit_file``.

    The storage classes honour such overrides themselves (``commit_file``
    reads the verified file back and calls ``save``; ``existing_file`` finds
    nothing, since only the subclass knows where its files go). A downloader
    can also call this to skip the temporary file and save datasets directly.
    """
    if isinstance(storage, TemplateStorage):
        template_class = type(storage)
        return (
            template_class.save is not TemplateStorage.save
            or template_class.generate_path is not TemplateStorage.generate_path
        )
    return type(storage).commit_file is DICOMDiskStorage.commit_file


class TemplateStorage(DICOMDiskStorage):
    """Saves each instance at ``<path>/<template rendered with its attributes>``.

    Subclasses may override ``save(dataset, path)`` or ``generate_path(dataset)``
    as in dicomtrolley 4.1.0; downloads then go through them (see
    :func:`uses_4_1_0_save`). A path from ``generate_path`` must still stay
    inside the output folder.

    Parameters
    ----------
    path:
        Output folder used when save() gets no path.
    template:
        Folder layout, e.g. ``{PatientID}/{StudyInstanceUID}/{SOPInstanceUID}.dcm``.
    fsync:
        Flush each file (and its folder entry) to stable storage before reporting
        it saved. Safer on power loss, slower on many small files.
    dots_to_underscores:
        Write ``1_2_3`` for the value ``1.2.3`` (the 4.1.0 layouts do).
    transform:
        Applied to each data set before it is written (see
        :class:`DatasetHook`), e.g. a :class:`~dicomtrolley.deid.Deidentifier`.
        Each instance is then received in memory, never written as it came.
    memory_limit:
        With a transform: the largest instance (bytes) held in memory; larger
        ones fail. Default: ``$DICOMTROLLEY_DEID_MEMORY_LIMIT`` or 1 GiB.
    """

    def __init__(
        self,
        path: str | Path,
        template: str = DEFAULT_TEMPLATE,
        fsync: bool = False,
        dots_to_underscores: bool = False,
        transform: DatasetHook | Callable[[Dataset], Dataset] | None = None,
        memory_limit: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.template = PathTemplate(template, dots_to_underscores)
        self.fsync = fsync
        self.transform = transform
        self.memory_limit = memory_limit

    def __str__(self) -> str:
        return f"{type(self).__name__} at {self.path}"

    def layout_key(self) -> str:
        key = f"template:{self.template.template}"
        if self.template.dots_to_underscores:
            key += "|dots"
        if uses_4_1_0_save(self):  # the subclass decides: its name too
            return f"{super().layout_key()}|{key}"
        return self._tagged(key)

    def planned_path(self, dataset: Dataset, root: Path) -> Path | None:
        if uses_4_1_0_save(self):
            return None  # the subclass's save decides
        return self.target_path(dataset, root)

    def fits(self, file: Path, root: Path) -> bool:
        """Whether file is where generate_path puts the data set it holds."""
        try:
            dataset = verify_dicom_file(file)
            return self.target_path(dataset, root) == file.resolve()
        except (DICOMTrolleyError, OSError):
            return False

    def generate_path(self, dataset: Dataset) -> Path:
        """The path of dataset relative to the output folder (4.1.0 name)."""
        return self.relative_path(dataset)

    def relative_path(self, dataset: Dataset) -> Path:
        """The template rendered with dataset's values (validated, sanitised)."""
        values = {name: dataset.get(name) for name in self.template.fields}
        for name, value in values.items():
            if hasattr(value, "value") and not isinstance(value, str):
                values[name] = value.value
        return self.template.render(values)

    def target_path(self, dataset: Dataset, path: str | Path | None = None) -> Path:
        """Where dataset goes: generate_path under path (default: self.path).

        Raises
        ------
        UnsafePathError
            When that place is outside the folder.
        """
        root = Path(path) if path else self.path
        return _inside(root, Path(self.generate_path(dataset)))

    def save(self, dataset: Dataset, path: str | Path | None = None) -> Path:
        """Write dataset to its place under path (default: self.path), atomically.

        With a ``transform``, dataset is changed (in place) first, unless a
        download already did.

        Raises
        ------
        StorageError
            When the file cannot be written (UnsafePathError: not there).
        """
        root = Path(path) if path else self.path
        hook = self.transform
        if hook is not None:
            hook.check_folder(root)
        dataset, note = self.prepare(dataset)
        target = self._write(dataset, root)
        if hook is not None and note is not None:
            hook.saved(root, target, note)
        return target

    def _write(self, dataset: Dataset, root: Path) -> Path:
        target = self.target_path(dataset, root)
        uids = [str(dataset.get("SOPInstanceUID", ""))]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = make_temp_file(target.parent)
        except OSError as error:
            raise StorageError(f"cannot save {target}: {error}", uids=uids) from error
        try:
            with os.fdopen(fd, "wb") as handle:
                dataset.save_as(handle, enforce_file_format=False)
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            os.replace(name, target)
        except Exception as error:  # pydicom raises ValueError, TypeError ...
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise StorageError(f"cannot save {target}: {error}", uids=uids) from error
        return target

    def commit_file(self, temp_path: Path, dataset: Dataset, root: Path) -> Path:
        if type(self).save is not TemplateStorage.save:
            return super().commit_file(temp_path, dataset, root)  # the user's save
        target = self.target_path(dataset, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp_path, target)
        return target


class StorageDir(TemplateStorage):
    """Saves to ``<path>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>``.

    As in dicomtrolley 4.1.0, dots in UIDs become underscores, files get no
    extension and a missing UID becomes ``unknown`` (a file without a
    SOPInstanceUID is saved as ``.../unknown``). UIDs that could lead out of
    the folder are refused (UnsafePathError), as everywhere.
    """

    #: The folder layout (FlatStorageDir changes it).
    layout = DEFAULT_TEMPLATE

    def __init__(
        self,
        path: str | Path,
        fsync: bool = False,
        transform: DatasetHook | Callable[[Dataset], Dataset] | None = None,
    ) -> None:
        super().__init__(
            path,
            self.layout,
            fsync=fsync,
            dots_to_underscores=True,
            transform=transform,
        )
        self.template.missing_as_unknown = True

    @staticmethod
    def get_value(dataset: Dataset, tag_name: str) -> str:
        """The value of tag_name as a path part: ``unknown`` when missing, dots
        as underscores, validated (UIDs) or reduced to safe characters.

        Raises
        ------
        UnsafePathError
            For a UID that breaks the UID grammar (``..``, slashes ...).
        """
        value = dataset.get(tag_name)
        if hasattr(value, "value") and not isinstance(value, str):
            value = value.value
        if value in (None, ""):
            return UNKNOWN
        return safe_path_part(tag_name, value).replace(".", "_")


class FlatStorageDir(StorageDir):
    """Saves every instance directly in ``<path>/<SOPInstanceUID>`` (dots → _)."""

    layout = "{SOPInstanceUID}"


def remove_illegal_elements_for_writing(dataset: Dataset) -> Dataset:
    """Delete the UN elements whose value is not bytes or text, in place.

    Some WADO-RS metadata answers give private elements of VR UN a value that
    is neither (a number, a list), which pydicom cannot write. Returns dataset.
    """
    illegal = [
        element.tag
        for element in dataset
        if element.VR == "UN" and not isinstance(element.value, str | bytes)
    ]
    for tag in illegal:
        logger.debug(
            "Removing element %s: VR UN (unknown bytes) but its value is not bytes",
            tag,
        )
        del dataset[tag]
    return dataset


def make_writable(ds: Dataset) -> Dataset:
    """Prepare a dataset without a file header (from JSON metadata) for saving.

    Gives it a preamble and a file meta header (Explicit VR Little Endian, its
    SOP class and instance), so it is saved as a PS3.10 file, and removes elements it could not write
    (:func:`remove_illegal_elements_for_writing`). Changes ds in place and
    returns it.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if getattr(ds, "preamble", None) is None:
        ds.preamble = b"\x00" * 128  # saved as a PS3.10 file: preamble, DICM
    ds.set_original_encoding(False, True)
    return remove_illegal_elements_for_writing(ds)
