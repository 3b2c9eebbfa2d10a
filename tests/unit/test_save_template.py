"""Downloader.save_all, the one shape of every adapter's download to disk.

An adapter gives the units it fetches (plan_saves) and how to fetch one
(save_unit); the template skips what is on disk, runs the units, and reports
each file and each failure with its UIDs. These tests drive it with small
downloaders of their own, on files in a temporary folder (no network).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomtrolley.core import (
    DICOMDownloadable,
    Downloader,
    InstanceReference,
    to_instance_refs,
)
from dicomtrolley.download import SaveJob
from dicomtrolley.exceptions import (
    NonInstanceParameterError,
    ServerHTTPError,
)
from dicomtrolley.storage import StorageDir
from dicomtrolley.streaming import PartFile
from tests.fakes import RecordingProgress, dicom_file

STUDY, SERIES = "1.2.826.0.1.3680043.8.1055.1", "1.2.826.0.1.3680043.8.1055.2"


def ref(n: int) -> InstanceReference:
    return InstanceReference(STUDY, SERIES, f"1.2.826.0.1.3680043.8.1055.3.{n}")


def content(r: InstanceReference) -> bytes:
    return dicom_file(r.study_uid, r.series_uid, r.instance_uid)


class PerInstance(Downloader):
    """One unit per instance, written through PartFile; some instances fail."""

    failures_per_unit = True

    def __init__(self, failing: Sequence[InstanceReference] = ()) -> None:
        self.failing = set(failing)
        self.fetched: list[InstanceReference] = []
        self.workers_prepared = 0

    def plan_saves(self, job: SaveJob) -> list[InstanceReference]:
        return job.skip_present(to_instance_refs(job.objects))

    def prepare_workers(self, workers: int) -> None:
        self.workers_prepared = workers

    def save_unit(self, job: SaveJob, unit: InstanceReference) -> None:
        self.fetched.append(unit)
        if unit in self.failing:
            raise ServerHTTPError("server failed", status_code=503)
        part = PartFile(job.storage, job.output_dir, job.saved, expected=unit)
        part.write(content(unit))
        part.finish()


class InMemory(Downloader):
    """A 4.1.0-style downloader: only datasets()."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        for obj in to_instance_refs(objects):
            yield pydicom.dcmread(io.BytesIO(content(obj)))
            if self.error is not None:
                raise self.error


def test_a_failing_unit_is_reported_with_its_uids_and_the_others_are_saved(
    tmp_path: Path,
) -> None:
    downloader = PerInstance(failing=[ref(2)])
    report = downloader.save_all(
        [ref(1), ref(2), ref(3)], StorageDir(tmp_path), tmp_path, max_workers=2
    )
    assert len(report.saved) == 2
    [failure] = report.failures
    assert failure.uids == ref(2).uids()
    assert isinstance(failure.error, ServerHTTPError)
    assert downloader.workers_prepared == 2


def test_files_on_disk_are_skipped_and_counted_once(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path)
    PerInstance().save_all([ref(1)], storage, tmp_path)
    progress = RecordingProgress()
    downloader = PerInstance()
    report = downloader.save_all([ref(1), ref(2)], storage, tmp_path, progress=progress)
    assert downloader.fetched == [ref(2)]
    assert len(report.skipped) == 1 and len(report.saved) == 1
    assert progress.values("instances_total") == [1]  # the skipped one
    assert progress.values("skipped") == [0]
    assert progress.values("done") == [len(content(ref(2)))]


def test_skip_if_present_is_all_or_nothing(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path)
    PerInstance().save_all([ref(1)], storage, tmp_path)
    job = SaveJob([], storage, tmp_path, RecordingProgress())
    assert not job.skip_if_present([ref(1), ref(2)])
    assert not job.skip_if_present([])
    assert job.report.skipped == []
    assert job.skip_if_present([ref(1)])
    assert len(job.report.skipped) == 1


def test_references_too_shallow_end_the_download(tmp_path: Path) -> None:
    class Lazy(PerInstance):
        def save_unit(self, job: SaveJob, unit: InstanceReference) -> None:
            raise NonInstanceParameterError("needs instances", uids=unit.uids())

    with pytest.raises(NonInstanceParameterError):
        Lazy().save_all([ref(1)], StorageDir(tmp_path), tmp_path)


def test_the_in_memory_default_saves_with_storage_save(tmp_path: Path) -> None:
    saved: list[str] = []

    class Spy(StorageDir):
        def save(self, dataset: Dataset, path: str | Path | None = None) -> Path:
            saved.append(dataset.SOPInstanceUID)
            return super().save(dataset, path)

    report = InMemory().save_all([ref(1), ref(2)], Spy(tmp_path), tmp_path)
    assert saved == [ref(1).instance_uid, ref(2).instance_uid]
    assert len(report.saved) == 2 and report.bytes_written > 0


def test_the_in_memory_default_raises_what_datasets_raises(tmp_path: Path) -> None:
    """As in 4.1.0; a lazy NonInstanceParameterError reaches the Trolley."""
    for error in (ServerHTTPError("down"), NonInstanceParameterError("deeper")):
        with pytest.raises(type(error)):
            InMemory(error).save_all([ref(1)], StorageDir(tmp_path), tmp_path)
