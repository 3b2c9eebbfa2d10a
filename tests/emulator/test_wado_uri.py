"""WADO-URI: the stored files, byte for byte; 400, 404 and 406 where due."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley.emulator import Emulator
from tests.emulator.conftest import PASSWORD, USER, DemoData


def params_for(uid: str, path: Path, **extra: str) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": path.parts[-3],
        "seriesUID": path.parts[-2],
        "objectUID": uid,
        "contentType": "application/dicom",
        **extra,
    }


def test_every_instance_byte_exact(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    for uid, path in demo.by_uid.items():
        response = http.get(emulator.wado_uri_url, params=params_for(uid, path))
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/dicom"
        assert response.headers["Content-Length"] == str(path.stat().st_size)
        assert response.content == path.read_bytes(), path


def test_slash_in_content_type_may_be_encoded(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    uid, path = next(iter(demo.by_uid.items()))
    query = (
        f"requestType=WADO&studyUID={path.parts[-3]}&seriesUID={path.parts[-2]}"
        f"&objectUID={uid}&contentType=application%2Fdicom"
    )
    response = http.get(f"{emulator.wado_uri_url}?{query}")
    assert response.status_code == 200
    assert response.content == path.read_bytes()


def test_head_sends_headers_only(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    uid, path = next(iter(demo.by_uid.items()))
    response = http.head(emulator.wado_uri_url, params=params_for(uid, path))
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(path.stat().st_size)
    assert response.content == b""


def test_unknown_instance_is_404(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    uid, path = next(iter(demo.by_uid.items()))
    assert (
        http.get(emulator.wado_uri_url, params=params_for("1.2.3.4", path)).status_code
        == 404
    )
    # a known instance asked for under the wrong series
    wrong = {**params_for(uid, path), "seriesUID": "1.2.3"}
    response = http.get(emulator.wado_uri_url, params=wrong)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "change",
    [
        {"requestType": "RIS"},
        {"objectUID": ""},
        {"studyUID": "../../etc"},
        {"seriesUID": "1.2.x"},
        {"objectUID": "../../x"},
        {"objectUID": "1..2"},
    ],
)
def test_bad_parameters_are_400(
    emulator: Emulator, demo: DemoData, http: requests.Session, change: dict[str, str]
) -> None:
    uid, path = next(iter(demo.by_uid.items()))
    response = http.get(
        emulator.wado_uri_url, params={**params_for(uid, path), **change}
    )
    assert response.status_code == 400
    assert b"HTTP ERROR 400" in response.content


def test_missing_parameter_is_400(emulator: Emulator, http: requests.Session) -> None:
    response = http.get(emulator.wado_uri_url, params={"requestType": "WADO"})
    assert response.status_code == 400
    assert b"studyUID is required" in response.content


def test_other_content_or_transfer_syntax_is_406(
    emulator: Emulator, demo: DemoData, http: requests.Session
) -> None:
    uid, path = next(iter(demo.by_uid.items()))
    jpeg = params_for(uid, path, contentType="image/jpeg")
    assert http.get(emulator.wado_uri_url, params=jpeg).status_code == 406
    absent = params_for(uid, path)
    del absent["contentType"]
    assert http.get(emulator.wado_uri_url, params=absent).status_code == 406
    stored = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    same = params_for(uid, path, transferSyntax=str(stored))
    assert http.get(emulator.wado_uri_url, params=same).status_code == 200
    other = params_for(uid, path, transferSyntax="1.2.840.10008.1.2.4.50")
    response = http.get(emulator.wado_uri_url, params=other)
    assert response.status_code == 406
    assert b"cannot convert" in response.content


def test_without_credentials(emulator: Emulator, demo: DemoData) -> None:
    uid, path = next(iter(demo.by_uid.items()))
    response = requests.get(emulator.wado_uri_url, params=params_for(uid, path))
    assert response.status_code == 401
    response = requests.get(
        emulator.wado_uri_url, params=params_for(uid, path), auth=(USER, PASSWORD)
    )
    assert response.content == path.read_bytes()
