"""WADO-RS download (DICOMweb, PS3.18 section 10.4).

One request per series by default (``request_per_series``), or per study or
instance, each answered as ``multipart/related; type="application/dicom"``
(a single ``application/dicom`` body is accepted too). By default the instances
come in the transfer syntax they are stored in (``transfer-syntax=*``). When
saving to disk, each part is written to its file while it arrives, so memory
stays bounded by ``http_chunk_size`` whatever the size of the instances, and
several series are fetched at once over a bounded thread pool.

The 4.1.0 methods :meth:`WadoRS.download_iterator` (one request) and
:meth:`WadoRS.parse` (an answer the caller obtained itself: a requests.Response,
streamed, or any object with ``status_code``, ``headers`` and ``content``) go
through the same multipart parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any
from urllib.parse import quote

import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomtrolley.core import (
    DICOMDownloadable,
    DICOMObject,
    DICOMObjectReference,
    Downloader,
    InstanceReference,
    SeriesReference,
    StudyReference,
    to_series_level_refs,
)
from dicomtrolley.download import SaveJob
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    NoQueryResultsError,
    ResponseFormatError,
)
from dicomtrolley.formats.dicom_json import dataset_from_json_dict
from dicomtrolley.formats.multipart import (
    Event,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_from_content_type,
    parse_content_type,
)
from dicomtrolley.http import HTTPMultiPartStream
from dicomtrolley.logs import get_module_logger
from dicomtrolley.streaming import (
    SINGLE_PART_TYPES,
    datasets_from_parts,
    iter_parts,
    save_answer_with_retry,
)
from dicomtrolley.transport import HttpTransport, Retry, Timeout, error_for_response

__all__ = [
    "DICOMDownloadable",
    "DICOMObjectReference",
    "DICOMTrolleyError",
    "Dataset",
    "Downloader",
    "HTTPMultiPartStream",
    "InstanceReference",
    "NoQueryResultsError",
    "SeriesReference",
    "StudyReference",
    "WadoRS",
    "WadoRSMetaData",
    "get_module_logger",
    "logger",
    "to_series_level_refs",
]

logger = get_module_logger("wado_rs")

DEFAULT_CHUNK_SIZE = 5_242_880


def _known_instances(
    objects: Sequence[DICOMDownloadable],
) -> dict[DICOMObjectReference, list[InstanceReference]]:
    """Series whose instances a search listed, by series reference."""
    known: dict[DICOMObjectReference, list[InstanceReference]] = {}
    for obj in objects:
        if isinstance(obj, DICOMObject):
            for series in obj.all_series():
                if series.instances:
                    known[series.reference()] = [
                        i.reference() for i in series.instances
                    ]
    return known


def _all_references(objects: Sequence[DICOMDownloadable]) -> list[DICOMObjectReference]:
    return [obj.reference() for obj in objects]


class WadoRS(Downloader):
    """Download instances with WADO-RS.

    Parameters
    ----------
    session:
        requests session with the server's auth.
    url:
        The DICOMweb root, e.g. ``https://pacs/dicom-web``.
    http_chunk_size:
        Bytes read from the connection at a time; bounds memory when saving.
    request_per_series:
        Ask for each series separately (studies are split into series, which
        may need a search first). False: one request per study.
    transfer_syntax:
        ``"*"`` (default) for the stored transfer syntax, a UID to ask for a
        specific one, or None to leave the choice to the server.
    timeout, retry:
        Override the defaults of :mod:`dicomtrolley.transport`.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        http_chunk_size: int = DEFAULT_CHUNK_SIZE,
        request_per_series: bool = True,
        *,
        transfer_syntax: str | None = "*",
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.http_chunk_size = http_chunk_size
        self.request_per_series = request_per_series
        self.transfer_syntax = transfer_syntax
        self.transport = HttpTransport(session, timeout=timeout, retry=retry)

    def __str__(self) -> str:
        return f"WadoRS at {self.url}"

    @property
    def accept(self) -> str:
        value = 'multipart/related; type="application/dicom"'
        if self.transfer_syntax:
            value += f"; transfer-syntax={self.transfer_syntax}"
        return value

    def wado_rs_instance_uri(self, reference: DICOMObjectReference) -> str:
        """The WADO-RS resource URL for a study, series or instance reference."""
        uri = f"{self.url}/studies/{quote(reference.study_uid, safe='')}"
        if isinstance(reference, SeriesReference | InstanceReference):
            uri += f"/series/{quote(reference.series_uid, safe='')}"
        if isinstance(reference, InstanceReference):
            uri += f"/instances/{quote(reference.instance_uid, safe='')}"
        return uri

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        if self.request_per_series:
            to_series_level_refs(objects)

    def request_references(
        self, objects: Sequence[DICOMDownloadable]
    ) -> list[DICOMObjectReference]:
        """One reference per request: series (or instance) level by default."""
        if self.request_per_series:
            refs = to_series_level_refs(objects)
        else:
            refs = _all_references(objects)
        return list(dict.fromkeys(refs))  # drop duplicates, keep order

    def _open(self, ref: DICOMObjectReference) -> requests.Response:
        return self.transport.get(
            self.wado_rs_instance_uri(ref),
            headers={"Accept": self.accept},
            stream=True,
            what=f"WADO-RS {ref}",
            uids=ref.uids(),
        )

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        """Every instance in objects as a Dataset in memory, one request at a time."""
        items = [objects] if isinstance(objects, DICOMDownloadable) else objects
        refs = self.request_references(items)
        return chain.from_iterable(self.download_iterator(ref) for ref in refs)

    def download_iterator(self, downloadable: DICOMDownloadable) -> Iterator[Dataset]:
        """The instances of one study, series or instance: one request (4.1.0 API)."""
        ref = downloadable.reference()
        response = self._open(ref)
        try:
            yield from self._datasets_in(response, f"WADO-RS {ref}", ref.uids())
        finally:
            response.close()

    def parse(self, response: Any) -> Iterator[Dataset]:
        """The datasets in a WADO-RS answer (4.1.0 API).

        Takes a requests.Response (read while it arrives when it was asked for
        with ``stream=True``) or any object with ``status_code``, ``headers``
        and ``content``. Raises as :meth:`check_for_response_errors` does, and
        for a body that is not multipart/related or application/dicom.
        """
        self.check_for_response_errors(response)
        try:
            yield from self._datasets_in(response, "WADO-RS")
        finally:
            close = getattr(response, "close", None)
            if callable(close):
                close()

    @staticmethod
    def check_for_response_errors(response: Any) -> None:
        """Raise for an HTTP error status or an answer without Content-Type (4.1.0).

        Raises
        ------
        DICOMTrolleyError
            The transport's error for the status (DICOMTrolleyAuthError,
            ClientHTTPError, ServerHTTPError), or ResponseFormatError.
        """
        if not 200 <= response.status_code < 300:
            raise error_for_response(response, "WADO-RS")
        headers = getattr(response, "headers", None) or {}
        if not headers.get("Content-Type"):
            raise ResponseFormatError(
                "WADO-RS: Expected multipart response, but got no content type",
                url=getattr(response, "url", None),
                status_code=response.status_code,
            )

    def _datasets_in(
        self, response: Any, what: str, uids: tuple[str, ...] = ()
    ) -> Iterator[Dataset]:
        """Datasets from an answer: streamed when it can be, else from content."""
        if _is_unread(response):
            events: Iterator[Event] = iter_parts(
                response, self.http_chunk_size, what=what, uids=uids
            )
        else:
            events = _events_in_content(response, what, uids)
        yield from datasets_from_parts(events, what=what, uids=uids)

    def get_dataset(self, instance: InstanceReference) -> Dataset:
        """One instance as a Dataset."""
        datasets = list(
            datasets_from_parts(
                self._instance_events(instance),
                what=f"WADO-RS {instance}",
                uids=instance.uids(),
            )
        )
        if len(datasets) != 1:
            raise ResponseFormatError(
                f"WADO-RS: expected 1 instance for {instance}, got {len(datasets)}",
                url=self.wado_rs_instance_uri(instance),
                uids=instance.uids(),
            )
        return datasets[0]

    def _instance_events(self, ref: DICOMObjectReference) -> Iterator[Event]:
        response = self._open(ref)
        try:
            yield from iter_parts(
                response,
                self.http_chunk_size,
                what=f"WADO-RS {ref}",
                uids=ref.uids(),
            )
        finally:
            response.close()

    # -- save_all (the template of Downloader) --------------------------------

    failures_per_unit = True

    def plan_saves(self, job: SaveJob) -> Sequence[DICOMObjectReference]:
        """One request per reference, less what is on disk.

        A series whose instances the search listed, all intact on disk, is
        skipped whole; so is an instance reference whose file is there.
        """
        known = _known_instances(job.objects)
        refs = [
            ref
            for ref in self.request_references(job.objects)
            if not job.skip_if_present(known.get(ref, []))
        ]
        return job.skip_present(refs)

    def prepare_workers(self, workers: int) -> None:
        self.transport.ensure_pool_size(workers)

    def save_unit(self, job: SaveJob, unit: DICOMObjectReference) -> None:
        """Stream every instance of one answer to its file while it arrives."""
        save_answer_with_retry(
            lambda: self._open(unit),
            self.transport.retry,
            job,
            chunk_size=self.http_chunk_size,
            what=f"WADO-RS {unit}",
            uids=unit.uids(),
            expected=unit if isinstance(unit, InstanceReference) else None,
            announce_length=True,
        )


