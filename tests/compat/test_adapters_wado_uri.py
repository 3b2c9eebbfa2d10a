"""WADO-URI as a 4.1.0 drop-in: datasets_single_thread, parse_wado_response on
any response-like object, the 4.1.0 module names and error wording."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import requests

from dicomtrolley import wado_uri
from dicomtrolley.core import (
    InstanceReference,
    NonInstanceParameterError,
    SeriesReference,
)
from dicomtrolley.emulator import Emulator
from dicomtrolley.exceptions import (
    ClientHTTPError,
    DICOMParseError,
    DICOMTrolleyAuthError,
    DICOMTrolleyError,
)
from dicomtrolley.transport import Retry
from dicomtrolley.wado_uri import WadoURI
from tests.compat.serving import emulator_serving
from tests.fakes import dicom_file

STUDY = "1.2.826.0.1.3680043.8.498.700"
SERIES = f"{STUDY}.1"
REFS = [InstanceReference(STUDY, SERIES, f"{SERIES}.{n}") for n in (1, 2, 3)]
NO_RETRY = Retry(total=0, backoff_factor=0, backoff_jitter=0)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator_serving(tmp_path_factory, "wado-uri-compat", REFS) as running:
        yield running


def test_datasets_single_thread(emulator: Emulator, session: requests.Session) -> None:
    wado = WadoURI(session, emulator.wado_uri_url, retry=NO_RETRY)
    found = [str(ds.SOPInstanceUID) for ds in wado.datasets_single_thread(REFS)]
    assert found == [item.instance_uid for item in REFS]
    with pytest.raises(NonInstanceParameterError):
        list(wado.datasets_single_thread([SeriesReference(STUDY, SERIES)]))


def test_parse_wado_response_of_a_requests_response(
    emulator: Emulator, session: requests.Session
) -> None:
    item = REFS[1]
    response = session.get(
        emulator.wado_uri_url, params=WadoURI.to_wado_parameters(item)
    )
    dataset = WadoURI.parse_wado_response(response)
    assert dataset.SOPInstanceUID == item.instance_uid


def test_parse_wado_response_of_a_response_like_object() -> None:
    item = REFS[2]
    like = SimpleNamespace(
        status_code=200, content=dicom_file(STUDY, SERIES, item.instance_uid)
    )
    assert WadoURI.parse_wado_response(like).SOPInstanceUID == item.instance_uid
    garbage = SimpleNamespace(status_code=200, content=b"<html>not DICOM</html>")
    with pytest.raises(DICOMParseError):
        WadoURI.parse_wado_response(garbage)


def test_parse_wado_response_raises_for_error_statuses() -> None:
    missing = SimpleNamespace(
        status_code=404,
        reason="Not Found",
        url="http://pacs/wado?objectUID=1.2.3",
        content=b"no such object",
    )
    with pytest.raises(ClientHTTPError) as caught:
        WadoURI.parse_wado_response(missing)
    assert caught.value.status_code == 404
    refused = SimpleNamespace(
        status_code=401, reason="Unauthorized", url="http://pacs/wado", content=b""
    )
    with pytest.raises(DICOMTrolleyAuthError, match="Unauthorized"):
        WadoURI.parse_wado_response(refused)


def test_module_names() -> None:
    assert wado_uri.DICOMTrolleyError is DICOMTrolleyError
    assert wado_uri.Response is requests.Response


def test_http_errors_keep_the_4_1_0_wording(emulator: Emulator) -> None:
    """4.1.0: 'Calling <url> failed (401 - Unauthorized)'."""
    with requests.Session() as stranger:
        wado = WadoURI(stranger, emulator.wado_uri_url, retry=NO_RETRY)
        with pytest.raises(DICOMTrolleyAuthError) as caught:
            wado.get_dataset(REFS[0])
    assert "failed (401 - Unauthorized)" in str(caught.value)
    assert f"Calling {emulator.wado_uri_url}" in str(caught.value)
