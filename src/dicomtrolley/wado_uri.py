"""WADO-URI download (PS3.18 section 9): one GET per instance.

``GET {url}?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…&contentType=application/dicom``.
The ``/`` in ``application/dicom`` is sent as is: Orthanc answers 400 to the
percent-encoded form that dicomtrolley 4.1.0 sends. WADO-URI needs instance
references: studies and series raise NonInstanceParameterError, and the Trolley
searches for their instances (4.1.0 crashed here with ``use_async=True``).
Instances already on disk and intact are skipped when saving.
:meth:`WadoURI.parse_wado_response` (4.1.0) reads an answer the caller obtained
itself: a requests.Response or any object with ``status_code`` and ``content``.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any
from urllib.parse import quote

import requests
from pydicom.dataset import Dataset
from requests import Response

from dicomtrolley.core import (
    DICOMDownloadable,
    Downloader,
    InstanceReference,
    to_instance_refs,
)
from dicomtrolley.download import SaveJob
from dicomtrolley.exceptions import DICOMTrolleyError, ResponseFormatError
from dicomtrolley.logs import get_module_logger
from dicomtrolley.streaming import (
    datasets_from_parts,
    iter_parts,
    read_dataset,
    save_answer_with_retry,
)
from dicomtrolley.transport import (
    HttpTransport,
    Retry,
    Timeout,
    error_for_response,
    read_with_retry,
)

__all__ = [
    "DICOMDownloadable",
    "DICOMTrolleyError",
    "Dataset",
    "Downloader",
    "InstanceReference",
    "Response",
    "WadoURI",
    "to_instance_refs",
]

logger = get_module_logger("wado_uri")

CHUNK_SIZE = 1_048_576


class WadoURI(Downloader):
    """Download instances with WADO-URI, one request each.

    Parameters
    ----------
    session:
        requests session with the server's auth.
    url:
        The WADO-URI endpoint, e.g. ``https://pacs/wado``.
    use_async:
        Download several instances at once in :meth:`datasets`.
    max_workers:
        How many at once (default 4) with use_async, and in :meth:`save_all`
        when the Trolley passes none.
    timeout, retry:
        Override the defaults of :mod:`dicomtrolley.transport`.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        use_async: bool = False,
        max_workers: int | None = None,
        *,
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.session = session
        self.url = url
        self.use_async = use_async
        self.max_workers = max_workers
        self.transport = HttpTransport(session, timeout=timeout, retry=retry)

    def __str__(self) -> str:
        return f"WadoURI at {self.url}"

    @staticmethod
    def to_wado_parameters(instance: InstanceReference) -> dict[str, str]:
        return {
            "requestType": "WADO",
            "studyUID": instance.study_uid,
            "seriesUID": instance.series_uid,
            "objectUID": instance.instance_uid,
            "contentType": "application/dicom",
        }

    @classmethod
    def query_string(cls, instance: InstanceReference) -> str:
        """The encoded query; ``/`` stays literal (legal in a query string)."""
        return "&".join(
            f"{key}={quote(value, safe='/')}"
            for key, value in cls.to_wado_parameters(instance).items()
        )

    def _open(self, instance: InstanceReference) -> requests.Response:
        return self.transport.get(
            self.url,
            params=self.query_string(instance),
            headers={"Accept": "application/dicom, */*;q=0.5"},
            stream=True,
            what=f"WADO-URI {instance}",
            uids=instance.uids(),
        )

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        to_instance_refs(objects)

    @staticmethod
    def parse_wado_response(response: Any) -> Dataset:
        """The Dataset in a WADO-URI answer (4.1.0 API).

        Takes a requests.Response or any object with ``status_code`` and
        ``content``. An HTTP error status raises the transport's error for it
        (DICOMTrolleyAuthError, ClientHTTPError, ServerHTTPError); a body that
        is not a DICOM file raises DICOMParseError.
        """
        if not 200 <= response.status_code < 300:
            raise error_for_response(response, "WADO-URI")
        content = getattr(response, "content", None) or b""
        return read_dataset(io.BytesIO(content), "WADO-URI")

    def get_dataset(self, instance: InstanceReference) -> Dataset:
        """One instance as a Dataset in memory."""

        what = f"WADO-URI {instance}"

        def read(response: requests.Response) -> Dataset:
            events = iter_parts(response, CHUNK_SIZE, what=what, uids=instance.uids())
            datasets = list(
                datasets_from_parts(events, what=what, uids=instance.uids())
            )
            if len(datasets) != 1:
                raise ResponseFormatError(
                    f"{what}: expected one instance, got {len(datasets)}",
                    url=response.url,
                    uids=instance.uids(),
                )
            return datasets[0]

        return read_with_retry(
            lambda: self._open(instance), read, self.transport.retry, what=what
        )

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        """Every instance as a Dataset, in order. Several at once with use_async."""
        items = [objects] if isinstance(objects, DICOMDownloadable) else objects
        if self.use_async:
            yield from self.datasets_async(items, max_workers=self.max_workers)
        else:
            yield from self.datasets_single_thread(items)

    def datasets_single_thread(
        self, objects: Sequence[DICOMDownloadable]
    ) -> Iterator[Dataset]:
        """Every instance as a Dataset, one request at a time (4.1.0 API)."""
        for ref in to_instance_refs(objects):
            yield self.get_dataset(ref)

    def datasets_async(
        self, objects: Sequence[DICOMDownloadable], max_workers: int | None = None
    ) -> Iterator[Dataset]:
        """Every instance, fetched max_workers at a time; yielded in order.

        At most ``2 * max_workers`` instances are asked for ahead of the one
        being yielded, so memory stays bounded when the caller is slower than
        the server, and stopping early leaves the rest unrequested.
        """
        refs = iter(to_instance_refs(objects))
        workers = max(1, max_workers or self.max_workers or 4)
        self.transport.ensure_pool_size(workers)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wado-uri")
        pending: deque[Future[Dataset]] = deque(
            pool.submit(self.get_dataset, ref) for ref in islice(refs, 2 * workers)
        )
        try:
            while pending:
                dataset = pending.popleft().result()
                following = next(refs, None)
                if following is not None:
                    pending.append(pool.submit(self.get_dataset, following))
                yield dataset
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- save_all (the template of Downloader) --------------------------------

    failures_per_unit = True

    def plan_saves(self, job: SaveJob) -> list[InstanceReference]:
        """One request per instance not yet on disk."""
        refs = list(dict.fromkeys(to_instance_refs(job.objects)))
        todo = job.skip_present(refs)
        job.progress.add_total(instances=len(todo))
        return todo

    def save_workers(self, job: SaveJob) -> int:
        if job.max_workers and job.max_workers > 1:
            return job.max_workers
        return self.max_workers or 1

    def prepare_workers(self, workers: int) -> None:
        self.transport.ensure_pool_size(workers)

    def save_unit(self, job: SaveJob, unit: InstanceReference) -> None:
        """Stream one instance to its file, fetched again if its answer breaks off."""
        save_answer_with_retry(
            lambda: self._open(unit),
            self.transport.retry,
            job,
            chunk_size=CHUNK_SIZE,
            what=f"WADO-URI {unit}",
            uids=unit.uids(),
            expected=unit,
        )
