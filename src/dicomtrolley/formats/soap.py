"""SOAP 1.2 / MTOM for IHE RAD-69 Retrieve Imaging Document Set, without I/O.

Three pieces, each working on bytes only:

- :func:`build_request` writes the request envelope (IHE RAD TF-2 4.69.4.1):
  SOAP 1.2 with WS-Addressing headers, a ``RetrieveImagingDocumentSetRequest``
  holding one ``StudyRequest`` per study, one ``SeriesRequest`` per series and
  one ``DocumentRequest`` per SOP instance, then the ``TransferSyntaxUIDList``.
- :func:`parse_response` reads a SOAP answer (the root part of an MTOM answer,
  or a plain ``application/soap+xml`` body) into a :class:`RetrieveResponse`:
  the registry status, the ``DocumentResponse`` list (ITI TF-2b 3.43.4.2), the
  ``RegistryErrorList`` and any SOAP Fault. Parsing goes through ``defusedxml``
  (no DTDs, no entities). Elements are matched by local name, so any prefix and
  the namespace slips some servers make are accepted.
- :class:`XopReader` takes the part events of an MTOM answer (XOP, W3C
  Recommendation 2005; multipart/related, RFC 2387) and sends each attachment to
  a sink of the caller's while it arrives. Attachments are matched to their
  ``DocumentResponse`` through the ``xop:Include href="cid:..."`` reference
  (RFC 2392: a URL-encoded Content-ID), so parts may come in any order: a part
  that arrives before the SOAP root is held by its sink until the root says
  which document it is.

Namespaces::

    s       http://www.w3.org/2003/05/soap-envelope   SOAP 1.2
    wsa     http://www.w3.org/2005/08/addressing      WS-Addressing 1.0
    iherad  urn:ihe:rad:xdsi-b:2009                    RAD-69 request
    ihe     urn:ihe:iti:xds-b:2007                     ITI-43 request/response
    rs      urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0 RegistryResponse
    xop     http://www.w3.org/2004/08/xop/include      XOP Include
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import unquote
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from dicomtrolley.core import InstanceReference
from dicomtrolley.exceptions import ResponseFormatError
from dicomtrolley.formats.multipart import (
    Event,
    PartData,
    PartEnd,
    PartStart,
    parse_content_type,
)
from dicomtrolley.uids import check_uid

__all__ = [
    "ACTION",
    "SOAP_CONTENT_TYPE",
    "AttachmentSink",
    "DocumentResponse",
    "RegistryError",
    "RetrieveResponse",
    "SoapFault",
    "XopReader",
    "XopResult",
    "build_request",
    "content_id_from_header",
    "content_id_from_href",
    "parse_response",
]

SOAP12_NS: Final = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
WSA_NS: Final = "http://www.w3.org/2005/08/addressing"
IHERAD_NS: Final = "urn:ihe:rad:xdsi-b:2009"
IHE_NS: Final = "urn:ihe:iti:xds-b:2007"
ANONYMOUS: Final = "http://www.w3.org/2005/08/addressing/anonymous"

#: WS-Addressing Action of the request (IHE RAD TF-2 4.69.4.1.2).
ACTION: Final = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
#: Content-Type of the request (SOAP 1.2 HTTP binding: the action goes in it too).
SOAP_CONTENT_TYPE: Final = f'application/soap+xml; charset=utf-8; action="{ACTION}"'

SUCCESS: Final = "Success"
PARTIAL_SUCCESS: Final = "PartialSuccess"
FAILURE: Final = "Failure"

#: Largest SOAP root part kept in memory (it lists documents, it holds none).
MAX_ROOT_BYTES: Final = 64 * 1024 * 1024
_SNIPPET: Final = 200


# --------------------------------------------------------------------------- #
# Request
# --------------------------------------------------------------------------- #


def build_request(
    documents: Iterable[InstanceReference],
    *,
    to: str,
    transfer_syntaxes: Sequence[str],
    repository_unique_id: str,
    message_id: str | None = None,
) -> bytes:
    """The SOAP 1.2 envelope asking for documents, UTF-8 encoded.

    Documents are grouped by study, then series, in the order they first
    appear. Every UID is checked to be digits and dots before it is written
    (:func:`dicomtrolley.uids.check_uid`), so nothing from a reference can
    change the XML; ``to`` and ``message_id`` are escaped.

    Raises
    ------
    InvalidUIDError
        When a UID, transfer syntax or repository unique id is not a UID.
    ValueError
        When there are no documents or no transfer syntaxes.
    """
    studies: dict[str, dict[str, list[str]]] = {}
    for ref in documents:
        study = check_uid(ref.study_uid, "StudyInstanceUID")
        series = check_uid(ref.series_uid, "SeriesInstanceUID")
        sop = check_uid(ref.instance_uid, "SOPInstanceUID")
        wanted = studies.setdefault(study, {}).setdefault(series, [])
        if sop not in wanted:
            wanted.append(sop)
    if not studies:
        raise ValueError("a RAD-69 request needs at least one document")
    if not transfer_syntaxes:
        raise ValueError("a RAD-69 request needs at least one transfer syntax")
    repository = check_uid(repository_unique_id, "RepositoryUniqueId")
    syntaxes = [check_uid(uid, "TransferSyntaxUID") for uid in transfer_syntaxes]
    message = message_id or f"urn:uuid:{uuid.uuid4()}"

    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:wsa="{WSA_NS}">',
        " <s:Header>",
        f'  <wsa:Action s:mustUnderstand="1">{ACTION}</wsa:Action>',
        f"  <wsa:MessageID>{escape(message)}</wsa:MessageID>",
        f"  <wsa:ReplyTo><wsa:Address>{ANONYMOUS}</wsa:Address></wsa:ReplyTo>",
        f'  <wsa:To s:mustUnderstand="1">{escape(to)}</wsa:To>',
        " </s:Header>",
        " <s:Body>",
        f'  <iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{IHERAD_NS}"'
        f' xmlns:ihe="{IHE_NS}">',
    ]
    for study, series_map in studies.items():
        lines.append(f"   <iherad:StudyRequest studyInstanceUID={quoteattr(study)}>")
        for series, sops in series_map.items():
            lines.append(
                f"    <iherad:SeriesRequest seriesInstanceUID={quoteattr(series)}>"
            )
            for sop in sops:
                lines.append(
                    "     <ihe:DocumentRequest>"
                    f"<ihe:RepositoryUniqueId>{repository}</ihe:RepositoryUniqueId>"
                    f"<ihe:DocumentUniqueId>{sop}</ihe:DocumentUniqueId>"
                    "</ihe:DocumentRequest>"
                )
            lines.append("    </iherad:SeriesRequest>")
        lines.append("   </iherad:StudyRequest>")
    lines.append("   <iherad:TransferSyntaxUIDList>")
    for syntax in syntaxes:
        lines.append(
            f"    <iherad:TransferSyntaxUID>{syntax}</iherad:TransferSyntaxUID>"
        )
    lines += [
        "   </iherad:TransferSyntaxUIDList>",
        "  </iherad:RetrieveImagingDocumentSetRequest>",
        " </s:Body>",
        "</s:Envelope>",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


# --------------------------------------------------------------------------- #
# Response
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class DocumentResponse:
    """One ``DocumentResponse``: a document the server sends.

    ``content_id`` is the Content-ID its ``xop:Include`` points at (decoded,
    without ``cid:`` and angle brackets); ``inline`` holds the bytes instead
    when the server put them in the envelope as base64 (not optimised).
    """

    document_unique_id: str
    repository_unique_id: str = ""
    home_community_id: str = ""
    mime_type: str = ""
    content_id: str | None = None
    inline: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RegistryError:
    """One ``rs:RegistryError`` (ebRS 3.0; codes in ITI TF-3 Table 4.2.4.1-2)."""

    error_code: str
    code_context: str = ""
    severity: str = ""
    location: str = ""
    value: str = ""

    @property
    def is_warning(self) -> bool:
        """True for severity ``...:ErrorSeverityType:Warning``."""
        return self.severity.rsplit(":", 1)[-1] == "Warning"

    def __str__(self) -> str:
        text = self.error_code or "(no errorCode)"
        if self.location:
            text += f" at {self.location}"
        detail = self.code_context or self.value
        if detail:
            text += f" ({detail})"
        return text


@dataclass(frozen=True)
class SoapFault:
    """A SOAP Fault (SOAP 1.2 Part 1 section 5.4; SOAP 1.1 faults are read too)."""

    code: str
    subcodes: tuple[str, ...] = ()
    reason: str = ""
    detail: str = ""

    def __str__(self) -> str:
        codes = "/".join((self.code, *self.subcodes))
        text = f"{codes}: {self.reason}" if self.reason else codes
        if self.detail and self.detail not in text:
            text += f" ({self.detail})"
        return text


@dataclass(frozen=True)
class RetrieveResponse:
    """What a SOAP answer to RAD-69 says.

    ``status`` is the full status URN (empty for a fault). The ebRS namespace is
    used for Success and Failure, IHE's (``urn:ihe:iti:2007:...``) for
    PartialSuccess: :attr:`outcome` gives the last part of either.
    """

    status: str = ""
    documents: tuple[DocumentResponse, ...] = ()
    errors: tuple[RegistryError, ...] = ()
    fault: SoapFault | None = None

    @property
    def outcome(self) -> str:
        """``Success``, ``PartialSuccess``, ``Failure`` (or whatever else was sent)."""
        return self.status.rsplit(":", 1)[-1].strip()


def _local(tag: object) -> str:
    """The local name of an element tag (``{ns}name`` or ``name``)."""
    if not isinstance(tag, str):  # comments and processing instructions
        return ""
    return tag.rsplit("}", 1)[-1]


def _child(element: Element, name: str) -> Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _children(element: Element, name: str) -> list[Element]:
    return [c for c in element if _local(c.tag) == name]


def _find(element: Element, name: str) -> Element | None:
    """The first descendant (or element itself) with this local name."""
    return next((e for e in element.iter() if _local(e.tag) == name), None)


def _text(element: Element | None) -> str:
    if element is None:
        return ""
    return "".join(element.itertext()).strip()


def _snippet(data: bytes) -> str:
    text = data[:_SNIPPET].decode("utf-8", errors="replace")
    return " ".join(text.split())


def parse_response(data: bytes | bytearray | memoryview) -> RetrieveResponse:
    """Read a SOAP envelope answering RAD-69 (or ITI-43).

    Raises
    ------
    ResponseFormatError
        When data is not XML, not a SOAP envelope, or its body holds neither a
        Fault nor a ``RegistryResponse`` with a status.
    """
    raw = bytes(data)
    try:
        root = fromstring(raw, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as error:
        raise ResponseFormatError(
            f"Could not parse RAD-69 answer as XML ({error}): {_snippet(raw)!r}"
        ) from error
    if _local(root.tag) != "Envelope":
        raise ResponseFormatError(
            f"RAD-69 answer is not a SOAP envelope: root element is "
            f"{_local(root.tag)!r}"
        )
    body = _child(root, "Body")
    if body is None:
        raise ResponseFormatError("RAD-69 answer: SOAP envelope without a Body")
    fault = _child(body, "Fault")
    if fault is not None:
        return RetrieveResponse(fault=_parse_fault(fault))
    registry = _find(body, "RegistryResponse")
    if registry is None or not registry.get("status", "").strip():
        raise ResponseFormatError(
            "RAD-69 answer: the SOAP body holds no RegistryResponse with a status"
        )
    container = _find(body, "RetrieveDocumentSetResponse")
    documents = tuple(
        _parse_document(element)
        for element in (container if container is not None else body).iter()
        if _local(element.tag) == "DocumentResponse"
    )
    errors = tuple(
        RegistryError(
            error_code=element.get("errorCode", "").strip(),
            code_context=element.get("codeContext", "").strip(),
            severity=element.get("severity", "").strip(),
            location=element.get("location", "").strip(),
            value=_text(element),
        )
        for element in registry.iter()
        if _local(element.tag) == "RegistryError"
    )
    return RetrieveResponse(
        status=registry.get("status", "").strip(), documents=documents, errors=errors
    )


def _parse_document(element: Element) -> DocumentResponse:
    uid = _text(_child(element, "DocumentUniqueId"))
    if not uid:
        raise ResponseFormatError(
            "RAD-69 answer: a DocumentResponse without DocumentUniqueId"
        )
    content_id: str | None = None
    inline: bytes | None = None
    document = _child(element, "Document")
    if document is not None:
        include = _find(document, "Include")
        if include is not None:
            href = include.get("href", "")
            if not href.strip():
                raise ResponseFormatError(
                    f"RAD-69 answer: xop:Include without href for document {uid}"
                )
            content_id = content_id_from_href(href)
        elif _text(document):
            try:
                inline = base64.b64decode("".join(_text(document).split()))
            except (binascii.Error, ValueError) as error:
                raise ResponseFormatError(
                    f"RAD-69 answer: document {uid} is neither an xop:Include nor "
                    f"base64: {error}"
                ) from error
    return DocumentResponse(
        document_unique_id=uid,
        repository_unique_id=_text(_child(element, "RepositoryUniqueId")),
        home_community_id=_text(_child(element, "HomeCommunityId")),
        mime_type=_text(_child(element, "mimeType")),
        content_id=content_id,
        inline=inline,
    )


def _parse_fault(fault: Element) -> SoapFault:
    code_element = _child(fault, "Code")
    if code_element is not None:  # SOAP 1.2
        code = _text(_child(code_element, "Value"))
        subcodes: list[str] = []
        sub = _child(code_element, "Subcode")
        while sub is not None:
            subcodes.append(_text(_child(sub, "Value")))
            sub = _child(sub, "Subcode")
        reason_element = _child(fault, "Reason")
        texts = [] if reason_element is None else _children(reason_element, "Text")
        english = [
            t
            for t in texts
            if t.get("{http://www.w3.org/XML/1998/namespace}lang", "").startswith("en")
        ]
        chosen = english or texts
        reason = _text(chosen[0]) if chosen else ""
        detail = _text(_child(fault, "Detail"))
        return SoapFault(code, tuple(subcodes), reason, detail)
    return SoapFault(  # SOAP 1.1
        code=_text(_child(fault, "faultcode")),
        reason=_text(_child(fault, "faultstring")),
        detail=_text(_child(fault, "detail")),
    )


# --------------------------------------------------------------------------- #
# Content-IDs
# --------------------------------------------------------------------------- #


def content_id_from_header(value: str) -> str:
    """A Content-ID header value without whitespace and angle brackets."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def content_id_from_href(href: str) -> str:
    """The Content-ID a ``cid:`` URL points at (RFC 2392: URL-decoded)."""
    text = href.strip()
    if text[:4].lower() == "cid:":
        text = text[4:]
    return content_id_from_header(unquote(text))


