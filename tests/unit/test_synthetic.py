"""Synthetic studies: deterministic, valid, varied, written atomically."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicomtrolley import synthetic
from dicomtrolley.exceptions import StorageError

REQUIRED = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("demo")
    return root, synthetic.write_studies(root)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_two_runs_write_identical_files(
    written: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    root, paths = written
    again = synthetic.write_studies(tmp_path)
    assert [p.relative_to(tmp_path) for p in again] == [
        p.relative_to(root) for p in paths
    ]
    assert _tree(tmp_path) == _tree(root)


def test_default_set_has_the_promised_variety() -> None:
    studies = synthetic.default_studies()
    assert len({s.patient_id for s in studies}) >= 3
    assert {"CT", "MR"} <= {m for s in studies for m in s.modalities}
    assert all(len(s.series) >= 2 for s in studies)
    assert 60 <= sum(s.instance_count for s in studies) <= 120
    assert len({s.study_date for s in studies}) == len(studies)
    uids = [s.study_uid for s in studies]
    uids += [se.series_uid for s in studies for se in s.series]
    assert len(set(uids)) == len(uids)


def test_files_are_valid_and_laid_out_by_uid(written: tuple[Path, list[Path]]) -> None:
    root, paths = written
    seen = set()
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword in REQUIRED:
            assert keyword in ds, (path, keyword)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert path.relative_to(root).parts == (
            ds.PatientID,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            f"{ds.SOPInstanceUID}.dcm",
        )
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
            assert uid.is_valid, uid
        pixels = ds.pixel_array
        assert pixels.dtype == np.uint16
        assert pixels.shape[-2:] == (ds.Rows, ds.Columns)
        assert int(pixels.max()) < 2**ds.BitsStored
        seen.add(ds.SOPInstanceUID)
    assert len(seen) == len(paths)


def test_transfer_syntaxes_and_multi_frame(written: tuple[Path, list[Path]]) -> None:
    _, paths = written
    syntaxes: Counter[str] = Counter()
    frames: list[tuple[Any, ...]] = []
    for path in paths:
        ds = pydicom.dcmread(path)
        syntaxes[ds.file_meta.TransferSyntaxUID] += 1
        if int(ds.get("NumberOfFrames", 1)) > 1:
            frames.append(ds.pixel_array.shape)
    assert set(syntaxes) == {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        RLELossless,
    }
    assert min(syntaxes.values()) >= 10
    assert frames == [(8, 64, 64)]


def test_rle_pixels_decode_to_what_was_generated(
    written: tuple[Path, list[Path]],
) -> None:
    _, paths = written
    instances = list(synthetic.instance_specs(synthetic.default_studies()))
    for spec, path in zip(instances, paths, strict=True):
        if spec.series.transfer_syntax == RLELossless:
            ds = pydicom.dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == RLELossless
            plain = synthetic.make_dataset(
                synthetic.InstanceSpec(
                    spec.study,
                    replace(spec.series, transfer_syntax=ExplicitVRLittleEndian),
                    spec.index,
                )
            )
            assert np.array_equal(ds.pixel_array, plain.pixel_array)
            break
    else:
        pytest.fail("no RLE instance")


def test_non_ascii_names_decode(written: tuple[Path, list[Path]]) -> None:
    _, paths = written
    names = {}
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        names[ds.PatientID] = (ds.get("SpecificCharacterSet", ""), ds.PatientName)
    charset, name = names["DTR002"]
    assert charset == "ISO_IR 192"
    assert str(name) == "Müller^Jürgen"
    charset, name = names["DTR003"]
    assert charset == "ISO_IR 192"
    assert name.alphabetic == "Yamada^Tarou"
    assert name.ideographic == "山田^太郎"
    assert name.phonetic == "やまだ^たろう"
    raw = (paths[0].parent.parent.parent.parent / "DTR002").rglob("*.dcm")
    assert "Müller^Jürgen".encode() in next(iter(raw)).read_bytes()


def test_no_temporary_files_are_left(written: tuple[Path, list[Path]]) -> None:
    root, paths = written
    files = {p for p in root.rglob("*") if p.is_file()}
    assert files == set(paths)
    assert not [p for p in files if p.name.startswith(".") or p.suffix != ".dcm"]


def test_unwritable_target_raises_storage_error_with_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "DTR001"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(StorageError) as caught:
        synthetic.write_studies(tmp_path)
    assert str(blocker) in str(caught.value)


def test_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "dcmwrite", broken)
    with pytest.raises(StorageError, match="disk full"):
        synthetic.write_studies(tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_large_study_sizes_and_content(tmp_path: Path) -> None:
    frame = 128 * 128 * 2
    paths = synthetic.large_study(
        tmp_path, 10 * frame + 1, 4 * frame, rows=128, columns=128
    )
    assert len(paths) == 3  # 11 frames: 4 + 4 + 3
    frames = []
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert len(ds.PixelData) == ds.NumberOfFrames * frame
        pixels = ds.pixel_array
        assert pixels.shape == (ds.NumberOfFrames, 128, 128)
        assert int(pixels.max()) < 4096
        frames.append(int(ds.NumberOfFrames))
        # the file is a valid PS3.10 file that ends with the pixel data
        assert path.stat().st_size > len(ds.PixelData)
    assert frames == [4, 4, 3]
    assert len({pydicom.dcmread(p).StudyInstanceUID for p in paths}) == 1
    again = synthetic.large_study(
        tmp_path / "again", 10 * frame + 1, 4 * frame, rows=128, columns=128
    )
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_large_study_default_instance_size(tmp_path: Path) -> None:
    paths = synthetic.large_study(tmp_path, 3 * 1024**2)
    (path,) = paths
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert (ds.Rows, ds.Columns, ds.NumberOfFrames) == (512, 512, 6)
    assert path.stat().st_size == pytest.approx(3 * 1024**2, rel=0.01)
