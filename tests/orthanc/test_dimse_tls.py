"""C-FIND and C-GET over TLS against a real Orthanc (DicomTlsEnabled, Orthanc >= 1.9).

Orthanc serves its DICOM port over TLS with a server certificate of a throwaway
CA (tests/tls_pki.py) and requires a client certificate from that CA
(``DicomTlsRemoteCertificateRequired``). Our C-GET must bring one study over,
whole; without our certificate, Orthanc refuses. Run with
``bash scripts/loopback-only.sh``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from dicomtrolley.core import Query, StudyReference
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet
from dicomtrolley.dimse.errors import DIMSEError
from dicomtrolley.dimse.tls import DIMSETLS
from dicomtrolley.storage import TemplateStorage
from tests.fakes import tree
from tests.orthanc_server import GeneratedStudies, OrthancServer
from tests.tls_pki import Pki, make_pki

HOST = "127.0.0.1"


@pytest.fixture
def secure_orthanc(
    orthanc_factory: Callable[..., OrthancServer],
    orthanc_studies: GeneratedStudies,
    tmp_path: Path,
) -> tuple[OrthancServer, Pki]:
    pki = make_pki(tmp_path / "pki")
    server = orthanc_factory(
        extra_config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki.server.cert),
            "DicomTlsPrivateKey": str(pki.server.key),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
        }
    )
    study = orthanc_studies.studies[0]
    server.upload(p for p in orthanc_studies.paths if study.study_uid in str(p))
    return server, pki


def test_c_find_and_c_get_over_tls(
    secure_orthanc: tuple[OrthancServer, Pki],
    orthanc_studies: GeneratedStudies,
    tmp_path: Path,
) -> None:
    server, pki = secure_orthanc
    tls = DIMSETLS(ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key)
    [study] = DICOMQR(
        HOST, server.dicom_port, "TROLLEY", server.aet, tls=tls
    ).find_studies(Query())
    out = tmp_path / "out"
    getter = DICOMQRGet(HOST, server.dicom_port, "TROLLEY", server.aet, tls=tls)
    storage = TemplateStorage(out, "{StudyInstanceUID}/{SOPInstanceUID}.dcm")
    report = getter.save_all([StudyReference(study.uid)], storage, out)
    assert not report.failures
    expected = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in orthanc_studies.paths
        if study.uid in str(p)
    }
    received = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in tree(out)
        if p.is_file()
    }
    assert received == expected and len(expected) > 1


def test_orthanc_refuses_a_client_without_certificate(
    secure_orthanc: tuple[OrthancServer, Pki],
) -> None:
    server, pki = secure_orthanc
    searcher = DICOMQR(
        HOST, server.dicom_port, "TROLLEY", server.aet, tls=DIMSETLS(ca_file=pki.ca)
    )
    with pytest.raises(DIMSEError):
        searcher.find_studies(Query())
