"""FallbackDownloader against an emulator that refuses WADO-RS for one study."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley.core import Query
from dicomtrolley.dicom_qr import DICOMQRGet
from dicomtrolley.emulator import Emulator, default_services
from dicomtrolley.emulator.dicomweb import DicomWebService
from dicomtrolley.emulator.dimse import DimseService
from dicomtrolley.exceptions import DownloadIncompleteError
from dicomtrolley.fallback import FallbackDownloader, protocol_name
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import StorageDir
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.emulator.conftest import PASSWORD, USER, DemoData


def _refusing(demo: DemoData, *refused: str, dimse: bool = False) -> list[object]:
    services = [s for s in default_services() if s.name != "dicomweb"]
    services.append(DicomWebService(refused_studies=refused))
    if dimse:
        services.append(DimseService())
    return services


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.auth = (USER, PASSWORD)
        yield http


def _files(root: Path) -> dict[str, bytes]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not any(p.startswith(".") for p in path.parts):
            if path.suffix in (".jsonl", ".csv", ".sqlite", ".db"):
                continue  # the download's own records
            found[
                str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            ] = path.read_bytes()
    return found


def test_refused_study_comes_over_the_next_protocol(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    session: requests.Session,
    tmp_path: Path,
) -> None:
    refused = demo.study("DTR001", "CT").study_uid
    emulator = make_emulator(demo.root, services=_refusing(demo, refused))
    qido = QidoRS(session, emulator.dicomweb_url)
    fallback = FallbackDownloader(
        [
            WadoRS(session, emulator.dicomweb_url),
            WadoURI(session, emulator.wado_uri_url),
        ],
        searcher=qido,
    )
    trolley = Trolley(fallback, qido, storage=StorageDir(tmp_path))
    studies = trolley.find_studies(Query(PatientID="DTR00*"))
    assert len(studies) == len(demo.studies)

    report = trolley.download(studies, tmp_path, use_async=True, max_workers=3)

    assert report.failures == []
    assert _files(tmp_path) == {
        uid: path.read_bytes() for uid, path in demo.by_uid.items()
    }
    assert fallback.delivered_by[refused] == "wado-uri"
    others = {s.study_uid for s in demo.studies} - {refused}
    assert {fallback.delivered_by[uid] for uid in others} == {"wado-rs"}
    attempts = fallback.attempts[refused]
    assert [a.protocol for a in attempts] == ["wado-rs", "wado-uri"]
    assert "404" in attempts[0].error and attempts[1].succeeded
    assert all(len(fallback.attempts[uid]) == 1 for uid in others)


def test_c_get_after_wado_rs(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    session: requests.Session,
    tmp_path: Path,
) -> None:
    refused = demo.study("DTR004").study_uid
    emulator = make_emulator(demo.root, services=_refusing(demo, refused, dimse=True))
    qido = QidoRS(session, emulator.dicomweb_url)
    c_get = DICOMQRGet("127.0.0.1", emulator.dimse.port, aec=emulator.dimse.ae_title)
    fallback = FallbackDownloader(
        [WadoRS(session, emulator.dicomweb_url), c_get], searcher=qido
    )
    trolley = Trolley(fallback, qido, storage=StorageDir(tmp_path))
    studies = trolley.find_studies(Query(PatientID="DTR00*"))
    trolley.download(studies, tmp_path)
    assert set(_files(tmp_path)) == set(demo.by_uid)
    assert fallback.delivered_by[refused] == "c-get"
    assert protocol_name(c_get) == "c-get"


def test_every_protocol_refused_names_the_study_once(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    session: requests.Session,
    tmp_path: Path,
) -> None:
    refused = demo.study("DTR004").study_uid
    emulator = make_emulator(demo.root, services=_refusing(demo, refused))
    qido = QidoRS(session, emulator.dicomweb_url)
    wado_rs = WadoRS(session, emulator.dicomweb_url)
    fallback = FallbackDownloader([("first", wado_rs), ("second", wado_rs)])
    trolley = Trolley(fallback, qido, storage=StorageDir(tmp_path))
    studies = trolley.find_studies(Query(PatientID="DTR00*"))
    with pytest.raises(DownloadIncompleteError) as raised:
        trolley.download(studies, tmp_path)
    assert set(raised.value.uids) >= {refused}
    assert [a.protocol for a in fallback.attempts[refused]] == ["first", "second"]
    assert refused not in fallback.delivered_by
    saved = set(_files(tmp_path))
    assert saved == set(demo.by_uid) - set(demo.files_of(refused))


def test_datasets_fall_back_too(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    session: requests.Session,
) -> None:
    refused = demo.study("DTR004").study_uid
    emulator = make_emulator(demo.root, services=_refusing(demo, refused))
    qido = QidoRS(session, emulator.dicomweb_url)
    fallback = FallbackDownloader(
        [
            WadoRS(session, emulator.dicomweb_url),
            WadoURI(session, emulator.wado_uri_url),
        ],
        searcher=qido,
    )
    study = qido.find_study_by_id(refused)
    uids = sorted(str(ds.SOPInstanceUID) for ds in fallback.datasets([study]))
    assert uids == sorted(demo.files_of(refused))
    assert fallback.delivered_by[refused] == "wado-uri"
