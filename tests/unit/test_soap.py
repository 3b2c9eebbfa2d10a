"""SOAP/MTOM for RAD-69 on bytes: the request envelope, answers, and MTOM assembly."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

import pytest
from defusedxml.ElementTree import fromstring

from dicomtrolley.core import InstanceReference
from dicomtrolley.exceptions import InvalidUIDError, ResponseFormatError
from dicomtrolley.formats.multipart import MultipartParser, PartData, PartEnd
from dicomtrolley.formats.soap import (
    ACTION,
    DocumentResponse,
    RegistryError,
    XopReader,
    XopResult,
    build_request,
    content_id_from_header,
    content_id_from_href,
    parse_response,
)

S = "{http://www.w3.org/2003/05/soap-envelope}"
WSA = "{http://www.w3.org/2005/08/addressing}"
RAD = "{urn:ihe:rad:xdsi-b:2009}"
IHE = "{urn:ihe:iti:xds-b:2007}"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

STUDY = "1.2.826.0.1.3680043.8.498.1"


def ref(series: int, n: int, study: str = STUDY) -> InstanceReference:
    return InstanceReference(study, f"{study}.{series}", f"{study}.{series}.{n}")


# --------------------------------------------------------------------------- #
# Request
# --------------------------------------------------------------------------- #


def build(refs: list[InstanceReference], **kwargs: object) -> Element:
    options: dict[str, object] = {
        "to": "https://pacs.example/rids",
        "transfer_syntaxes": ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"],
        "repository_unique_id": "1.3.6.1.4.1000",
    }
    options.update(kwargs)
    body = build_request(refs, **options)  # type: ignore[arg-type]
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root: Element = fromstring(body, forbid_dtd=True)  # well-formed, no DTD
    return root


def test_envelope_headers_follow_soap12_and_ws_addressing() -> None:
    root = build([ref(1, 1)], message_id="urn:uuid:1234")
    assert root.tag == f"{S}Envelope"
    header = root.find(f"{S}Header")
    assert header is not None
    action = header.find(f"{WSA}Action")
    assert action is not None
    assert action.text == ACTION == "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
    assert action.get(f"{S}mustUnderstand") == "1"
    assert header.findtext(f"{WSA}MessageID") == "urn:uuid:1234"
    assert (
        header.findtext(f"{WSA}ReplyTo/{WSA}Address")
        == "http://www.w3.org/2005/08/addressing/anonymous"
    )
    assert header.findtext(f"{WSA}To") == "https://pacs.example/rids"


def test_message_id_is_a_fresh_uuid_urn_by_default() -> None:
    first = build([ref(1, 1)]).findtext(f"{S}Header/{WSA}MessageID") or ""
    second = build([ref(1, 1)]).findtext(f"{S}Header/{WSA}MessageID") or ""
    assert first.startswith("urn:uuid:")
    assert len(first) == len("urn:uuid:") + 36
    assert first != second


def test_body_groups_documents_by_study_then_series_in_order() -> None:
    other = "1.2.826.0.1.3680043.8.498.2"
    refs = [ref(1, 1), ref(2, 1), ref(1, 2), ref(1, 1, other), ref(2, 2)]
    root = build(refs, repository_unique_id="1.3.6.1.4.1.21367.13.80.110")
    request = root.find(f"{S}Body/{RAD}RetrieveImagingDocumentSetRequest")
    assert request is not None
    studies = request.findall(f"{RAD}StudyRequest")
    assert [s.get("studyInstanceUID") for s in studies] == [STUDY, other]
    first = studies[0].findall(f"{RAD}SeriesRequest")
    assert [s.get("seriesInstanceUID") for s in first] == [f"{STUDY}.1", f"{STUDY}.2"]
    documents = first[0].findall(f"{IHE}DocumentRequest")
    assert [d.findtext(f"{IHE}DocumentUniqueId") for d in documents] == [
        f"{STUDY}.1.1",
        f"{STUDY}.1.2",
    ]
    assert {d.findtext(f"{IHE}RepositoryUniqueId") for d in documents} == {
        "1.3.6.1.4.1.21367.13.80.110"
    }
    # RepositoryUniqueId comes before DocumentUniqueId (xs:sequence in ITI-43)
    assert [child.tag for child in documents[0]] == [
        f"{IHE}RepositoryUniqueId",
        f"{IHE}DocumentUniqueId",
    ]
    assert [
        d.findtext(f"{IHE}DocumentUniqueId")
        for d in studies[1].iter(f"{IHE}DocumentRequest")
    ] == [f"{other}.1.1"]


def test_transfer_syntax_list_comes_last_in_the_given_order() -> None:
    syntaxes = ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]
    root = build([ref(1, 1)], transfer_syntaxes=syntaxes)
    request = root.find(f"{S}Body/{RAD}RetrieveImagingDocumentSetRequest")
    assert request is not None
    assert request[-1].tag == f"{RAD}TransferSyntaxUIDList"
    assert [e.text for e in request[-1].findall(f"{RAD}TransferSyntaxUID")] == syntaxes


def test_duplicate_documents_are_asked_for_once() -> None:
    root = build([ref(1, 1), ref(1, 1)])
    assert len(list(root.iter(f"{IHE}DocumentRequest"))) == 1


def test_to_address_is_escaped() -> None:
    url = 'https://pacs/rids?a=1&b=<2>"'
    assert build([ref(1, 1)], to=url).findtext(f"{S}Header/{WSA}To") == url


@pytest.mark.parametrize(
    "bad",
    [
        InstanceReference(STUDY, f'{STUDY}.1"><x a="', f"{STUDY}.1.1"),
        InstanceReference(f"{STUDY}&amp;", f"{STUDY}.1", f"{STUDY}.1.1"),
        InstanceReference(STUDY, f"{STUDY}.1", "1.2.3</ihe:DocumentUniqueId>"),
        InstanceReference(STUDY, f"{STUDY}.1", ""),
    ],
)
def test_uids_that_are_not_digits_and_dots_are_refused(
    bad: InstanceReference,
) -> None:
    with pytest.raises(InvalidUIDError):
        build([bad])


def test_bad_transfer_syntax_and_repository_id_are_refused() -> None:
    with pytest.raises(InvalidUIDError):
        build([ref(1, 1)], transfer_syntaxes=["*"])
    with pytest.raises(InvalidUIDError):
        build([ref(1, 1)], repository_unique_id="urn:oid:1.2.3")


def test_empty_requests_are_refused() -> None:
    with pytest.raises(ValueError):
        build([])
    with pytest.raises(ValueError):
        build([ref(1, 1)], transfer_syntaxes=[])


# --------------------------------------------------------------------------- #
# Answers
# --------------------------------------------------------------------------- #


def envelope(body: str, soap: str = "env", header: bool = True) -> bytes:
    head = (
        f'<{soap}:Header><a:Action xmlns:a="http://www.w3.org/2005/08/addressing">'
        "urn:ihe:iti:2007:RetrieveDocumentSetResponse</a:Action></"
        f"{soap}:Header>"
        if header
        else ""
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<{soap}:Envelope xmlns:{soap}='
        f'"http://www.w3.org/2003/05/soap-envelope">{head}<{soap}:Body>{body}'
        f"</{soap}:Body></{soap}:Envelope>"
    ).encode()


def document_xml(uid: str, href: str, *, prefix: str = "") -> str:
    p = prefix
    return (
        f"<{p}DocumentResponse><{p}RepositoryUniqueId>1.3.6.1.4.1000</"
        f"{p}RepositoryUniqueId><{p}DocumentUniqueId>{uid}</{p}DocumentUniqueId>"
        f"<{p}HomeCommunityId/><{p}mimeType>application/dicom</{p}mimeType>"
        f'<{p}Document><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include"'
        f' href="{href}"/></{p}Document></{p}DocumentResponse>'
    )


def answer_xml(status: str, documents: str = "", errors: str = "") -> bytes:
    error_list = (
        f"<rs:RegistryErrorList>{errors}</rs:RegistryErrorList>" if errors else ""
    )
    return envelope(
        '<RetrieveDocumentSetResponse xmlns="urn:ihe:iti:xds-b:2007" '
        'xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0">'
        f'<rs:RegistryResponse status="{status}">{error_list}</rs:RegistryResponse>'
        f"{documents}</RetrieveDocumentSetResponse>"
    )


def registry_error(
    code: str, location: str, context: str = "", sev: str = ERROR
) -> str:
    return (
        f'<rs:RegistryError codeContext="{context}" errorCode="{code}" '
        f'location="{location}" severity="{sev}"/>'
    )


def test_success_lists_documents_and_their_content_ids() -> None:
    body = answer_xml(
        SUCCESS,
        document_xml("1.2.3.1", "cid:1.urn:uuid:abc%40apache.org")
        + document_xml("1.2.3.2", "cid:e6f6b279-b259-436e-8d9e-73df1d1157d1"),
    )
    response = parse_response(body)
    assert response.outcome == "Success"
    assert response.status == SUCCESS
    assert response.fault is None
    assert response.errors == ()
    assert response.documents == (
        DocumentResponse(
            document_unique_id="1.2.3.1",
            repository_unique_id="1.3.6.1.4.1000",
            mime_type="application/dicom",
            content_id="1.urn:uuid:abc@apache.org",
        ),
        DocumentResponse(
            document_unique_id="1.2.3.2",
            repository_unique_id="1.3.6.1.4.1000",
            mime_type="application/dicom",
            content_id="e6f6b279-b259-436e-8d9e-73df1d1157d1",
        ),
    )


def test_partial_success_with_documents_and_errors() -> None:
    body = answer_xml(
        PARTIAL,
        document_xml("1.2.3.1", "cid:one"),
        registry_error("XDSMissingDocument", "1.2.3.2", "Unable to locate SOP")
        + registry_error("XDSDocumentSourceError", "1.2.3.3", "cache", WARNING),
    )
    response = parse_response(body)
    assert response.outcome == "PartialSuccess"
    assert [d.document_unique_id for d in response.documents] == ["1.2.3.1"]
    assert response.errors == (
        RegistryError("XDSMissingDocument", "Unable to locate SOP", ERROR, "1.2.3.2"),
        RegistryError("XDSDocumentSourceError", "cache", WARNING, "1.2.3.3"),
    )
    assert [e.is_warning for e in response.errors] == [False, True]
    assert str(response.errors[0]) == (
        "XDSMissingDocument at 1.2.3.2 (Unable to locate SOP)"
    )


def test_failure_with_several_registry_errors() -> None:
    errors = "".join(
        registry_error(
            "XDSMissingDocument",
            f"1.2.40.0.13.1.{n}",
            "Unable to locate SOP from MINT.",
        )
        for n in range(3)
    ) + registry_error("urn:dicom:wado:0007", "1.2.40.0.13.1.9", "Transfer syntax")
    response = parse_response(answer_xml(FAILURE, errors=errors))
    assert response.outcome == "Failure"
    assert response.documents == ()
    assert [e.error_code for e in response.errors] == [
        "XDSMissingDocument",
        "XDSMissingDocument",
        "XDSMissingDocument",
        "urn:dicom:wado:0007",
    ]
    assert [e.location for e in response.errors] == [
        "1.2.40.0.13.1.0",
        "1.2.40.0.13.1.1",
        "1.2.40.0.13.1.2",
        "1.2.40.0.13.1.9",
    ]
    assert response.errors[0].code_context == "Unable to locate SOP from MINT."
    assert response.errors[0].severity == ERROR


def test_soap12_fault_with_subcodes_and_reason() -> None:
    body = envelope(
        "<env:Fault><env:Code><env:Value>env:Sender</env:Value>"
        "<env:Subcode><env:Value>wsa:ActionNotSupported</env:Value>"
        "<env:Subcode><env:Value>x:Deeper</env:Value></env:Subcode></env:Subcode>"
        "</env:Code><env:Reason>"
        '<env:Text xml:lang="de">Aktion nicht unterstützt</env:Text>'
        '<env:Text xml:lang="en-US">Action not supported</env:Text>'
        "</env:Reason><env:Detail><d>urn:bad</d></env:Detail></env:Fault>"
    )
    response = parse_response(body)
    assert response.fault is not None
    assert response.fault.code == "env:Sender"
    assert response.fault.subcodes == ("wsa:ActionNotSupported", "x:Deeper")
    assert response.fault.reason == "Action not supported"
    assert response.fault.detail == "urn:bad"
    assert str(response.fault) == (
        "env:Sender/wsa:ActionNotSupported/x:Deeper: Action not supported (urn:bad)"
    )
    assert response.documents == ()


def test_soap11_fault_is_read_too() -> None:
    body = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b"<s:Fault><faultcode>s:Server</faultcode><faultstring>Boom</faultstring>"
        b"</s:Fault></s:Body></s:Envelope>"
    )
    fault = parse_response(body).fault
    assert fault is not None
    assert (fault.code, fault.reason) == ("s:Server", "Boom")


def test_prefixes_whitespace_and_namespaces_may_vary() -> None:
    body = b"""<?xml version='1.0' encoding='UTF-8'?>
    <S:Envelope xmlns:S="http://www.w3.org/2003/05/soap-envelope"
                xmlns:x="urn:ihe:iti:xds-b:2007">
      <S:Body>
        <x:RetrieveDocumentSetResponse>
          <reg:RegistryResponse xmlns:reg="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
              status="  urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success
              "/>
          <x:DocumentResponse>
            <x:HomeCommunityId> urn:oid:1.2.3 </x:HomeCommunityId>
            <x:RepositoryUniqueId>
              1.3.6.1.4.1000
            </x:RepositoryUniqueId>
            <x:DocumentUniqueId>
              1.2.3.4
            </x:DocumentUniqueId>
            <x:mimeType>application/dicom</x:mimeType>
            <x:Document>
              <inc:Include xmlns:inc="http://www.w3.org/2004/08/xop/include"
                           href=" cid:%3Cpart-1%40host%3E "/>
            </x:Document>
          </x:DocumentResponse>
        </x:RetrieveDocumentSetResponse>
      </S:Body>
    </S:Envelope>"""
    response = parse_response(body)
    assert response.outcome == "Success"
    (doc,) = response.documents
    assert doc.document_unique_id == "1.2.3.4"
    assert doc.repository_unique_id == "1.3.6.1.4.1000"
    assert doc.home_community_id == "urn:oid:1.2.3"
    assert doc.content_id == "part-1@host"


def test_inline_base64_document_is_decoded() -> None:
    payload = b"DICM\x00\x01 binary \xff"
    encoded = base64.b64encode(payload).decode()
    documents = (
        "<DocumentResponse><DocumentUniqueId>1.2.3</DocumentUniqueId>"
        f"<mimeType>application/dicom</mimeType><Document>\n{encoded[:8]}\n"
        f"{encoded[8:]}</Document></DocumentResponse>"
    )
    (doc,) = parse_response(answer_xml(SUCCESS, documents)).documents
    assert doc.content_id is None
    assert doc.inline == payload


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("cid:abc", "abc"),
        ("CID:abc", "abc"),
        ("cid:1.urn%3Auuid%3Aabc%40apache.org", "1.urn:uuid:abc@apache.org"),
        ("cid:%3Cabc%40host%3E", "abc@host"),
        ("cid:<abc@host>", "abc@host"),
        ("  cid:a%20b  ", "a b"),
    ],
)
def test_href_to_content_id(href: str, expected: str) -> None:
    assert content_id_from_href(href) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [("<abc@host>", "abc@host"), ("abc@host", "abc@host"), (" < x > ", "x")],
)
def test_header_to_content_id(header: str, expected: str) -> None:
    assert content_id_from_header(header) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>Request failed</body></html>",
        b"not xml at all",
        b"<env:Envelope xmlns:env='http://www.w3.org/2003/05/soap-envelope'/>",
        envelope("<nothing/>"),
        answer_xml(""),
        envelope(
            '<RetrieveDocumentSetResponse xmlns="urn:ihe:iti:xds-b:2007">'
            '<RegistryResponse status="x:Success"/><DocumentResponse>'
            "<mimeType>application/dicom</mimeType></DocumentResponse>"
            "</RetrieveDocumentSetResponse>"
        ),
        envelope(
            '<RetrieveDocumentSetResponse xmlns="urn:ihe:iti:xds-b:2007">'
            '<RegistryResponse status="x:Success"/><DocumentResponse>'
            "<DocumentUniqueId>1.2</DocumentUniqueId><Document>@@not base64@@"
            "</Document></DocumentResponse></RetrieveDocumentSetResponse>"
        ),
    ],
)
def test_what_is_not_a_rad69_answer_is_a_format_error(body: bytes) -> None:
    with pytest.raises(ResponseFormatError):
        parse_response(body)


def test_dtds_and_entities_are_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope">'
        b"<e:Body>&b;</e:Body></e:Envelope>"
    )
    with pytest.raises(ResponseFormatError):
        parse_response(bomb)


# --------------------------------------------------------------------------- #
# MTOM assembly
# --------------------------------------------------------------------------- #


@dataclass
class RecordingSink:
    content_id: str
    data: bytearray = field(default_factory=bytearray)
    document: DocumentResponse | None = None
    discarded: bool = False

    def write(self, data: bytes | memoryview) -> None:
        assert self.document is None and not self.discarded
        self.data += data

    def complete(self, document: DocumentResponse) -> None:
        assert self.document is None and not self.discarded
        self.document = document

    def discard(self) -> None:
        assert self.document is None
        self.discarded = True


@dataclass
class Sinks:
    opened: list[RecordingSink] = field(default_factory=list)

    def open(self, content_id: str) -> RecordingSink:
        sink = RecordingSink(content_id)
        self.opened.append(sink)
        return sink

    def completed(self) -> dict[str, bytes]:
        """DocumentUniqueId -> bytes of every completed sink."""
        return {
            s.document.document_unique_id: bytes(s.data)
            for s in self.opened
            if s.document is not None
        }


BOUNDARY = "MIMEBoundary_4e2f"
ROOT_CID = "0.urn:uuid:root@apache.org"
# payloads that look like delimiters and header ends, to trip a careless parser
PAYLOADS = {
    "1.2.3.1": b"DICM\r\n--MIMEBoundary_4e\r\n\r\nfirst\x00\xff",
    # the delimiter is CRLF "--" boundary: without the CRLF it is only data
    "1.2.3.2": b"x--" + BOUNDARY.encode() + b"--\r\nsecond\r\n-",
    "1.2.3.3": b"",  # an empty part is still a part
}


def part(headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + body + b"\r\n"


def root_part(status: str = SUCCESS, uids: tuple[str, ...] = tuple(PAYLOADS)) -> bytes:
    documents = "".join(
        document_xml(uid, f"cid:{n}.urn%3Auuid%3Adoc%40apache.org")
        for n, uid in enumerate(uids, start=1)
    )
    return part(
        {
            "Content-Type": 'application/xop+xml; charset=UTF-8; type="application/soap+xml"',
            "Content-Transfer-Encoding": "binary",
            "Content-ID": f"<{ROOT_CID}>",
        },
        answer_xml(status, documents),
    )


def dicom_part(n: int, payload: bytes, brackets: bool = True) -> bytes:
    cid = f"{n}.urn:uuid:doc@apache.org"
    return part(
        {
            "Content-Type": "application/dicom",
            "Content-Transfer-Encoding": "binary",
            "Content-ID": f"<{cid}>" if brackets else cid,
        },
        payload,
    )


def mtom(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


CONTENT_TYPE = (
    f'multipart/related; type="application/xop+xml"; boundary="{BOUNDARY}"; '
    f'start="<{ROOT_CID}>"; start-info="application/soap+xml"'
)


def read(
    chunks: list[bytes], content_type: str = CONTENT_TYPE
) -> tuple[XopResult, Sinks]:
    sinks = Sinks()
    reader = XopReader.for_content_type(content_type, sinks.open)
    parser = MultipartParser(BOUNDARY)
    for chunk in chunks:
        for event in parser.feed(chunk):
            reader.feed(event)
    for event in parser.close():
        reader.feed(event)
    return reader.close(), sinks


def message_in_recorded_order() -> bytes:
    payloads = list(PAYLOADS.values())
    return mtom(
        root_part(),
        dicom_part(1, payloads[0]),
        dicom_part(2, payloads[1], brackets=False),
        dicom_part(3, payloads[2]),
    )


def test_mtom_answer_gives_every_document() -> None:
    result, sinks = read([message_in_recorded_order()])
    assert sinks.completed() == PAYLOADS
    assert [d.document_unique_id for d in result.delivered] == list(PAYLOADS)
    assert result.missing_parts == ()
    assert result.unreferenced == ()
    assert result.response.outcome == "Success"


def test_mtom_answer_split_at_every_offset_gives_the_same_documents() -> None:
    message = message_in_recorded_order()
    for offset in range(len(message) + 1):
        result, sinks = read([message[:offset], message[offset:]])
        assert sinks.completed() == PAYLOADS, offset
        assert len(result.delivered) == 3, offset
        assert not any(s.discarded for s in sinks.opened), offset


def test_mtom_answer_fed_one_byte_at_a_time() -> None:
    message = message_in_recorded_order()
    _, sinks = read([message[i : i + 1] for i in range(len(message))])
    assert sinks.completed() == PAYLOADS


def test_dicom_parts_before_the_root_wait_for_it() -> None:
    payloads = list(PAYLOADS.values())
    message = mtom(
        dicom_part(2, payloads[1]),
        dicom_part(1, payloads[0]),
        root_part(),
        dicom_part(3, payloads[2]),
    )
    for offset in range(0, len(message) + 1, 7):
        sinks = Sinks()
        reader = XopReader.for_content_type(CONTENT_TYPE, sinks.open)
        parser = MultipartParser(BOUNDARY)
        events = [*parser.feed(message[:offset]), *parser.feed(message[offset:])]
        events += parser.close()
        for n, event in enumerate(events):
            reader.feed(event)
            # nothing is completed before the root part has been read
            if reader.response is None:
                assert all(s.document is None for s in sinks.opened), (offset, n)
        reader.close()
        assert sinks.completed() == PAYLOADS
        assert [s.content_id for s in sinks.opened] == [
            "2.urn:uuid:doc@apache.org",
            "1.urn:uuid:doc@apache.org",
            "3.urn:uuid:doc@apache.org",
        ]


def test_root_is_the_first_part_when_start_is_absent() -> None:
    content_type = f'multipart/related; type="application/xop+xml"; boundary={BOUNDARY}'
    result, sinks = read([message_in_recorded_order()], content_type)
    assert sinks.completed() == PAYLOADS
    assert result.response.outcome == "Success"


def test_root_without_content_id_is_found_by_its_type() -> None:
    root = root_part().replace(f"Content-ID: <{ROOT_CID}>\r\n".encode(), b"")
    payloads = list(PAYLOADS.values())
    message = mtom(root, dicom_part(1, payloads[0]))
    _, sinks = read([message])
    assert sinks.completed() == {"1.2.3.1": payloads[0]}


def test_content_ids_are_compared_case_sensitively() -> None:
    payloads = list(PAYLOADS.values())
    upper = dicom_part(1, payloads[0]).replace(b"1.urn:uuid:doc@", b"1.URN:UUID:DOC@")
    result, sinks = read([mtom(root_part(uids=("1.2.3.1",)), upper)])
    assert sinks.completed() == {}
    assert result.unreferenced == ("1.URN:UUID:DOC@apache.org",)
    assert [d.document_unique_id for d in result.missing_parts] == ["1.2.3.1"]
    assert sinks.opened[0].discarded


def test_unreferenced_and_duplicate_parts_are_discarded() -> None:
    payloads = list(PAYLOADS.values())
    message = mtom(
        root_part(uids=("1.2.3.1",)),
        dicom_part(1, payloads[0]),
        dicom_part(1, b"again"),
        dicom_part(7, b"stray"),
    )
    result, sinks = read([message])
    assert sinks.completed() == {"1.2.3.1": payloads[0]}
    assert result.unreferenced == (
        "1.urn:uuid:doc@apache.org",
        "7.urn:uuid:doc@apache.org",
    )
    assert [s.discarded for s in sinks.opened] == [False, True, True]


def test_referenced_part_that_never_comes_is_reported() -> None:
    payloads = list(PAYLOADS.values())
    result, _ = read([mtom(root_part(), dicom_part(1, payloads[0]))])
    assert [d.document_unique_id for d in result.missing_parts] == [
        "1.2.3.2",
        "1.2.3.3",
    ]


def test_plain_soap_failure_goes_through_the_same_reader() -> None:
    sinks = Sinks()
    reader = XopReader(sinks.open)
    reader.feed_body(
        "application/soap+xml",
        answer_xml(FAILURE, errors=registry_error("XDSMissingDocument", "1.2.3.1")),
    )
    result = reader.close()
    assert result.response.outcome == "Failure"
    assert result.response.errors[0].location == "1.2.3.1"
    assert sinks.opened == []


def test_inline_documents_go_to_a_sink_when_the_root_is_read() -> None:
    documents = (
        "<DocumentResponse><DocumentUniqueId>1.2.3</DocumentUniqueId><Document>"
        f"{base64.b64encode(b'inline bytes').decode()}</Document></DocumentResponse>"
    )
    sinks = Sinks()
    reader = XopReader(sinks.open)
    reader.feed_body("application/soap+xml", answer_xml(SUCCESS, documents))
    result = reader.close()
    assert sinks.completed() == {"1.2.3": b"inline bytes"}
    assert [d.document_unique_id for d in result.delivered] == ["1.2.3"]


def test_attachment_without_content_id_is_a_format_error() -> None:
    no_cid = part({"Content-Type": "application/dicom"}, b"DICM")
    with pytest.raises(ResponseFormatError, match="no Content-ID"):
        read([mtom(root_part(), no_cid)])


def test_missing_root_part_is_a_format_error_and_discards_waiting_parts() -> None:
    sinks = Sinks()
    reader = XopReader(sinks.open, start="<nowhere@example>")
    parser = MultipartParser(BOUNDARY)
    for event in parser.feed(mtom(dicom_part(1, b"one"), root_part())):
        reader.feed(event)
    with pytest.raises(ResponseFormatError, match="no SOAP root part"):
        reader.close()
    assert all(s.discarded for s in sinks.opened)
    assert len(sinks.opened) == 2  # the real root was taken for an attachment


def test_abort_discards_open_and_waiting_parts() -> None:
    sinks = Sinks()
    reader = XopReader.for_content_type(CONTENT_TYPE, sinks.open)
    parser = MultipartParser(BOUNDARY)
    message = mtom(dicom_part(1, b"waiting"), dicom_part(2, b"open part"))
    for event in parser.feed(message[: len(message) - 20]):
        reader.feed(event)
    reader.abort()
    assert [s.discarded for s in sinks.opened] == [True, True]


def test_root_part_larger_than_the_limit_is_refused() -> None:
    reader = XopReader(Sinks().open, max_root_bytes=100)
    reader.feed(PartData(b"x"))  # data outside a part is ignored
    with pytest.raises(ResponseFormatError, match="larger than 100 bytes"):
        reader.feed_body("application/soap+xml", answer_xml(SUCCESS))


def test_garbage_root_part_is_a_format_error() -> None:
    bad_root = part(
        {"Content-Type": "application/xop+xml", "Content-ID": f"<{ROOT_CID}>"},
        b"<html>oops</html>",
    )
    with pytest.raises(ResponseFormatError):
        read([mtom(bad_root)])
    reader = XopReader(Sinks().open)
    reader.feed(PartEnd())  # an end without a start changes nothing
    with pytest.raises(ResponseFormatError):
        reader.close()
