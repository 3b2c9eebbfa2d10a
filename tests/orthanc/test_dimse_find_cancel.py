"""C-FIND on dicomtrolley's Link against a real Orthanc: stopping early sends a
C-CANCEL that Orthanc answers (no abort), and the next search on a new
association finds everything; C-ECHO.
"""

from __future__ import annotations

import contextlib
import logging
import time

import pytest

from dicomtrolley.dicom_qr import DICOMQR, DICOMQuery
from dicomtrolley.dimse.echo import c_echo
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from tests.orthanc_server import GeneratedStudies, OrthancServer

ALL_INSTANCES = DICOMQuery(PatientID="*", query_level="INSTANCE")


@pytest.fixture
def qr(orthanc: OrthancServer) -> DICOMQR:
    return DICOMQR(
        orthanc.host, orthanc.dicom_port, aec=orthanc.aet, relational=True, timeout=20
    )


def test_stopping_early_is_cancelled_not_aborted(
    qr: DICOMQR,
    orthanc_studies: GeneratedStudies,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trolley")
    started = time.monotonic()
    with contextlib.closing(qr.iter_c_find(ALL_INSTANCES)) as found:
        first = next(found)
    assert time.monotonic() - started < 5
    assert "SOPInstanceUID" in first
    assert "cancelling" in caplog.text
    assert "no final answer" not in caplog.text  # Orthanc answered the C-CANCEL
    assert "release of" not in caplog.text  # and the A-RELEASE-RQ
    # the next search, on a new association, sees every instance
    everything = qr.send_c_find(ALL_INSTANCES)
    assert {str(ds.SOPInstanceUID) for ds in everything} == set(
        orthanc_studies.instances
    )


def test_c_echo(orthanc: OrthancServer) -> None:
    peer = Peer(orthanc.host, orthanc.dicom_port, aec=orthanc.aet)
    c_echo(peer, DIMSETimeouts(connect=5, idle=5))
