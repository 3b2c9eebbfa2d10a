"""StreamCheck: verify_dicom_file's checks and the CRC-32 made while a file is
written, and InstanceWriter taking over a file written that way (the C-GET and
C-MOVE intake's)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomtrolley import catalog
from dicomtrolley.catalog import FAST_CRC32_MIN, Catalog, crc32, file_checksum
from dicomtrolley.core import InstanceReference
from dicomtrolley.exceptions import DICOMParseError
from dicomtrolley.storage import (
    StorageDir,
    StreamCheck,
    TemplateStorage,
    new_temp_file,
    verify_dicom_file,
)
from tests.conftest import DicomBytes
from tests.fakes import tree

STUDY, SERIES, SOP = "1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3"
REF = InstanceReference(STUDY, SERIES, SOP)


def streamed(data: bytes, size: int) -> StreamCheck:
    check = StreamCheck()
    view = memoryview(data)
    for start in range(0, len(data), size):
        check.feed(view[start : start + size])
    return check


def received_file(folder: Path, data: bytes) -> Path:
    """data in a temporary file of folder, as the C-STORE intake leaves it."""
    fd, path = new_temp_file(folder)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def outcome(run: Callable[[Path], Dataset | None], path: Path) -> object:
    """The data set's elements as run(path) gives them, or that it refused."""
    try:
        dataset = run(path)
    except DICOMParseError:
        return "refused"
    if dataset is None:
        return None
    return [(e.tag, e.value) for e in dataset if e.tag != 0x7FE00010]


def pydicom_files() -> list[Path]:
    names = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm")
    return [Path(pydicom.data.get_testdata_file(n)) for n in names]  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [1, 7, 131, 4096, 1 << 20])
def test_streamed_check_is_verify_dicom_file_without_reading(
    tmp_path: Path, dicom_bytes: DicomBytes, size: int
) -> None:
    files = [dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=70_000)]
    files += [path.read_bytes() for path in pydicom_files()]
    for data in files:
        path = tmp_path / "f"
        path.write_bytes(data)
        check = streamed(data, size)
        assert check.crc == zlib.crc32(data) and check.size == len(data)
        walked = outcome(check.verified, path)
        assert walked is not None  # little endian with a file meta: decided
        assert walked == outcome(verify_dicom_file, path)


def test_streamed_check_refuses_what_verify_dicom_file_refuses(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=300)
    path = tmp_path / "cut"
    refused = 0
    for size in range(0, len(data), 3):
        path.write_bytes(data[:size])
        check = streamed(data[:size], 64)
        walked = outcome(check.verified, path)
        expected = outcome(verify_dicom_file, path)
        if walked is None:  # undecided: the writer asks verify_dicom_file
            walked = expected
        assert walked == expected, size
        refused += walked == "refused"
    assert refused > len(data) // 6


def test_streamed_check_leaves_to_pydicom_what_the_walker_does_not_read(
    tmp_path: Path,
) -> None:
    big_endian = Path(pydicom.data.get_testdata_file("MR_small_bigendian.dcm"))  # type: ignore[arg-type]
    no_meta = Path(pydicom.data.get_testdata_file("no_meta.dcm"))  # type: ignore[arg-type]
    for source in (big_endian, no_meta, None):
        data = source.read_bytes() if source else b"<html>error</html>" * 100
        path = tmp_path / "f"
        path.write_bytes(data)
        assert streamed(data, 1000).verified(path) is None


