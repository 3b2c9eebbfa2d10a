"""A storage with a transform holds each received instance in memory.

Nothing is written under the output folder before the transform has run; a
truncated instance is refused as it would be from a file; the memory limit
comes from the storage, the environment or the default; receivers that spool
(C-GET, C-MOVE) learn from memory_limit_for which folders want memory.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dicomtrolley.catalog import STATE_FOLDER
from dicomtrolley.deid import Deidentifier
from dicomtrolley.exceptions import DICOMParseError, StorageError
from dicomtrolley.files import DEID_STATE_NAME
from dicomtrolley.storage import (
    DEFAULT_MEMORY_LIMIT,
    MEMORY_LIMIT_ENV,
    InstanceTooLargeError,
    TemplateStorage,
    default_memory_limit,
    encode_part10,
    memory_limit_for,
    uids_in_prefix,
)
from dicomtrolley.synthetic import instance_specs, make_dataset, phi_studies
from tests.deid_checks import KEY, LAYOUT, source_markers

STUDIES = phi_studies(1, 1)


def encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def source_bytes() -> bytes:
    return encoded(make_dataset(next(instance_specs(STUDIES))))


def every_file(root: Path) -> list[Path]:
    return [Path(d) / n for d, _, names in os.walk(root) for n in names]


def test_nothing_is_written_before_the_transform(tmp_path: Path) -> None:
    storage = TemplateStorage(tmp_path, LAYOUT, transform=Deidentifier(KEY))
    storage.check_folder(tmp_path)
    before = set(every_file(tmp_path))
    data = source_bytes()
    writer = storage.open_writer(tmp_path)
    assert writer.in_memory
    for start in range(0, len(data), 1000):
        writer.write(memoryview(data)[start : start + 1000])
        assert set(every_file(tmp_path)) == before  # still only the state files
    path = writer.commit()
    written = path.read_bytes()
    assert [m for m in source_markers(STUDIES) if m in written] == []
    new = set(every_file(tmp_path)) - before
    assert {p for p in new if STATE_FOLDER not in p.parts} == {path}


def test_a_truncated_instance_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    storage = TemplateStorage(tmp_path, LAYOUT, transform=Deidentifier(KEY))
    storage.check_folder(tmp_path)
    before = set(every_file(tmp_path))
    data = source_bytes()
    writer = storage.open_writer(tmp_path)
    writer.write(data[: len(data) - 7])
    with pytest.raises(DICOMParseError, match="truncated"):
        writer.commit()
    assert set(every_file(tmp_path)) == before


def test_the_limit_names_the_instance(tmp_path: Path) -> None:
    storage = TemplateStorage(
        tmp_path, LAYOUT, transform=Deidentifier(KEY), memory_limit=4096
    )
    storage.check_folder(tmp_path)
    assert memory_limit_for(tmp_path) == 4096
    writer = storage.open_writer(tmp_path)
    data = source_bytes()
    with pytest.raises(InstanceTooLargeError, match="4096 bytes") as info:
        writer.write(data)
    sop = next(instance_specs(STUDIES)).sop_instance_uid
    assert info.value.uids[0] == sop
    assert str(info.value).count(sop) == 1
    assert not writer.in_memory or writer.bytes_written == 0
    with pytest.raises(StorageError, match="positive"):
        TemplateStorage(tmp_path, LAYOUT, memory_limit=0)


def test_uids_in_prefix() -> None:
    data = source_bytes()
    spec = next(instance_specs(STUDIES))
    assert uids_in_prefix(data[:4096])[0] == spec.sop_instance_uid
    assert uids_in_prefix(b"garbage") == ()


def test_memory_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    assert default_memory_limit() == DEFAULT_MEMORY_LIMIT == 1 << 30
    for text, value in [("2K", 2048), ("3 MiB", 3 << 20), ("1GB", 1 << 30)]:
        monkeypatch.setenv(MEMORY_LIMIT_ENV, text)
        assert default_memory_limit() == value, text
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "a lot")
    with pytest.raises(StorageError, match=MEMORY_LIMIT_ENV):
        default_memory_limit()


def test_which_folders_want_memory(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    TemplateStorage(plain).check_folder(plain)
    assert memory_limit_for(plain) is None
    other = tmp_path / "other"  # de-identified by another process
    (other / STATE_FOLDER).mkdir(parents=True)
    (other / STATE_FOLDER / DEID_STATE_NAME).write_text("{}")
    assert memory_limit_for(other) == default_memory_limit()


@pytest.mark.parametrize(
    "syntax",
    ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"],
    ids=["explicit-le", "implicit-le", "explicit-be"],
)
def test_encode_part10_is_what_pydicom_writes(syntax: str) -> None:
    """Raw elements copied as read, the rest encoded: the bytes of save_as."""
    import pydicom

    source = make_dataset(next(instance_specs(STUDIES)))
    source.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    source.save_as(buffer, enforce_file_format=True)
    read = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    changed = Deidentifier(KEY)(read)
    expected = io.BytesIO()
    changed.save_as(expected, enforce_file_format=False)
    assert encode_part10(changed) == expected.getvalue()


def test_the_flag_of_an_instance_is_recorded_before_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed between the rename and the record would keep the file
    (skipped by the next run) but lose its burned-in flag: the record comes
    first, and a repeated one is read once."""
    import dicomtrolley.storage as storage_module
    from dicomtrolley.deid_records import read_flags

    dataset = make_dataset(next(instance_specs(STUDIES)))
    dataset.BurnedInAnnotation = "YES"
    data = encoded(dataset)
    storage = TemplateStorage(tmp_path, LAYOUT, transform=Deidentifier(KEY))
    storage.check_folder(tmp_path)
    seen_at_rename: list[int] = []
    replace = os.replace

    def replacing(source: object, target: object) -> None:
        seen_at_rename.append(len(read_flags(tmp_path)))
        if len(seen_at_rename) == 1:
            raise OSError("killed here")
        replace(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(storage_module.os, "replace", replacing)
    writer = storage.open_writer(tmp_path)
    writer.write(data)
    with pytest.raises(StorageError):  # dies at its rename
        writer.commit()
    writer = storage.open_writer(tmp_path)
    writer.write(data)
    path = writer.commit()
    assert seen_at_rename == [1, 1]
    [flag] = read_flags(tmp_path)  # recorded twice, read once
    assert flag["reason"] and flag["path"] == path.relative_to(tmp_path).as_posix()
