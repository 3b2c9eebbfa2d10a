"""IHE RAD-69 Retrieve Imaging Document Set: ``POST /rad69`` (an Imaging Document Source).

The request (IHE RAD TF, RAD-69 4.69.4.1) is a SOAP 1.2 envelope sent as
``application/soap+xml``, with the WS-Addressing ``Action``
``urn:ihe:rad:2009:RetrieveImagingDocumentSet`` and a body of
``iherad:RetrieveImagingDocumentSetRequest`` → ``StudyRequest @studyInstanceUID``
→ ``SeriesRequest @seriesInstanceUID`` → ``ihe:DocumentRequest``
(``DocumentUniqueId`` required, ``RepositoryUniqueId`` and ``HomeCommunityId``
optional), then ``TransferSyntaxUIDList`` with at least one ``TransferSyntaxUID``.
It is checked like a strict server checks it: namespaces, element names, the
case of attribute names (``StudyInstanceUID`` is not ``studyInstanceUID``),
UIDs, the WS-Addressing headers and ``mustUnderstand`` header blocks. What
Vitrea Connection tolerates is tolerated here too: several
``RetrieveImagingDocumentSetRequest`` elements in one body (each with its own
transfer syntax list), stray text between elements and whitespace around the
``Action``. XML goes through ``defusedxml`` (no DTDs, no entities) and the body
may be at most ``max_request_bytes`` long.

The answer (ITI-43 3.43.4.2, with the DICOM parts of RAD-69 4.69.4.2):

- Every document can be sent: HTTP 200, an MTOM/XOP message,
  ``multipart/related; type="application/xop+xml"; start="<...>";
  start-info="application/soap+xml"``. The root part holds the envelope with
  ``RetrieveDocumentSetResponse`` → ``rs:RegistryResponse`` status
  ``urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success`` and one
  ``DocumentResponse`` per document, whose ``Document`` is an ``xop:Include``
  pointing at the part that follows (``href="cid:..."``, URL-encoded as RFC 2392
  asks). Each such part is ``application/dicom``, the stored file unchanged,
  sent from disk without being read into memory.
- Some can: the same, with an ``rs:RegistryErrorList`` naming those that
  cannot and status ``urn:ihe:iti:2007:ResponseStatusType:PartialSuccess``
  (ITI TF-3 4.2.4: IHE's namespace; Success and Failure are ebRS's).
- None can: HTTP 200 with a plain ``application/soap+xml`` envelope, status
  ``urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure`` and the
  errors, as Vitrea Connection answers.

Errors (``rs:RegistryError``, severity Error, ``location`` = the SOP Instance
UID): ``XDSMissingDocument`` when the instance is not indexed, or is indexed
under another study or series than the request says; ``urn:dicom:wado:0007``
(transfer syntax not possible) when its stored transfer syntax is not in the
request's list: the emulator converts nothing; ``XDSUnknownRepositoryId`` when
the service was given a ``repository_unique_id`` and a request names another
one (without one, any repository id is accepted and echoed).

A request that cannot be understood gets a SOAP 1.2 Fault in
``application/soap+xml``: ``env:Sender`` with HTTP 400, as SOAP 1.2 Part 2
table 20 prescribes (Spring-WS and WebSphere do so; Metro-based servers send
500 for every fault: ``sender_fault_status=500`` imitates them; dicomtrolley's
client accepts both). WS-Addressing problems carry its subcodes
(``wsa:MessageAddressingHeaderRequired``, ``wsa:ActionNotSupported``,
``wsa:InvalidAddressingHeader``). A SOAP 1.1 envelope gets
``env:VersionMismatch`` and a header block the emulator does not understand
but must, ``env:MustUnderstand`` (both HTTP 500). A Content-Type other than
``application/soap+xml`` (``text/xml``, an MTOM-wrapped request) or a charset
other than UTF-8 gets 415, a body over ``max_request_bytes`` 413, both with a
Sender fault. Requests need a login like every emulator endpoint (session
cookie, bearer token or basic auth; 401 otherwise).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from dicomtrolley.emulator.attributes import is_uid
from dicomtrolley.emulator.index import InstanceRecord
from dicomtrolley.emulator.media import parse_media_type
from dicomtrolley.emulator.server import FilePart, Request, Response, Route
from dicomtrolley.emulator.service import Service

logger = logging.getLogger("trolley.emulator.rad69")

RAD69_PATH = "/rad69"

SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSA_NS = "http://www.w3.org/2005/08/addressing"
IHERAD_NS = "urn:ihe:rad:xdsi-b:2009"
IHE_NS = "urn:ihe:iti:xds-b:2007"
RS_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XOP_NS = "http://www.w3.org/2004/08/xop/include"

#: WS-Addressing actions of the request, the response and of faults.
ACTION = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
RESPONSE_ACTION = "urn:ihe:rad:2009:RetrieveImagingDocumentSetResponse"
FAULT_ACTION = "http://www.w3.org/2005/08/addressing/fault"

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
PARTIAL_SUCCESS = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"

MISSING_DOCUMENT = "XDSMissingDocument"
UNKNOWN_REPOSITORY = "XDSUnknownRepositoryId"
TRANSFER_SYNTAX_NOT_POSSIBLE = "urn:dicom:wado:0007"

#: The RepositoryUniqueId answered when neither the service nor the request names one.
DEFAULT_REPOSITORY_UNIQUE_ID = (
    f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'dicomtrolley:emulator:rad69').int}"
)
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024

_SOAP_MEDIA_TYPE = "application/soap+xml"
_UTF8 = ("utf-8", "utf8", "us-ascii")
_ROLES = (
    "",
    f"{SOAP12_NS}/role/next",
    f"{SOAP12_NS}/role/ultimateReceiver",
)
_CID_DOMAIN = "dicomtrolley.emulator"


# --------------------------------------------------------------------------- #
# The request
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class DocumentRequest:
    """One ``DocumentRequest``, with the UIDs of the study and series around it
    and the transfer syntaxes of the request element it came in."""

    study_uid: str
    series_uid: str
    document_uid: str
    transfer_syntaxes: tuple[str, ...]
    repository_unique_id: str = ""
    home_community_id: str = ""


@dataclass(frozen=True)
class RetrieveRequest:
    """A parsed request: its documents (each SOP instance once) and MessageID."""

    documents: tuple[DocumentRequest, ...]
    message_id: str = ""


class Fault(Exception):
    """A SOAP 1.2 Fault to answer with (SOAP 1.2 Part 1, 5.4).

    ``subcodes``: qualified names using the prefixes of the fault envelope
    (``env``, ``wsa``). ``detail`` and ``header`` are XML fragments.
    ``http_status`` None: the service's status for Sender faults, else 500.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: str = "Sender",
        subcodes: Sequence[str] = (),
        detail: str = "",
        header: str = "",
        http_status: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.subcodes = tuple(subcodes)
        self.detail = detail
        self.header = header
        self.http_status = http_status
        self.relates_to = ""


