"""QIDO-RS and WADO-RS on the wire: raw JSON and multipart bodies.

Multipart answers are split with dicomtrolley's sans-I/O parser, fed in odd
chunk sizes; everything else is plain ``requests`` and ``json``.
"""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest
import requests

from dicomtrolley.emulator import DicomWebService, Emulator
from tests.emulator.conftest import DemoData, multipart_parts

DICOM_JSON = "application/dicom+json"
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def value(dataset: dict[str, Any], tag: str) -> Any:
    return dataset[tag]["Value"][0]


def qido(http: requests.Session, emulator: Emulator, path: str, **params: Any) -> Any:
    response = http.get(f"{emulator.dicomweb_url}{path}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == DICOM_JSON
    return response.json()


# -- QIDO-RS ----------------------------------------------------------------------


def test_studies(emulator: Emulator, demo: DemoData, http: requests.Session) -> None:
    results = qido(http, emulator, "/studies")
    assert {value(r, STUDY_UID) for r in results} == {s.study_uid for s in demo.studies}
    doe_ct = next(
        r
        for r in results
        if value(r, STUDY_UID) == demo.study("DTR001", "CT").study_uid
    )
    assert doe_ct["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert doe_ct["00080061"] == {"vr": "CS", "Value": ["CT", "OT"]}
    assert doe_ct["00201206"]["Value"] == [3]
    assert doe_ct["00201208"]["Value"] == [23]
    assert doe_ct["00080020"]["Value"] == ["20210315"]
    url = value(doe_ct, "00081190")
    assert url == f"{emulator.dicomweb_url}/studies/{value(doe_ct, STUDY_UID)}"
    assert "0008103E" not in doe_ct  # series attributes are not study attributes
    assert list(doe_ct) == sorted(doe_ct)


def test_hierarchical_series_and_instances(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    study = demo.study("DTR002")
    series = qido(http, emulator, f"/studies/{study.study_uid}/series")
    assert [value(s, SERIES_UID) for s in series] == [
        s.series_uid for s in study.series
    ]
    assert all(value(s, STUDY_UID) == study.study_uid for s in series)
    assert [value(s, "00201209") for s in series] == [16, 16]
    assert "00100010" not in series[0]  # no study attributes unless asked for
    first = study.series[0]
    instances = qido(
        http,
        emulator,
        f"/studies/{study.study_uid}/series/{first.series_uid}/instances",
    )
    assert [value(i, "00200013") for i in instances] == list(range(1, 17))
    assert {value(i, SOP_UID) for i in instances} == set(
        demo.files_of(study.study_uid, first.series_uid)
    )
    assert all(value(i, SERIES_UID) == first.series_uid for i in instances)
    assert all(value(i, "00280010") == 64 for i in instances)


def test_relational_queries(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    mr_series = qido(http, emulator, "/series", Modality="MR")
    assert len(mr_series) == 4
    assert all(value(s, "00100010") for s in mr_series)  # study attributes too
    instances = qido(http, emulator, "/instances", SeriesDescription="Scout")
    assert len(instances) == 2
    assert value(instances[0], "00100020") == "DTR001"
    study = demo.study("DTR004")
    in_study = qido(http, emulator, f"/studies/{study.study_uid}/instances")
    assert len(in_study) == study.instance_count


@pytest.mark.parametrize(
    ("params", "patients"),
    [
        ({"PatientName": "doe*"}, ["DTR001", "DTR001"]),
        ({"PatientName": "DOE^JOHN"}, ["DTR001", "DTR001"]),
        ({"PatientID": "DTR00?"}, ["DTR001", "DTR001", "DTR002", "DTR003", "DTR004"]),
        ({"StudyDate": "20220101-20231231"}, ["DTR001", "DTR002", "DTR003"]),
        ({"StudyDate": "-20211231"}, ["DTR001"]),
        ({"StudyDate": "20240101-"}, ["DTR004"]),
        ({"StudyDate": "20220701"}, ["DTR002"]),
        ({"ModalitiesInStudy": "OT,MR"}, ["DTR001", "DTR001", "DTR002"]),
        ({"StudyInstanceUID": "1.2.3,1.2.4"}, []),
        ({"00100020": "DTR004"}, ["DTR004"]),
        ({"AccessionNumber": "ACC000*", "PatientSex": "F"}, ["DTR004"]),
    ],
)
def test_study_matching(
    emulator: Emulator,
    http: requests.Session,
    params: dict[str, str],
    patients: list[str],
) -> None:
    response = http.get(f"{emulator.dicomweb_url}/studies", params=params)
    found = (
        sorted(value(r, "00100020") for r in response.json())
        if response.status_code == 200
        else []
    )
    assert found == patients


def test_uid_list_matching(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    uids = [demo.studies[0].study_uid, demo.studies[3].study_uid]
    results = qido(http, emulator, "/studies", StudyInstanceUID=",".join(uids))
    assert {value(r, STUDY_UID) for r in results} == set(uids)


def test_includefield(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    query = "includefield=StudyDescription&includefield=InstitutionName,00081040"
    response = http.get(f"{emulator.dicomweb_url}/studies?PatientID=DTR002&{query}")
    (study,) = response.json()
    assert value(study, "00081030") == "MR Schädel"
    assert value(study, "00080080") == "Klinikum Süd"
    assert value(study, "00081040") == "Neuroradiologie"
    (everything,) = qido(
        http, emulator, "/studies", PatientID="DTR002", includefield="all"
    )
    assert "00080062" in everything  # SOPClassesInStudy
    # an ancestor's attribute on a series result
    series = qido(
        http,
        emulator,
        f"/studies/{demo.study('DTR002').study_uid}/series",
        includefield="PatientName",
    )
    assert all(
        s["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}] for s in series
    )


def test_paging_really_pages(emulator: Emulator, http: requests.Session) -> None:
    everything = qido(http, emulator, "/instances")
    assert len(everything) == 105
    pages = []
    for offset in range(0, 105, 20):
        page = qido(http, emulator, "/instances", limit=20, offset=offset)
        assert len(page) == min(20, 105 - offset)
        pages.extend(page)
    assert [value(i, SOP_UID) for i in pages] == [value(i, SOP_UID) for i in everything]
    past_end = http.get(f"{emulator.dicomweb_url}/instances", params={"offset": 105})
    assert past_end.status_code == 204


def test_empty_result_is_204(emulator: Emulator, http: requests.Session) -> None:
    response = http.get(
        f"{emulator.dicomweb_url}/studies", params={"PatientID": "NOBODY"}
    )
    assert response.status_code == 204
    assert response.content == b""
    assert "Content-Length" not in response.headers
    unknown = http.get(f"{emulator.dicomweb_url}/studies/1.2.3/series")
    assert unknown.status_code == 204


@pytest.mark.parametrize(
    ("accept", "status", "content_type"),
    [
        ("application/dicom+json", 200, DICOM_JSON),
        ("application/json", 200, "application/json"),
        ("*/*", 200, DICOM_JSON),
        ("text/html, application/json;q=0.5", 200, "application/json"),
        ("text/html", 406, "text/html;charset=utf-8"),
        ("application/xml", 406, "text/html;charset=utf-8"),
        ("application/dicom+json;q=0", 406, "text/html;charset=utf-8"),
    ],
)
def test_accept(
    emulator: Emulator,
    http: requests.Session,
    accept: str,
    status: int,
    content_type: str,
) -> None:
    response = http.get(f"{emulator.dicomweb_url}/studies", headers={"Accept": accept})
    assert response.status_code == status
    assert response.headers["Content-Type"] == content_type


@pytest.mark.parametrize(
    "params",
    [
        {"NoSuchKeyword": "1"},
        {"limit": "-1"},
        {"offset": "x"},
        {"StudyDate": "2021"},
        {"includefield": "Nonsense"},
    ],
)
def test_bad_queries_are_400(
    emulator: Emulator, http: requests.Session, params: dict[str, str]
) -> None:
    assert (
        http.get(f"{emulator.dicomweb_url}/studies", params=params).status_code == 400
    )


def test_unsupported_keys_are_ignored_with_a_warning(
    emulator: Emulator, http: requests.Session
) -> None:
    response = http.get(
        f"{emulator.dicomweb_url}/studies",
        params={"ImageType": "ORIGINAL", "fuzzymatching": "true"},
    )
    assert response.status_code == 200
    assert len(response.json()) == 5
    assert "ImageType matching key is not supported" in response.headers["Warning"]
    assert response.headers["Warning"].startswith("299 ")


def test_result_cap_warns(demo: DemoData, make_emulator: Any) -> None:
    emulator = make_emulator(demo.root, services=[DicomWebService(max_results=3)])
    response = requests.get(
        f"{emulator.dicomweb_url}/studies", auth=("trolley", "trolley")
    )
    assert len(response.json()) == 3
    assert "additional results" in response.headers["Warning"]
    response = requests.get(
        f"{emulator.dicomweb_url}/studies",
        params={"limit": 2},
        auth=("trolley", "trolley"),
    )
    assert len(response.json()) == 2


# -- WADO-RS ----------------------------------------------------------------------

MULTIPART = 'multipart/related; type="application/dicom"'


def retrieve(
    http: requests.Session, emulator: Emulator, path: str, accept: str = MULTIPART
) -> requests.Response:
    return http.get(f"{emulator.dicomweb_url}{path}", headers={"Accept": accept})


def parts_by_uid(response: requests.Response) -> dict[str, bytes]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(MULTIPART + "; boundary=")
    assert int(response.headers["Content-Length"]) == len(response.content)
    found = {}
    for headers, body in multipart_parts(response):
        assert headers["content-type"].startswith(
            "application/dicom; transfer-syntax=1.2.840.10008."
        )
        assert headers["content-length"] == str(len(body))
        uid = str(
            pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True).SOPInstanceUID
        )
        found[uid] = body
    return found


@pytest.mark.parametrize(
    "accept", [MULTIPART, MULTIPART + "; transfer-syntax=*", "*/*", ""]
)
def test_retrieve_study(
    emulator: Emulator, demo: DemoData, http: requests.Session, accept: str
) -> None:
    study = demo.study("DTR001", "CT")  # explicit, implicit and a multi-frame series
    assert parts_by_uid(
        retrieve(http, emulator, f"/studies/{study.study_uid}", accept)
    ) == demo.files_of(study.study_uid)


def test_retrieve_series_and_instance(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    study = demo.study("DTR003")  # implicit and RLE
    for series in study.series:
        path = f"/studies/{study.study_uid}/series/{series.series_uid}"
        expected = demo.files_of(study.study_uid, series.series_uid)
        assert parts_by_uid(retrieve(http, emulator, path)) == expected
        uid = series.instance_uid(0)
        one = parts_by_uid(retrieve(http, emulator, f"{path}/instances/{uid}"))
        assert one == {uid: expected[uid]}


def test_single_part_instance(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    study = demo.study("DTR004")
    series = study.series[0]
    uid = series.instance_uid(2)
    path = f"/studies/{study.study_uid}/series/{series.series_uid}"
    response = retrieve(http, emulator, f"{path}/instances/{uid}", "application/dicom")
    assert response.headers["Content-Type"] == "application/dicom"
    assert response.content == demo.by_uid[uid].read_bytes()
    # not for a whole series
    assert retrieve(http, emulator, path, "application/dicom").status_code == 406


def test_transfer_syntaxes(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    study = demo.study("DTR004")
    explicit = study.series[0]
    path = f"/studies/{study.study_uid}/series/{explicit.series_uid}"
    same = retrieve(
        http, emulator, path, MULTIPART + "; transfer-syntax=1.2.840.10008.1.2.1"
    )
    assert parts_by_uid(same) == demo.files_of(study.study_uid, explicit.series_uid)
    other = retrieve(
        http, emulator, path, MULTIPART + "; transfer-syntax=1.2.840.10008.1.2"
    )
    assert other.status_code == 406
    assert b"converts nothing" in other.content
    # a mixed study cannot be sent in one transfer syntax
    whole = retrieve(
        http,
        emulator,
        f"/studies/{study.study_uid}",
        MULTIPART + "; transfer-syntax=1.2.840.10008.1.2.1",
    )
    assert whole.status_code == 406
    # the first acceptable choice wins
    choices = f"{MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.50, {MULTIPART}; transfer-syntax=*;q=0.5"
    assert (
        retrieve(http, emulator, f"/studies/{study.study_uid}", choices).status_code
        == 200
    )
    for accept in ("application/json", 'multipart/related; type="image/jpeg"'):
        assert retrieve(http, emulator, path, accept).status_code == 406


def test_unknown_uids_are_404(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    study = demo.study("DTR004")
    for path in (
        "/studies/1.2.3",
        f"/studies/{study.study_uid}/series/1.2.3",
        f"/studies/{study.study_uid}/series/{study.series[0].series_uid}/instances/1.2.3",
        f"/studies/{study.study_uid}/series/{study.series[1].series_uid}/instances/{study.series[0].instance_uid(0)}",
        "/studies/1.2.3/metadata",
    ):
        response = retrieve(http, emulator, path)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"].startswith("text/html")


def test_metadata(emulator: Emulator, demo: DemoData, http: requests.Session) -> None:
    study = demo.study("DTR002")
    response = http.get(f"{emulator.dicomweb_url}/studies/{study.study_uid}/metadata")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == DICOM_JSON
    datasets = response.json()
    assert {value(d, SOP_UID) for d in datasets} == set(demo.files_of(study.study_uid))
    for data in datasets:
        assert "7FE00010" not in data
        assert not any("BulkDataURI" in element for element in data.values())
        assert not any(tag.startswith("0002") for tag in data)
        stored = pydicom.dcmread(
            demo.by_uid[value(data, SOP_UID)], stop_before_pixels=True
        )
        parsed = pydicom.Dataset.from_json(data)
        for keyword in (
            "PatientName",
            "StudyDescription",
            "InstanceNumber",
            "ImagePositionPatient",
            "Rows",
        ):
            assert parsed[keyword].value == stored[keyword].value, keyword
    series = study.series[1]
    uid = series.instance_uid(3)
    one = http.get(
        f"{emulator.dicomweb_url}/studies/{study.study_uid}/series/{series.series_uid}/instances/{uid}/metadata"
    )
    assert [value(d, SOP_UID) for d in one.json()] == [uid]
    refused = http.get(
        f"{emulator.dicomweb_url}/studies/{study.study_uid}/metadata",
        headers={"Accept": MULTIPART},
    )
    assert refused.status_code == 406