# --------------------------------------------------------------------------- #
# MTOM answers
# --------------------------------------------------------------------------- #


class AttachmentSink(Protocol):
    """Where the bytes of one attachment go while they arrive."""

    def write(self, data: bytes | memoryview) -> None:
        """More bytes of the attachment (a memoryview is valid only now)."""

    def complete(self, document: DocumentResponse) -> None:
        """The attachment is complete and is the content of document."""

    def discard(self) -> None:
        """The attachment is not wanted, or the answer broke: throw it away."""


@dataclass(frozen=True)
class XopResult:
    """An MTOM answer read to its end.

    ``delivered``: documents whose content arrived (given to a sink's
    ``complete``). ``missing_parts``: documents referenced by the envelope
    whose part never came. ``unreferenced``: Content-IDs of parts that no
    DocumentResponse points at (discarded).
    """

    response: RetrieveResponse
    delivered: tuple[DocumentResponse, ...] = ()
    missing_parts: tuple[DocumentResponse, ...] = ()
    unreferenced: tuple[str, ...] = ()


_XML_TYPES: Final = ("application/xop+xml", "application/soap+xml", "text/xml")


class XopReader:
    """Assembles an MTOM answer from multipart part events, sans I/O.

    Feed it the events of :class:`~dicomtrolley.formats.multipart.MultipartParser`
    (or of a plain SOAP body given as one part) and call :meth:`close` at the
    end. The root part is the one whose Content-ID equals ``start`` (the
    Content-Type parameter) or, without ``start``, the first part (RFC 2387
    section 3.2). Every other part gets a sink from ``open_sink(content_id)``
    as soon as its headers arrive, and is completed with its DocumentResponse
    once both the part and the root have been read. Documents sent inline as
    base64 go to a sink of their own when the root is read.

    Call :meth:`abort` when reading fails: every sink not yet completed is
    discarded.

    Raises
    ------
    ResponseFormatError
        From feed() or close(): an attachment without Content-ID, a root part
        that is not a SOAP envelope or larger than ``max_root_bytes``, or no
        root part at all.
    """

    def __init__(
        self,
        open_sink: Callable[[str], AttachmentSink],
        *,
        start: str | None = None,
        max_root_bytes: int = MAX_ROOT_BYTES,
    ) -> None:
        self._open_sink = open_sink
        self._start = content_id_from_header(start) if start else None
        self._max_root_bytes = max_root_bytes
        self._parts_seen = 0
        self._root: bytearray | None = None  # while the root part is being read
        self._current: tuple[str, AttachmentSink] | None = None
        self._pending: list[tuple[str, AttachmentSink]] = []
        self._response: RetrieveResponse | None = None
        self._by_cid: dict[str, DocumentResponse] = {}
        self._delivered: dict[str, DocumentResponse] = {}  # by Content-ID
        self._inline: list[DocumentResponse] = []
        self._unreferenced: list[str] = []

    @classmethod
    def for_content_type(
        cls,
        content_type: str,
        open_sink: Callable[[str], AttachmentSink],
        *,
        max_root_bytes: int = MAX_ROOT_BYTES,
    ) -> XopReader:
        """A reader for an answer with this Content-Type (reads ``start``)."""
        _, params = parse_content_type(content_type)
        return cls(
            open_sink, start=params.get("start") or None, max_root_bytes=max_root_bytes
        )

    @property
    def response(self) -> RetrieveResponse | None:
        """The SOAP root, once it has been read."""
        return self._response

    def feed(self, event: Event) -> None:
        """Take one part event."""
        if isinstance(event, PartData):
            if self._root is not None:
                if len(self._root) + len(event.data) > self._max_root_bytes:
                    raise ResponseFormatError(
                        f"RAD-69 answer: SOAP root part is larger than "
                        f"{self._max_root_bytes} bytes"
                    )
                self._root += event.data
            elif self._current is not None:
                self._current[1].write(event.data)
        elif isinstance(event, PartStart):
            self._start_part(event.headers)
        elif isinstance(event, PartEnd):
            self._end_part()

    def feed_body(self, content_type: str, body: bytes) -> None:
        """Take a whole non-multipart answer (a plain SOAP envelope) as one part."""
        self.feed(PartStart({"content-type": content_type}))
        self.feed(PartData(body))
        self.feed(PartEnd())

    def close(self) -> XopResult:
        """The answer is complete: what was delivered, and what was not."""
        if self._response is None:
            self.abort()
            wanted = f" (start={self._start!r})" if self._start else ""
            raise ResponseFormatError(
                f"RAD-69 answer: no SOAP root part among {self._parts_seen} "
                f"part(s){wanted}"
            )
        response = self._response
        delivered = tuple(self._delivered.values())
        done = {id(doc) for doc in delivered}
        missing = tuple(
            doc
            for doc in response.documents
            if doc.content_id is not None and id(doc) not in done
        )
        return XopResult(
            response=response,
            delivered=(*delivered, *self._inline),
            missing_parts=missing,
            unreferenced=tuple(self._unreferenced),
        )

    def abort(self) -> None:
        """Discard every attachment not yet completed."""
        sinks = [sink for _, sink in self._pending]
        if self._current is not None:
            sinks.append(self._current[1])
        self._pending = []
        self._current = None
        self._root = None
        for sink in sinks:
            sink.discard()

    # -- internals -----------------------------------------------------------

    def _start_part(self, headers: dict[str, str]) -> None:
        self._parts_seen += 1
        cid = content_id_from_header(headers.get("content-id", ""))
        media_type, _ = parse_content_type(headers.get("content-type", ""))
        if self._response is None and self._is_root(cid, media_type):
            self._root = bytearray()
            return
        if not cid:
            raise ResponseFormatError(
                f"RAD-69 answer: part {self._parts_seen} has no Content-ID, so no "
                "document can refer to it"
            )
        self._current = (cid, self._open_sink(cid))

    def _is_root(self, cid: str, media_type: str) -> bool:
        if self._start is None:
            return self._parts_seen == 1
        if cid:
            return cid == self._start
        # a root sent without its Content-ID: recognisable by its type only
        return media_type in _XML_TYPES

    def _end_part(self) -> None:
        if self._root is not None:
            body, self._root = bytes(self._root), None
            self._read_root(body)
            return
        if self._current is None:
            return
        cid, sink = self._current
        self._current = None
        if self._response is None:
            self._pending.append((cid, sink))
        else:
            self._settle(cid, sink)

    def _read_root(self, body: bytes) -> None:
        response = parse_response(body)
        self._response = response
        for doc in response.documents:
            if doc.content_id is not None:
                self._by_cid.setdefault(doc.content_id, doc)
        pending, self._pending = self._pending, []
        for index, (cid, sink) in enumerate(pending):
            try:
                self._settle(cid, sink)
            except BaseException:
                for _, rest in pending[index + 1 :]:
                    rest.discard()
                raise
        for doc in response.documents:
            if doc.inline is not None:
                sink = self._open_sink(
                    doc.content_id or f"inline:{doc.document_unique_id}"
                )
                try:
                    sink.write(doc.inline)
                except BaseException:
                    sink.discard()
                    raise
                sink.complete(doc)
                self._inline.append(doc)

    def _settle(self, cid: str, sink: AttachmentSink) -> None:
        doc = self._by_cid.get(cid)
        if doc is None:
            doc = self._by_cid.get(unquote(cid))  # a server that encoded the header
        if doc is None or doc.content_id in self._delivered:
            sink.discard()
            self._unreferenced.append(cid)
            return
        assert doc.content_id is not None
        self._delivered[doc.content_id] = doc
        sink.complete(doc)