def _qname(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


def _split(tag: object) -> tuple[str, str]:
    """(namespace, local name) of an element tag."""
    if not isinstance(tag, str):
        return "", ""
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def _describe(element: Element) -> str:
    namespace, local = _split(element.tag)
    return (
        f"{local} (namespace {namespace!r})" if namespace else f"{local} (no namespace)"
    )


def _children(element: Element) -> list[Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _text(element: Element) -> str:
    return "".join(element.itertext()).strip()


def parse_request(body: bytes, content_action: str = "") -> RetrieveRequest:
    """The documents a RAD-69 request asks for; raises :class:`Fault`.

    ``content_action``: the ``action`` parameter of the Content-Type, if any
    (SOAP 1.2 Part 2, 7.1.4); when given it must agree with ``wsa:Action``.
    """
    try:
        root = fromstring(body, forbid_dtd=True)
    except DefusedXmlException as error:
        raise Fault(f"DTDs and entities are not allowed: {error}") from None
    except (ParseError, ValueError) as error:
        raise Fault(f"The request is not well-formed XML: {error}") from None
    namespace, local = _split(root.tag)
    if local == "Envelope" and namespace != SOAP12_NS:
        raise Fault(
            f"Envelope namespace {namespace!r} is not SOAP 1.2 ({SOAP12_NS})",
            code="VersionMismatch",
            header=(
                f'<env:Upgrade><env:SupportedEnvelope qname="s12:Envelope" '
                f'xmlns:s12="{SOAP12_NS}"/></env:Upgrade>'
            ),
        )
    if root.tag != _qname(SOAP12_NS, "Envelope"):
        raise Fault(f"The root element is {_describe(root)}, not a SOAP 1.2 Envelope")
    header: Element | None = None
    soap_body: Element | None = None
    for child in _children(root):
        if child.tag == _qname(SOAP12_NS, "Header") and header is soap_body is None:
            header = child
        elif child.tag == _qname(SOAP12_NS, "Body") and soap_body is None:
            soap_body = child
        else:
            raise Fault(f"Unexpected {_describe(child)} in the SOAP Envelope")
    if soap_body is None:
        raise Fault("The SOAP Envelope has no Body")
    actions, message_id = _read_header(header)
    try:
        _check_action(actions, content_action)
        documents: dict[str, DocumentRequest] = {}
        requests = _children(soap_body)
        if not requests:
            raise Fault("The SOAP Body is empty")
        for element in requests:
            if element.tag != _qname(IHERAD_NS, "RetrieveImagingDocumentSetRequest"):
                raise Fault(
                    f"The SOAP Body holds {_describe(element)}, not "
                    f"RetrieveImagingDocumentSetRequest ({IHERAD_NS})"
                )
            for document in _read_request(element):
                documents.setdefault(document.document_uid, document)
    except Fault as fault:
        fault.relates_to = message_id
        raise
    return RetrieveRequest(tuple(documents.values()), message_id)


def _read_header(header: Element | None) -> tuple[list[str], str]:
    """The wsa:Action values and the wsa:MessageID of the header.

    Fault ``env:MustUnderstand`` for blocks addressed to this node with
    ``mustUnderstand`` that it does not understand (all but WS-Addressing).
    """
    actions: list[str] = []
    message_id = ""
    not_understood: list[str] = []
    for block in _children(header) if header is not None else []:
        namespace, local = _split(block.tag)
        if namespace == WSA_NS:
            if local == "Action":
                actions.append(_text(block))
            elif local == "MessageID":
                message_id = _text(block)
            continue
        role = block.get(_qname(SOAP12_NS, "role"), "").strip()
        must = block.get(_qname(SOAP12_NS, "mustUnderstand"), "").strip()
        if must in ("1", "true") and role in _ROLES:
            not_understood.append(
                f'<env:NotUnderstood qname="h:{local}" xmlns:h={quoteattr(namespace)}/>'
            )
    if not_understood:
        raise Fault(
            "Header blocks that must be understood were not understood",
            code="MustUnderstand",
            header="".join(not_understood),
        )
    return actions, message_id


def _check_action(actions: list[str], content_action: str) -> None:
    """Fault unless there is one wsa:Action and it is RAD-69's (WS-Addressing
    1.0 SOAP Binding, 6.4)."""
    if not actions:
        raise Fault(
            "A required header representing a Message Addressing Property is "
            "not present: wsa:Action",
            subcodes=["wsa:MessageAddressingHeaderRequired"],
            detail="<wsa:ProblemHeaderQName>wsa:Action</wsa:ProblemHeaderQName>",
        )
    if len(actions) > 1:
        raise Fault(
            f"{len(actions)} wsa:Action headers; exactly one is allowed",
            subcodes=["wsa:InvalidAddressingHeader", "wsa:InvalidCardinality"],
            detail="<wsa:ProblemHeaderQName>wsa:Action</wsa:ProblemHeaderQName>",
        )
    action = actions[0]
    if action != ACTION:
        raise Fault(
            f"The action {action[:200]!r} cannot be processed at the receiver; "
            f"this endpoint serves {ACTION}",
            subcodes=["wsa:ActionNotSupported"],
            detail=(
                f"<wsa:ProblemAction><wsa:Action>{escape(action[:200])}</wsa:Action>"
                "</wsa:ProblemAction>"
            ),
        )
    content_action = content_action.strip()
    if content_action and content_action != action:
        raise Fault(
            f"The action parameter of the Content-Type ({content_action[:200]!r}) "
            f"does not match wsa:Action ({action!r})",
            subcodes=["wsa:InvalidAddressingHeader", "wsa:ActionMismatch"],
        )


def _only(parent: Element, allowed: dict[str, str]) -> dict[str, list[Element]]:
    """parent's child elements by local name; Fault for any not in allowed
    (local name -> namespace)."""
    found: dict[str, list[Element]] = {name: [] for name in allowed}
    for child in _children(parent):
        namespace, local = _split(child.tag)
        if allowed.get(local) != namespace:
            raise Fault(f"Unexpected {_describe(child)} in {_split(parent.tag)[1]}")
        found[local].append(child)
    return found


def _uid_attribute(element: Element, name: str) -> str:
    where = _split(element.tag)[1]
    value = element.get(name)
    if value is None:
        near = [key for key in element.attrib if key.lower() == name.lower()]
        hint = (
            f" (found {near[0]!r}: attribute names are case-sensitive)" if near else ""
        )
        raise Fault(f"{where} has no {name} attribute{hint}")
    value = value.strip()
    if not is_uid(value):
        raise Fault(f"{where} @{name} {value[:80]!r} is not a valid UID")
    return value


def _uid_text(element: Element) -> str:
    value = _text(element)
    if not is_uid(value):
        raise Fault(f"{_split(element.tag)[1]} {value[:80]!r} is not a valid UID")
    return value


def _read_request(element: Element) -> list[DocumentRequest]:
    parts = _only(
        element, {"StudyRequest": IHERAD_NS, "TransferSyntaxUIDList": IHERAD_NS}
    )
    if not parts["StudyRequest"]:
        raise Fault("RetrieveImagingDocumentSetRequest has no StudyRequest")
    if len(parts["TransferSyntaxUIDList"]) != 1:
        raise Fault(
            "RetrieveImagingDocumentSetRequest needs exactly one "
            f"TransferSyntaxUIDList, not {len(parts['TransferSyntaxUIDList'])}"
        )
    listed = _only(parts["TransferSyntaxUIDList"][0], {"TransferSyntaxUID": IHERAD_NS})
    syntaxes = tuple(_uid_text(item) for item in listed["TransferSyntaxUID"])
    if not syntaxes:
        raise Fault("TransferSyntaxUIDList holds no TransferSyntaxUID")
    documents: list[DocumentRequest] = []
    for study in parts["StudyRequest"]:
        study_uid = _uid_attribute(study, "studyInstanceUID")
        series_list = _only(study, {"SeriesRequest": IHERAD_NS})["SeriesRequest"]
        if not series_list:
            raise Fault(f"StudyRequest {study_uid} has no SeriesRequest")
        for series in series_list:
            series_uid = _uid_attribute(series, "seriesInstanceUID")
            requested = _only(series, {"DocumentRequest": IHE_NS})["DocumentRequest"]
            if not requested:
                raise Fault(f"SeriesRequest {series_uid} has no DocumentRequest")
            for item in requested:
                documents.append(_read_document(item, study_uid, series_uid, syntaxes))
    return documents


def _read_document(
    element: Element, study_uid: str, series_uid: str, syntaxes: tuple[str, ...]
) -> DocumentRequest:
    fields = _only(
        element,
        {
            "HomeCommunityId": IHE_NS,
            "RepositoryUniqueId": IHE_NS,
            "DocumentUniqueId": IHE_NS,
        },
    )
    for name, found in fields.items():
        if len(found) > 1:
            raise Fault(f"DocumentRequest has {len(found)} {name} elements")
    if not fields["DocumentUniqueId"]:
        raise Fault(f"A DocumentRequest in series {series_uid} has no DocumentUniqueId")
    repository = ""
    if fields["RepositoryUniqueId"]:
        repository = _uid_text(fields["RepositoryUniqueId"][0])
    home = _text(fields["HomeCommunityId"][0]) if fields["HomeCommunityId"] else ""
    return DocumentRequest(
        study_uid=study_uid,
        series_uid=series_uid,
        document_uid=_uid_text(fields["DocumentUniqueId"][0]),
        transfer_syntaxes=syntaxes,
        repository_unique_id=repository,
        home_community_id=home,
    )


# --------------------------------------------------------------------------- #
# The answer
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class RegistryError:
    """One ``rs:RegistryError`` to report."""

    error_code: str
    code_context: str
    location: str


@dataclass(frozen=True)
class Delivery:
    """A document that is sent: what was asked, the file, its Content-ID."""

    request: DocumentRequest
    record: InstanceRecord
    content_id: str
    repository_unique_id: str


def _envelope(action: str, relates_to: str, body: str, extra_header: str = "") -> bytes:
    relates = (
        f"<wsa:RelatesTo>{escape(relates_to)}</wsa:RelatesTo>" if relates_to else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<env:Envelope xmlns:env="{SOAP12_NS}" xmlns:wsa="{WSA_NS}">'
        "<env:Header>"
        f'<wsa:Action env:mustUnderstand="true">{escape(action)}</wsa:Action>'
        f"{relates}{extra_header}</env:Header>"
        f"<env:Body>{body}</env:Body></env:Envelope>\n"
    ).encode()


def response_envelope(
    status: str,
    deliveries: Iterable[Delivery],
    errors: Sequence[RegistryError],
    relates_to: str = "",
) -> bytes:
    """The SOAP envelope of an answer (ITI-43 3.43.4.2)."""
    lines = [f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{IHE_NS}">']
    lines.append(f'<rs:RegistryResponse xmlns:rs="{RS_NS}" status="{status}"')
    if errors:
        lines.append(f'><rs:RegistryErrorList highestSeverity="{SEVERITY_ERROR}">')
        lines += [
            f"<rs:RegistryError errorCode={quoteattr(e.error_code)} "
            f"codeContext={quoteattr(e.code_context)} "
            f'severity="{SEVERITY_ERROR}" location={quoteattr(e.location)}/>'
            for e in errors
        ]
        lines.append("</rs:RegistryErrorList></rs:RegistryResponse>")
    else:
        lines.append("/>")
    for delivery in deliveries:
        home = delivery.request.home_community_id
        lines += [
            "<xdsb:DocumentResponse>",
            f"<xdsb:HomeCommunityId>{escape(home)}</xdsb:HomeCommunityId>"
            if home
            else "",
            f"<xdsb:RepositoryUniqueId>{escape(delivery.repository_unique_id)}"
            "</xdsb:RepositoryUniqueId>",
            f"<xdsb:DocumentUniqueId>{delivery.record.uid}</xdsb:DocumentUniqueId>",
            "<xdsb:mimeType>application/dicom</xdsb:mimeType>",
            f'<xdsb:Document><xop:Include xmlns:xop="{XOP_NS}" '
            f'href="cid:{quote(delivery.content_id, safe="")}"/></xdsb:Document>',
            "</xdsb:DocumentResponse>",
        ]
    lines.append("</xdsb:RetrieveDocumentSetResponse>")
    return _envelope(RESPONSE_ACTION, relates_to, "".join(lines))


def fault_envelope(fault: Fault) -> bytes:
    """The SOAP envelope of a Fault (SOAP 1.2 Part 1, 5.4)."""
    code = f"<env:Value>env:{fault.code}</env:Value>"
    subcodes = ""
    for subcode in reversed(fault.subcodes):
        subcodes = (
            f"<env:Subcode><env:Value>{subcode}</env:Value>{subcodes}</env:Subcode>"
        )
    detail = f"<env:Detail>{fault.detail}</env:Detail>" if fault.detail else ""
    body = (
        f"<env:Fault><env:Code>{code}{subcodes}</env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{escape(fault.reason)}</env:Text>'
        f"</env:Reason>{detail}</env:Fault>"
    )
    return _envelope(FAULT_ACTION, fault.relates_to, body, fault.header)


def _soap_content_type(action: str) -> str:
    return f'{_SOAP_MEDIA_TYPE}; charset=UTF-8; action="{action}"'


def mtom_body(
    envelope: bytes, deliveries: Sequence[Delivery], boundary: str, root_id: str
) -> list[bytes | FilePart]:
    """The pieces of an MTOM message: the root part, then one part per file."""
    pieces: list[bytes | FilePart] = [
        (
            f"--{boundary}\r\n"
            'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
            "Content-Transfer-Encoding: binary\r\n"
            f"Content-ID: <{root_id}>\r\n\r\n"
        ).encode("ascii")
        + envelope
    ]
    for delivery in deliveries:
        pieces.append(
            (
                f"\r\n--{boundary}\r\n"
                "Content-Type: application/dicom\r\n"
                "Content-Transfer-Encoding: binary\r\n"
                f"Content-ID: <{delivery.content_id}>\r\n\r\n"
            ).encode("ascii")
        )
        pieces.append(FilePart(delivery.record.path, delivery.record.size))
    pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return pieces


# --------------------------------------------------------------------------- #
# The service
# --------------------------------------------------------------------------- #


class Rad69Service(Service):
    """``POST /rad69``: IHE RAD-69 Retrieve Imaging Document Set.

    Parameters
    ----------
    repository_unique_id:
        The RepositoryUniqueId of this Imaging Document Source. When given,
        documents asked for under another one fail with XDSUnknownRepositoryId;
        when None, any is accepted (as Vitrea does) and echoed.
    max_request_bytes:
        Largest request body read (413 beyond).
    sender_fault_status:
        The HTTP status of ``env:Sender`` faults: 400 (SOAP 1.2) or 500 (Metro).
    """

    name = "rad69"

    def __init__(
        self,
        repository_unique_id: str | None = None,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        sender_fault_status: int = 400,
    ) -> None:
        if repository_unique_id is not None and not is_uid(repository_unique_id):
            raise ValueError(f"{repository_unique_id!r} is not a UID")
        self.repository_unique_id = repository_unique_id
        self.max_request_bytes = max_request_bytes
        self.sender_fault_status = sender_fault_status

    def routes(self) -> Sequence[Route]:
        return [Route("POST", RAD69_PATH, self.retrieve, basic_challenge=True)]

    def retrieve(self, request: Request) -> Response:
        try:
            return self._retrieve(request)
        except Fault as fault:
            status = fault.http_status or (
                self.sender_fault_status if fault.code == "Sender" else 500
            )
            logger.info("RAD-69 fault (%d) to %s: %s", status, request.client, fault)
            return Response(
                status, fault_envelope(fault), _soap_content_type(FAULT_ACTION)
            )

    def _retrieve(self, request: Request) -> Response:
        content_type = request.header("Content-Type")
        media_type, params = parse_media_type(content_type)
        if media_type != _SOAP_MEDIA_TYPE:
            raise Fault(
                f"Content-Type {content_type or '(none)'!r} is not supported: "
                f"send the SOAP 1.2 envelope as {_SOAP_MEDIA_TYPE}",
                http_status=415,
            )
        charset = params.get("charset", "utf-8").strip().lower()
        if charset not in _UTF8:
            raise Fault(
                f"charset {charset!r} is not supported: use UTF-8", http_status=415
            )
        if len(request.body) > self.max_request_bytes:
            raise Fault(
                f"The request is larger than {self.max_request_bytes} bytes",
                http_status=413,
            )
        parsed = parse_request(request.body, params.get("action", ""))
        return self.answer(parsed)

    def answer(self, parsed: RetrieveRequest) -> Response:
        """The Response to a parsed request (see the module docstring)."""
        documents = parsed.documents
        found = {
            record.uid: record
            for record in self.emulator.index.instances(
                sop_uids=[d.document_uid for d in documents]
            )
        }
        token = secrets.token_hex(8)
        deliveries: list[Delivery] = []
        errors: list[RegistryError] = []
        for document in documents:
            error = self._check(document, found.get(document.document_uid))
            if error is not None:
                errors.append(error)
                continue
            deliveries.append(
                Delivery(
                    request=document,
                    record=found[document.document_uid],
                    content_id=f"{len(deliveries) + 1}.{token}@{_CID_DOMAIN}",
                    repository_unique_id=self.repository_unique_id
                    or document.repository_unique_id
                    or DEFAULT_REPOSITORY_UNIQUE_ID,
                )
            )
        if not deliveries:
            logger.info("RAD-69: none of %d document(s) can be sent", len(documents))
            envelope = response_envelope(FAILURE, [], errors, parsed.message_id)
            return Response(200, envelope, _soap_content_type(RESPONSE_ACTION))
        status = PARTIAL_SUCCESS if errors else SUCCESS
        envelope = response_envelope(status, deliveries, errors, parsed.message_id)
        boundary = f"MIMEBoundary_{token}{secrets.token_hex(8)}"
        root_id = f"root.{token}@{_CID_DOMAIN}"
        logger.info(
            "RAD-69: sending %d document(s), %d error(s)", len(deliveries), len(errors)
        )
        return Response(
            200,
            mtom_body(envelope, deliveries, boundary, root_id),
            f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
            f'start="<{root_id}>"; start-info="{_SOAP_MEDIA_TYPE}"',
        )

    def _check(
        self, document: DocumentRequest, record: InstanceRecord | None
    ) -> RegistryError | None:
        """Why document cannot be sent, or None when it can."""
        uid = document.document_uid
        asked = document.repository_unique_id
        if self.repository_unique_id and asked and asked != self.repository_unique_id:
            return RegistryError(
                UNKNOWN_REPOSITORY,
                f"Unknown repository {asked}: this Imaging Document Source is "
                f"{self.repository_unique_id}",
                uid,
            )
        if record is None or (record.study_uid, record.series_uid) != (
            document.study_uid,
            document.series_uid,
        ):
            return RegistryError(
                MISSING_DOCUMENT,
                f"Document {uid} not found in series {document.series_uid} of "
                f"study {document.study_uid}",
                uid,
            )
        if record.transfer_syntax not in document.transfer_syntaxes:
            return RegistryError(
                TRANSFER_SYNTAX_NOT_POSSIBLE,
                f"Transfer syntax not possible: document {uid} is stored as "
                f"{record.transfer_syntax or 'an unknown transfer syntax'}, which "
                f"is not among the requested ({', '.join(document.transfer_syntaxes)}); "
                "this server converts nothing",
                uid,
            )
        return None


__all__ = [
    "ACTION",
    "DEFAULT_REPOSITORY_UNIQUE_ID",
    "FAILURE",
    "PARTIAL_SUCCESS",
    "RAD69_PATH",
    "SUCCESS",
    "DocumentRequest",
    "Fault",
    "Rad69Service",
    "RetrieveRequest",
    "fault_envelope",
    "parse_request",
    "response_envelope",
]
