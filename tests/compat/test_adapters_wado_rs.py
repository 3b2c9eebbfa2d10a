"""WADO-RS as a 4.1.0 drop-in: download_iterator, parse and
check_for_response_errors on any response-like object, WadoRSMetaData's 4.1.0
methods, the module's 4.1.0 names and error wording."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import SimpleNamespace

import pytest
import requests
from pydicom.dataset import Dataset

from dicomtrolley import core, http, wado_rs
from dicomtrolley.core import InstanceReference, SeriesReference, StudyReference
from dicomtrolley.emulator import Emulator
from dicomtrolley.exceptions import (
    ClientHTTPError,
    DICOMTrolleyError,
    NoQueryResultsError,
    ResponseFormatError,
)
from dicomtrolley.transport import Retry
from dicomtrolley.wado_rs import WadoRS, WadoRSMetaData
from tests.compat.serving import emulator_serving
from tests.fakes import (
    FakeServer,
    Reply,
    dicom_file,
    html_reply,
    multipart_body,
    multipart_content_type,
)

STUDY = "1.2.826.0.1.3680043.8.498.800"
SERIES = f"{STUDY}.1"
REFS = [InstanceReference(STUDY, SERIES, f"{SERIES}.{n}") for n in (1, 2, 3)]
NO_RETRY = Retry(total=0, backoff_factor=0, backoff_jitter=0)
MULTIPART = 'multipart/related; type="application/dicom"'


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator_serving(tmp_path_factory, "wado-rs-compat", REFS) as running:
        yield running


def sops(datasets: Iterable[Dataset]) -> list[str]:
    return [str(ds.SOPInstanceUID) for ds in datasets]


EXPECTED = [item.instance_uid for item in REFS]


def test_download_iterator(emulator: Emulator, session: requests.Session) -> None:
    wado = WadoRS(session, emulator.dicomweb_url, retry=NO_RETRY)
    assert sops(wado.download_iterator(SeriesReference(STUDY, SERIES))) == EXPECTED
    assert sops(wado.download_iterator(REFS[1])) == [REFS[1].instance_uid]


def test_parse_streams_a_requests_response(
    emulator: Emulator, session: requests.Session
) -> None:
    wado = WadoRS(session, emulator.dicomweb_url)
    response = session.get(
        wado.wado_rs_instance_uri(StudyReference(STUDY)),
        headers={"Accept": MULTIPART},
        stream=True,
    )
    assert sops(wado.parse(response)) == EXPECTED


def test_parse_takes_a_read_response_and_response_like_objects(
    emulator: Emulator, session: requests.Session
) -> None:
    wado = WadoRS(session, emulator.dicomweb_url)
    response = session.get(
        wado.wado_rs_instance_uri(SeriesReference(STUDY, SERIES)),
        headers={"Accept": MULTIPART},
    )
    assert sops(wado.parse(response)) == EXPECTED  # body already read
    like = SimpleNamespace(
        status_code=200, headers=dict(response.headers), content=response.content
    )
    assert sops(wado.parse(like)) == EXPECTED
    single = SimpleNamespace(
        status_code=200,
        headers={"Content-Type": "application/dicom"},
        content=dicom_file(STUDY, SERIES, REFS[0].instance_uid),
    )
    assert sops(wado.parse(single)) == [REFS[0].instance_uid]


def test_parse_of_a_multipart_body_built_by_hand() -> None:
    parts = [dicom_file(STUDY, SERIES, uid) for uid in EXPECTED]
    like = SimpleNamespace(
        status_code=200,
        headers={"Content-Type": multipart_content_type("b0undary", quoted=False)},
        content=multipart_body(parts, "b0undary"),
    )
    assert sops(WadoRS(requests.Session(), "http://pacs").parse(like)) == EXPECTED


def test_check_for_response_errors() -> None:
    no_type = SimpleNamespace(status_code=200, headers={}, content=b"...")
    with pytest.raises(ResponseFormatError, match="Expected multipart response"):
        WadoRS.check_for_response_errors(no_type)
    missing = SimpleNamespace(
        status_code=404, reason="Not Found", url="http://pacs/studies/1", content=b""
    )
    with pytest.raises(ClientHTTPError) as caught:
        WadoRS.check_for_response_errors(missing)
    assert caught.value.status_code == 404
    ok = SimpleNamespace(status_code=200, headers={"Content-Type": MULTIPART})
    WadoRS.check_for_response_errors(ok)


def test_parse_of_an_html_body_says_expected_multipart() -> None:
    like = SimpleNamespace(
        status_code=200, headers={"Content-Type": "text/html"}, content=b"<html/>"
    )
    with pytest.raises(ResponseFormatError, match="Expected multipart response"):
        list(WadoRS(requests.Session(), "http://pacs").parse(like))


# --------------------------------------------------------------------------- #
# WadoRSMetaData
# --------------------------------------------------------------------------- #


def test_metadata_uri_and_download_iterator(
    emulator: Emulator, session: requests.Session
) -> None:
    meta = WadoRSMetaData(session, emulator.dicomweb_url, retry=NO_RETRY)
    uri = meta.wado_rs_instance_uri(SeriesReference(STUDY, SERIES))
    assert uri == f"{emulator.dicomweb_url}/studies/{STUDY}/series/{SERIES}/metadata"
    found = list(meta.download_iterator(SeriesReference(STUDY, SERIES)))
    assert sorted(sops(found)) == sorted(EXPECTED)
    assert "PixelData" not in found[0]
    assert sops(meta.datasets([REFS[2]])) == [REFS[2].instance_uid]


def test_metadata_check_for_response_errors_and_bulk_data_reader() -> None:
    with pytest.raises(NoQueryResultsError, match="204"):
        WadoRSMetaData.check_for_response_errors(SimpleNamespace(status_code=204))
    WadoRSMetaData.check_for_response_errors(SimpleNamespace(status_code=200))
    assert WadoRSMetaData.bulk_data_reader(0x7FE00010, "OW", "http://x/bulk") is None


def test_metadata_204_gives_no_datasets(session: requests.Session) -> None:
    path = f"/studies/{STUDY}/series/{SERIES}/metadata"
    with FakeServer({path: Reply(204)}) as fake:
        meta = WadoRSMetaData(session, fake.url, retry=NO_RETRY)
        assert list(meta.download_iterator(SeriesReference(STUDY, SERIES))) == []


def test_module_names() -> None:
    assert wado_rs.StudyReference is core.StudyReference
    assert wado_rs.DICOMTrolleyError is DICOMTrolleyError
    assert wado_rs.NoQueryResultsError is NoQueryResultsError
    assert wado_rs.HTTPMultiPartStream is http.HTTPMultiPartStream


def test_an_html_answer_says_expected_multipart(session: requests.Session) -> None:
    """4.1.0 users match 'Expected multipart response' on such answers."""
    page = html_reply(200, "Login", "please log in")
    with FakeServer({f"/studies/{STUDY}": page}) as fake:
        wado = WadoRS(session, fake.url, request_per_series=False, retry=NO_RETRY)
        with pytest.raises(ResponseFormatError) as caught:
            list(wado.datasets([StudyReference(STUDY)]))
    assert "Expected multipart response" in str(caught.value)


def test_http_errors_keep_the_4_1_0_wording(emulator: Emulator) -> None:
    """4.1.0: 'Calling <url> failed (401 - Unauthorized)'."""
    with requests.Session() as stranger:
        wado = WadoRS(stranger, emulator.dicomweb_url, retry=NO_RETRY)
        with pytest.raises(DICOMTrolleyError) as caught:
            list(wado.download_iterator(SeriesReference(STUDY, SERIES)))
    url = wado.wado_rs_instance_uri(SeriesReference(STUDY, SERIES))
    assert f"Calling {url} failed (401 - Unauthorized)" in str(caught.value)
