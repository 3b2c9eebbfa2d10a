"""De-identified downloads from a real PACS: WADO-RS and C-GET from Orthanc.

Orthanc is given the synthetic studies that carry every PS3.15 Table E.1-1
attribute; what arrives on disk must hold no source value (files and paths),
with the same pseudonyms and UIDs over both protocols (one key), burned-in
cases flagged, and a re-run that saves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from dicomtrolley.core import Downloader, Query, QueryLevels, Searcher
from dicomtrolley.deid import Deidentifier
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.synthetic import phi_studies, write_studies
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from tests.deid_checks import (
    KEY,
    LAYOUT,
    assert_no_source_data,
    expected_flags,
    flagged,
    output_files,
)
from tests.orthanc_server import OrthancServer

pytestmark = pytest.mark.orthanc

STUDIES = phi_studies(1, 2)
INSTANCES = sum(study.instance_count for study in STUDIES)


def test_wado_rs_and_c_get_from_orthanc(
    orthanc_factory: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    orthanc = orthanc_factory()
    answers = orthanc.upload(write_studies(tmp_path / "source", STUDIES))
    assert all(a.get("Status") == "Success" for a in answers), answers[:2]
    session = requests.Session()
    pairs: dict[str, tuple[Downloader, Searcher]] = {
        "wado-rs": (
            WadoRS(session, orthanc.dicomweb_url),
            QidoRS(session, orthanc.dicomweb_url),
        ),
        "c-get": (
            DICOMQRGet(orthanc.host, orthanc.dicom_port, aec=orthanc.aet, timeout=20),
            DICOMQR(orthanc.host, orthanc.dicom_port, aec=orthanc.aet, timeout=20),
        ),
    }
    names: list[list[str]] = []
    for protocol, (downloader, searcher) in pairs.items():
        out = tmp_path / protocol
        deid = Deidentifier(KEY)
        trolley = Trolley(
            downloader, searcher, storage=TemplateStorage(out, LAYOUT, transform=deid)
        )
        studies = trolley.find_studies(
            Query(PatientID="PHIPAT*", query_level=QueryLevels.INSTANCE)
        )
        report = trolley.download(studies, out, use_async=True, max_workers=2)
        assert len(report.saved) == INSTANCES, protocol
        assert_no_source_data(out, STUDIES)
        assert flagged(out) == expected_flags(out) != set()
        again = trolley.download(studies, out, use_async=True, max_workers=2)
        assert not again.saved and len(again.skipped) == INSTANCES
        names.append(sorted(str(p.relative_to(out)) for p in output_files(out)))
    assert names[0] == names[1]
