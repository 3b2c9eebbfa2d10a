"""dicomtrolley's own clients against the emulator: each checks the other.

The rest of this folder reads the emulator's answers as raw bytes; here the
library's QIDO-RS, WADO-RS and WADO-URI adapters do the talking, as a user's
script would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.emulator import DicomWebService, Emulator, LoginService
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS, WadoRSMetaData
from dicomtrolley.wado_uri import WadoURI
from tests.emulator.conftest import PASSWORD, USER, DemoData
from tests.fakes import tree


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as basic:
        basic.auth = (USER, PASSWORD)
        yield basic


def assert_byte_exact(folder: Path, demo: DemoData) -> None:
    files = sorted(p for p in tree(folder) if p.is_file())
    uids = set()
    for path in files:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert path.read_bytes() == demo.by_uid[uid].read_bytes(), path
        uids.add(uid)
    assert uids == set(demo.by_uid)
    assert len(files) == len(demo.by_uid)


def test_qido_rs_and_wado_rs_download_everything(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    trolley = Trolley(
        searcher=QidoRS(session, emulator.dicomweb_url),
        downloader=WadoRS(session, emulator.dicomweb_url),
    )
    studies = trolley.find_studies(Query(PatientName="*"))
    assert {study.uid for study in studies} == {s.study_uid for s in demo.studies}
    trolley.download(studies, output_dir=tmp_path)
    assert_byte_exact(tmp_path, demo)


def test_wado_uri_downloads_instances_found_by_qido_rs(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    trolley = Trolley(
        searcher=QidoRS(session, emulator.dicomweb_url),
        downloader=WadoURI(session, emulator.wado_uri_url),
    )
    studies = trolley.find_studies(
        Query(PatientID="DTR003", query_level=QueryLevels.INSTANCE)
    )
    assert sum(len(s.all_instances()) for s in studies) == 22
    trolley.download(studies, output_dir=tmp_path)
    files = [p for p in tree(tmp_path) if p.is_file()]
    assert len(files) == 22
    for path in files:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert path.read_bytes() == demo.by_uid[uid].read_bytes()


def test_metadata_through_the_client(
    emulator: Emulator, demo: DemoData, session: requests.Session
) -> None:
    study = demo.study("DTR004")
    searcher = QidoRS(session, emulator.dicomweb_url)
    found = searcher.find_study_by_id(study.study_uid, query_level=QueryLevels.INSTANCE)
    datasets = list(WadoRSMetaData(session, emulator.dicomweb_url).datasets([found]))
    assert len(datasets) == 12
    assert {str(ds.PatientName) for ds in datasets} == {"Smith^Anna"}


def test_client_pages_through_a_capped_server(
    demo: DemoData, make_emulator: Callable[..., Emulator], session: requests.Session
) -> None:
    """A server that sends at most 7 results per answer; the client pages."""
    emulator = make_emulator(
        demo.root, services=[LoginService(), DicomWebService(max_results=7)]
    )
    searcher = QidoRS(session, emulator.dicomweb_url)
    datasets = searcher.find_datasets(
        Query(
            query_level=QueryLevels.INSTANCE,
            StudyInstanceUID=demo.study("DTR002").study_uid,
        )
    )
    assert len(datasets) == 32
    assert {str(ds.SOPInstanceUID) for ds in datasets} == set(
        demo.files_of(demo.study("DTR002").study_uid)
    )