def test_a_file_written_with_its_check_is_taken_over_as_it_is(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=50_000)
    temp = received_file(tmp_path, data)
    check = streamed(data, 16384)
    writer = StorageDir(tmp_path).open_writer(tmp_path, REF, received=temp, check=check)
    assert writer.temp_path == temp and writer.bytes_written == len(data)
    assert [p.name for p in tree(tmp_path) if p.is_file()] == [temp.name]
    final = writer.commit()
    assert final.read_bytes() == data and not temp.exists()
    entry = Catalog.for_folder(tmp_path).entry(SOP)
    assert entry is not None and entry.size == len(data)
    assert entry.checksum == file_checksum(final)
    assert oct(final.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def test_a_taken_over_file_that_is_not_the_instance_is_refused(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=500)
    temp = received_file(tmp_path, data[:-10])
    writer = StorageDir(tmp_path).open_writer(
        tmp_path, REF, received=temp, check=streamed(data[:-10], 100)
    )
    with pytest.raises(DICOMParseError, match="truncated"):
        writer.commit()
    assert not [p for p in tree(tmp_path) if p.is_file() and p.suffix == ".part"]
    other = InstanceReference(STUDY, SERIES, SOP + ".9")
    temp = received_file(tmp_path, data)
    writer = StorageDir(tmp_path).open_writer(
        tmp_path, other, received=temp, check=streamed(data, 100)
    )
    with pytest.raises(DICOMParseError, match="asked for instance"):
        writer.commit()
    assert Catalog.for_folder(tmp_path).entry(SOP) is None


def test_a_check_that_does_not_match_the_file_is_not_trusted(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    """The file on disk decides when the check saw other bytes."""
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=500)
    temp = received_file(tmp_path, data)
    writer = TemplateStorage(tmp_path, "{SOPInstanceUID}.dcm").open_writer(
        tmp_path, REF, received=temp, check=streamed(data[:-50], 100)
    )
    final = writer.commit()
    entry = Catalog.for_folder(tmp_path).entry(SOP)
    assert entry is not None and entry.checksum == file_checksum(final)


def test_writer_checksum_is_that_of_the_file(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=100_000)
    writer = StorageDir(tmp_path, fsync=True).open_writer(tmp_path, expected=REF)
    for start in range(0, len(data), 9999):
        writer.write(memoryview(data)[start : start + 9999])
    final = writer.commit()
    entry = Catalog.for_folder(tmp_path).entry(SOP)
    assert entry is not None and entry.checksum == file_checksum(final)
    assert final.read_bytes() == data


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("size", [0, 100, FAST_CRC32_MIN - 1, FAST_CRC32_MIN, 200_000])
def test_crc32_is_zlibs_for_every_kind_of_buffer(size: int) -> None:
    data = bytes((n * 7 + 3) % 256 for n in range(size + 5))
    writable = bytearray(data)
    for piece in (
        data[5:],
        bytearray(data[5:]),
        memoryview(writable)[5:],  # a view into a larger buffer, as the link's
        memoryview(data)[5:],  # read-only
    ):
        assert crc32(piece) == zlib.crc32(data[5:])
        assert crc32(piece, 0xDEADBEEF) == zlib.crc32(data[5:], 0xDEADBEEF)


def test_crc32_without_libdeflate_is_zlibs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "_LIBDEFLATE", ("libnothing-such.so.9",))
    monkeypatch.setattr(catalog, "_fast_crc32", [])
    data = bytearray(range(256)) * 1000
    assert catalog.crc32(memoryview(data)[1:]) == zlib.crc32(data[1:])
    assert catalog._fast_crc32 == [None]


def test_a_taken_over_file_is_flushed_to_disk_when_asked(
    tmp_path: Path, dicom_bytes: DicomBytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync=True: the received file itself (its inode) reaches stable storage
    before its rename, as a file the writer wrote would."""
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=500)
    temp = received_file(tmp_path, data)
    inode = temp.stat().st_ino
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_ino)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    storage = StorageDir(tmp_path, fsync=True)
    writer = storage.open_writer(tmp_path, REF, received=temp, check=streamed(data, 99))
    final = writer.commit()
    assert inode in synced and final.stat().st_ino == inode


def test_a_taken_over_file_not_committed_is_removed(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=500)
    temp = received_file(tmp_path, data)
    storage = StorageDir(tmp_path)
    with storage.open_writer(tmp_path, REF, received=temp, check=streamed(data, 99)):
        pass  # e.g. the caller failed before commit
    assert not temp.exists()
    temp = received_file(tmp_path, data)
    with storage.open_writer(
        tmp_path, REF, received=temp, check=streamed(data, 99)
    ) as writer:
        final = writer.commit()
    assert final.exists() and not temp.exists()
