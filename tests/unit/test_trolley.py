"""Trolley with fake searchers and downloaders; DownloadReport and run_transfers."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from dicomtrolley.core import (
    DICOMDownloadable,
    DICOMObjectLevels,
    Downloader,
    InstanceReference,
    NonInstanceParameterError,
    Query,
    QueryLevels,
    Searcher,
    SeriesReference,
    Study,
    StudyReference,
    to_instance_refs,
    to_series_level_refs,
)
from dicomtrolley.download import (
    DownloadReport,
    Failure,
    NullProgress,
    Progress,
    run_transfers,
)
from dicomtrolley.exceptions import (
    DICOMTrolleyConnectionError,
    DICOMTrolleyError,
    DownloadIncompleteError,
    NoReferencesFoundError,
    StorageError,
)
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import DICOMDiskStorage, FlatStorageDir, StorageDir
from dicomtrolley.transport import DEFAULT_RETRY, Retry
from dicomtrolley.trolley import Trolley
from tests.conftest import DicomBytes, StudyFactory
from tests.fakes import tree

# study 1: series 1.1 (1.1.1, 1.1.2), series 1.2 (1.2.1); study 2: 2.1 (2.1.1)
LAYOUT: dict[str, dict[str, list[str]]] = {
    "1": {"1.1": ["1.1.1", "1.1.2"], "1.2": ["1.2.1"]},
    "2": {"2.1": ["2.1.1"]},
}
ALL_SOPS = ["1.1.1", "1.1.2", "1.2.1", "2.1.1"]


class FakeSearcher(Searcher):
    """Answers from LAYOUT at the query's level; records find_study_by_id calls."""

    def __init__(
        self, make_study: StudyFactory, layout: dict[str, dict[str, list[str]]]
    ) -> None:
        self.make_study = make_study
        self.layout = layout
        self.queries: list[Query] = []
        self.by_id: list[tuple[str, QueryLevels]] = []

    def find_studies(self, query: Query) -> Sequence[Study]:
        self.queries.append(query)
        level = QueryLevels(query.query_level)
        studies = []
        for uid, series in self.layout.items():
            if query.StudyInstanceUID and query.StudyInstanceUID != uid:
                continue
            if level == QueryLevels.STUDY:
                studies.append(self.make_study(uid))
            elif level == QueryLevels.SERIES:
                studies.append(self.make_study(uid, dict.fromkeys(series)))
            else:
                studies.append(self.make_study(uid, series))
        return studies

    def find_study_by_id(
        self, study_uid: str, query_level: QueryLevels = QueryLevels.STUDY
    ) -> Study:
        self.by_id.append((study_uid, QueryLevels(query_level)))
        return super().find_study_by_id(study_uid, query_level)


class InstanceDownloader(Downloader):
    """Needs instance references and says so up front (check_references)."""

    def __init__(self, dicom_bytes: DicomBytes) -> None:
        self.dicom_bytes = dicom_bytes
        self.requested: list[list[DICOMDownloadable]] = []

    def dataset_for(self, ref: InstanceReference) -> Dataset:
        data = self.dicom_bytes(ref.study_uid, ref.series_uid, ref.instance_uid)
        return pydicom.dcmread(io.BytesIO(data))

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        to_instance_refs(objects)

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        self.requested.append(list(objects))
        for ref in to_instance_refs(objects):
            yield self.dataset_for(ref)


class LegacyDownloader(InstanceDownloader):
    """A 4.1.0-style downloader: only datasets(), which raises once iterated."""

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        pass


class SeriesDownloader(InstanceDownloader):
    """Needs series references at least (like WADO-RS per series)."""

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        to_series_level_refs(objects)

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        self.requested.append(list(objects))
        for ref in to_series_level_refs(objects):
            uids = LAYOUT[ref.study_uid][ref.series_uid]  # type: ignore[attr-defined]
            for sop in uids:
                yield self.dataset_for(
                    InstanceReference(ref.study_uid, ref.series_uid, sop)  # type: ignore[attr-defined]
                )


