"""RAD-69 XML texts kept from dicomtrolley 4.1.0's public API.

dicomtrolley builds and reads RAD-69 messages with
:mod:`dicomtrolley.formats.soap` and no longer uses these. They remain for
scripts and tests that did:

- :data:`RAD69_SOAP_REQUEST_TEMPLATE`: a Jinja2 template of the request
  envelope, rendered with ``uuid``, ``studies`` (objects with ``uid`` and
  ``series``, each with ``uid`` and ``instances``, each with ``uid``) and
  ``transfer_syntax_list``. Values are inserted as given: render it only with
  trusted UIDs, or use :func:`dicomtrolley.formats.soap.build_request`, which
  checks them.
- :data:`RAD69_SOAP_RESPONSE_ERROR_XPATH`: an ElementTree path from the SOAP
  envelope to the ``RegistryError`` elements of an answer.
- Example answers, for tests: a success header (plain and as a template over
  ``dids``), a whole multipart answer template over ``dicom_bytestream``, and a
  "document not found" answer.
"""

from __future__ import annotations

from dicomtrolley.formats.soap import (
    ACTION,
    ANONYMOUS,
    IHE_NS,
    IHERAD_NS,
    SOAP12_NS,
    WSA_NS,
)

__all__ = [
    "A_RAD69_RESPONSE_SOAP_HEADER",
    "A_RAD69_RESPONSE_SOAP_HEADER_TEMPLATE",
    "RAD69_SOAP_REQUEST_TEMPLATE",
    "RAD69_SOAP_RESPONSE_ERROR_XPATH",
    "RAD69_SOAP_RESPONSE_NOT_FOUND",
    "RAD69_SOAP_RESPONSE_TEMPLATE",
]

_RS_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
_STATUS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType"
_XOP_NS = "http://www.w3.org/2004/08/xop/include"
_RESPONSE_ACTION = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
_REPOSITORY = "1.3.6.1.4.1000"

RAD69_SOAP_REQUEST_TEMPLATE = f"""<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:a="{WSA_NS}">
 <s:Header>
  <a:Action s:mustUnderstand="1">{ACTION}</a:Action>
  <a:MessageID>urn:uuid:{{{{ uuid }}}}</a:MessageID>
  <a:ReplyTo s:mustUnderstand="1"><a:Address>{ANONYMOUS}</a:Address></a:ReplyTo>
  <a:To>http://localhost:2647/XdsService/IHEXDSIDocSource.svc</a:To>
 </s:Header>
 <s:Body>
 {{% for study in studies %}}
  <iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{IHERAD_NS}" xmlns:ihe="{IHE_NS}">
   <iherad:StudyRequest studyInstanceUID="{{{{ study.uid }}}}">
   {{% for series in study.series %}}
    <iherad:SeriesRequest seriesInstanceUID="{{{{ series.uid }}}}">
    {{% for instance in series.instances %}}
     <ihe:DocumentRequest>
      <ihe:RepositoryUniqueId>{_REPOSITORY}</ihe:RepositoryUniqueId>
      <ihe:DocumentUniqueId>{{{{ instance.uid }}}}</ihe:DocumentUniqueId>
     </ihe:DocumentRequest>
    {{% endfor %}}
    </iherad:SeriesRequest>
   {{% endfor %}}
   </iherad:StudyRequest>
   <iherad:TransferSyntaxUIDList>
   {{% for transfer_syntax_id in transfer_syntax_list %}}
    <iherad:TransferSyntaxUID>{{{{ transfer_syntax_id }}}}</iherad:TransferSyntaxUID>
   {{% endfor %}}
   </iherad:TransferSyntaxUIDList>
  </iherad:RetrieveImagingDocumentSetRequest>
 {{% endfor %}}
 </s:Body>
</s:Envelope>
"""


def _document_response(document_uid: str) -> str:
    return f"""   <DocumentResponse>
    <RepositoryUniqueId>{_REPOSITORY}</RepositoryUniqueId>
    <DocumentUniqueId>{document_uid}</DocumentUniqueId>
    <HomeCommunityId/>
    <mimeType>application/dicom</mimeType>
    <Document><xop:Include xmlns:xop="{_XOP_NS}" href="cid:e6f6b279-b259-436e-8d9e-73df1d1157d1"/></Document>
   </DocumentResponse>
"""


def _envelope(status: str, body: str) -> str:
    return f"""<?xml version="1.0" encoding="utf-8" ?>
<env:Envelope xmlns:env="{SOAP12_NS}">
 <env:Header>
  <a:Action xmlns:a="{WSA_NS}" env:mustUnderstand="true">{_RESPONSE_ACTION}</a:Action>
  <a:RelatesTo xmlns:a="{WSA_NS}">urn:uuid:1.2.3</a:RelatesTo>
 </env:Header>
 <env:Body>
  <RetrieveDocumentSetResponse xmlns="{IHE_NS}" xmlns:rs="{_RS_NS}">
   <rs:RegistryResponse status="{_STATUS}:{status}"{body}
  </RetrieveDocumentSetResponse>
 </env:Body>
</env:Envelope>
"""


A_RAD69_RESPONSE_SOAP_HEADER = _envelope(
    "Success",
    "/>\n" + _document_response("1.3.12.2.1107.5.2.19.45030.2015100517150896126425886"),
)

A_RAD69_RESPONSE_SOAP_HEADER_TEMPLATE = _envelope(
    "Success",
    "/>\n   {% for did in dids %}\n"
    + _document_response("{{ did }}")
    + "   {% endfor %}",
)

_BOUNDARY = "----=_Part_1_1788103738.1647962762356"

RAD69_SOAP_RESPONSE_TEMPLATE = (
    f"--{_BOUNDARY}\r\n"
    'Content-Type: application/xop+xml; charset=utf-8; type="application/soap+xml"\r\n'
    "Content-Id: <ff8941e7-4b9f-44a5-b71c-338a33547f03>\r\n"
    "Content-Transfer-Encoding: binary\r\n\r\n"
    + _envelope("Success", "/>\n" + _document_response("1.2.3.4.5.6.7"))
    + f"\r\n--{_BOUNDARY}\r\n"
    "Content-Type: application/dicom\r\n"
    "Content-ID: <e6f6b279-b259-436e-8d9e-73df1d1157d1>\r\n\r\n"
    "{{ dicom_bytestream }}"
    f"\r\n--{_BOUNDARY}--\r\n"
)


def _missing(sop_uid: str) -> str:
    return (
        '     <rs:RegistryError codeContext="Unable to locate SOP from MINT." '
        f'errorCode="XDSMissingDocument" location="{sop_uid}" '
        'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/>\n'
    )


RAD69_SOAP_RESPONSE_NOT_FOUND = _envelope(
    "Failure",
    ">\n    <rs:RegistryErrorList>\n"
    + _missing("1.2.40.0.13.1.16930207878723102225780279777977199534.1")
    + _missing("1.2.40.0.13.1.58933371510581919046064437805732852473.1")
    + "    </rs:RegistryErrorList>\n   </rs:RegistryResponse>",
)

RAD69_SOAP_RESPONSE_ERROR_XPATH = "/".join(
    [
        ".",
        f"{{{SOAP12_NS}}}Body",
        f"{{{IHE_NS}}}RetrieveDocumentSetResponse",
        f"{{{_RS_NS}}}RegistryResponse",
        f"{{{_RS_NS}}}RegistryErrorList",
        "*",
    ]
)
