"""RAD-69 at ``POST /rad69``, read as raw bytes: hand-written SOAP requests sent
with plain ``requests``, answers checked element by element and byte by byte.

Nothing here goes through dicomtrolley's RAD-69 client (see
``test_rad69_roundtrip.py`` for that).
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest
import requests
from defusedxml import ElementTree
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicomtrolley.emulator import Emulator
from dicomtrolley.emulator.rad69 import Rad69Service, parse_request
from dicomtrolley.synthetic import SeriesSpec, StudySpec
from tests.emulator.conftest import PASSWORD, USER, DemoData, login

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
IHERAD = "urn:ihe:rad:xdsi-b:2009"
IHE = "urn:ihe:iti:xds-b:2007"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XOP = "http://www.w3.org/2004/08/xop/include"

ACTION = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
JPEG2000 = "1.2.840.10008.1.2.4.90"
ALL_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless)
SOAP_TYPE = f'application/soap+xml; charset=UTF-8; action="{ACTION}"'
MESSAGE_ID = "urn:uuid:6b0c5e0e-52a4-4bd7-a3c5-1f1c3a2d9e01"
UNKNOWN_SOP = "1.2.3.4.5.6.7.8.9"


def q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


# -- building requests by hand ---------------------------------------------------


@dataclass(frozen=True)
class Doc:
    study: str
    series: str
    sop: str


def docs_of(
    study: StudySpec, series: SeriesSpec, count: int | None = None
) -> list[Doc]:
    number = series.instance_count if count is None else count
    return [
        Doc(study.study_uid, series.series_uid, series.instance_uid(i))
        for i in range(number)
    ]


def series_with(demo: DemoData, syntax: str) -> tuple[StudySpec, SeriesSpec]:
    return next(
        (study, series)
        for study in demo.studies
        for series in study.series
        if series.transfer_syntax == syntax
    )


def request_element(
    docs: Sequence[Doc],
    syntaxes: Sequence[str] = ALL_SYNTAXES,
    *,
    repository: str | None = "1.3.6.1.4.1000",
    home: str | None = None,
    study_attribute: str = "studyInstanceUID",
) -> str:
    """One iherad:RetrieveImagingDocumentSetRequest, grouped by study and series."""
    grouped: dict[str, dict[str, list[str]]] = {}
    for doc in docs:
        grouped.setdefault(doc.study, {}).setdefault(doc.series, []).append(doc.sop)
    out = [
        f'<iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{IHERAD}" xmlns:ihe="{IHE}">'
    ]
    for study, series_map in grouped.items():
        out.append(f'<iherad:StudyRequest {study_attribute}="{study}">')
        for series, sops in series_map.items():
            out.append(f'<iherad:SeriesRequest seriesInstanceUID="{series}">')
            for sop in sops:
                out.append("<ihe:DocumentRequest>")
                if home is not None:
                    out.append(f"<ihe:HomeCommunityId>{home}</ihe:HomeCommunityId>")
                if repository is not None:
                    out.append(
                        f"<ihe:RepositoryUniqueId>{repository}</ihe:RepositoryUniqueId>"
                    )
                out.append(f"<ihe:DocumentUniqueId>{sop}</ihe:DocumentUniqueId>")
                out.append("</ihe:DocumentRequest>")
            out.append("</iherad:SeriesRequest>")
        out.append("</iherad:StudyRequest>")
    out.append("<iherad:TransferSyntaxUIDList>")
    out += [
        f"<iherad:TransferSyntaxUID>{uid}</iherad:TransferSyntaxUID>"
        for uid in syntaxes
    ]
    out.append("</iherad:TransferSyntaxUIDList>")
    out.append("</iherad:RetrieveImagingDocumentSetRequest>")
    return "\n".join(out)


def envelope(body: str, *, action: str | None = ACTION, header: str = "") -> bytes:
    action_xml = (
        f'<wsa:Action s:mustUnderstand="1">{action}</wsa:Action>'
        if action is not None
        else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<s:Envelope xmlns:s="{SOAP}" xmlns:wsa="{WSA}">\n'
        f"<s:Header>{action_xml}<wsa:MessageID>{MESSAGE_ID}</wsa:MessageID>"
        f"<wsa:ReplyTo><wsa:Address>{WSA}/anonymous</wsa:Address></wsa:ReplyTo>"
        f'<wsa:To s:mustUnderstand="1">http://localhost/rad69</wsa:To>{header}</s:Header>\n'
        f"<s:Body>{body}</s:Body>\n</s:Envelope>\n"
    ).encode()


def post(
    emulator: Emulator,
    body: bytes,
    content_type: str | None = SOAP_TYPE,
    auth: tuple[str, str] | None = (USER, PASSWORD),
    session: requests.Session | None = None,
) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    sender: Any = session or requests
    response: requests.Response = sender.post(
        f"{emulator.base_url}/rad69", data=body, headers=headers, auth=auth, timeout=30
    )
    return response


# -- reading answers ----------------------------------------------------------


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes


def content_type_params(value: str) -> tuple[str, dict[str, str]]:
    message = email.message.EmailMessage()
    message["Content-Type"] = value
    return message.get_content_type(), {
        k: str(v) for k, v in message["Content-Type"].params.items()
    }


def mime_parts(response: requests.Response) -> list[Part]:
    """The parts of a multipart answer, split on its boundary (RFC 2046)."""
    _, params = content_type_params(response.headers["Content-Type"])
    delimiter = b"--" + params["boundary"].encode()
    content = response.content
    assert content.startswith(delimiter + b"\r\n")
    assert content.endswith(b"\r\n" + delimiter + b"--\r\n")
    inner = content[len(delimiter) + 2 : -(len(delimiter) + 6)]
    parts = []
    for chunk in inner.split(b"\r\n" + delimiter + b"\r\n"):
        head, _, body = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers, body))
    return parts


def xml(data: bytes) -> Any:
    return ElementTree.fromstring(data)


def registry_response(root: Any) -> Any:
    assert root.tag == q(SOAP, "Envelope")
    body = root.find(q(SOAP, "Body"))
    (container,) = list(body)
    assert container.tag == q(IHE, "RetrieveDocumentSetResponse")
    first = next(iter(container))
    assert first.tag == q(RS, "RegistryResponse")
    return container, first


def registry_errors(registry: Any) -> list[dict[str, str]]:
    return [dict(e.attrib) for e in registry.iter(q(RS, "RegistryError"))]


def fault_of(response: requests.Response) -> tuple[str, list[str], str]:
    """(code, subcodes, reason) of a SOAP 1.2 Fault answer."""
    assert response.headers["Content-Type"].startswith("application/soap+xml")
    root = xml(response.content)
    assert root.tag == q(SOAP, "Envelope")
    fault = root.find(f"{q(SOAP, 'Body')}/{q(SOAP, 'Fault')}")
    assert fault is not None, response.text
    code = fault.find(q(SOAP, "Code"))
    values = []
    element = code
    while element is not None:
        values.append(element.findtext(q(SOAP, "Value")).strip())
        element = element.find(q(SOAP, "Subcode"))
    reason = fault.find(f"{q(SOAP, 'Reason')}/{q(SOAP, 'Text')}")
    assert reason.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    return values[0], values[1:], reason.text or ""


def check_success_answer(
    response: requests.Response,
    demo: DemoData,
    docs: Sequence[Doc],
    status: str = SUCCESS,
) -> Any:
    """Check an MTOM answer delivering docs (in order); returns RegistryResponse."""
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Length"] == str(len(response.content))
    media_type, params = content_type_params(response.headers["Content-Type"])
    assert media_type == "multipart/related"
    assert params["type"] == "application/xop+xml"
    assert params["start-info"] == "application/soap+xml"
    parts = mime_parts(response)
    assert len(parts) == len(docs) + 1
    root_part = parts[0]
    assert root_part.headers["content-id"] == params["start"]
    root_type, root_params = content_type_params(root_part.headers["content-type"])
    assert root_type == "application/xop+xml"
    assert root_params["type"] == "application/soap+xml"
    assert root_params["charset"].lower() == "utf-8"
    root = xml(root_part.body)
    header = root.find(q(SOAP, "Header"))
    assert header.findtext(q(WSA, "Action")) == (
        "urn:ihe:rad:2009:RetrieveImagingDocumentSetResponse"
    )
    assert header.findtext(q(WSA, "RelatesTo")) == MESSAGE_ID
    container, registry = registry_response(root)
    assert registry.get("status") == status
    responses = container.findall(q(IHE, "DocumentResponse"))
    assert [r.findtext(q(IHE, "DocumentUniqueId")) for r in responses] == [
        d.sop for d in docs
    ]
    by_cid = {p.headers["content-id"]: p for p in parts[1:]}
    assert len(by_cid) == len(docs)
    for doc_response, doc in zip(responses, docs, strict=True):
        names = [child.tag for child in doc_response]
        assert names[-4:] == [
            q(IHE, "RepositoryUniqueId"),
            q(IHE, "DocumentUniqueId"),
            q(IHE, "mimeType"),
            q(IHE, "Document"),
        ]
        assert doc_response.findtext(q(IHE, "mimeType")) == "application/dicom"
        include = doc_response.find(f"{q(IHE, 'Document')}/{q(XOP, 'Include')}")
        href = include.get("href")
        assert href.startswith("cid:")
        assert "@" not in href  # URL-encoded (RFC 2392)
        part = by_cid[f"<{unquote(href[4:])}>"]
        assert part.headers["content-type"] == "application/dicom"
        assert part.headers["content-transfer-encoding"] == "binary"
        assert part.body == demo.by_uid[doc.sop].read_bytes(), doc.sop
    return registry


# -- success ------------------------------------------------------------------


def test_one_series(emulator: Emulator, demo: DemoData) -> None:
    study, series = series_with(demo, ExplicitVRLittleEndian)
    docs = docs_of(study, series, 5)
    response = post(emulator, envelope(request_element(docs)))
    registry = check_success_answer(response, demo, docs)
    assert registry.find(q(RS, "RegistryErrorList")) is None
    root = xml(mime_parts(response)[0].body)
    for doc_response in root.iter(q(IHE, "DocumentResponse")):
        assert doc_response.findtext(q(IHE, "RepositoryUniqueId")) == "1.3.6.1.4.1000"
        assert doc_response.find(q(IHE, "HomeCommunityId")) is None


def test_every_instance_in_one_request(emulator: Emulator, demo: DemoData) -> None:
    docs = [
        doc
        for study in demo.studies
        for series in study.series
        for doc in docs_of(study, series)
    ]
    assert len(docs) == len(demo.by_uid)
    response = post(emulator, envelope(request_element(docs)))
    check_success_answer(response, demo, docs)


def test_home_community_and_no_repository_id(
    emulator: Emulator, demo: DemoData
) -> None:
    study, series = series_with(demo, RLELossless)
    docs = docs_of(study, series, 2)
    body = request_element(docs, repository=None, home="urn:oid:1.2.3.99")
    response = post(emulator, envelope(body))
    check_success_answer(response, demo, docs)
    root = xml(mime_parts(response)[0].body)
    for doc_response in root.iter(q(IHE, "DocumentResponse")):
        assert doc_response.findtext(q(IHE, "HomeCommunityId")) == "urn:oid:1.2.3.99"
        assert doc_response.findtext(q(IHE, "RepositoryUniqueId"))


def test_a_document_asked_twice_comes_once(emulator: Emulator, demo: DemoData) -> None:
    study, series = series_with(demo, ImplicitVRLittleEndian)
    doc = docs_of(study, series, 1)[0]
    response = post(emulator, envelope(request_element([doc, doc])))
    check_success_answer(response, demo, [doc])


def test_several_request_elements_and_stray_text(
    emulator: Emulator, demo: DemoData
) -> None:
    explicit = docs_of(*series_with(demo, ExplicitVRLittleEndian), 2)
    rle = docs_of(*series_with(demo, RLELossless), 2)
    # each element's transfer syntax list applies to its own documents
    body = (
        "\n stray text \n"
        + request_element(explicit, [ExplicitVRLittleEndian])
        + " more text "
        + request_element(rle, [RLELossless])
        + "\n"
    )
    response = post(emulator, envelope(body))
    check_success_answer(response, demo, explicit + rle)


def test_whitespace_around_action(emulator: Emulator, demo: DemoData) -> None:
    docs = docs_of(*series_with(demo, ExplicitVRLittleEndian), 1)
    body = envelope(request_element(docs), action=f"\n    {ACTION}\t\n  ")
    check_success_answer(post(emulator, body), demo, docs)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/soap+xml",
        "application/soap+xml;charset=utf-8",
        f'Application/SOAP+XML; action="  {ACTION} "; charset="UTF-8"',
    ],
)
def test_content_type_variants(
    emulator: Emulator, demo: DemoData, content_type: str
) -> None:
    docs = docs_of(*series_with(demo, ExplicitVRLittleEndian), 1)
    response = post(emulator, envelope(request_element(docs)), content_type)
    check_success_answer(response, demo, docs)


def test_login_cookie_is_accepted(emulator: Emulator, demo: DemoData) -> None:
    docs = docs_of(*series_with(demo, ExplicitVRLittleEndian), 1)
    with login(emulator) as session:
        response = post(
            emulator, envelope(request_element(docs)), auth=None, session=session
        )
    check_success_answer(response, demo, docs)


def test_several_clients_at_once(emulator: Emulator, demo: DemoData) -> None:
    jobs = [docs_of(study, series) for study in demo.studies for series in study.series]
    failures: list[BaseException] = []

    def fetch(docs: list[Doc]) -> None:
        try:
            with requests.Session() as session:
                for _ in range(2):
                    response = post(
                        emulator,
                        envelope(request_element(docs)),
                        session=session,
                    )
                    check_success_answer(response, demo, docs)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=fetch, args=(docs,)) for docs in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[0]


# -- documents that cannot be sent ------------------------------------------


def check_failure_answer(response: requests.Response) -> list[dict[str, str]]:
    """Check a plain (non-multipart) Failure answer; returns its errors."""
    assert response.status_code == 200
    media_type, params = content_type_params(response.headers["Content-Type"])
    assert media_type == "application/soap+xml"
    assert params["charset"].lower() == "utf-8"
    root = xml(response.content)
    container, registry = registry_response(root)
    assert registry.get("status") == FAILURE
    assert container.find(q(IHE, "DocumentResponse")) is None
    error_list = registry.find(q(RS, "RegistryErrorList"))
    assert error_list is not None
    assert error_list.get("highestSeverity") == ERROR
    errors = registry_errors(registry)
    for error in errors:
        assert error["severity"] == ERROR
        assert error["codeContext"]
    return errors


def test_missing_documents_fail(emulator: Emulator, demo: DemoData) -> None:
    study, series = series_with(demo, ExplicitVRLittleEndian)
    docs = [Doc(study.study_uid, series.series_uid, UNKNOWN_SOP)]
    docs.append(Doc(study.study_uid, series.series_uid, UNKNOWN_SOP + ".1"))
    errors = check_failure_answer(post(emulator, envelope(request_element(docs))))
    assert [(e["errorCode"], e["location"]) for e in errors] == [
        ("XDSMissingDocument", UNKNOWN_SOP),
        ("XDSMissingDocument", UNKNOWN_SOP + ".1"),
    ]


def test_a_known_instance_under_the_wrong_study_or_series_is_missing(
    emulator: Emulator, demo: DemoData
) -> None:
    study, series = series_with(demo, ExplicitVRLittleEndian)
    sop = series.instance_uid(0)
    other_study, other_series = series_with(demo, RLELossless)
    docs = [
        Doc(other_study.study_uid, series.series_uid, sop),
        Doc(study.study_uid, other_series.series_uid, sop),
    ]
    for doc in docs:
        errors = check_failure_answer(post(emulator, envelope(request_element([doc]))))
        assert [(e["errorCode"], e["location"]) for e in errors] == [
            ("XDSMissingDocument", sop)
        ]


def test_partial_success(emulator: Emulator, demo: DemoData) -> None:
    study, series = series_with(demo, ExplicitVRLittleEndian)
    present = docs_of(study, series, 3)
    missing = Doc(study.study_uid, series.series_uid, UNKNOWN_SOP)
    body = request_element([present[0], missing, *present[1:]])
    response = post(emulator, envelope(body))
    registry = check_success_answer(response, demo, present, status=PARTIAL)
    errors = registry_errors(registry)
    assert [(e["errorCode"], e["location"], e["severity"]) for e in errors] == [
        ("XDSMissingDocument", UNKNOWN_SOP, ERROR)
    ]


def test_transfer_syntax_not_possible(emulator: Emulator, demo: DemoData) -> None:
    docs = docs_of(*series_with(demo, ExplicitVRLittleEndian), 2)
    response = post(emulator, envelope(request_element(docs, [JPEG2000])))
    errors = check_failure_answer(response)
    assert [(e["errorCode"], e["location"]) for e in errors] == [
        ("urn:dicom:wado:0007", d.sop) for d in docs
    ]
    assert ExplicitVRLittleEndian in errors[0]["codeContext"]


def test_transfer_syntax_not_possible_for_some(
    emulator: Emulator, demo: DemoData
) -> None:
    explicit = docs_of(*series_with(demo, ExplicitVRLittleEndian), 2)
    rle = docs_of(*series_with(demo, RLELossless), 1)
    body = request_element(explicit + rle, [ExplicitVRLittleEndian, JPEG2000])
    registry = check_success_answer(
        post(emulator, envelope(body)), demo, explicit, status=PARTIAL
    )
    assert [(e["errorCode"], e["location"]) for e in registry_errors(registry)] == [
        ("urn:dicom:wado:0007", rle[0].sop)
    ]


def test_a_configured_repository_id_is_checked(
    demo: DemoData, make_emulator: Callable[..., Emulator]
) -> None:
    emulator = make_emulator(demo.root, services=[Rad69Service("1.2.3.4")])
    study, series = series_with(demo, ExplicitVRLittleEndian)
    ours, theirs, anonymous = docs_of(study, series, 3)
    body = (
        request_element([ours], repository="1.2.3.4")
        + request_element([theirs], repository="9.8.7")
        + request_element([anonymous], repository=None)
    )
    response = post(emulator, envelope(body))
    registry = check_success_answer(response, demo, [ours, anonymous], status=PARTIAL)
    (error,) = registry_errors(registry)
    assert (error["errorCode"], error["location"]) == (
        "XDSUnknownRepositoryId",
        theirs.sop,
    )
    root = xml(mime_parts(response)[0].body)
    assert {
        r.findtext(q(IHE, "RepositoryUniqueId"))
        for r in root.iter(q(IHE, "DocumentResponse"))
    } == {"1.2.3.4"}


# -- requests that are not understood ---------------------------------------


def good_body(demo: DemoData) -> str:
    return request_element(docs_of(*series_with(demo, ExplicitVRLittleEndian), 1))


BAD_ENVELOPES: dict[str, tuple[Callable[[str], bytes], str]] = {
    "not xml": (lambda body: b"this is not XML <", "not well-formed"),
    "truncated": (lambda body: envelope(body)[:-40], "not well-formed"),
    "dtd": (
        lambda body: (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
            + envelope(body).split(b"?>", 1)[1]
        ),
        "DTDs and entities are not allowed",
    ),
    "not an envelope": (lambda body: body.encode(), "not a SOAP 1.2 Envelope"),
    "no body": (
        lambda body: (
            envelope(body)
            .replace(b"<s:Body>", b"<s:Bodi>")
            .replace(b"</s:Body>", b"</s:Bodi>")
        ),
        "Bodi",
    ),
    "no action": (lambda body: envelope(body, action=None), "wsa:Action"),
    "wrong action": (
        lambda body: envelope(body, action="urn:ihe:iti:2007:RetrieveDocumentSet"),
        "cannot be processed",
    ),
    "two actions": (
        lambda body: envelope(body, header=f"<wsa:Action>{ACTION}</wsa:Action>"),
        "exactly one",
    ),
    "empty body": (lambda body: envelope(" \n "), "Body is empty"),
    "other operation": (
        lambda body: envelope(f'<ihe:RetrieveDocumentSetRequest xmlns:ihe="{IHE}"/>'),
        "RetrieveDocumentSetRequest",
    ),
    "request in the ITI namespace": (
        lambda body: envelope(
            body.replace(f'xmlns:iherad="{IHERAD}"', f'xmlns:iherad="{IHE}"')
        ),
        "RetrieveImagingDocumentSetRequest",
    ),
    "StudyInstanceUID": (
        lambda body: envelope(body.replace("studyInstanceUID=", "StudyInstanceUID=")),
        "case-sensitive",
    ),
    "no seriesInstanceUID": (
        lambda body: envelope(body.replace("seriesInstanceUID=", "series=")),
        "seriesInstanceUID",
    ),
    "study UID not a UID": (
        lambda body: envelope(
            body.replace('studyInstanceUID="', 'studyInstanceUID="x')
        ),
        "not a valid UID",
    ),
    "DocumentRequest in the RAD namespace": (
        lambda body: envelope(
            body.replace("<ihe:DocumentRequest>", "<iherad:DocumentRequest>").replace(
                "</ihe:DocumentRequest>", "</iherad:DocumentRequest>"
            )
        ),
        "DocumentRequest",
    ),
    "no DocumentUniqueId": (
        lambda body: envelope(body.replace("DocumentUniqueId>", "DocumentUniqueID>")),
        "DocumentUniqueID",
    ),
    "DocumentUniqueId not a UID": (
        lambda body: envelope(
            body.replace("<ihe:DocumentUniqueId>", "<ihe:DocumentUniqueId>../")
        ),
        "not a valid UID",
    ),
    "no TransferSyntaxUIDList": (
        lambda body: envelope(
            body.split("<iherad:TransferSyntaxUIDList>")[0]
            + "</iherad:RetrieveImagingDocumentSetRequest>"
        ),
        "TransferSyntaxUIDList",
    ),
    "empty TransferSyntaxUIDList": (
        lambda body: envelope(
            body.split("<iherad:TransferSyntaxUIDList>")[0]
            + "<iherad:TransferSyntaxUIDList> </iherad:TransferSyntaxUIDList>"
            + "</iherad:RetrieveImagingDocumentSetRequest>"
        ),
        "no TransferSyntaxUID",
    ),
    "no StudyRequest": (
        lambda body: envelope(
            f'<iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{IHERAD}">'
            "<iherad:TransferSyntaxUIDList><iherad:TransferSyntaxUID>1.2.840.10008.1.2"
            "</iherad:TransferSyntaxUID></iherad:TransferSyntaxUIDList>"
            "</iherad:RetrieveImagingDocumentSetRequest>"
        ),
        "no StudyRequest",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ENVELOPES))
def test_malformed_requests_get_a_sender_fault(
    emulator: Emulator, demo: DemoData, case: str
) -> None:
    make, reason_part = BAD_ENVELOPES[case]
    response = post(emulator, make(good_body(demo)))
    assert response.status_code == 400
    code, _, reason = fault_of(response)
    assert code.endswith(":Sender")
    assert reason_part in reason


def test_addressing_faults_carry_subcodes(emulator: Emulator, demo: DemoData) -> None:
    response = post(emulator, envelope(good_body(demo), action=None))
    assert fault_of(response)[1] == ["wsa:MessageAddressingHeaderRequired"]
    response = post(emulator, envelope(good_body(demo), action="urn:other"))
    assert fault_of(response)[1] == ["wsa:ActionNotSupported"]
    root = xml(response.content)
    assert root.find(q(SOAP, "Header")).findtext(q(WSA, "RelatesTo")) == MESSAGE_ID
    mismatch = 'application/soap+xml; action="urn:ihe:iti:2007:RetrieveDocumentSet"'
    response = post(emulator, envelope(good_body(demo)), mismatch)
    assert response.status_code == 400
    assert fault_of(response)[1] == [
        "wsa:InvalidAddressingHeader",
        "wsa:ActionMismatch",
    ]


def test_soap_11_is_a_version_mismatch(emulator: Emulator, demo: DemoData) -> None:
    body = envelope(good_body(demo)).replace(
        SOAP.encode(), b"http://schemas.xmlsoap.org/soap/envelope/"
    )
    response = post(emulator, body)
    assert response.status_code == 500
    assert fault_of(response)[0].endswith(":VersionMismatch")
    upgrade = xml(response.content).find(f"{q(SOAP, 'Header')}/{q(SOAP, 'Upgrade')}")
    assert upgrade is not None


def test_unknown_must_understand_header(emulator: Emulator, demo: DemoData) -> None:
    header = '<sec:Security xmlns:sec="urn:example:security" s:mustUnderstand="true"/>'
    response = post(emulator, envelope(good_body(demo), header=header))
    assert response.status_code == 500
    assert fault_of(response)[0].endswith(":MustUnderstand")
    # the same block without mustUnderstand is ignored
    header = '<sec:Security xmlns:sec="urn:example:security"/>'
    assert post(emulator, envelope(good_body(demo), header=header)).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/xml; charset=utf-8",
        'multipart/related; type="application/xop+xml"; boundary=x; '
        'start-info="application/soap+xml"',
        "application/soap+xml; charset=ISO-8859-1",
    ],
)
def test_other_content_types_are_415(
    emulator: Emulator, demo: DemoData, content_type: str | None
) -> None:
    response = post(emulator, envelope(good_body(demo)), content_type)
    assert response.status_code == 415
    assert fault_of(response)[0].endswith(":Sender")


def test_sender_faults_as_metro_sends_them(
    demo: DemoData, make_emulator: Callable[..., Emulator]
) -> None:
    emulator = make_emulator(
        demo.root, services=[Rad69Service(sender_fault_status=500)]
    )
    response = post(emulator, envelope(good_body(demo), action="urn:other"))
    assert response.status_code == 500
    assert fault_of(response)[0].endswith(":Sender")


def test_request_size_limit(
    demo: DemoData, make_emulator: Callable[..., Emulator]
) -> None:
    emulator = make_emulator(demo.root, services=[Rad69Service(max_request_bytes=2000)])
    study, series = series_with(demo, ExplicitVRLittleEndian)
    small = envelope(request_element(docs_of(study, series, 1)))
    assert len(small) < 2000
    assert post(emulator, small).status_code == 200
    big = envelope(request_element(docs_of(study, series, 20)))
    response = post(emulator, big)
    assert response.status_code == 413
    assert "larger than 2000 bytes" in fault_of(response)[2]


def test_login_is_required(emulator: Emulator, demo: DemoData) -> None:
    response = post(emulator, envelope(good_body(demo)), auth=None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    response = post(emulator, envelope(good_body(demo)), auth=(USER, "wrong"))
    assert response.status_code == 401


def test_only_post(emulator: Emulator) -> None:
    response = requests.get(f"{emulator.base_url}/rad69", auth=(USER, PASSWORD))
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_parse_request_without_a_server(demo: DemoData) -> None:
    study, series = series_with(demo, RLELossless)
    docs = docs_of(study, series, 2)
    parsed = parse_request(envelope(request_element(docs, [RLELossless], home="h")))
    assert parsed.message_id == MESSAGE_ID
    assert [d.document_uid for d in parsed.documents] == [d.sop for d in docs]
    first = parsed.documents[0]
    assert (first.study_uid, first.series_uid) == (study.study_uid, series.series_uid)
    assert first.transfer_syntaxes == (RLELossless,)
    assert (first.repository_unique_id, first.home_community_id) == (
        "1.3.6.1.4.1000",
        "h",
    )


def test_parts_parse_as_mime(emulator: Emulator, demo: DemoData) -> None:
    """The whole answer is a valid MIME message for a generic MIME parser."""
    docs = docs_of(*series_with(demo, ImplicitVRLittleEndian), 2)
    response = post(emulator, envelope(request_element(docs)))
    raw = (
        f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
        + response.content
    )
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "application/xop+xml",
        "application/dicom",
        "application/dicom",
    ]
    assert parts[1].get_payload(decode=True) == demo.by_uid[docs[0].sop].read_bytes()