class RecordingDownloader(InstanceDownloader):
    """Records how save_all is called."""

    def __init__(self, dicom_bytes: DicomBytes) -> None:
        super().__init__(dicom_bytes)
        self.save_all_calls: list[dict[str, object]] = []

    def save_all(
        self,
        objects: Sequence[DICOMDownloadable],
        storage: DICOMDiskStorage,
        output_dir: str | Path,
        *,
        max_workers: int | None = None,
        progress: Progress | None = None,
    ) -> DownloadReport:
        self.save_all_calls.append(
            {"objects": list(objects), "max_workers": max_workers, "progress": progress}
        )
        return super().save_all(
            objects, storage, output_dir, max_workers=max_workers, progress=progress
        )


class PartlyFailingDownloader(InstanceDownloader):
    """save_all like the streaming downloaders: failures go into the report."""

    def __init__(self, dicom_bytes: DicomBytes, failing: set[str]) -> None:
        super().__init__(dicom_bytes)
        self.failing = failing

    def save_all(
        self,
        objects: Sequence[DICOMDownloadable],
        storage: DICOMDiskStorage,
        output_dir: str | Path,
        *,
        max_workers: int | None = None,
        progress: Progress | None = None,
    ) -> DownloadReport:
        report = DownloadReport()

        def transfer(ref: InstanceReference) -> None:
            if ref.instance_uid in self.failing:
                raise DICOMTrolleyConnectionError("connection reset")
            path = storage.save(self.dataset_for(ref), path=output_dir)
            report.add_saved(path)

        run_transfers(
            to_instance_refs(objects),
            transfer,
            report,
            workers=max_workers or 1,
            uids_of=lambda ref: ref.uids(),
        )
        return report


@pytest.fixture
def searcher(make_study: StudyFactory) -> FakeSearcher:
    return FakeSearcher(make_study, LAYOUT)


def saved_sops(folder: Path) -> list[str]:
    return sorted(
        str(pydicom.dcmread(p).SOPInstanceUID) for p in tree(folder) if p.is_file()
    )


# --------------------------------------------------------------------------- #
# searching
# --------------------------------------------------------------------------- #


