"""MINT study search (Vitrea Connection): :class:`Mint` and :class:`MintQuery`.

MINT (Medical Imaging Network Transport) searches with ``GET {mint}/studies``:
DICOM keywords as query parameters (``PatientID=123*``), ``QueryLevel`` for the
depth (STUDY, SERIES or INSTANCE), ``IncludeFields`` for extra attributes,
``min_study_date``/``max_study_date`` (YYYYMMDD, both or neither) and ``limit``.
The answer is XML, read by :mod:`dicomtrolley.formats.mint_xml` into
:class:`MintStudy` → :class:`MintSeries` → :class:`MintInstance` objects.

The names are dicomtrolley 4.1.0's. Unlike 4.1.0, requests go through
:class:`~dicomtrolley.transport.HttpTransport` (timeouts, retries, errors that
name the URL), ask for ``application/xml``, and the XML is parsed with defusedxml.
Errors: 401/403 raise :class:`~dicomtrolley.exceptions.DICOMTrolleyAuthError`,
5xx :class:`~dicomtrolley.exceptions.ServerHTTPError`, and an answer that is not
MINT XML (an HTML page, malformed XML) :class:`~dicomtrolley.exceptions.
ResponseFormatError`.
"""

from __future__ import annotations

from typing import Any

import requests
from pydantic import model_validator

# DICOMObject ... Study and DICOMTrolleyError: re-exported, as 4.1.0 had them here
from dicomtrolley.core import DICOMObject as DICOMObject
from dicomtrolley.core import (
    ExtendedQuery,
    Query,
    QueryLevels,
    Searcher,
)
from dicomtrolley.core import Instance as Instance
from dicomtrolley.core import Series as Series
from dicomtrolley.core import Study as Study
from dicomtrolley.exceptions import DICOMTrolleyError as DICOMTrolleyError
from dicomtrolley.exceptions import (
    ResponseFormatError,
    UnSupportedParameterError,
    redact_url,
)
from dicomtrolley.fields import (
    InstanceLevel,
    SeriesLevel,
    SeriesLevelPromotable,
    StudyLevel,
)
from dicomtrolley.formats.mint_xml import (
    MINT_NAMESPACE,
    MintAttribute,
    MintInstance,
    MintObject,
    MintSeries,
    MintStudy,
    MintXMLParser,
    parse_attribs,
    parse_mint_xml,
)
from dicomtrolley.logs import get_module_logger
from dicomtrolley.qido_rs import encode_params
from dicomtrolley.transport import HttpTransport, Retry, Timeout

__all__ = [
    "ACCEPT_MINT_XML",
    "MINT_NAMESPACE",
    "Mint",
    "MintAttribute",
    "MintInstance",
    "MintObject",
    "MintQuery",
    "MintQueryLevels",
    "MintSeries",
    "MintStudy",
    "MintXMLParser",
    "get_valid_fields",
    "parse_attribs",
    "parse_mint_studies_response",
    "parse_mint_xml",
]

logger = get_module_logger("mint")

ACCEPT_MINT_XML = "application/xml"


class MintQueryLevels:
    """MINT's ``QueryLevel`` values (the same words as :class:`QueryLevels`)."""

    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "INSTANCE"

    ALL = {STUDY, SERIES, INSTANCE}

    @classmethod
    def translate(cls, value: QueryLevels | str) -> str:
        """The MINT word for a query level.

        Raises
        ------
        ValueError
            For anything that is not STUDY, SERIES or INSTANCE.
        """
        text = value.value if isinstance(value, QueryLevels) else str(value)
        if text not in cls.ALL:
            raise ValueError(
                f'Unknown query level "{value}". Valid values are {sorted(cls.ALL)}'
            )
        return text


