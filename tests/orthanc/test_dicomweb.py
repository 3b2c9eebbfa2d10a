"""QIDO-RS search, WADO-RS and WADO-URI download against a real Orthanc.

The round trips are byte-exact: every instance downloaded equals the instance
that was stored, whatever its transfer syntax.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley.core import (
    InstanceReference,
    Query,
    QueryLevels,
    SeriesReference,
    StudyReference,
)
from dicomtrolley.exceptions import DownloadIncompleteError, NoQueryResultsError
from dicomtrolley.qido_rs import HierarchicalQuery, QidoRS, RelationalQuery
from dicomtrolley.storage import FlatStorageDir, StorageDir, TemplateStorage
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS, WadoRSMetaData
from dicomtrolley.wado_uri import WadoURI
from tests.fakes import tree
from tests.orthanc_server import GeneratedStudies, OrthancServer


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in tree(folder) if p.is_file())


def _assert_byte_exact(files: list[Path], studies: GeneratedStudies) -> set[str]:
    """Every file equals the stored instance with its SOP Instance UID."""
    uids = set()
    for path in files:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert path.read_bytes() == studies.by_uid[uid].read_bytes(), path
        uids.add(uid)
    return uids


@pytest.fixture
def session() -> requests.Session:
    return requests.Session()


def test_4_1_0_style_script_runs_unchanged(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    session: requests.Session,
    tmp_path: Path,
) -> None:
    """The README example of 4.1.0, word for word, against Orthanc."""
    trolley = Trolley(
        searcher=QidoRS(session, orthanc.dicomweb_url),
        downloader=WadoRS(session, orthanc.dicomweb_url),
    )
    studies = trolley.find_studies(Query(PatientName="*"))
    assert len(studies) == len(orthanc_studies.studies)
    trolley.download(studies, output_dir=tmp_path)
    files = _files(tmp_path)
    assert len(files) == len(orthanc_studies.paths)
    assert _assert_byte_exact(files, orthanc_studies) == set(orthanc_studies.by_uid)
    # StorageDir layout of 4.1.0: study/series/instance with dots as underscores
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        expected = (
            tmp_path
            / ds.StudyInstanceUID.replace(".", "_")
            / ds.SeriesInstanceUID.replace(".", "_")
            / ds.SOPInstanceUID.replace(".", "_")
        )
        assert path == expected


@pytest.mark.parametrize("per_series", [True, False])
def test_wado_rs_concurrent_download_is_byte_exact(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    session: requests.Session,
    tmp_path: Path,
    per_series: bool,
) -> None:
    trolley = Trolley(
        searcher=QidoRS(session, orthanc.dicomweb_url),
        downloader=WadoRS(session, orthanc.dicomweb_url, request_per_series=per_series),
        storage=TemplateStorage(
            tmp_path, "{PatientID}/{StudyInstanceUID}/{SOPInstanceUID}.dcm"
        ),
    )
    studies = trolley.find_studies(Query())
    report = trolley.download(studies, tmp_path, use_async=True, max_workers=4)
    files = _files(tmp_path)
    assert len(report.saved) == len(files) == len(orthanc_studies.paths)
    assert _assert_byte_exact(files, orthanc_studies) == set(orthanc_studies.by_uid)
    assert not list(tmp_path.rglob("*.part"))


def test_wado_uri_fills_in_instances_and_is_byte_exact(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    session: requests.Session,
    tmp_path: Path,
) -> None:
    """Study-level results make the trolley search for instances (4.1.0 crashed)."""
    trolley = Trolley(
        searcher=QidoRS(session, orthanc.dicomweb_url),
        downloader=WadoURI(session, orthanc.wado_url),
        storage=FlatStorageDir(tmp_path),
    )
    studies = trolley.find_studies(Query())
    assert all(not study.series for study in studies)
    trolley.download(studies, tmp_path, use_async=True, max_workers=3)
    files = _files(tmp_path)
    assert _assert_byte_exact(files, orthanc_studies) == set(orthanc_studies.by_uid)

    # a second run finds every file intact and skips them all
    again = trolley.download(studies, tmp_path, use_async=True, max_workers=3)
    assert not again.saved
    assert len(again.skipped) == len(orthanc_studies.paths)


def test_download_series_reference_gets_only_that_series(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    session: requests.Session,
    tmp_path: Path,
) -> None:
    spec = orthanc_studies.studies[0]
    series = spec.series[-1]
    trolley = Trolley(
        searcher=QidoRS(session, orthanc.dicomweb_url),
        downloader=WadoURI(session, orthanc.wado_url),
        storage=StorageDir(tmp_path),
    )
    trolley.download([SeriesReference(spec.study_uid, series.series_uid)], tmp_path)
    files = _files(tmp_path)
    assert len(files) == series.instance_count
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SeriesInstanceUID == series.series_uid


def test_fetch_all_datasets_in_memory(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, session: requests.Session
) -> None:
    spec = orthanc_studies.studies[1]
    trolley = Trolley(
        searcher=QidoRS(session, orthanc.dicomweb_url),
        downloader=WadoRS(session, orthanc.dicomweb_url),
    )
    datasets = list(trolley.fetch_all_datasets([StudyReference(spec.study_uid)]))
    assert len(datasets) == spec.instance_count
    for ds in datasets:
        stored = pydicom.dcmread(orthanc_studies.by_uid[ds.SOPInstanceUID])
        assert ds.PixelData == stored.PixelData
        assert ds.file_meta.TransferSyntaxUID == stored.file_meta.TransferSyntaxUID


def test_get_dataset_wado_uri_and_wado_rs_agree(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, session: requests.Session
) -> None:
    spec = orthanc_studies.find(multi_frame=True)
    ref = InstanceReference(
        spec.study.study_uid, spec.series.series_uid, spec.sop_instance_uid
    )
    via_uri = WadoURI(session, orthanc.wado_url).get_dataset(ref)
    via_rs = WadoRS(session, orthanc.dicomweb_url).get_dataset(ref)
    stored = pydicom.dcmread(orthanc_studies.by_uid[spec.sop_instance_uid])
    assert via_uri.PixelData == via_rs.PixelData == stored.PixelData
    assert int(via_rs.NumberOfFrames) > 1


def test_wado_rs_metadata_has_attributes_without_pixels(
    orthanc: OrthancServer,
    orthanc_studies: GeneratedStudies,
    session: requests.Session,
    tmp_path: Path,
) -> None:
    spec = orthanc_studies.studies[0]
    series = spec.series[0]
    downloader = WadoRSMetaData(session, orthanc.dicomweb_url)
    datasets = list(
        downloader.datasets([SeriesReference(spec.study_uid, series.series_uid)])
    )
    assert len(datasets) == series.instance_count
    assert all("PixelData" not in ds for ds in datasets)
    assert {ds.SOPInstanceUID for ds in datasets} == {
        series.instance_uid(i) for i in range(series.instance_count)
    }
    StorageDir(tmp_path).save(datasets[0])
    assert len(_files(tmp_path)) == 1


def test_qido_levels_hierarchical_and_relational(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, session: requests.Session
) -> None:
    qido = QidoRS(session, orthanc.dicomweb_url)
    spec = orthanc_studies.studies[0]
    series = spec.series[0]

    study = qido.find_study_by_id(spec.study_uid, query_level=QueryLevels.INSTANCE)
    assert {s.uid for s in study.series} == {s.series_uid for s in spec.series}
    assert len(study.all_instances()) == spec.instance_count
    assert str(study.data.PatientID) == spec.patient_id  # filled from the children

    found = qido.find_studies(
        HierarchicalQuery(
            StudyInstanceUID=spec.study_uid,
            SeriesInstanceUID=series.series_uid,
            query_level=QueryLevels.INSTANCE,
        )
    )
    assert len(found[0].all_instances()) == series.instance_count

    relational = qido.find_studies(
        RelationalQuery(PatientID=spec.patient_id, query_level=QueryLevels.SERIES)
    )
    wanted = {
        s.study_uid for s in orthanc_studies.studies if s.patient_id == spec.patient_id
    }
    assert {s.uid for s in relational} == wanted
    assert all(s.series for s in relational)


def test_qido_include_fields_wildcards_and_dates(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, session: requests.Session
) -> None:
    qido = QidoRS(session, orthanc.dicomweb_url)
    studies = qido.find_studies(Query(include_fields=["StudyDescription"]))
    assert all("StudyDescription" in s.data for s in studies)

    spec = orthanc_studies.studies[0]
    prefix = spec.patient_name.split("^")[0][:2] + "*"
    matches = qido.find_studies(Query(PatientName=prefix))
    assert spec.study_uid in {s.uid for s in matches}

    dates = sorted({s.study_date for s in orthanc_studies.studies})
    day = datetime.strptime(dates[0], "%Y%m%d")
    on_day = qido.find_studies(Query(min_study_date=day, max_study_date=day))
    expected = {
        s.study_uid for s in orthanc_studies.studies if s.study_date == dates[0]
    }
    assert {s.uid for s in on_day} == expected
    assert len(expected) < len(orthanc_studies.studies)


def test_qido_no_results_and_find_study_errors(
    orthanc: OrthancServer, session: requests.Session
) -> None:
    qido = QidoRS(session, orthanc.dicomweb_url)
    assert list(qido.find_studies(Query(PatientID="no-such-patient"))) == []
    with pytest.raises(Exception, match="found none"):
        qido.find_study(Query(PatientID="no-such-patient"))
    assert issubclass(NoQueryResultsError, Exception)


def test_non_ascii_names_survive_the_search(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, session: requests.Session
) -> None:
    qido = QidoRS(session, orthanc.dicomweb_url)
    names = {str(s.data.PatientName) for s in qido.find_studies(Query())}
    expected = {s.patient_name for s in orthanc_studies.studies}
    assert names == expected
    assert any(not name.isascii() for name in names)


def test_qido_limit_and_offset(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, session: requests.Session
) -> None:
    """An explicit limit is one request and is honoured; offset pages through.

    (Orthanc 1.10's own result cap, LimitFindResults, applies before offset and so
    cannot be paged through; automatic paging is tested against a fake server in
    tests/unit/test_qido_rs.py.)
    """
    qido = QidoRS(session, orthanc.dicomweb_url)
    total = len(orthanc_studies.studies)
    first = qido.find_studies(HierarchicalQuery(limit=2))
    rest = qido.find_studies(HierarchicalQuery(limit=total, offset=2))
    assert len(first) == 2
    assert len(rest) == total - 2
    assert {s.uid for s in first} | {s.uid for s in rest} == {
        s.study_uid for s in orthanc_studies.studies
    }


def test_missing_study_is_reported_with_its_uid(
    orthanc: OrthancServer, session: requests.Session, tmp_path: Path
) -> None:
    missing = StudyReference("1.2.3.4.5.6.7.8.9")
    trolley = Trolley(
        searcher=QidoRS(session, orthanc.dicomweb_url),
        downloader=WadoRS(session, orthanc.dicomweb_url, request_per_series=False),
    )
    with pytest.raises(DownloadIncompleteError) as info:
        trolley.download([missing], tmp_path)
    assert "1.2.3.4.5.6.7.8.9" in str(info.value)
    assert "1.2.3.4.5.6.7.8.9" in info.value.uids
    assert not _files(tmp_path)