def test_search_methods_delegate(
    searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    trolley = Trolley(InstanceDownloader(dicom_bytes), searcher)
    assert [s.uid for s in trolley.find_studies()] == ["1", "2"]
    assert searcher.queries[-1] == Query()
    assert trolley.find_study(Query(StudyInstanceUID="2")).uid == "2"
    study = trolley.find_study_by_id("1", query_level=QueryLevels.SERIES)
    assert [s.uid for s in study.series] == ["1.1", "1.2"]
    assert searcher.by_id[-1] == ("1", QueryLevels.SERIES)
    with pytest.raises(DICOMTrolleyError):
        trolley.find_study(Query())  # two studies


def test_default_storage_is_a_storage_dir(
    searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    assert isinstance(
        Trolley(InstanceDownloader(dicom_bytes), searcher).storage, StorageDir
    )


# --------------------------------------------------------------------------- #
# filling in references
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("downloader_type", [InstanceDownloader, LegacyDownloader])
def test_download_of_a_study_reference_searches_for_instances(
    tmp_path: Path,
    searcher: FakeSearcher,
    dicom_bytes: DicomBytes,
    downloader_type: type[InstanceDownloader],
) -> None:
    downloader = downloader_type(dicom_bytes)
    trolley = Trolley(downloader, searcher, storage=FlatStorageDir(tmp_path))
    report = trolley.download(StudyReference("1"), tmp_path)
    assert searcher.by_id == [("1", QueryLevels.INSTANCE)]
    assert saved_sops(tmp_path) == ["1.1.1", "1.1.2", "1.2.1"]
    assert len(report.saved) == 3
    assert report.failures == []
    assert downloader.requested[-1] == [
        InstanceReference("1", "1.1", "1.1.1"),
        InstanceReference("1", "1.1", "1.1.2"),
        InstanceReference("1", "1.2", "1.2.1"),
    ]


@pytest.mark.parametrize("downloader_type", [InstanceDownloader, LegacyDownloader])
def test_series_reference_gets_only_its_own_instances(
    tmp_path: Path,
    searcher: FakeSearcher,
    dicom_bytes: DicomBytes,
    downloader_type: type[InstanceDownloader],
) -> None:
    trolley = Trolley(downloader_type(dicom_bytes), searcher)
    trolley.download([SeriesReference("1", "1.2")], tmp_path)
    assert saved_sops(tmp_path) == ["1.2.1"]


@pytest.mark.parametrize("downloader_type", [InstanceDownloader, LegacyDownloader])
def test_study_from_a_series_search_gets_only_the_series_it_holds(
    tmp_path: Path,
    searcher: FakeSearcher,
    make_study: StudyFactory,
    dicom_bytes: DicomBytes,
    downloader_type: type[InstanceDownloader],
) -> None:
    """A study found at SERIES level holds some series: download only those."""
    partial = make_study("1", {"1.2": None})
    trolley = Trolley(downloader_type(dicom_bytes), searcher)
    trolley.download([partial], tmp_path)
    assert saved_sops(tmp_path) == ["1.2.1"]


def test_several_series_of_one_study_need_one_search(
    tmp_path: Path, searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    trolley = Trolley(InstanceDownloader(dicom_bytes), searcher)
    trolley.download(
        [SeriesReference("1", "1.1"), SeriesReference("1", "1.2"), StudyReference("2")],
        tmp_path,
    )
    assert searcher.by_id == [("1", QueryLevels.INSTANCE), ("2", QueryLevels.INSTANCE)]
    assert saved_sops(tmp_path) == ALL_SOPS


def test_objects_that_hold_instances_need_no_search(
    tmp_path: Path,
    searcher: FakeSearcher,
    dicom_bytes: DicomBytes,
    make_study: StudyFactory,
) -> None:
    study = make_study("1", LAYOUT["1"])
    trolley = Trolley(InstanceDownloader(dicom_bytes), searcher)
    trolley.download(study, tmp_path)
    trolley.download([InstanceReference("2", "2.1", "2.1.1")], tmp_path)
    assert searcher.by_id == []
    assert saved_sops(tmp_path) == ALL_SOPS


def test_series_level_downloader_gets_series_references(
    tmp_path: Path, searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    downloader = SeriesDownloader(dicom_bytes)
    Trolley(downloader, searcher).download(StudyReference("1"), tmp_path)
    assert searcher.by_id == [("1", QueryLevels.SERIES)]
    assert downloader.requested[-1] == [
        SeriesReference("1", "1.1"),
        SeriesReference("1", "1.2"),
    ]
    assert saved_sops(tmp_path) == ["1.1.1", "1.1.2", "1.2.1"]


@pytest.mark.parametrize("downloader_type", [InstanceDownloader, LegacyDownloader])
def test_query_missing_false_reraises(
    tmp_path: Path,
    searcher: FakeSearcher,
    dicom_bytes: DicomBytes,
    downloader_type: type[InstanceDownloader],
) -> None:
    trolley = Trolley(downloader_type(dicom_bytes), searcher, query_missing=False)
    with pytest.raises(NonInstanceParameterError) as info:
        trolley.download(StudyReference("1"), tmp_path)
    assert info.value.uids == ("1",)
    assert searcher.by_id == []
    assert saved_sops(tmp_path) == []


def test_unknown_series_is_an_error_not_a_silent_skip(
    tmp_path: Path, searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    trolley = Trolley(InstanceDownloader(dicom_bytes), searcher)
    with pytest.raises(DownloadIncompleteError) as info:
        trolley.download(SeriesReference("1", "1.9"), tmp_path)
    (failure,) = info.value.report.failures
    assert isinstance(failure.error, NoReferencesFoundError)
    assert failure.uids == ("1", "1.9") == info.value.uids
    assert "1.9" in str(info.value)


def test_empty_series_in_a_search_answer_does_not_block_the_rest(
    tmp_path: Path, make_study: StudyFactory, dicom_bytes: DicomBytes
) -> None:
    searcher = FakeSearcher(make_study, {"1": {"1.1": ["1.1.1"], "1.2": []}})
    Trolley(InstanceDownloader(dicom_bytes), searcher).download(
        StudyReference("1"), tmp_path
    )
    assert saved_sops(tmp_path) == ["1.1.1"]


def test_obtain_references(searcher: FakeSearcher, dicom_bytes: DicomBytes) -> None:
    trolley = Trolley(InstanceDownloader(dicom_bytes), searcher)
    instance = InstanceReference("2", "2.1", "2.1.1")
    refs = trolley.obtain_references(
        [StudyReference("1"), instance], DICOMObjectLevels.SERIES
    )
    assert refs == [SeriesReference("1", "1.1"), SeriesReference("1", "1.2"), instance]
    assert trolley.obtain_references(
        [StudyReference("2")], DICOMObjectLevels.STUDY
    ) == [StudyReference("2")]
    assert searcher.by_id == [("1", QueryLevels.SERIES)]


# --------------------------------------------------------------------------- #
# save_all arguments, failures
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("use_async", "max_workers", "expected"),
    [(False, None, 1), (False, 8, 1), (True, None, 4), (True, 8, 8)],
)
def test_use_async_and_max_workers_reach_save_all(
    tmp_path: Path,
    searcher: FakeSearcher,
    dicom_bytes: DicomBytes,
    use_async: bool,
    max_workers: int | None,
    expected: int,
) -> None:
    downloader = RecordingDownloader(dicom_bytes)
    progress = NullProgress()
    Trolley(downloader, searcher).download(
        [InstanceReference("2", "2.1", "2.1.1")],
        tmp_path,
        use_async=use_async,
        max_workers=max_workers,
        progress=progress,
    )
    (call,) = downloader.save_all_calls
    assert call["max_workers"] == expected
    assert call["progress"] is progress


def test_save_all_gets_the_filled_in_references(
    tmp_path: Path, searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    downloader = RecordingDownloader(dicom_bytes)
    Trolley(downloader, searcher).download(StudyReference("2"), tmp_path)
    (call,) = downloader.save_all_calls
    assert call["objects"] == [InstanceReference("2", "2.1", "2.1.1")]


@pytest.mark.parametrize("workers", [1, 3])
def test_failures_raise_download_incomplete_naming_uids(
    tmp_path: Path, searcher: FakeSearcher, dicom_bytes: DicomBytes, workers: int
) -> None:
    downloader = PartlyFailingDownloader(dicom_bytes, failing={"1.1.2", "2.1.1"})
    trolley = Trolley(downloader, searcher)
    with pytest.raises(DownloadIncompleteError) as info:
        trolley.download(
            [StudyReference("1"), StudyReference("2")],
            tmp_path,
            use_async=workers > 1,
            max_workers=workers,
        )
    error = info.value
    assert set(error.uids) >= {"1.1.2", "2.1.1"}
    assert "1.1.1" not in error.uids
    assert "1.1.2" in str(error) and "2.1.1" in str(error)
    assert "2 download(s) failed" in str(error)
    # the others were still saved
    assert saved_sops(tmp_path) == ["1.1.1", "1.2.1"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_default_save_all_records_an_unsavable_instance_and_goes_on(
    tmp_path: Path, searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    """A 4.1.0-style downloader goes through Downloader.save_all."""

    class OneHostile(LegacyDownloader):
        def dataset_for(self, ref: InstanceReference) -> Dataset:
            dataset = super().dataset_for(ref)
            if ref.instance_uid == "1.1.2":
                dataset.SeriesInstanceUID = "../../escape"
            return dataset

    trolley = Trolley(OneHostile(dicom_bytes), searcher)
    with pytest.raises(DownloadIncompleteError) as info:
        trolley.download(StudyReference("1"), tmp_path)
    assert "1.1.2" in info.value.uids
    assert "1.1.2" in str(info.value)
    assert saved_sops(tmp_path) == ["1.1.1", "1.2.1"]


def test_default_save_all_with_a_storage_that_returns_nothing(
    tmp_path: Path, searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    class SaveOnly(DICOMDiskStorage):
        def save(self, dataset: Dataset, path: str | Path | None = None) -> None:
            assert path is not None
            dataset.save_as(Path(path) / f"{dataset.SOPInstanceUID}.dcm")

    trolley = Trolley(LegacyDownloader(dicom_bytes), searcher, storage=SaveOnly())
    report = trolley.download(StudyReference("2"), tmp_path)
    assert report.saved == []
    assert report.bytes_written == 0
    assert saved_sops(tmp_path) == ["2.1.1"]


# --------------------------------------------------------------------------- #
# fetch_all_datasets
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("downloader_type", [InstanceDownloader, LegacyDownloader])
def test_fetch_all_datasets(
    searcher: FakeSearcher,
    dicom_bytes: DicomBytes,
    downloader_type: type[InstanceDownloader],
) -> None:
    trolley = Trolley(downloader_type(dicom_bytes), searcher)
    datasets = list(
        trolley.fetch_all_datasets([SeriesReference("1", "1.1"), StudyReference("2")])
    )
    assert [str(ds.SOPInstanceUID) for ds in datasets] == ["1.1.1", "1.1.2", "2.1.1"]
    single = list(trolley.fetch_all_datasets(StudyReference("2")))  # type: ignore[arg-type]
    assert [str(ds.SOPInstanceUID) for ds in single] == ["2.1.1"]


def test_fetch_all_datasets_with_query_missing_false(
    searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    trolley = Trolley(LegacyDownloader(dicom_bytes), searcher, query_missing=False)
    with pytest.raises(NonInstanceParameterError):
        list(trolley.fetch_all_datasets([StudyReference("1")]))


def test_fetch_all_datasets_does_not_restart_after_yielding(
    searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    """A late NonInstanceParameterError would mean yielding datasets twice."""

    class LateFailure(LegacyDownloader):
        def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
            yield self.dataset_for(InstanceReference("2", "2.1", "2.1.1"))
            raise NonInstanceParameterError("too late", uids=["1"])

    trolley = Trolley(LateFailure(dicom_bytes), searcher)
    produced = []
    with pytest.raises(NonInstanceParameterError):
        for ds in trolley.fetch_all_datasets([StudyReference("1")]):
            produced.append(ds)
    assert len(produced) == 1


# --------------------------------------------------------------------------- #
# DownloadReport and run_transfers
# --------------------------------------------------------------------------- #


def test_download_report_is_thread_safe() -> None:
    report = DownloadReport()

    def work(n: int) -> None:
        for i in range(500):
            report.add_saved(Path(f"{n}-{i}"), 2)
            report.add_skipped(Path(f"s{n}-{i}"))
            if i % 100 == 0:
                report.add_failure(
                    f"item {n}-{i}", DICOMTrolleyError("x", uids=[f"{n}"])
                )

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(report.saved) == 4000
    assert len(report.skipped) == 4000
    assert report.bytes_written == 8000
    assert len(report.failures) == 40


def test_report_merge_and_saved_without_path() -> None:
    one, two = DownloadReport(), DownloadReport()
    one.add_saved(Path("a"), 10)
    two.add_saved(None, 5)  # a storage whose save() returns None
    two.add_failure("b", DICOMTrolleyError("boom", uids=["1.2"]))
    one.merge(two)
    assert one.saved == [Path("a")]
    assert one.bytes_written == 15
    assert one.failed_uids == ("1.2",)


def test_raise_for_failures() -> None:
    report = DownloadReport()
    report.raise_for_failures()  # nothing failed: nothing raised
    report.add_saved(Path("ok"))
    report.add_failure("series 1.2.3", StorageError("disk full", uids=["1.2.3.4"]))
    report.add_failure("InstanceReference 9 -> 9.1 -> 9.1.1", DICOMTrolleyError("gone"))
    with pytest.raises(DownloadIncompleteError) as info:
        report.raise_for_failures()
    text = str(info.value)
    assert "2 download(s) failed (1 file(s) saved)" in text
    assert "1.2.3.4" in text  # UIDs only in error.uids are shown too
    assert "9.1.1" in text
    assert info.value.uids == ("1.2.3.4",)
    assert info.value.report is report


def test_raise_for_failures_shortens_long_lists() -> None:
    report = DownloadReport()
    for n in range(60):
        report.add_failure(f"item {n}", DICOMTrolleyError("x", uids=[f"1.{n}"]))
    with pytest.raises(DownloadIncompleteError) as info:
        report.raise_for_failures()
    assert "and 10 more" in str(info.value)
    assert len(info.value.uids) == 60


def test_failure_str_does_not_repeat_uids() -> None:
    error = DICOMTrolleyError("instance 1.2.3 is broken", uids=["1.2.3"])
    assert str(Failure("x", error.uids, error)) == "x: instance 1.2.3 is broken"


@pytest.mark.parametrize("workers", [1, 4])
def test_run_transfers_records_failures_and_continues(workers: int) -> None:
    done: list[int] = []
    report = DownloadReport()

    def transfer(item: int) -> None:
        if item % 3 == 0:
            raise DICOMTrolleyConnectionError(f"item {item} failed")
        done.append(item)

    run_transfers(
        list(range(10)), transfer, report, workers=workers, uids_of=lambda i: (f"u{i}",)
    )
    assert sorted(done) == [1, 2, 4, 5, 7, 8]
    assert sorted(f.uids for f in report.failures) == [
        ("u0",),
        ("u3",),
        ("u6",),
        ("u9",),
    ]


def test_run_transfers_keeps_uids_the_error_names() -> None:
    report = DownloadReport()

    def transfer(item: str) -> None:
        raise DICOMTrolleyError("bad", uids=["own"])

    run_transfers(["a"], transfer, report, workers=1, uids_of=lambda i: ("item",))
    assert report.failures[0].uids == ("own",)


def test_run_transfers_lets_bugs_through() -> None:
    def transfer(item: int) -> None:
        raise KeyError(item)

    with pytest.raises(KeyError):
        run_transfers(
            [1, 2], transfer, DownloadReport(), workers=2, uids_of=lambda i: ()
        )


# --------------------------------------------------------------------------- #
# a study's search for references is part of that study's work (issue 9)
# --------------------------------------------------------------------------- #


class FlakySearcher(FakeSearcher):
    """find_study_by_id fails for the studies in `failing`, `times` times each."""

    def __init__(
        self,
        make_study: StudyFactory,
        failing: dict[str, int],
        error: type[DICOMTrolleyError] = DICOMTrolleyConnectionError,
    ) -> None:
        super().__init__(make_study, LAYOUT)
        self.failing = dict(failing)
        self.error = error
        self.lock = threading.Lock()

    def find_study_by_id(
        self, study_uid: str, query_level: QueryLevels = QueryLevels.STUDY
    ) -> Study:
        with self.lock:
            left = self.failing.get(study_uid, 0)
            if left:
                self.failing[study_uid] = left - 1
        if left:
            self.by_id.append((study_uid, QueryLevels(query_level)))
            raise self.error(f"search for {study_uid} broke")
        return super().find_study_by_id(study_uid, query_level)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_failed_study_search_fails_only_its_study(
    tmp_path: Path, make_study: StudyFactory, dicom_bytes: DicomBytes, workers: int
) -> None:
    searcher = FlakySearcher(make_study, {"1": 99})
    trolley = Trolley(
        InstanceDownloader(dicom_bytes),
        searcher,
        retry=Retry(total=2, backoff_factor=0, backoff_jitter=0),
    )
    with pytest.raises(DownloadIncompleteError) as info:
        trolley.download(
            [StudyReference("1"), StudyReference("2")],
            tmp_path,
            use_async=workers > 1,
            max_workers=workers,
        )
    assert saved_sops(tmp_path) == ["2.1.1"]  # the other study was fetched
    (failure,) = info.value.report.failures
    assert failure.uids == ("1",)
    assert isinstance(failure.error, DICOMTrolleyConnectionError)
    assert "study 1" in str(info.value)
    assert [uid for uid, _ in searcher.by_id].count("1") == 3  # 1 try + 2 retries


def test_a_study_search_is_retried_after_a_transient_error(
    tmp_path: Path, make_study: StudyFactory, dicom_bytes: DicomBytes
) -> None:
    searcher = FlakySearcher(make_study, {"2": 1})
    trolley = Trolley(
        InstanceDownloader(dicom_bytes),
        searcher,
        retry=Retry(total=1, backoff_factor=0, backoff_jitter=0),
    )
    report = trolley.download([StudyReference("1"), StudyReference("2")], tmp_path)
    assert report.failures == []
    assert saved_sops(tmp_path) == ALL_SOPS


def test_a_permanent_search_error_is_not_retried(
    tmp_path: Path, make_study: StudyFactory, dicom_bytes: DicomBytes
) -> None:
    searcher = FlakySearcher(make_study, {"2": 5}, error=NoReferencesFoundError)
    trolley = Trolley(InstanceDownloader(dicom_bytes), searcher, retry=Retry(total=3))
    with pytest.raises(DownloadIncompleteError):
        trolley.download([StudyReference("1"), StudyReference("2")], tmp_path)
    assert [uid for uid, _ in searcher.by_id].count("2") == 1
    assert saved_sops(tmp_path) == ["1.1.1", "1.1.2", "1.2.1"]


def test_search_retry_defaults(
    make_study: StudyFactory, dicom_bytes: DicomBytes
) -> None:
    downloader = InstanceDownloader(dicom_bytes)
    plain = Trolley(downloader, FakeSearcher(make_study, LAYOUT))
    assert plain.search_retry == DEFAULT_RETRY
    with requests.Session() as session:
        http = Trolley(downloader, QidoRS(session, "http://127.0.0.1:9/qido"))
        assert http.search_retry.total == 0  # the transport retries its requests
    given = Retry(total=7)
    assert Trolley(downloader, plain.searcher, retry=given).search_retry is given


# --------------------------------------------------------------------------- #
# a 4.1.0 subclass that overrides fetch_all_datasets is honoured (issue 10)
# --------------------------------------------------------------------------- #


class StampingTrolley(Trolley):
    """4.1.0 style: changes each dataset in fetch_all_datasets before saving."""

    def fetch_all_datasets(
        self, objects: Sequence[DICOMDownloadable]
    ) -> Iterator[Dataset]:
        for dataset in super().fetch_all_datasets(objects):
            dataset.PatientName = "Stamped"
            yield dataset


def test_download_saves_what_an_overridden_fetch_all_datasets_yields(
    tmp_path: Path, searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    downloader = RecordingDownloader(dicom_bytes)
    trolley = StampingTrolley(downloader, searcher, storage=StorageDir(tmp_path))
    report = trolley.download(StudyReference("1"), tmp_path)
    assert downloader.save_all_calls == []  # the 4.1.0 path, not save_all
    assert saved_sops(tmp_path) == ["1.1.1", "1.1.2", "1.2.1"]
    assert len(report.saved) == 3
    files = [p for p in tree(tmp_path) if p.is_file()]
    names = {str(pydicom.dcmread(p).PatientName) for p in files}
    assert names == {"Stamped"}


def test_overridden_fetch_all_datasets_failure_is_reported(
    tmp_path: Path, searcher: FakeSearcher, dicom_bytes: DicomBytes
) -> None:
    class Broken(Trolley):
        def fetch_all_datasets(
            self, objects: Sequence[DICOMDownloadable]
        ) -> Iterator[Dataset]:
            yield from super().fetch_all_datasets(objects[:1])
            raise DICOMTrolleyConnectionError("cut", uids=["2"])

    trolley = Broken(InstanceDownloader(dicom_bytes), searcher)
    with pytest.raises(DownloadIncompleteError) as info:
        trolley.download([StudyReference("1"), StudyReference("2")], tmp_path)
    assert info.value.uids == ("2",)
    assert len(info.value.report.saved) == 3
