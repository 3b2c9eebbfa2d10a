"""UID checks, path templates, and writing instances to disk safely."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, DeflatedExplicitVRLittleEndian

from dicomtrolley.core import InstanceReference
from dicomtrolley.exceptions import (
    DICOMParseError,
    InvalidUIDError,
    StorageError,
    UnsafePathError,
)
from dicomtrolley.files import TEMP_SUFFIX
from dicomtrolley.storage import (
    DICOMDiskStorage,
    FlatStorageDir,
    PathTemplate,
    StorageDir,
    TemplateStorage,
    make_writable,
    remove_illegal_elements_for_writing,
    safe_path_part,
    uses_4_1_0_save,
    verify_dicom_file,
)
from dicomtrolley.uids import check_uid, is_path_safe_uid, is_valid_uid
from tests.conftest import DicomBytes
from tests.fakes import tree

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

STUDY, SERIES, SOP = "1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3"
REF = InstanceReference(STUDY, SERIES, SOP)


def files_in(folder: Path) -> list[str]:
    """Every file below folder, relative, sorted (hidden ones included)."""
    return sorted(str(p.relative_to(folder)) for p in tree(folder) if p.is_file())


def read_dataset(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


# --------------------------------------------------------------------------- #
# uids
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "uid", ["1", "0", "1.2.840.10008.5.1.4.1.1.2", "2.25.0", "1." + "2" * 62]
)
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)
    assert is_path_safe_uid(uid)
    assert check_uid(uid) == uid


def test_leading_zeros_are_tolerated_for_paths_only() -> None:
    assert not is_valid_uid("1.02.3")
    assert is_path_safe_uid("1.02.3")
    assert check_uid("1.02.3") == "1.02.3"


@pytest.mark.parametrize(
    "uid",
    [
        "",
        ".",
        "..",
        "1..2",
        ".1",
        "1.",
        "../1",
        "1/2",
        "/1.2",
        "1\\2",
        "1.2a",
        "1 2",
        "1" * 129,
    ],
)
def test_unsafe_uids_are_refused(uid: str) -> None:
    assert not is_valid_uid(uid)
    assert not is_path_safe_uid(uid)
    with pytest.raises(InvalidUIDError) as info:
        check_uid(uid, "SeriesInstanceUID")
    assert "SeriesInstanceUID" in str(info.value)


def test_strict_uids_are_at_most_64_characters() -> None:
    assert is_valid_uid("1" * 64)
    assert not is_valid_uid("1" * 65)
    assert is_path_safe_uid("1" * 65)  # seen in the wild, still path-safe


@pytest.mark.parametrize("padded", ["1.2.3\x00", "1.2.3 ", " 1.2.3", "1.2.3 \x00"])
def test_check_uid_strips_padding(padded: str) -> None:
    assert check_uid(padded) == "1.2.3"


def test_check_uid_refuses_none_and_shortens_long_values() -> None:
    with pytest.raises(InvalidUIDError):
        check_uid(None)
    with pytest.raises(InvalidUIDError) as info:
        check_uid("x" * 500)
    assert len(str(info.value)) < 200
    assert not is_valid_uid(123)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# PathTemplate
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("/abs/{SOPInstanceUID}", "relative"),
        ("\\{SOPInstanceUID}", "relative"),
        ("a\\{SOPInstanceUID}", "relative"),
        ("", "relative"),
        ("../{SOPInstanceUID}", r"\.\."),
        ("{PatientID}/../{SOPInstanceUID}", r"\.\."),
        ("{PatientID}/{StudyInstanceUID}", "SOPInstanceUID"),
        ("{SOPInstanceUID:>10}", "plain"),
        ("{SOPInstanceUID!r}", "plain"),
        ("{SOPInstanceUID.real}", "plain"),
        ("{SOPInstanceUID[0]}", "plain"),
        ("{NoSuchKeyword}/{SOPInstanceUID}", "not a DICOM keyword"),
        ("{SOPInstanceUID}/", "file name"),
        ("{SOPInstanceUID}/fixed.dcm", "file name"),
        ("{SOPInstanceUID", "template"),
    ],
)
def test_bad_templates_are_refused(template: str, reason: str) -> None:
    with pytest.raises(StorageError, match=reason):
        PathTemplate(template)


def test_template_fields_and_render() -> None:
    template = PathTemplate("{PatientID}/{StudyInstanceUID}/{SOPInstanceUID}.dcm")
    assert template.fields == ("PatientID", "StudyInstanceUID", "SOPInstanceUID")
    assert not template.uids_only
    assert PathTemplate("{StudyInstanceUID}/{SOPInstanceUID}").uids_only
    path = template.render(
        {"PatientID": "P1", "StudyInstanceUID": STUDY, "SOPInstanceUID": SOP}
    )
    assert path == Path("P1") / STUDY / f"{SOP}.dcm"
    underscored = PathTemplate("{SOPInstanceUID}", dots_to_underscores=True)
    assert underscored.render({"SOPInstanceUID": "1.2.3"}) == Path("1_2_3")


def test_template_render_refuses_bad_uids() -> None:
    template = PathTemplate("{StudyInstanceUID}/{SOPInstanceUID}")
    with pytest.raises(UnsafePathError):
        template.render({"StudyInstanceUID": "..", "SOPInstanceUID": SOP})
    with pytest.raises(UnsafePathError):
        template.render({"StudyInstanceUID": STUDY, "SOPInstanceUID": None})
    missing_study = template.render({"SOPInstanceUID": SOP})
    assert missing_study == Path("unknown") / SOP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("P1", "P1"),
        ("../../etc", "_.._etc"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("..", "UNKNOWN"),
        (".", "UNKNOWN"),
        ("", "unknown"),
        (None, "unknown"),
        ("Jöhn^Dœ", "Jöhn^Dœ"),
        ("患者", "患者"),
        ("a\x00b", "ab"),
        ("x" * 100, "x" * 64),
        ("C:evil", "C_evil"),
    ],
)
def test_safe_path_part(value: str | None, expected: str) -> None:
    assert safe_path_part("PatientID", value) == expected


# --------------------------------------------------------------------------- #
# StorageDir, FlatStorageDir, TemplateStorage.save
# --------------------------------------------------------------------------- #


def test_storage_dir_layout_is_4_1_0_compatible(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    ds = read_dataset(dicom_bytes(STUDY, SERIES, SOP))
    storage = StorageDir(tmp_path)
    path = storage.save(ds)
    expected = tmp_path / "1_2_840_1" / "1_2_840_1_2" / "1_2_840_1_2_3"
    assert path == expected.resolve()
    assert pydicom.dcmread(path).SOPInstanceUID == SOP
    assert files_in(tmp_path) == ["1_2_840_1/1_2_840_1_2/1_2_840_1_2_3"]
    assert str(storage) == f"StorageDir at {tmp_path}"
    assert storage.generate_path(ds) == Path("1_2_840_1/1_2_840_1_2/1_2_840_1_2_3")


def test_save_path_argument_overrides_the_default(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    ds = read_dataset(dicom_bytes(STUDY, SERIES, SOP))
    StorageDir(tmp_path / "default").save(ds, path=str(tmp_path / "other"))
    assert not (tmp_path / "default").exists()
    assert len(files_in(tmp_path / "other")) == 1


def test_flat_storage_dir(tmp_path: Path, dicom_bytes: DicomBytes) -> None:
    storage = FlatStorageDir(tmp_path)
    for sop in ("1.2.3.1", "1.2.3.2"):
        storage.save(read_dataset(dicom_bytes(STUDY, SERIES, sop)))
    assert files_in(tmp_path) == ["1_2_3_1", "1_2_3_2"]


@pytest.mark.parametrize(
    ("patient_id", "folder"),
    [
        ("../../etc", "_.._etc"),
        ("a/b", "a_b"),
        ("..", "UNKNOWN"),
        ("", "unknown"),
        ("Jöhn", "Jöhn"),
    ],
)
def test_template_storage_keeps_hostile_values_inside_root(
    tmp_path: Path, dicom_bytes: DicomBytes, patient_id: str, folder: str
) -> None:
    root = tmp_path / "out"
    storage = TemplateStorage(
        root, "{PatientID}/{StudyInstanceUID}/{SOPInstanceUID}.dcm"
    )
    path = storage.save(read_dataset(dicom_bytes(STUDY, SERIES, SOP, patient_id)))
    assert path.is_relative_to(root.resolve())
    assert path == (root / folder / STUDY / f"{SOP}.dcm").resolve()
    assert files_in(tmp_path) == [f"out/{folder}/{STUDY}/{SOP}.dcm"]


def test_template_storage_refuses_a_hostile_uid(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    ds = read_dataset(dicom_bytes(STUDY, SERIES, SOP))
    ds.StudyInstanceUID = "../../etc"
    with pytest.raises(UnsafePathError):
        TemplateStorage(tmp_path).save(ds)
    assert files_in(tmp_path) == []


def test_save_of_an_unwritable_dataset_raises_storage_error_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    ds = Dataset()  # no file meta, no encoding: pydicom cannot write it
    ds.SOPInstanceUID = SOP
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    with pytest.raises(StorageError, match="cannot save") as info:
        StorageDir(tmp_path).save(ds)
    assert info.value.uids == (SOP,)
    assert files_in(tmp_path) == []


def test_save_into_a_file_raises_storage_error(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError):
        StorageDir(blocker).save(read_dataset(dicom_bytes(STUDY, SERIES, SOP)))


def test_save_with_fsync(tmp_path: Path, dicom_bytes: DicomBytes) -> None:
    storage = StorageDir(tmp_path, fsync=True)
    path = storage.save(read_dataset(dicom_bytes(STUDY, SERIES, SOP)))
    assert pydicom.dcmread(path).SOPInstanceUID == SOP


# --------------------------------------------------------------------------- #
# verify_dicom_file
# --------------------------------------------------------------------------- #


def test_verify_accepts_a_complete_file(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    path = tmp_path / "f"
    path.write_bytes(dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=4096))
    assert verify_dicom_file(path).SOPInstanceUID == SOP


def test_verify_refuses_every_cut_inside_an_element(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    """A file cut anywhere but exactly between two elements is refused."""
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=512)
    full = pydicom.dcmread(io.BytesIO(data), defer_size=0)
    boundaries = set()
    for element in full._dict.values():
        boundaries.add(element.value_tell + element.length)  # type: ignore[union-attr]
    path = tmp_path / "cut"
    accepted = []
    for size in range(len(data)):
        path.write_bytes(data[:size])
        try:
            verify_dicom_file(path)
        except DICOMParseError:
            continue
        accepted.append(size)
    assert accepted
    assert set(accepted) <= boundaries


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world", b"\x00" * 128 + b"DICM", b"<html>error</html>" * 20],
)
def test_verify_refuses_non_dicom(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk"
    path.write_bytes(content)
    with pytest.raises(DICOMParseError, match="junk"):
        verify_dicom_file(path)


def test_verify_accepts_a_deflated_file(tmp_path: Path) -> None:
    """Element positions of a deflated file are not file offsets."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP
    ds.PatientName = "Doe^Jane"
    ds.add_new(0x7FE00010, "OW", b"\x00\x00" * 5000)  # compresses very well
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(SOP)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    assert len(data) < 2000
    path = tmp_path / "deflated"
    path.write_bytes(data)
    assert verify_dicom_file(path).SOPInstanceUID == SOP
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DICOMParseError):
        verify_dicom_file(path)


