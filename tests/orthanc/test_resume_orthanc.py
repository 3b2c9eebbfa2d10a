"""Resume against a real PACS: C-GET from Orthanc, study-level search results,
the CLI's default layout (``{PatientID}/...``).

What Orthanc sends over C-GET is what dicomtrolley writes, so ``report.saved``
counts the instances that came: a re-run must get exactly the missing ones.
"""

from __future__ import annotations

import random
from pathlib import Path

import pydicom

from dicomtrolley.core import Query
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet
from dicomtrolley.storage import TemplateStorage, is_temp_name, verify_dicom_file
from dicomtrolley.trolley import Trolley
from tests.fakes import tree
from tests.orthanc_server import GeneratedStudies, OrthancServer

LAYOUT = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"


def on_disk(folder: Path) -> dict[str, Path]:
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
        for p in tree(folder)
        if p.is_file() and not is_temp_name(p.name)
    }


def test_c_get_rerun_fetches_only_what_is_missing(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, tmp_path: Path
) -> None:
    qr = DICOMQR(orthanc.host, orthanc.dicom_port, aec=orthanc.aet, timeout=20)
    getter = DICOMQRGet(orthanc.host, orthanc.dicom_port, aec=orthanc.aet, timeout=20)
    trolley = Trolley(getter, qr, storage=TemplateStorage(tmp_path, LAYOUT))
    studies = trolley.find_studies(Query(PatientID="DTR001"))
    assert studies and all(not study.series for study in studies)  # study level
    first = trolley.download(studies, tmp_path, use_async=True, max_workers=2)
    files = on_disk(tmp_path)
    assert len(first.saved) == len(files) > 20
    expected = set(files)

    again = trolley.download(studies, tmp_path, use_async=True, max_workers=2)
    assert not again.saved and len(again.skipped) == len(expected)

    rng = random.Random(5)
    gone = sorted(rng.sample(sorted(files), 6))
    for uid in gone[:5]:
        files[uid].unlink()
    files[gone[5]].write_bytes(files[gone[5]].read_bytes()[:-64])  # truncated
    third = trolley.download(studies, tmp_path, use_async=True, max_workers=2)
    assert (
        sorted(
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in third.saved
        )
        == gone
    )
    assert len(third.skipped) == len(expected) - len(gone)
    final = on_disk(tmp_path)
    assert set(final) == expected
    for path in final.values():
        verify_dicom_file(path)
    assert not [p for p in tree(tmp_path) if is_temp_name(p.name)]
    assert {uid for uid in final} <= set(orthanc_studies.by_uid)
