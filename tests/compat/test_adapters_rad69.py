"""RAD-69 as a 4.1.0 drop-in, against the emulator's RAD-69 endpoint: the 4.1.0
methods, errors_to_ignore set after construction, answers the caller obtained
itself (requests.Response or any response-like object), and the error wording
4.1.0 users match on."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import requests

from dicomtrolley import http, rad69, xml_templates
from dicomtrolley.core import InstanceReference, to_instance_refs
from dicomtrolley.emulator import Emulator
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    Rad69ServerError,
    ResponseFormatError,
    XDSMissingDocumentError,
)
from dicomtrolley.parsing import DICOMParseTree
from dicomtrolley.rad69 import Rad69
from dicomtrolley.transport import Retry
from tests.compat.serving import emulator_serving

STUDY = "1.2.826.0.1.3680043.8.498.600"
SERIES = {1: f"{STUDY}.1", 2: f"{STUDY}.2"}
LAYOUT = {1: 3, 2: 2}  # series number: instances
NO_RETRY = Retry(total=0, backoff_factor=0, backoff_jitter=0)


def ref(series: int, n: int) -> InstanceReference:
    return InstanceReference(STUDY, SERIES[series], f"{SERIES[series]}.{n}")


ALL = [ref(s, n) for s, count in LAYOUT.items() for n in range(1, count + 1)]
MISSING = ref(1, 99)  # in a series the server has, but not on the server


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with emulator_serving(tmp_path_factory, "rad69-compat", ALL) as running:
        yield running


@pytest.fixture
def rad(emulator: Emulator, session: requests.Session) -> Rad69:
    return Rad69(session, emulator.rad69_url, retry=NO_RETRY)


def sops(datasets: Iterator[object] | list[object]) -> list[str]:
    return [str(ds.SOPInstanceUID) for ds in datasets]  # type: ignore[attr-defined]


def post(rad: Rad69, refs: list[InstanceReference], stream: bool) -> requests.Response:
    """An answer obtained the 4.1.0 way: the caller posts the request itself."""
    return rad.session.post(
        rad.url,
        headers=rad.post_headers,
        data=rad.create_instances_request(refs),
        stream=stream,
    )


# --------------------------------------------------------------------------- #
# errors_to_ignore, set after construction
# --------------------------------------------------------------------------- #


def test_errors_to_ignore_assigned_after_construction(rad: Rad69) -> None:
    """4.1.0 code sets the attribute; any collection of classes (or one) works."""
    wanted = [*ALL[:3], MISSING]  # series 1: three present, one missing
    for ignore in (
        [XDSMissingDocumentError],
        {Rad69ServerError},  # a base class
        (XDSMissingDocumentError,),
        XDSMissingDocumentError,
    ):
        rad.errors_to_ignore = ignore  # type: ignore[assignment]
        assert sops(rad.datasets(wanted)) == sops_of(ALL[:3]), ignore


def test_errors_to_ignore_is_read_when_the_error_comes(rad: Rad69) -> None:
    datasets = rad.datasets([MISSING])
    rad.errors_to_ignore.append(XDSMissingDocumentError)  # type: ignore[attr-defined]
    assert list(datasets) == []
    rad.errors_to_ignore = []
    with pytest.raises(XDSMissingDocumentError) as caught:
        list(rad.datasets([MISSING]))
    assert MISSING.instance_uid in caught.value.uids
    assert "Server returns 1 errors" in str(caught.value)


def sops_of(refs: list[InstanceReference]) -> list[str]:
    return [item.instance_uid for item in refs]


# --------------------------------------------------------------------------- #
# 4.1.0 download methods
# --------------------------------------------------------------------------- #


def test_download_iterator_and_series_download_iterator(rad: Rad69) -> None:
    assert sops(rad.download_iterator(ALL)) == sops_of(ALL)
    series_2 = [item for item in ALL if item.series_uid == SERIES[2]]
    assert sops(rad.series_download_iterator(series_2, index=1)) == sops_of(series_2)


@pytest.mark.parametrize("per_series", [True, False])
def test_datasets_single_thread_and_async(rad: Rad69, per_series: bool) -> None:
    rad.request_per_series = per_series
    assert sops(rad.datasets_single_thread(ALL)) == sops_of(ALL)
    assert sops(rad.datasets_async(ALL, 3)) == sops_of(ALL)
    assert sops(rad.datasets_async(ALL, None)) == sops_of(ALL)


def test_split_instances() -> None:
    bins = list(Rad69.split_instances(ALL, 2))
    assert [len(b) for b in bins] == [3, 2]
    assert [item for b in bins for item in b] == ALL
    assert list(Rad69.split_instances([], 4)) == []


def test_create_requests_are_soap_text(rad: Rad69) -> None:
    one = rad.create_instance_request(ALL[0])
    assert isinstance(one, str)
    assert ALL[0].instance_uid in one
    assert "RetrieveImagingDocumentSetRequest" in one
    many = rad.create_instances_request(ALL)
    assert all(item.instance_uid in many for item in ALL)


def test_verify_response_is_deprecated(rad: Rad69) -> None:
    with pytest.warns(DeprecationWarning, match="check_for_response_errors"):
        rad.verify_response(SimpleNamespace(status_code=200))


def test_module_names() -> None:
    assert rad69.DICOMParseTree is DICOMParseTree
    assert rad69.DICOMTrolleyError is DICOMTrolleyError
    assert rad69.to_instance_refs is to_instance_refs
    assert rad69.Rad69ServerError is Rad69ServerError
    assert rad69.HTTPMultiPartStream is http.HTTPMultiPartStream
    assert (
        rad69.RAD69_SOAP_REQUEST_TEMPLATE is xml_templates.RAD69_SOAP_REQUEST_TEMPLATE
    )
    assert (
        rad69.RAD69_SOAP_RESPONSE_ERROR_XPATH
        is xml_templates.RAD69_SOAP_RESPONSE_ERROR_XPATH
    )


def test_template_is_kept_but_setting_it_warns(rad: Rad69) -> None:
    """4.1.0 rendered requests from Rad69.template; build_request does now."""
    assert rad.template == xml_templates.RAD69_SOAP_REQUEST_TEMPLATE
    with pytest.warns(DeprecationWarning, match="build_request"):
        rad.template = "{{ custom }}"
    assert rad.template == "{{ custom }}"
    assert sops(rad.download_iterator(ALL[:1])) == sops_of(ALL[:1])


# --------------------------------------------------------------------------- #
# Answers the caller obtained itself
# --------------------------------------------------------------------------- #


def test_parse_rad69_response_streams_a_requests_response(rad: Rad69) -> None:
    response = post(rad, ALL, stream=True)
    assert sops(rad.parse_rad69_response(response)) == sops_of(ALL)


def test_parse_rad69_response_takes_a_response_like_object(rad: Rad69) -> None:
    answer = post(rad, ALL[:2], stream=False)
    like = SimpleNamespace(
        status_code=answer.status_code,
        headers=dict(answer.headers),
        content=answer.content,
    )
    assert sops(rad.parse_rad69_response(like)) == sops_of(ALL[:2])


def test_a_failure_answer_raises_with_the_4_1_0_wording(rad: Rad69) -> None:
    answer = post(rad, [MISSING], stream=False)
    like = SimpleNamespace(
        status_code=200,
        headers={"Content-Type": answer.headers["Content-Type"]},
        text=answer.text,
    )
    with pytest.raises(XDSMissingDocumentError, match="Server returns 1 errors"):
        list(rad.parse_rad69_response(like))
    with pytest.raises(XDSMissingDocumentError) as caught:
        Rad69.check_for_response_errors(like)
    assert caught.value.uids == (MISSING.instance_uid,)
    rad.errors_to_ignore = [XDSMissingDocumentError]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(rad.parse_rad69_response(like)) == []


def test_check_for_response_errors_without_content_type() -> None:
    like = SimpleNamespace(status_code=200, headers={}, content=b"--x--")
    with pytest.raises(ResponseFormatError, match="Expected multipart response"):
        Rad69.check_for_response_errors(like)


def test_a_soap_answer_without_errors_says_so() -> None:
    envelope = (
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
        b'<RetrieveDocumentSetResponse xmlns="urn:ihe:iti:xds-b:2007">'
        b'<rs:RegistryResponse xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"'
        b' status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/>'
        b"</RetrieveDocumentSetResponse></s:Body></s:Envelope>"
    )
    like = SimpleNamespace(
        status_code=200,
        headers={"Content-Type": "application/soap+xml"},
        content=envelope,
    )
    with pytest.raises(ResponseFormatError, match="Could not find any rad69 soap"):
        Rad69.parse_rad69_soap_error_response(like)


def test_an_unparseable_soap_answer_says_could_not_parse() -> None:
    like = SimpleNamespace(
        status_code=200,
        headers={"Content-Type": "application/soap+xml"},
        content=b"<html><body>Request failed",
    )
    with pytest.raises(ResponseFormatError, match="Could not parse"):
        Rad69.check_for_response_errors(like)


def test_http_errors_keep_the_4_1_0_wording(emulator: Emulator) -> None:
    """4.1.0: 'Calling <url> failed (401 - Unauthorized)'."""
    with requests.Session() as stranger:
        rad = Rad69(stranger, emulator.rad69_url, retry=NO_RETRY)
        with pytest.raises(DICOMTrolleyError) as caught:
            list(rad.datasets(ALL[:1]))
    assert f"Calling {emulator.rad69_url} failed (401 - Unauthorized)" in str(
        caught.value
    )