class WadoRSMetaData(WadoRS):
    """WADO-RS ``/metadata``: every instance's attributes without pixel data.

    Yields Datasets built from the DICOM JSON answer, with a file meta header so
    they can be saved as (pixel-less) DICOM files.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        *,
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
    ) -> None:
        super().__init__(
            session, url, request_per_series=False, timeout=timeout, retry=retry
        )

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        return None

    def wado_rs_instance_uri(self, reference: DICOMObjectReference) -> str:
        """The ``/metadata`` URL for a study, series or instance reference."""
        return super().wado_rs_instance_uri(reference) + "/metadata"

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        items = [objects] if isinstance(objects, DICOMDownloadable) else objects
        refs = self.request_references(items)
        return chain.from_iterable(self.download_iterator(ref) for ref in refs)

    def download_iterator(self, downloadable: DICOMDownloadable) -> Iterator[Dataset]:
        """The metadata of one study, series or instance: one request (4.1.0 API).

        204 No Content gives no datasets.
        """
        ref = downloadable.reference()
        what = f"WADO-RS metadata {ref}"
        response = self.transport.get(
            self.wado_rs_instance_uri(ref),
            headers={"Accept": "application/dicom+json"},
            what=what,
            uids=ref.uids(),
        )
        if response.status_code == 204:
            return
        try:
            items_json = json.loads(response.content)
        except ValueError as error:
            raise ResponseFormatError(
                f"{what}: Could not parse the answer as JSON: {error}",
                url=response.url,
                uids=ref.uids(),
            ) from error
        if not isinstance(items_json, list):
            raise ResponseFormatError(
                f"{what}: expected a JSON array",
                url=response.url,
                uids=ref.uids(),
            )
        for item in items_json:
            yield make_writable(dataset_from_json_dict(item))

    @staticmethod
    def check_for_response_errors(response: Any) -> None:
        """Raise for 204 No Content or an HTTP error status (4.1.0 API).

        Raises
        ------
        NoQueryResultsError
            For 204.
        DICOMTrolleyError
            The transport's error for an error status.
        """
        if response.status_code == 204:
            raise NoQueryResultsError("Server returned http 204 (No Content)")
        if not 200 <= response.status_code < 300:
            raise error_for_response(response, "WADO-RS metadata")

    @classmethod
    def bulk_data_reader(cls, tag: Any, vr: str, bulk_data_uri: str) -> None:
        """A pydicom ``bulk_data_uri_handler`` that fetches nothing (4.1.0 API)."""
        logger.debug("Metadata only: not fetching bulk data at %s", bulk_data_uri)

    def get_dataset(self, instance: InstanceReference) -> Dataset:
        datasets = list(self.datasets([instance]))
        if len(datasets) != 1:
            raise ResponseFormatError(
                f"WADO-RS metadata: expected 1 instance for {instance}, got "
                f"{len(datasets)}",
                url=self.wado_rs_instance_uri(instance),
                uids=instance.uids(),
            )
        return datasets[0]

    # the metadata are saved from memory, as Downloader does by default
    failures_per_unit = False

    def plan_saves(self, job: SaveJob) -> Sequence[Any]:
        return Downloader.plan_saves(self, job)

    def prepare_workers(self, workers: int) -> None:
        return None

    def save_unit(self, job: SaveJob, unit: Any) -> None:
        Downloader.save_unit(self, job, unit)


def _is_unread(response: Any) -> bool:
    """True for a requests.Response whose body is still on the connection."""
    return (
        isinstance(response, requests.Response)
        and not getattr(response, "_content_consumed", True)
        and response.raw is not None
    )


def _events_in_content(
    response: Any, what: str, uids: tuple[str, ...]
) -> Iterator[Event]:
    """Part events of an answer whose body is already in memory (``content``)."""
    headers = getattr(response, "headers", None) or {}
    content_type = headers.get("Content-Type", "") or ""
    content = bytes(getattr(response, "content", None) or b"")
    media_type, _ = parse_content_type(content_type) if content_type else ("", {})
    if media_type.startswith("multipart/"):
        parser = MultipartParser(boundary_from_content_type(content_type))
        yield from parser.feed(content)
        yield from parser.close()
    elif media_type in SINGLE_PART_TYPES:
        yield PartStart(headers={"content-type": media_type})
        yield PartData(content)
        yield PartEnd()
    else:
        raise ResponseFormatError(
            f"{what}: Expected multipart response, got "
            f"{content_type or 'no content type'}",
            url=getattr(response, "url", None),
            uids=uids,
        )


def make_writable(dataset: Dataset) -> Dataset:
    """Give a dataset from JSON a file meta header so pydicom can save it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta = meta
    for tag in [
        t for t, e in dataset.items() if e.VR in ("OB", "OW", "UN") and e.value is None
    ]:
        del dataset[tag]
    return dataset
