"""What the de-identification tests check on an output folder.

The output DICOM files and their paths must hold nothing of the source: no
``PHI`` value of the synthetic studies (:func:`dicomtrolley.synthetic.phi_studies`),
no patient ID, name, accession number or source UID. The state folder
(``.dicomtrolley``) is left out: it keeps the mapping, by design.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pydicom

from dicomtrolley.catalog import STATE_FOLDER
from dicomtrolley.deid_records import (
    FLAGS_NAME,
    MAP_NAME,
    read_flags,
    read_mapping,
    record_files,
)
from dicomtrolley.manifest import MANIFEST_NAME, SHARD_FOLDER
from dicomtrolley.synthetic import StudySpec, instance_specs

KEY = "a-test-key-of-more-than-16-characters"
OTHER_KEY = "another-test-key-of-32-characters"
LAYOUT = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"


def source_markers(studies: list[StudySpec]) -> list[bytes]:
    """Byte strings that must not appear in a de-identified file or path."""
    markers = {b"PHI", b"Phi^", b"Identifiable", b"Private^Phi"}
    for study in studies:
        markers.update(
            value.encode()
            for value in (study.patient_id, study.accession_number, study.study_uid)
            if value
        )
        for series in study.series:
            markers.add(series.series_uid.encode())
    for instance in instance_specs(studies):
        markers.add(instance.sop_instance_uid.encode())
    return sorted(markers)


def output_files(out: Path) -> list[Path]:
    """The DICOM files of out (the state folder and the manifest with its
    shards, which keep source UIDs for resume and reports, left out)."""
    return sorted(
        path
        for path in out.rglob("*")
        if path.is_file()
        and not {STATE_FOLDER, SHARD_FOLDER} & set(path.relative_to(out).parts)
        and path.name != MANIFEST_NAME
    )


def assert_no_source_data(out: Path, studies: list[StudySpec]) -> None:
    """No marker in any output file's bytes or path."""
    markers = source_markers(studies)
    files = output_files(out)
    assert files
    for path in files:
        data = path.read_bytes()
        relative = str(path.relative_to(out)).encode()
        found = [m for m in markers if m in data or m in relative]
        assert not found, f"{path}: {found[:5]}"


def mapping(out: Path) -> list[dict[str, object]]:
    """The mapping records of the folder, its file and the shards of Dask
    workers read as one (asserting each file is mode 0600)."""
    files = record_files(out, MAP_NAME)
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    return read_mapping(out)


def flagged(out: Path) -> set[str]:
    """Mapped SOP Instance UIDs listed in deid-flags.jsonl (and its shards)."""
    for path in record_files(out, FLAGS_NAME):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    return {str(record["instance_uid"]) for record in read_flags(out)}


def expected_flags(out: Path) -> set[str]:
    """SOP UIDs of the written files whose source is flagged: BurnedInAnnotation
    YES, or ultrasound without the attribute (what phi_studies writes)."""
    found = set()
    for path in output_files(out):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        burned = str(ds.get("BurnedInAnnotation", ""))
        if burned == "YES" or (ds.Modality == "US" and not burned):
            found.add(str(ds.SOPInstanceUID))
    return found
