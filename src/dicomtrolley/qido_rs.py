"""QIDO-RS search (DICOMweb, PS3.18 section 10.6).

:class:`QidoRS` turns a query into ``GET {url}/studies`` (and the series and
instance resources), asks for ``application/dicom+json``, follows a server's
result cap by paging with ``offset``, and builds the study tree from the answer.
A plain :class:`~dicomtrolley.core.Query` is sent as a hierarchical query when it
can be (``/studies/{S}/series``), else as a relational one (``/series``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import requests
from pydantic import model_validator
from pydicom.dataset import Dataset

from dicomtrolley.core import Query, QueryLevels, Searcher, Study
from dicomtrolley.exceptions import (
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
    studies_from_datasets,
    uid_of,
)
from dicomtrolley.transport import HttpTransport, Retry, Timeout

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
    def _min_max_study_date_together(self) -> QidoRSQueryBase:
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

    @classmethod
    def date_range_to_str(
        cls, min_date: datetime | None, max_date: datetime | None
    ) -> str:
        if not min_date and not max_date:
            raise UnSupportedParameterError(
                "Cannot create a date range without any dates"
            )
        return f"{cls.date_to_str(min_date)}-{cls.date_to_str(max_date)}"

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
    def _uids_hierarchical(self) -> HierarchicalQuery:
        if self.SeriesInstanceUID and not self.StudyInstanceUID:
            raise ValueError(
                "This query is not hierarchical: SeriesInstanceUID is given but its "
                "parent StudyInstanceUID is not. Add it or use a RelationalQuery"
            )
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
    def _not_study_level(self) -> RelationalQuery:
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
        When a query sets no ``limit``, keep asking with ``offset`` until the
        server has sent everything (servers cap large answers). Costs one extra
        small request per search; turn off for servers that ignore ``offset``.
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
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.transport = HttpTransport(session, timeout=timeout, retry=retry)
        self.auto_page = auto_page
        self.max_pages = max_pages

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
        results = self._get_page(url, params)
        if qido_query.limit or not self.auto_page or not results:
            return results
        return self._remaining_pages(url, params, results)

    def _remaining_pages(
        self, url: str, params: dict[str, Any], first: list[Dataset]
    ) -> list[Dataset]:
        """Ask for more pages after `first` until the server runs out.

        The first page's length is taken as the server's cap: paging stops at an
        empty or shorter page, or when a page repeats what came before (a server
        that ignores offset).
        """
        results = list(first)
        seen: set[tuple[str | None, str | None, str | None]] | None = None
        page_size = len(first)
        offset = int(params.get("offset", 0) or 0)
        for _ in range(self.max_pages):
            offset += page_size if page_size else 0
            page = self._get_page(url, {**params, "offset": str(offset)})
            if not page:
                break
            if seen is None:  # only now: most servers end after the first page
                seen = {_result_key(ds) for ds in results}
            new = [ds for ds in page if _result_key(ds) not in seen]
            if not new:  # the end, or a server that ignores offset
                break
            results.extend(new)
            seen.update(_result_key(ds) for ds in new)
            if len(page) < page_size:
                break
            page_size = len(page)
        else:
            raise ResponseFormatError(
                f"QIDO-RS paging did not end after {self.max_pages} pages", url=url
            )
        if len(results) > len(first):
            logger.info("%s: server paged its answer; %d results", url, len(results))
        return results

    def _get_page(self, url: str, params: dict[str, Any]) -> list[Dataset]:
        response = self.transport.get(
            url,
            params=encode_params(params),
            headers={"Accept": ACCEPT_DICOM_JSON},
            what="QIDO-RS search",
        )
        try:
            return self.parse_response(response)
        finally:
            response.close()

    @staticmethod
    def parse_response(response: requests.Response) -> list[Dataset]:
        """Datasets from a QIDO-RS answer (204 and empty bodies give [])."""
        if response.status_code == 204 or not response.content.strip():
            return []
        content_type = response.headers.get("Content-Type", "").lower()
        if "html" in content_type or "xml" in content_type:
            raise ResponseFormatError(
                f"QIDO-RS answered {content_type or 'without a content type'} "
                "instead of application/dicom+json",
                url=response.url,
                status_code=response.status_code,
            )
        try:
            return parse_dicom_json(response.content)
        except ResponseFormatError as error:
            raise ResponseFormatError(
                f"QIDO-RS answer is not valid DICOM JSON: {error.message}",
                url=response.url,
                status_code=response.status_code,
            ) from error

    @staticmethod
    def parse_qido_response(response: list[dict[str, Any]]) -> list[Study]:
        """Studies from decoded QIDO-RS JSON (4.1.0 name)."""
        from dicomtrolley.formats.dicom_json import dataset_from_json_dict

        return studies_from_datasets(dataset_from_json_dict(item) for item in response)