def get_valid_fields(query_level: QueryLevels | str) -> set[str]:
    """The DICOM keywords a MINT search at query_level can return (include fields).

    STUDY: :class:`~dicomtrolley.fields.StudyLevel`; SERIES: also SeriesLevel and
    SeriesLevelPromotable; INSTANCE: also InstanceLevel.

    Raises
    ------
    ValueError
        For an unknown query level.
    """
    level = MintQueryLevels.translate(query_level)
    fields = set(StudyLevel.fields)
    if level in (MintQueryLevels.SERIES, MintQueryLevels.INSTANCE):
        fields |= SeriesLevel.fields | SeriesLevelPromotable.fields
    if level == MintQueryLevels.INSTANCE:
        fields |= InstanceLevel.fields
    return fields


# Parameters as_parameters() writes itself, in its own form and order.
_NOT_KEYWORDS = frozenset(
    {
        "query_level",
        "include_fields",
        "PatientBirthDate",
        "min_study_date",
        "max_study_date",
        "limit",
    }
)


def _yyyymmdd(value: Any) -> str:
    return str(value.strftime("%Y%m%d"))


class MintQuery(ExtendedQuery):
    """A MINT study search. String parameters accept ``*`` as a wildcard.

    ``limit`` caps the number of studies returned (0: no cap). ``include_fields``
    must be attributes the query level can return (:func:`get_valid_fields`).
    """

    limit: int = 0

    @model_validator(mode="after")
    def min_max_study_date_xor(self) -> MintQuery:
        """min_study_date and max_study_date: both or neither."""
        if bool(self.min_study_date) != bool(self.max_study_date):
            given, missing = (
                ("min_study_date", "max_study_date")
                if self.min_study_date
                else ("max_study_date", "min_study_date")
            )
            raise ValueError(
                f"{given} parameter was passed ({getattr(self, given)}), but "
                f"{missing} was not. Both need to be given"
            )
        return self

    @model_validator(mode="after")
    def include_fields_check(self) -> MintQuery:  # type: ignore[override]
        """Include fields must be ones the query level returns.

        Replaces (by name, as in 4.1.0) Query's check that they are DICOM
        keywords: every field a level returns is one. Because of that name,
        pydantic also calls it as Query's field validator, with the list of
        fields: that call checks that they are DICOM keywords.
        """
        if not isinstance(self, MintQuery):  # the field validator call
            fields: Any = self
            for keyword in fields or []:
                Query.validate_keyword(keyword)
            return fields
        if not self.include_fields:
            return self
        level = MintQueryLevels.translate(self.query_level)
        valid = get_valid_fields(level)
        wrong = [field for field in self.include_fields if field not in valid]
        if wrong:
            shown = ", ".join(f'"{field}"' for field in wrong)
            verb = "is not a valid include field" if len(wrong) == 1 else "are not"
            if len(wrong) > 1:
                verb += " valid include fields"
            raise ValueError(
                f"{shown} {verb} for query level {level}. Valid fields for "
                f"{level}: {', '.join(sorted(valid))}"
            )
        return self

    def __str__(self) -> str:
        return str(self.as_parameters())

    def as_parameters(self) -> dict[str, Any]:
        """The query string parameters: every non-empty parameter, as MINT names it.

        DICOM keywords stay as they are; ``PatientBirthDate``, ``min_study_date``
        and ``max_study_date`` become YYYYMMDD; ``query_level`` is sent as
        ``QueryLevel`` (always); ``include_fields`` as ``IncludeFields``,
        comma-joined; ``limit`` only when not 0.
        """
        parameters: dict[str, Any] = {}
        for key, value in self.model_dump().items():
            if value and key not in _NOT_KEYWORDS:
                parameters[key] = value
        if self.PatientBirthDate:
            parameters["PatientBirthDate"] = _yyyymmdd(self.PatientBirthDate)
        if self.min_study_date:
            parameters["min_study_date"] = _yyyymmdd(self.min_study_date)
        if self.max_study_date:
            parameters["max_study_date"] = _yyyymmdd(self.max_study_date)
        parameters["QueryLevel"] = MintQueryLevels.translate(self.query_level)
        if self.include_fields:
            parameters["IncludeFields"] = ",".join(self.include_fields)
        if self.limit:
            parameters["limit"] = self.limit
        return parameters


