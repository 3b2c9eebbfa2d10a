"""Shared fixtures: small DICOM files and study trees built in memory."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from dicomtrolley.core import Instance, Series, Study

DicomBytes = Callable[..., bytes]
StudyFactory = Callable[..., Study]


def _dataset(
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    patient_id: str,
    pixel_bytes: int,
    extra: Mapping[str, Any],
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"
    ds.Modality = "CT"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    if pixel_bytes:
        ds.add_new(0x7FE00010, "OW", bytes(range(256)) * (pixel_bytes // 256))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


@pytest.fixture
def dicom_bytes() -> DicomBytes:
    """make(study, series, sop, patient_id=..., pixel_bytes=..., **keywords) -> a
    complete PS3.10 file (Explicit VR Little Endian) as bytes."""

    def make(
        study_uid: str = "1.2.3",
        series_uid: str = "1.2.3.4",
        sop_uid: str = "1.2.3.4.5",
        patient_id: str = "PAT1",
        pixel_bytes: int = 512,
        **extra: Any,
    ) -> bytes:
        ds = _dataset(study_uid, series_uid, sop_uid, patient_id, pixel_bytes, extra)
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()

    return make


@pytest.fixture
def make_study() -> StudyFactory:
    """make(study_uid, {series_uid: [instance_uid, ...]}) -> a linked Study.

    A series mapped to None gets no instances (as after a SERIES-level search);
    an empty mapping gives a study without series (STUDY-level search). Every
    object's data holds its own UID so that equality can see differences.
    """

    def make(
        study_uid: str = "1",
        series: Mapping[str, Sequence[str] | None] | None = None,
    ) -> Study:
        study_data = Dataset()
        study_data.StudyInstanceUID = study_uid
        study = Study(uid=study_uid, data=study_data, series=[])
        series_list = []
        for series_uid, instance_uids in (series or {}).items():
            series_data = Dataset()
            series_data.SeriesInstanceUID = series_uid
            one = Series(uid=series_uid, data=series_data, parent=study, instances=[])
            instances = []
            for instance_uid in instance_uids or ():
                instance_data = Dataset()
                instance_data.SOPInstanceUID = instance_uid
                instances.append(
                    Instance(uid=instance_uid, data=instance_data, parent=one)
                )
            one.instances = instances
            series_list.append(one)
        study.series = series_list
        return study

    return make
