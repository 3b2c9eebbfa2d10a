"""QIDO-RS search (DICOMweb, PS3.18 section 10.6).

:class:`QidoRS` turns a query into ``GET {url}/studies`` (and the series and
instance resources), asks for ``application/dicom+json`` and builds the study
tree from the answer. A plain :class:`~dicomtrolley.core.Query` is sent as a
hierarchical query when it can be (``/studies/{S}/series``), else as a
relational one (``/series``).

Paging (PS3.18 8.3.4.4): a server may cap its answers. It then says so with
``Warning: 299 {service}: "There are N additional results that can be
requested"`` (8.3.4.4.1), or, on older servers, with 206 Partial Content. Only
an answer that shows such a cap, or that holds exactly the ``server_limit`` the
user knows the server applies, is followed by a request with ``offset``; an
ordinary answer is one request. A server that refuses ``offset`` (any 4xx) is
taken as one that cannot page: what it sent is kept and a warning is logged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import requests
from pydantic import model_validator
from pydicom.dataset import Dataset
from requests import Response

from dicomtrolley.body import content_of
from dicomtrolley.core import Query, QueryLevels, Searcher, Study
from dicomtrolley.exceptions import (
    ClientHTTPError,
    DICOMTrolleyError,
    NoQueryResultsError,
    ResponseFormatError,
    UnSupportedParameterError,
)
from dicomtrolley.formats.dicom_json import parse_dicom_json
from dicomtrolley.logs import get_module_logger
from dicomtrolley.parsing import (
    SERIES_UID_TAG,
    SOP_UID_TAG,
    STUDY_UID_TAG,
    DICOMParseTree,
    studies_from_datasets,
    uid_of,
)
from dicomtrolley.transport import HttpTransport, Retry, Timeout, error_for_response

__all__ = [
    "STUDY_VALUE_ERROR_TEXT",
    "DICOMParseTree",
    "DICOMTrolleyError",
    "Dataset",
    "HierarchicalQuery",
    "NoQueryResults",
    "NoQueryResultsError",
    "QidoRS",
    "QidoRSQueryBase",
    "Query",
    "QueryLevels",
    "RelationalQuery",
    "Response",
    "Searcher",
    "Study",
    "UnSupportedParameterError",
    "get_module_logger",
    "logger",
]

logger = get_module_logger("qido_rs")

ACCEPT_DICOM_JSON = "application/dicom+json, application/json;q=0.9"
STUDY_VALUE_ERROR_TEXT = (
    "Query level STUDY makes no sense for a QIDO-RS relational query. Perhaps use "
    "a hierarchical query?"
)
_NOT_PARAMETERS = {"min_study_date", "max_study_date", "include_fields", "query_level"}


class NoQueryResults(NoQueryResultsError):
    """Kept for scripts written against 4.1.0, where qido_rs defined it."""


class QidoRSQueryBase(Query):
    """A QIDO-RS query (PS3.18 table 8.3.4-1) with ``limit`` and ``offset``."""

    limit: int = 0
    offset: int = 0

    @model_validator(mode="after")
    def min_max_study_date_xor(self) -> QidoRSQueryBase:
        """Both ends of the study date range, or neither (4.1.0 name)."""
        if bool(self.min_study_date) != bool(self.max_study_date):
            given, missing = (
                ("min_study_date", "max_study_date")
                if self.min_study_date
                else ("max_study_date", "min_study_date")
            )
            raise ValueError(
                f"{given} parameter was passed, but {missing} was not. Both need to "
                "be given"
            )
        return self

    @staticmethod
    def date_to_str(date_in: datetime | None) -> str:
        return date_in.strftime("%Y%m%d") if date_in else ""

    @staticmethod
    def date_range_to_str(min_date: datetime | None, max_date: datetime | None) -> str:
        """``YYYYMMDD-YYYYMMDD`` (PS3.4 C.2.2.2.5); an open end stays empty."""
        if not min_date and not max_date:
            raise UnSupportedParameterError(
                "Cannot create a date range without any dates"
            )
        as_text = QidoRSQueryBase.date_to_str
        return f"{as_text(min_date)}-{as_text(max_date)}"

    def uri_base(self) -> str:
        """The resource path, e.g. ``/studies``."""
        raise NotImplementedError()

    def uri_search_params(self) -> dict[str, str | list[str]]:
        """The query string parameters (empty values left out)."""
        params: dict[str, str | list[str]] = {}
        if self.min_study_date or self.max_study_date:
            params["StudyDate"] = self.date_range_to_str(
                self.min_study_date, self.max_study_date
            )
        if self.include_fields:
            params["includefield"] = list(self.include_fields)
        for key, value in self.model_dump().items():
            if key in _NOT_PARAMETERS or not value:
                continue
            params[key] = str(value)
        return params


class HierarchicalQuery(QidoRSQueryBase):
    """Study → series → instance: deeper levels need the UIDs above them."""

    @model_validator(mode="after")
    def uids_should_be_hierarchical(self) -> HierarchicalQuery:
        """A series UID needs its study UID (4.1.0 name)."""
        if self.SeriesInstanceUID and not self.StudyInstanceUID:
            raise ValueError(
                "This query is not hierarchical: SeriesInstanceUID is given but its "
                "parent StudyInstanceUID is not. Add it or use a RelationalQuery"
            )
        return self

    @model_validator(mode="after")
    def uids_should_match_query_level(self) -> HierarchicalQuery:
        """Series need a study UID; instances a study and a series UID."""
        level = QueryLevels(self.query_level)
        if level == QueryLevels.SERIES and not self.StudyInstanceUID:
            raise ValueError(
                'To search at query level "SERIES" you need to supply a '
                "StudyInstanceUID. Or use a QIDO-RS relational query"
            )
        if level == QueryLevels.INSTANCE and not (
            self.StudyInstanceUID and self.SeriesInstanceUID
        ):
            raise ValueError(
                'To search at query level "INSTANCE" you need to supply a '
                "StudyInstanceUID and a SeriesInstanceUID. Or use a QIDO-RS "
                "relational query"
            )
        return self

    def uri_base(self) -> str:
        level = QueryLevels(self.query_level)
        if level == QueryLevels.STUDY:
            return "/studies"
        if level == QueryLevels.SERIES:
            return f"/studies/{_q(self.StudyInstanceUID)}/series"
        return (
            f"/studies/{_q(self.StudyInstanceUID)}/series/"
            f"{_q(self.SeriesInstanceUID)}/instances"
        )

    def uri_search_params(self) -> dict[str, str | list[str]]:
        params = super().uri_search_params()
        level = QueryLevels(self.query_level)
        if level in (QueryLevels.SERIES, QueryLevels.INSTANCE):
            params.pop("StudyInstanceUID", None)
        if level == QueryLevels.INSTANCE:
            params.pop("SeriesInstanceUID", None)
        return params


class RelationalQuery(QidoRSQueryBase):
    """Series or instances across studies: ``/series``, ``/instances``."""

    @model_validator(mode="after")
    def query_level_should_be_series_or_instance(self) -> RelationalQuery:
        """Relational queries are for series and instances (4.1.0 name)."""
        if QueryLevels(self.query_level) == QueryLevels.STUDY:
            raise ValueError(STUDY_VALUE_ERROR_TEXT)
        return self

    def uri_base(self) -> str:
        if QueryLevels(self.query_level) == QueryLevels.SERIES:
            return "/series"
        if self.StudyInstanceUID:
            return f"/studies/{_q(self.StudyInstanceUID)}/instances"
        return "/instances"

    def uri_search_params(self) -> dict[str, str | list[str]]:
        params = super().uri_search_params()
        if (
            QueryLevels(self.query_level) == QueryLevels.INSTANCE
            and self.StudyInstanceUID
        ):
            params.pop("StudyInstanceUID", None)
        return params


# Characters that may stand unencoded in a query value (RFC 3986 3.4) and that
# QIDO-RS values use: wildcards, ranges, lists. Orthanc 1.10's DICOMweb plugin does
# not percent-decode query values, so "PatientName=%2A" matches nothing there while
# "PatientName=*" matches everything: send these as they are.
QUERY_SAFE = "*?,-.:/@!$'()~_"


def encode_params(params: dict[str, Any]) -> str:
    """The query string for params; list values repeat the key (includefield)."""
    return urlencode(params, doseq=True, safe=QUERY_SAFE, quote_via=quote)


def _q(uid: str) -> str:
    """A UID as one URL path segment."""
    return quote(uid.strip(), safe="")


def _result_key(dataset: Dataset) -> tuple[str | None, str | None, str | None]:
    return (
        uid_of(dataset, STUDY_UID_TAG),
        uid_of(dataset, SERIES_UID_TAG),
        uid_of(dataset, SOP_UID_TAG),
    )


class _Page(NamedTuple):
    """One answer: its results, and how it shows that the server capped it.

    ``cap`` is ``"announced"`` (a Warning or 206), ``"full"`` (exactly
    ``server_limit`` results) or ``""`` (not capped).
    """

    datasets: list[Dataset]
    cap: str


# PS3.18 8.3.4.4.1: 'There are {N} additional results that can be requested'.
# Older editions and some servers word it differently; all say "additional results".
_MORE_RESULTS = re.compile(r"additional\s+results?", re.IGNORECASE)


class QidoRS(Searcher):
    """Search a DICOMweb server with QIDO-RS.

    Parameters
    ----------
    session:
        requests session with the server's auth.
    url:
        The DICOMweb root, e.g. ``https://pacs/dicom-web``.
    timeout, retry:
        Override the defaults of :mod:`dicomtrolley.transport`.
    auto_page:
        When a query sets no ``limit`` and the server shows that it capped its
        answer (module docstring), ask for the rest with ``offset``.
    max_pages:
        Give up (ResponseFormatError) after this many pages.
    server_limit:
        The most results the server sends in one answer, when known (from its
        conformance statement) but not announced in its answers: an answer of
        exactly this size is then taken as capped too.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        *,
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
        auto_page: bool = True,
        max_pages: int = 10_000,
        server_limit: int | None = None,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.transport = HttpTransport(session, timeout=timeout, retry=retry)
        self.auto_page = auto_page
        self.max_pages = max_pages
        self.server_limit = server_limit

    def __str__(self) -> str:
        return f"QidoRS at {self.url}"

    @classmethod
    def ensure_query_type(cls, query: Query) -> QidoRSQueryBase:
        """query as a hierarchical query if possible, else as a relational one."""
        if isinstance(query, QidoRSQueryBase):
            return query
        if not isinstance(query, Query):
            raise UnSupportedParameterError(
                f'Invalid query. Expecting Query, but got "{type(query).__name__}"'
            )
        try:
            return HierarchicalQuery.init_from_query(query)
        except UnSupportedParameterError:
            return RelationalQuery.init_from_query(query)

    def find_studies(self, query: Query) -> Sequence[Study]:
        """All studies matching query, down to its query_level."""
        return studies_from_datasets(self.find_datasets(query))

    def find_datasets(self, query: Query) -> list[Dataset]:
        """The raw search results: one dataset per study, series or instance."""
        qido_query = self.ensure_query_type(query)
        url = self.url + qido_query.uri_base()
        params: dict[str, Any] = dict(qido_query.uri_search_params())
        first = self._get_page(url, params)
        if qido_query.limit or not self.auto_page or not first.cap:
            return first.datasets
        return self._remaining_pages(url, params, first)

    def _remaining_pages(
        self, url: str, params: dict[str, Any], first: _Page
    ) -> list[Dataset]:
        """Ask for the pages after a capped first answer until the server runs out.

        Paging goes on while pages show a cap the way the first one did. It
        stops at an empty page, at a page that only repeats earlier results (a
        server that ignores offset), and at a refused offset (4xx), keeping
        what arrived.
        """
        results = list(first.datasets)
        seen = {_result_key(ds) for ds in results}
        offset = int(params.get("offset", 0) or 0) + len(first.datasets)
        for _ in range(self.max_pages):
            try:
                page = self._get_page(url, {**params, "offset": str(offset)})
            except ClientHTTPError as error:
                logger.warning(
                    "%s: server refused offset=%d (%s); keeping the %d results "
                    "received",
                    url,
                    offset,
                    error.status_code,
                    len(results),
                )
                break
            new = [ds for ds in page.datasets if _result_key(ds) not in seen]
            if not new:  # the end, or a server that ignores offset
                break
            results.extend(new)
            seen.update(_result_key(ds) for ds in new)
            offset += len(page.datasets)
            if page.cap != first.cap:
                break
        else:
            raise ResponseFormatError(
                f"QIDO-RS paging did not end after {self.max_pages} pages", url=url
            )
        logger.info("%s: server paged its answer; %d results", url, len(results))
        return results

    def _get_page(self, url: str, params: dict[str, Any]) -> _Page:
        response = self.transport.get(
            url,
            params=encode_params(params),
            headers={"Accept": ACCEPT_DICOM_JSON},
            what="QIDO-RS search",
        )
        try:
            datasets = self.parse_response(response)
            return _Page(datasets, self._cap_shown(response, len(datasets)))
        finally:
            response.close()

    def _cap_shown(self, response: Any, count: int) -> str:
        """How an answer of count results shows that more can be asked for.

        ``"announced"``: a ``Warning`` saying there are additional results
        (PS3.18 8.3.4.4.1) or 206 Partial Content. ``"full"``: exactly
        ``server_limit`` results. ``""``: neither.
        """
        if not count:
            return ""
        headers = getattr(response, "headers", None) or {}
        if response.status_code == 206 or _MORE_RESULTS.search(
            headers.get("Warning", "") or ""
        ):
            return "announced"
        limit = self.server_limit
        return "full" if limit is not None and 0 < limit <= count else ""

    @staticmethod
    def check_for_response_errors(response: Any) -> None:
        """Raise for an answer that holds no results (4.1.0 API).

        Raises
        ------
        NoQueryResults
            For 204 No Content (a NoQueryResultsError).
        DICOMTrolleyError
            For an HTTP error status (DICOMTrolleyAuthError, ClientHTTPError,
            ServerHTTPError).
        """
        status = response.status_code
        if status == 204:
            raise NoQueryResults("Server returned http 204 (No Content)")
        if not 200 <= status < 300:
            raise error_for_response(response, "QIDO-RS search")

    @classmethod
    def parse_response(cls, response: Any) -> list[Dataset]:
        """Datasets from a QIDO-RS answer (204 and empty bodies give []).

        Takes a requests.Response or any object with ``status_code`` and
        ``content`` (or ``text``); ``headers`` and ``url`` are used when present.
        """
        if response.status_code == 204:
            return []
        cls.check_for_response_errors(response)
        content = content_of(response)
        if not content.strip():
            return []
        headers = getattr(response, "headers", None) or {}
        url = getattr(response, "url", None)
        content_type = (headers.get("Content-Type", "") or "").lower()
        if "html" in content_type or "xml" in content_type:
            raise ResponseFormatError(
                f"Could not parse QIDO-RS answer: it is {content_type} instead of "
                "application/dicom+json",
                url=url,
                status_code=response.status_code,
            )
        try:
            return parse_dicom_json(content)
        except ResponseFormatError as error:
            raise ResponseFormatError(
                f"Could not parse QIDO-RS answer as DICOM JSON: {error.message}",
                url=url,
                status_code=response.status_code,
            ) from error

    @staticmethod
    def parse_qido_response(response: list[dict[str, Any]]) -> list[Study]:
        """Studies from decoded QIDO-RS JSON (4.1.0 name)."""
        from dicomtrolley.formats.dicom_json import dataset_from_json_dict

        return studies_from_datasets(dataset_from_json_dict(item) for item in response)