class Mint(Searcher):
    """Search a MINT server (Vitrea Connection) for studies.

    Parameters
    ----------
    session:
        A requests session that is logged in (see :mod:`dicomtrolley.auth`).
    url:
        The MINT root, e.g. ``https://server/rest/api/vault/mint``; searches go to
        ``{url}/studies``.
    timeout, retry:
        Override the defaults of :mod:`dicomtrolley.transport`.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        *,
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.transport = HttpTransport(session, timeout=timeout, retry=retry)

    def __str__(self) -> str:
        return f"Mint at {self.url}"

    @staticmethod
    def ensure_query_type(query: Query) -> MintQuery:
        """query as a MintQuery.

        Raises
        ------
        UnSupportedParameterError
            When query sets something MINT cannot search for (or include fields
            its query level does not return).
        """
        if isinstance(query, MintQuery):
            return query
        if not isinstance(query, Query):
            raise UnSupportedParameterError(
                f'Invalid query. Expecting Query, but got "{type(query).__name__}"'
            )
        return MintQuery.init_from_query(query)

    def find_studies(self, query: Query) -> list[MintStudy]:
        """All studies matching query, with series and instances down to its level.

        Raises
        ------
        UnSupportedParameterError
            When query cannot be expressed in MINT.
        DICOMTrolleyError
            When the search fails (see the module docstring for which one).
        """
        mint_query = self.ensure_query_type(query)
        url = f"{self.url}/studies"
        response = self.transport.get(
            url,
            params=encode_params(mint_query.as_parameters()),
            headers={"Accept": ACCEPT_MINT_XML},
            what="MINT search",
        )
        try:
            studies = self.parse_response(response)
        finally:
            response.close()
        logger.debug("%s: %d studies", url, len(studies))
        return studies

    @staticmethod
    def parse_response(response: requests.Response) -> list[MintStudy]:
        """Studies from a MINT search answer (HTTP 204 gives [])."""
        if response.status_code == 204:
            return []
        content_type = response.headers.get("Content-Type", "").lower()
        body = response.content
        if "html" in content_type:
            raise ResponseFormatError(
                f"{_could_not_parse(response)}: MINT search answered "
                f"{content_type} instead of XML: {_page_title(body)}",
                url=response.url,
                status_code=response.status_code,
            )
        try:
            return parse_mint_xml(body)
        except ResponseFormatError as error:
            raise ResponseFormatError(
                f"{_could_not_parse(response)}: {error.message}",
                url=response.url,
                status_code=response.status_code,
            ) from error


def parse_mint_studies_response(
    response: requests.Response | bytes | bytearray | str,
) -> list[MintStudy]:
    """Studies from the answer to a MINT study search.

    dicomtrolley 4.1.0 took the requests Response; the body as bytes or text
    works too.

    Raises
    ------
    ResponseFormatError
        When the answer is not a MINT search answer (a DICOMTrolleyError).
    """
    if isinstance(response, requests.Response):
        return Mint.parse_response(response)
    try:
        return parse_mint_xml(response)
    except ResponseFormatError as error:
        raise ResponseFormatError(
            f"Could not parse server response as MINT studies: {error.message}"
        ) from error


def _could_not_parse(response: requests.Response) -> str:
    """The start of a parse error message, worded as dicomtrolley 4.1.0's."""
    return (
        f"Could not parse server response from {redact_url(response.url)} "
        f"({response.status_code}:{response.reason}) as MINT studies"
    )


def _page_title(body: bytes) -> str:
    """The title (or first words) of an HTML page, for an error message."""
    text = body[:4096].decode("utf-8", "replace")
    start = text.lower().find("<title")
    if start >= 0:
        start = text.find(">", start) + 1
        end = text.lower().find("</title>", start)
        if start > 0 and end > start:
            return " ".join(text[start:end].split())[:200]
    return " ".join(text.split())[:200]