# --------------------------------------------------------------------------- #
# InstanceWriter
# --------------------------------------------------------------------------- #


def test_writer_writes_to_a_temporary_file_in_the_output_folder(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    data = dicom_bytes(STUDY, SERIES, SOP)
    storage = StorageDir(tmp_path)
    writer = storage.open_writer(tmp_path, expected=REF)
    writer.write(data[:100])
    writer.write(memoryview(data)[100:])
    assert writer.temp_path.parent == tmp_path
    assert writer.temp_path.name.endswith(TEMP_SUFFIX)
    assert files_in(tmp_path) == [writer.temp_path.name]
    assert writer.bytes_written == len(data)
    path = writer.commit()
    assert path == (tmp_path / "1_2_840_1" / "1_2_840_1_2" / "1_2_840_1_2_3").resolve()
    assert path.read_bytes() == data
    assert files_in(tmp_path) == ["1_2_840_1/1_2_840_1_2/1_2_840_1_2_3"]


def test_truncated_stream_raises_and_leaves_nothing(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=2048)
    writer = StorageDir(tmp_path).open_writer(tmp_path, expected=REF)
    writer.write(data[:-100])
    with pytest.raises(DICOMParseError, match="truncated") as info:
        writer.commit()
    assert info.value.uids == (STUDY, SERIES, SOP)
    assert files_in(tmp_path) == []


def test_non_dicom_stream_raises_and_leaves_nothing(tmp_path: Path) -> None:
    writer = StorageDir(tmp_path).open_writer(tmp_path)
    writer.write(b"<html><title>Error</title></html>")
    with pytest.raises(DICOMParseError):
        writer.commit()
    assert files_in(tmp_path) == []


def test_unexpected_instance_raises_and_leaves_nothing(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    writer = StorageDir(tmp_path).open_writer(
        tmp_path, expected=InstanceReference(STUDY, SERIES, "1.2.840.1.2.99")
    )
    writer.write(dicom_bytes(STUDY, SERIES, SOP))
    with pytest.raises(DICOMParseError, match=r"1\.2\.840\.1\.2\.99") as info:
        writer.commit()
    assert SOP in str(info.value)
    assert "1.2.840.1.2.99" in info.value.uids
    assert files_in(tmp_path) == []


def test_hostile_uid_in_a_stream_raises_and_leaves_nothing(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    writer = StorageDir(tmp_path).open_writer(tmp_path)
    writer.write(dicom_bytes("1.2", "1.2.3", "1.2.3.4", StudyInstanceUID=".."))
    with pytest.raises(UnsafePathError):
        writer.commit()
    assert files_in(tmp_path) == []


def test_writer_abort_and_context_manager(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    storage = StorageDir(tmp_path)
    with storage.open_writer(tmp_path) as writer:
        writer.write(b"partial")
    assert files_in(tmp_path) == []
    with pytest.raises(StorageError, match="after commit or abort"):
        writer.write(b"more")
    with storage.open_writer(tmp_path) as writer:
        writer.write(dicom_bytes(STUDY, SERIES, SOP))
        path = writer.commit()
    assert path.is_file()


def test_writer_with_fsync(tmp_path: Path, dicom_bytes: DicomBytes) -> None:
    storage = TemplateStorage(tmp_path, "{SOPInstanceUID}.dcm", fsync=True)
    writer = storage.open_writer(tmp_path, expected=REF)
    assert writer.fsync
    writer.write(dicom_bytes(STUDY, SERIES, SOP))
    assert writer.commit() == (tmp_path / f"{SOP}.dcm").resolve()


def test_writer_cannot_create_its_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="cannot create"):
        StorageDir(blocker).open_writer(blocker / "sub")


# --------------------------------------------------------------------------- #
# existing_file
# --------------------------------------------------------------------------- #


def saved_by_writer(storage: DICOMDiskStorage, root: Path, data: bytes) -> Path:
    """Save data the way downloads do (writer, verify, rename, index)."""
    writer = storage.open_writer(root, expected=REF)
    writer.write(data)
    return writer.commit()


def test_existing_file_finds_intact_files_only(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    storage = StorageDir(tmp_path)
    assert storage.existing_file(REF, tmp_path) is None
    data = dicom_bytes(STUDY, SERIES, SOP, pixel_bytes=2048)
    path = saved_by_writer(storage, tmp_path, data)
    assert storage.existing_file(REF, tmp_path) == path
    path.write_bytes(data[:-10])  # damaged
    assert storage.existing_file(REF, tmp_path) is None
    path.write_bytes(data)  # a row found gone stays gone until saved again
    assert storage.existing_file(REF, tmp_path) is None
    assert saved_by_writer(storage, tmp_path, data) == path
    assert storage.existing_file(REF, tmp_path) == path
    path.unlink()
    assert storage.existing_file(REF, tmp_path) is None


def test_existing_file_works_for_any_template(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    storage = TemplateStorage(tmp_path, "{PatientID}/{SOPInstanceUID}")
    path = saved_by_writer(storage, tmp_path, dicom_bytes(STUDY, SERIES, SOP))
    assert path.parent.name == "PAT1"
    assert storage.existing_file(REF, tmp_path) == path


def test_a_direct_save_is_not_indexed(tmp_path: Path, dicom_bytes: DicomBytes) -> None:
    """storage.save() outside a download (4.1.0 use) adds no index to a folder."""
    StorageDir(tmp_path).save(read_dataset(dicom_bytes(STUDY, SERIES, SOP)))
    assert not (tmp_path / ".dicomtrolley").exists()


def test_existing_file_with_hostile_reference(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path)
    assert storage.existing_file(InstanceReference("..", "1", "2"), tmp_path) is None


# --------------------------------------------------------------------------- #
# a 4.1.0-style storage that only implements save()
# --------------------------------------------------------------------------- #


class SaveOnlyStorage(DICOMDiskStorage):
    """Like a user's 4.1.0 subclass: save() only, returns None."""

    def __init__(self) -> None:
        self.saved: list[tuple[str, str]] = []

    def save(self, dataset: Dataset, path: str | Path | None = None) -> None:
        assert path is not None
        target = Path(path) / f"custom-{dataset.SOPInstanceUID}"
        dataset.save_as(target, enforce_file_format=True)
        self.saved.append((str(dataset.SOPInstanceUID), str(path)))


def test_save_only_subclass_works_through_open_writer(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    storage = SaveOnlyStorage()
    writer = storage.open_writer(tmp_path, expected=REF)
    writer.write(dicom_bytes(STUDY, SERIES, SOP))
    writer.commit()
    assert storage.saved == [(SOP, str(tmp_path))]
    assert files_in(tmp_path) == [f"custom-{SOP}"]
    assert pydicom.dcmread(tmp_path / f"custom-{SOP}").PatientID == "PAT1"
    # save() did not say where it saved: only save() knows, so not skipped
    assert storage.existing_file(REF, tmp_path) is None


def test_failing_save_only_subclass_leaves_no_partial_file(
    tmp_path: Path, dicom_bytes: DicomBytes
) -> None:
    class Broken(DICOMDiskStorage):
        def save(self, dataset: Dataset, path: str | Path | None = None) -> None:
            raise ValueError("disk says no")

    writer = Broken().open_writer(tmp_path)
    writer.write(dicom_bytes(STUDY, SERIES, SOP))
    with pytest.raises(ValueError, match="disk says no"):
        writer.commit()
    assert files_in(tmp_path) == []


def test_base_storage_save_is_abstract(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError):
        DICOMDiskStorage().save(Dataset())
    assert DICOMDiskStorage().existing_file(REF, tmp_path) is None


def test_temporary_files_are_hidden_and_unique(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path)
    one, two = storage.open_writer(tmp_path), storage.open_writer(tmp_path)
    try:
        assert one.temp_path != two.temp_path
        assert all(w.temp_path.name.startswith(".") for w in (one, two))
    finally:
        one.abort()
        two.abort()
    assert os.listdir(tmp_path) == []


def test_make_writable_gives_a_json_dataset_a_file_header(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = SOP
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.add_new(0x00091010, "UN", 12)  # seen in WADO-RS metadata: not bytes
    ds.add_new(0x00091011, "UN", b"\x01\x02")
    assert make_writable(ds) is ds
    assert 0x00091010 not in ds and 0x00091011 in ds
    path = StorageDir(tmp_path).save(ds)
    written = pydicom.dcmread(path)
    assert written.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert written.file_meta.MediaStorageSOPInstanceUID == SOP


def test_remove_illegal_elements_keeps_text_and_bytes() -> None:
    ds = Dataset()
    ds.add_new(0x00091010, "UN", [1, 2])
    ds.add_new(0x00091012, "UN", "text")
    ds.PatientID = "P"
    remove_illegal_elements_for_writing(ds)
    assert [int(element.tag) for element in ds] == [0x00091012, 0x00100020]


def test_uses_4_1_0_save() -> None:
    class OwnSave(StorageDir):
        def save(self, dataset: Dataset, path: str | Path | None = None) -> Path:
            return super().save(dataset, path)

    class OnlySave(DICOMDiskStorage):
        def save(self, dataset: Dataset, path: str | Path | None = None) -> None:
            pass

    assert not uses_4_1_0_save(StorageDir("x"))
    assert not uses_4_1_0_save(FlatStorageDir("x"))
    assert not uses_4_1_0_save(TemplateStorage("x", "{SOPInstanceUID}.dcm"))
    assert uses_4_1_0_save(OwnSave("x"))
    assert uses_4_1_0_save(OnlySave())
