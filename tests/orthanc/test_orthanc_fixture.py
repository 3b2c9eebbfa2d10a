"""The Orthanc fixture holds the synthetic studies and serves them as expected."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import pydicom
import pytest
import requests
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicomtrolley import synthetic
from tests.orthanc_server import GeneratedStudies, OrthancServer

Factory = Callable[..., OrthancServer]

pytestmark = pytest.mark.orthanc

DICOM_JSON = {"Accept": "application/dicom+json"}
MULTIPART_ANY_SYNTAX = {
    "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'
}


def split_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(part headers, part body) of a multipart/related answer (test helper)."""
    match = re.search(r'boundary=(?:"([^"]+)"|([^;\s]+))', content_type)
    assert match, f"no boundary in {content_type!r}"
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("ascii")
    chunks = body.split(b"\r\n" + delimiter)
    first = chunks[0]
    assert first.startswith(delimiter), "body does not start with the boundary"
    chunks[0] = first[len(delimiter) :]
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):  # closing delimiter
            break
        headers, separator, data = chunk.partition(b"\r\n\r\n")
        assert separator, "part without header end"
        parts.append((headers.decode("latin-1"), data))
    assert chunks[-1].startswith(b"--"), "no closing delimiter"
    return parts


def test_orthanc_stored_exactly_the_generated_instances(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies
) -> None:
    statistics = orthanc.statistics()
    assert statistics["CountInstances"] == len(orthanc_studies.paths)
    assert statistics["CountStudies"] == len(orthanc_studies.studies)
    assert statistics["CountPatients"] == len(
        {study.patient_id for study in orthanc_studies.studies}
    )
    stored = orthanc.get_json("/instances", params={"expand": ""})
    assert {item["MainDicomTags"]["SOPInstanceUID"] for item in stored} == set(
        orthanc_studies.by_uid
    )


def test_qido_rs_lists_the_studies(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies
) -> None:
    answer = orthanc.get("/dicom-web/studies", headers=DICOM_JSON)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/dicom+json")
    found = {study["0020000D"]["Value"][0]: study for study in answer.json()}
    assert set(found) == {study.study_uid for study in orthanc_studies.studies}
    for spec in orthanc_studies.studies:
        study = found[spec.study_uid]
        assert study["00100020"]["Value"] == [spec.patient_id]
        assert study["00080020"]["Value"] == [spec.study_date]
        assert study["00201208"]["Value"] == [spec.instance_count]
        assert sorted(study["00080061"]["Value"]) == list(spec.modalities)


NON_ASCII_PATIENTS = sorted(
    {s.patient_id for s in synthetic.default_studies() if not s.patient_name.isascii()}
)


@pytest.mark.parametrize("patient_id", NON_ASCII_PATIENTS)
def test_non_ascii_patient_names_round_trip_through_qido_rs(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, patient_id: str
) -> None:
    spec = next(s for s in orthanc_studies.studies if s.patient_id == patient_id)
    answer = orthanc.get(
        "/dicom-web/studies", params={"PatientID": patient_id}, headers=DICOM_JSON
    )
    assert answer.status_code == 200
    (study,) = answer.json()
    assert study["00080005"]["Value"] == ["ISO_IR 192"]
    groups = spec.patient_name.split("=")
    expected = dict(
        zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False)
    )
    assert study["00100010"]["Value"] == [expected]


WADO_CASES = {
    "explicit": (ExplicitVRLittleEndian, False),
    "implicit": (ImplicitVRLittleEndian, False),
    "rle": (RLELossless, False),
    "multi-frame": (ExplicitVRLittleEndian, True),
}


