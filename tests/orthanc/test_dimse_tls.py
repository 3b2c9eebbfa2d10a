"""C-FIND and C-GET over TLS against a real Orthanc (DicomTlsEnabled, Orthanc >= 1.9).

Orthanc serves its DICOM port over TLS with a server certificate of a throwaway
CA (tests/tls_pki.py) and requires a client certificate from that CA
(``DicomTlsRemoteCertificateRequired``). Our C-GET must bring one study over,
whole; without our certificate, or with one of another CA, Orthanc refuses
(a permanent error saying why); plain and TLS at the wrong port are named.
Run with ``bash scripts/loopback-only.sh``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from dicomtrolley.core import Query, StudyReference
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet
from dicomtrolley.dimse.errors import DIMSEError
from dicomtrolley.dimse.tls import DIMSETLS, DIMSETLSError
from dicomtrolley.exceptions import PermanentError, TransientError
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.transport import Retry
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


def permanent(error: BaseException) -> bool:
    return isinstance(error, PermanentError) and not isinstance(error, TransientError)


def test_orthanc_refuses_a_client_without_certificate(
    secure_orthanc: tuple[OrthancServer, Pki],
) -> None:
    """TLS 1.3: Orthanc refuses after our handshake, with an alert or a bare
    close; either way a permanent DIMSETLSError asking for our certificate."""
    server, pki = secure_orthanc
    searcher = DICOMQR(
        HOST, server.dicom_port, "TROLLEY", server.aet, tls=DIMSETLS(ca_file=pki.ca)
    )
    for _ in range(4):  # alert or close, as the race goes
        with pytest.raises(DIMSETLSError, match="client certificate") as caught:
            searcher.find_studies(Query())
        assert permanent(caught.value)


def test_orthanc_refuses_a_certificate_of_another_ca(
    secure_orthanc: tuple[OrthancServer, Pki], tmp_path: Path
) -> None:
    """Its alert, when it arrives, is permanent and says why; a C-GET that
    retries stops at the first one.

    With TLS 1.3 Orthanc checks our certificate after the handshake and
    closes; its alert is lost when the close resets the connection over our
    unread association request (a TCP reset drops what was not yet read). On
    a loaded machine that can happen on every try: then the error is the
    transient one whose text points at our certificate. Nothing is saved."""
    server, pki = secure_orthanc
    tls = DIMSETLS(
        ca_file=pki.ca, cert_file=pki.untrusted.cert, key_file=pki.untrusted.key
    )
    getter = DICOMQRGet(
        HOST,
        server.dicom_port,
        "TROLLEY",
        server.aet,
        tls=tls,
        retry=Retry(total=20, backoff_factor=0),
    )
    out = tmp_path / "out"
    storage = TemplateStorage(out, "{StudyInstanceUID}/{SOPInstanceUID}.dcm")
    report = getter.save_all([StudyReference("1.2.3")], storage, out)
    [failure] = report.failures
    assert not tree(out)
    if isinstance(failure.error, DIMSETLSError):
        assert "does not trust the CA of our certificate" in str(failure.error)
    else:
        assert isinstance(failure.error, TransientError), failure
        assert "may refuse our certificate" in str(failure.error)
        assert str(pki.untrusted.cert) in str(failure.error)


def test_plain_client_at_orthanc_tls_port_and_tls_client_at_its_plain_port(
    secure_orthanc: tuple[OrthancServer, Pki],
    orthanc_factory: Callable[..., OrthancServer],
) -> None:
    server, pki = secure_orthanc
    plain = DICOMQR(HOST, server.dicom_port, "TROLLEY", server.aet)
    with pytest.raises(DIMSEError, match="expects TLS on this port, use --tls"):
        plain.find_studies(Query())
    other = orthanc_factory()
    tls = DIMSETLS(ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key)
    secured = DICOMQR(HOST, other.dicom_port, "TROLLEY", other.aet, tls=tls)
    with pytest.raises(DIMSEError, match="speak TLS on it"):
        secured.find_studies(Query())