@pytest.mark.parametrize("case", sorted(WADO_CASES))
def test_wado_uri_returns_the_stored_bytes(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, case: str
) -> None:
    syntax, multi_frame = WADO_CASES[case]
    instance = orthanc_studies.find(transfer_syntax=syntax, multi_frame=multi_frame)
    # The "/" of application/dicom must go unescaped: Orthanc 1.10 refuses %2F.
    url = (
        f"{orthanc.wado_url}?requestType=WADO&studyUID={instance.study.study_uid}"
        f"&seriesUID={instance.series.series_uid}"
        f"&objectUID={instance.sop_instance_uid}&contentType=application/dicom"
    )
    answer = requests.get(url, timeout=(5, 60))
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Content-Type"] == "application/dicom"
    assert "Content-Encoding" not in answer.headers  # compression is off
    assert (
        answer.content == orthanc_studies.by_uid[instance.sop_instance_uid].read_bytes()
    )


DEMO_STUDIES = {
    f"{study.patient_id}-{study.modality}": study.study_uid
    for study in synthetic.default_studies()
}


@pytest.mark.parametrize("study", sorted(DEMO_STUDIES))
def test_wado_rs_study_multipart_returns_the_stored_bytes(
    orthanc: OrthancServer, orthanc_studies: GeneratedStudies, study: str
) -> None:
    spec = next(
        s for s in orthanc_studies.studies if s.study_uid == DEMO_STUDIES[study]
    )
    answer = orthanc.get(
        f"/dicom-web/studies/{spec.study_uid}", headers=MULTIPART_ANY_SYNTAX
    )
    assert answer.status_code == 200, answer.text[:300]
    content_type = answer.headers["Content-Type"]
    assert content_type.startswith("multipart/related")
    parts = split_multipart(content_type, answer.content)
    assert len(parts) == spec.instance_count
    received = {}
    for headers, data in parts:
        assert "application/dicom" in headers
        uid = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
        received[uid] = data
    expected = {
        uid: path
        for uid, path in orthanc_studies.by_uid.items()
        if orthanc_studies.instances[uid].study.study_uid == spec.study_uid
    }
    assert set(received) == set(expected)
    for uid, path in expected.items():
        assert received[uid] == path.read_bytes(), uid


def test_a_capped_orthanc_answers_one_more_than_the_cap_to_qido_rs(
    orthanc_factory: Factory, orthanc_studies: GeneratedStudies
) -> None:
    """Documents Orthanc 1.10 behaviour that paging tests rely on."""
    server = orthanc_factory(limit_find_results=2, limit_find_instances=10)
    server.upload(orthanc_studies.paths)
    studies = server.get("/dicom-web/studies", headers=DICOM_JSON).json()
    instances = server.get("/dicom-web/instances", headers=DICOM_JSON).json()
    assert (len(studies), len(instances)) == (3, 11)
    # offset applies to the capped list: paging cannot get past the cap.
    page = server.get(
        "/dicom-web/studies", params={"limit": 2, "offset": 3}, headers=DICOM_JSON
    )
    assert page.status_code == 200
    assert page.json() == []


def test_basic_authentication_can_be_enabled(orthanc_factory: Factory) -> None:
    server = orthanc_factory(users={"alice": "s3cret"})
    url = f"{server.http_url}/system"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, auth=("alice", "wrong"), timeout=5).status_code == 401
    assert requests.get(url, auth=("alice", "s3cret"), timeout=5).status_code == 200
    assert server.get("/system").status_code == 200


def test_orthanc_takes_percent_escapes_in_qido_values_literally(
    orthanc: OrthancServer,
) -> None:
    """Orthanc 1.10.1 + DICOMweb 1.7 do not percent-decode QIDO-RS parameters.

    ``PatientName=D*`` matches, ``PatientName=D%2A`` (what ``requests`` makes of
    ``params={"PatientName": "D*"}``) matches nothing; so does ``Doe%5EJohn``.
    A QIDO-RS client must send ``*``, ``?``, ``^``, ``-`` and ``,`` unescaped.
    """
    url = f"{orthanc.dicomweb_url}/studies?PatientName="
    raw = requests.get(url + "D*", headers=DICOM_JSON, timeout=10)
    escaped = requests.get(url + "D%2A", headers=DICOM_JSON, timeout=10)
    assert len(raw.json()) == 2
    assert escaped.status_code == 200
    assert escaped.json() == []
