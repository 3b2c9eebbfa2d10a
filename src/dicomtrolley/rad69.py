"""IHE RAD-69 Retrieve Imaging Document Set (IHE RAD TF-2 4.69; ITI TF-2b 3.43).

One SOAP 1.2 POST asks for a set of SOP instances (``DocumentRequest`` s); the
answer is an MTOM/XOP ``multipart/related`` message: a SOAP root part listing a
``DocumentResponse`` per document, then one ``application/dicom`` part per
document, which is written to its file while it arrives. Errors come back as a
plain SOAP envelope with status Failure and a ``RegistryErrorList``, or as a
SOAP Fault. The XML and MTOM work is done by :mod:`dicomtrolley.formats.soap`;
this module only sends requests and hands bytes on.

RAD-69 names instances, never whole studies or series: given those, the
downloader raises :class:`~dicomtrolley.exceptions.NonInstanceParameterError`
and the Trolley searches for the instances first.

Choices, where dicomtrolley 4.1.0 or the profile leave room:

- Requests: one per series by default (``request_per_series``). Otherwise in
  batches of ``batch_size`` documents (any mix of studies and series), or, when
  no batch size is given, the instances split evenly over the workers (one
  request when there is one worker), as 4.1.0 did.
- Transfer syntaxes: 4.1.0's list, JPEG Lossless SV1, Implicit VR Little
  Endian, Explicit VR Little Endian, by default. RAD-69 has no wildcard: the
  server sends each document in one of the listed syntaxes or fails it
  (``urn:dicom:wado:0007``); add the syntaxes your PACS stores (JPEG 2000,
  JPEG baseline ...) to receive them as stored. Reading JPEG Lossless pixel data
  with pydicom needs a decoder plugin (pylibjpeg or GDCM).
- ``RepositoryUniqueId``: ``1.3.6.1.4.1000``, the value 4.1.0 sent (Vitrea
  does not check it). Set ``repository_unique_id`` to your Imaging Document
  Source's id for servers that do.
- Retries: POST is not retried by :class:`~dicomtrolley.transport.Retry` by
  default, but a RAD-69 retrieve changes nothing on the server, so the default
  policy here is the transport's default with POST allowed
  (:data:`RAD69_RETRY`). A ``retry=`` given is used as it is. When an answer
  breaks off, the next try asks only for the documents not yet saved.
- ``errors_to_ignore``: exception classes (e.g. ``[XDSMissingDocumentError]``),
  read when an error comes, so it may be set or changed after construction.
  As in 4.1.0, a request whose error is an instance of one of them is logged
  and skipped; the other requests go on, and what the request did deliver
  (PartialSuccess) is kept. In :meth:`Rad69.save_all` other errors go into the
  download report (the Trolley raises them at the end); in
  :meth:`Rad69.datasets` they are raised after the datasets that did arrive.

The 4.1.0 methods that work on an answer the caller obtained itself
(:meth:`Rad69.check_for_response_errors`, :meth:`Rad69.parse_rad69_response`,
:meth:`Rad69.parse_rad69_soap_error_response`) take a requests.Response or any
object with ``status_code``, ``headers`` and ``content``.

Status handling: Success gives every document. PartialSuccess saves what came
and then raises for what did not. Failure raises
:class:`~dicomtrolley.exceptions.XDSMissingDocumentError` when every error is
``XDSMissingDocument`` (``uids`` = their locations), else
:class:`~dicomtrolley.exceptions.Rad69ServerError` with the server's codes,
messages and locations; a SOAP Fault is a Rad69ServerError too.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any, NoReturn, Protocol

import requests
from pydicom.dataset import Dataset

from dicomtrolley.body import content_of
from dicomtrolley.core import (
    DICOMDownloadable,
    Downloader,
    InstanceReference,
    to_instance_refs,
)
from dicomtrolley.download import Progress, SaveJob
from dicomtrolley.exceptions import (
    DICOMParseError,
    DICOMTrolleyError,
    IncompleteResponseError,
    InvalidUIDError,
    Rad69ServerError,
    ResponseFormatError,
    TransientError,
    XDSMissingDocumentError,
)
from dicomtrolley.formats.multipart import (
    Event,
    MultipartParser,
    boundary_from_content_type,
    parse_content_type,
)
from dicomtrolley.formats.soap import (
    FAILURE,
    MAX_ROOT_BYTES,
    PARTIAL_SUCCESS,
    SOAP_CONTENT_TYPE,
    SUCCESS,
    AttachmentSink,
    DocumentResponse,
    RegistryError,
    XopReader,
    XopResult,
    build_request,
    parse_response,
)
from dicomtrolley.http import HTTPMultiPartStream
from dicomtrolley.logs import get_module_logger
from dicomtrolley.parsing import DICOMParseTree
from dicomtrolley.streaming import (
    PartFile,
    iter_body,
    iter_parts,
    prove_headers_complete,
    read_dataset,
)
from dicomtrolley.transport import (
    DEFAULT_RETRY,
    HttpTransport,
    Retry,
    Timeout,
    error_for_response,
    read_with_retry,
)
from dicomtrolley.uids import check_uid
from dicomtrolley.xml_templates import (
    RAD69_SOAP_REQUEST_TEMPLATE,
    RAD69_SOAP_RESPONSE_ERROR_XPATH,
)

__all__ = [
    "DEFAULT_REPOSITORY_UNIQUE_ID",
    "DEFAULT_TRANSFER_SYNTAXES",
    "RAD69_RETRY",
    "RAD69_SOAP_REQUEST_TEMPLATE",
    "RAD69_SOAP_RESPONSE_ERROR_XPATH",
    "DICOMDownloadable",
    "DICOMParseTree",
    "DICOMTrolleyError",
    "Downloader",
    "HTTPMultiPartStream",
    "InstanceReference",
    "Rad69",
    "Rad69ServerError",
    "XDSMissingDocumentError",
    "get_module_logger",
    "logger",
    "to_instance_refs",
]

logger = get_module_logger("rad69")

#: JPEG Lossless SV1, Implicit VR Little Endian, Explicit VR Little Endian (4.1.0).
DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
)
#: The RepositoryUniqueId dicomtrolley 4.1.0 sent in every DocumentRequest.
DEFAULT_REPOSITORY_UNIQUE_ID = "1.3.6.1.4.1000"
#: The transport's default retry policy, with POST allowed (retrieving is safe).
RAD69_RETRY = Retry(allowed_methods=DEFAULT_RETRY.allowed_methods | {"POST"})
DEFAULT_CHUNK_SIZE = 1_048_576
ACCEPT = "multipart/related, application/soap+xml"
#: Error statuses whose body may be a SOAP envelope (SOAP 1.2 Part 2, 7.5.2).
SOAP_ERROR_STATUSES = (400, 500)
_SOAP_TYPES = ("application/soap+xml", "application/xop+xml", "text/xml")
_LISTED = 10


@dataclass(frozen=True)
class _Batch:
    """The documents of one request, and how to name it in messages."""

    refs: tuple[InstanceReference, ...]
    label: str

    def __str__(self) -> str:
        return f"RAD-69 {self.label} ({len(self.refs)} instance(s))"

    def uids(self) -> tuple[str, ...]:
        return tuple(ref.instance_uid for ref in self.refs)


class Rad69(Downloader):
    """Download instances with IHE RAD-69 (SOAP/MTOM).

    Parameters
    ----------
    session:
        requests session with the server's auth (e.g. a Vitrea login).
    url:
        The RAD-69 endpoint, e.g. ``https://server/rids``.
    request_per_series:
        One request per series (default). False: batches (see ``batch_size``).
    errors_to_ignore:
        Exception classes whose errors skip a request instead of failing the
        download (see the module docstring).
    use_async:
        Run several requests at once, ``max_workers`` at most.
    max_workers:
        Requests in flight with use_async (default 4).
    transfer_syntax_list:
        Transfer syntax UIDs the server may answer in. RAD-69 has no wildcard.
    repository_unique_id:
        The RepositoryUniqueId of every DocumentRequest.
    to_address:
        WS-Addressing ``To``; default the url.
    batch_size:
        At most this many documents per request. Not per series, the default
        splits all documents evenly over the workers; per series, a series is
        split only when batch_size is given.
    http_chunk_size:
        Bytes read from the connection at a time; bounds memory when saving.
    timeout, retry:
        Override the defaults (:data:`RAD69_RETRY` retries POST).
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        request_per_series: bool = True,
        errors_to_ignore: Collection[type[BaseException]] | None = None,
        use_async: bool = False,
        max_workers: int = 4,
        *,
        transfer_syntax_list: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
        repository_unique_id: str = DEFAULT_REPOSITORY_UNIQUE_ID,
        to_address: str | None = None,
        batch_size: int | None = None,
        http_chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: Timeout | float | None = None,
        retry: Retry | None = None,
    ) -> None:
        if not transfer_syntax_list or isinstance(transfer_syntax_list, str):
            raise ValueError("transfer_syntax_list must be a non-empty list of UIDs")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.session = session
        self.url = url
        self.request_per_series = request_per_series
        # kept as given, and read when an error comes: may be reassigned later
        self.errors_to_ignore: Collection[type[BaseException]] = (
            [] if errors_to_ignore is None else errors_to_ignore
        )
        self.post_headers: dict[str, str] = {"Content-Type": SOAP_CONTENT_TYPE}
        self._template = RAD69_SOAP_REQUEST_TEMPLATE
        self.use_async = use_async
        self.max_workers = max_workers
        self.transfer_syntax_list = tuple(
            check_uid(uid, "TransferSyntaxUID") for uid in transfer_syntax_list
        )
        self.repository_unique_id = check_uid(
            repository_unique_id, "RepositoryUniqueId"
        )
        self.to_address = to_address or url
        self.batch_size = batch_size
        self.http_chunk_size = http_chunk_size
        self.transport = HttpTransport(
            session, timeout=timeout, retry=RAD69_RETRY if retry is None else retry
        )

    def __str__(self) -> str:
        return f"Rad69 at {self.url}"

    @property
    def template(self) -> str:
        """4.1.0's Jinja2 request template; requests no longer use it."""
        return self._template

    @template.setter
    def template(self, value: str) -> None:
        warnings.warn(
            "Rad69.template is not used: requests are built by "
            "dicomtrolley.formats.soap.build_request; set transfer_syntax_list, "
            "repository_unique_id or to_address instead",
            DeprecationWarning,
            stacklevel=2,
        )
        self._template = value

    # -- requests ------------------------------------------------------------

    def check_references(self, objects: Sequence[DICOMDownloadable]) -> None:
        to_instance_refs(objects)

    def request_body(self, refs: Sequence[InstanceReference]) -> bytes:
        """The SOAP envelope asking for refs."""
        return build_request(
            refs,
            to=self.to_address,
            transfer_syntaxes=self.transfer_syntax_list,
            repository_unique_id=self.repository_unique_id,
        )

    def create_instances_request(self, instances: Sequence[InstanceReference]) -> str:
        """The SOAP envelope asking for instances, as text (4.1.0 API)."""
        return self.request_body(instances).decode("utf-8")

    def create_instance_request(self, instance: InstanceReference) -> str:
        """The SOAP envelope asking for one instance, as text (4.1.0 API)."""
        return self.create_instances_request([instance])

    def request_batches(
        self, refs: Sequence[InstanceReference], workers: int = 1
    ) -> list[_Batch]:
        """The requests for refs: per series, or in batches."""
        refs = list(dict.fromkeys(refs))
        if not refs:
            return []
        if self.request_per_series:
            groups: dict[tuple[str, str], list[InstanceReference]] = {}
            for ref in refs:
                groups.setdefault((ref.study_uid, ref.series_uid), []).append(ref)
            batches: list[_Batch] = []
            for (_, series), group in groups.items():
                chunks = _chunks(group, self.batch_size or len(group))
                for n, chunk in enumerate(chunks, start=1):
                    part = f" part {n} of {len(chunks)}" if len(chunks) > 1 else ""
                    batches.append(_Batch(tuple(chunk), f"series {series}{part}"))
            return batches
        size = self.batch_size or math.ceil(len(refs) / max(1, workers))
        chunks = _chunks(refs, size)
        return [
            _Batch(tuple(chunk), f"batch {n} of {len(chunks)}")
            for n, chunk in enumerate(chunks, start=1)
        ]

    def _post(self, refs: Sequence[InstanceReference], what: str) -> requests.Response:
        return self.transport.request(
            "POST",
            self.url,
            data=self.request_body(refs),
            headers={"Accept": ACCEPT, **self.post_headers},
            stream=True,
            what=what,
            uids=tuple(ref.instance_uid for ref in refs),
            ok_statuses=SOAP_ERROR_STATUSES,
        )

    def _workers(self, max_workers: int | None = None) -> int:
        if max_workers is not None and max_workers > 1:
            return max_workers
        return max(1, self.max_workers) if self.use_async else 1

    def _ignored(self, error: BaseException) -> bool:
        """True when error is an instance of a class in errors_to_ignore (now)."""
        ignore: Any = self.errors_to_ignore or ()
        classes = (ignore,) if isinstance(ignore, type) else tuple(ignore)
        return isinstance(error, classes)

    def handle_response_error(self, error: BaseException) -> None:
        """Log an ignored error and return; raise any other (4.1.0 API)."""
        if not self._ignored(error):
            raise error
        logger.warning("Ignoring error: %s", error)

    # -- one request, tried again when its answer breaks off ----------------

    def _fetch(
        self,
        batch: _Batch,
        new_sink: Callable[[], _Sink],
        done: set[str],
        progress: Progress | None = None,
    ) -> None:
        """Ask for the documents of batch not in done; sinks add what they save.

        A cut answer is asked again for the documents still missing.
        """
        what = str(batch)
        asked: list[InstanceReference] = []

        def open_response() -> requests.Response:
            asked[:] = [ref for ref in batch.refs if ref.instance_uid not in done]
            return self._post(asked, what)

        def read(response: requests.Response) -> None:
            wanted = {ref.instance_uid: ref for ref in asked}
            try:
                self._read_answer(response, wanted, new_sink, done, what, progress)
            except TransientError:
                if all(uid in done for uid in wanted):
                    logger.info("%s: answer broke off after the last document", what)
                    return
                raise

        try:
            read_with_retry(open_response, read, self.transport.retry, what=what)
        except DICOMTrolleyError as error:
            # name what did not arrive; a server's report names its own UIDs
            missing = tuple(uid for uid in batch.uids() if uid not in done)
            if missing and not isinstance(error, Rad69ServerError | InvalidUIDError):
                error.uids = missing
            raise

    def _read_answer(
        self,
        response: requests.Response,
        wanted: dict[str, InstanceReference],
        new_sink: Callable[[], _Sink],
        done: set[str],
        what: str,
        progress: Progress | None,
    ) -> None:
        """Read one answer: save its documents, then raise for what is missing."""
        content_type = response.headers.get("Content-Type", "")
        media_type, _ = parse_content_type(content_type)
        uids = tuple(wanted)
        is_soap = media_type in _SOAP_TYPES
        if response.status_code >= 400 and not is_soap:
            raise error_for_response(response, what, uids)

        def open_sink(content_id: str) -> AttachmentSink:
            return _Dispatch(wanted, done, new_sink(), what)

        reader = XopReader.for_content_type(content_type, open_sink)
        try:
            if media_type.startswith("multipart/"):
                length = response.headers.get("Content-Length", "")
                if progress is not None and length.isdigit():
                    progress.add_total(nbytes=int(length))
                for event in iter_parts(
                    response,
                    self.http_chunk_size,
                    what=what,
                    uids=uids,
                    progress=progress,
                ):
                    reader.feed(event)
            elif is_soap:
                reader.feed_body(content_type, self._small_body(response, what, uids))
            else:
                prove_headers_complete(response, what=what, uids=uids)
                raise ResponseFormatError(
                    f"{what}: Expected multipart response (multipart/related) or "
                    f"application/soap+xml, got {content_type or 'no Content-Type'}: "
                    f"{_peek(response)!r}",
                    url=response.url,
                    status_code=response.status_code,
                    uids=uids,
                )
            result = reader.close()
        except DICOMTrolleyError as error:
            reader.abort()
            error.url = error.url or response.url
            if not error.uids:
                error.uids = uids
            if what not in error.message:
                error.message = f"{what}: {error.message}"
                error.args = (error.message,)
            raise
        except BaseException:
            reader.abort()
            raise
        failure = _outcome_error(result, wanted, done, what)
        if failure is not None:
            failure.url = response.url
            failure.status_code = response.status_code
            raise failure

    def _small_body(
        self, response: requests.Response, what: str, uids: tuple[str, ...]
    ) -> bytes:
        """A plain SOAP answer, read whole (it is small), or an error."""
        body = bytearray()
        for chunk in iter_body(response, self.http_chunk_size, what=what, uids=uids):
            body += chunk
            if len(body) > MAX_ROOT_BYTES:
                raise ResponseFormatError(
                    f"{what}: SOAP answer larger than {MAX_ROOT_BYTES} bytes",
                    url=response.url,
                    uids=uids,
                )
        length = response.headers.get("Content-Length", "").strip()
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if (
            length.isdigit()
            and encoding in ("", "identity")
            and len(body) < int(length)
        ):
            raise IncompleteResponseError(
                f"{what}: answer ended after {len(body)} of {length} bytes",
                url=response.url,
                uids=uids,
            )
        return bytes(body)

    # -- public downloads ----------------------------------------------------

    def get_dataset(self, instance: InstanceReference) -> Dataset:
        """One instance as a Dataset (errors are raised, even ignored ones)."""
        datasets, error = self._batch_datasets(_Batch((instance,), "instance"))
        if error is not None:
            raise error
        if len(datasets) != 1:
            raise ResponseFormatError(
                f"RAD-69: expected 1 instance for {instance}, got {len(datasets)}",
                url=self.url,
                uids=(instance.instance_uid,),
            )
        return datasets[0]

    def datasets(self, objects: Sequence[DICOMDownloadable]) -> Iterator[Dataset]:
        """Every instance in objects as a Dataset in memory.

        With use_async, up to max_workers requests run at once (see
        :meth:`datasets_async`); else one at a time.
        """
        items = [objects] if isinstance(objects, DICOMDownloadable) else objects
        if self.use_async:
            return self.datasets_async(items, self.max_workers)
        return self.datasets_single_thread(items)

    def datasets_single_thread(
        self, objects: Sequence[DICOMDownloadable]
    ) -> Iterator[Dataset]:
        """Every instance in objects, one request at a time (4.1.0 API)."""
        for batch in self.request_batches(to_instance_refs(objects)):
            yield from self._yield_batch(self._batch_datasets(batch))

    def datasets_async(
        self, objects: Sequence[DICOMDownloadable], max_workers: int | None = None
    ) -> Iterator[Dataset]:
        """Every instance in objects, max_workers requests at a time (4.1.0 API).

        Requests run at most ``2 * max_workers`` ahead of the one being
        yielded; datasets come in request order. max_workers None means one.
        """
        workers = max(1, max_workers or 1)
        batches = self.request_batches(to_instance_refs(objects), workers)
        if workers == 1 or len(batches) <= 1:
            for batch in batches:
                yield from self._yield_batch(self._batch_datasets(batch))
            return
        self.transport.ensure_pool_size(workers)
        todo = iter(batches)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rad69")
        pending: deque[Future[tuple[list[Dataset], DICOMTrolleyError | None]]] = deque(
            pool.submit(self._batch_datasets, b) for b in islice(todo, 2 * workers)
        )
        try:
            while pending:
                outcome = pending.popleft().result()
                following = next(todo, None)
                if following is not None:
                    pending.append(pool.submit(self._batch_datasets, following))
                yield from self._yield_batch(outcome)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def download_iterator(
        self, instances: Sequence[InstanceReference]
    ) -> Iterator[Dataset]:
        """The instances, asked for in one request (4.1.0 API)."""
        refs = tuple(dict.fromkeys(instances))
        if refs:
            yield from self._yield_batch(self._batch_datasets(_Batch(refs, "request")))

    def series_download_iterator(
        self, instances: Sequence[InstanceReference], index: int = 0
    ) -> Iterator[Dataset]:
        """:meth:`download_iterator` for the instances of one series (4.1.0 API)."""
        if instances:
            logger.debug("Downloading series %d: %s", index, instances[0].series_uid)
        return self.download_iterator(instances)

    @staticmethod
    def split_instances(
        instances: Sequence[InstanceReference], num_bins: int
    ) -> Iterator[Sequence[InstanceReference]]:
        """instances in num_bins slices of (nearly) equal size (4.1.0 API)."""
        if instances:
            yield from _chunks(instances, math.ceil(len(instances) / max(1, num_bins)))

    def _yield_batch(
        self, outcome: tuple[list[Dataset], DICOMTrolleyError | None]
    ) -> Iterator[Dataset]:
        datasets, error = outcome
        yield from datasets
        if error is not None:
            self.handle_response_error(error)

    def _batch_datasets(
        self, batch: _Batch
    ) -> tuple[list[Dataset], DICOMTrolleyError | None]:
        """The datasets one request delivered, and its error if there was one."""
        datasets: dict[str, Dataset] = {}
        done: set[str] = set()

        error: DICOMTrolleyError | None = None
        try:
            self._fetch(batch, lambda: _MemorySink(str(batch), datasets), done)
        except DICOMTrolleyError as failure:
            error = failure
        return [
            datasets[r.instance_uid] for r in batch.refs if r.instance_uid in datasets
        ], error

    # -- 4.1.0 API on answers the caller obtained itself ---------------------

    @staticmethod
    def check_for_response_errors(response: Any) -> None:
        """Raise unless response is a multipart RAD-69 answer (4.1.0 API).

        Takes a requests.Response or any object with ``status_code``,
        ``headers`` and ``content`` (or ``text``).

        Raises
        ------
        DICOMTrolleyError
            A SOAP answer (no multipart): what
            :meth:`parse_rad69_soap_error_response` raises. Another HTTP error
            status: the transport's error for it. No Content-Type:
            ResponseFormatError.
        """
        status = response.status_code
        headers = getattr(response, "headers", None) or {}
        content_type = headers.get("Content-Type", "") or ""
        media_type, _ = parse_content_type(content_type) if content_type else ("", {})
        if media_type in _SOAP_TYPES and (
            200 <= status < 300 or status in SOAP_ERROR_STATUSES
        ):
            Rad69.parse_rad69_soap_error_response(response)
        if not 200 <= status < 300:
            raise error_for_response(response, "RAD-69")
        if not media_type.startswith("multipart/"):
            raise ResponseFormatError(
                "RAD-69: Expected multipart response, but got "
                f"{content_type or 'no content type'}",
                url=getattr(response, "url", None),
                status_code=status,
            )

    @staticmethod
    def parse_rad69_soap_error_response(response: Any) -> NoReturn:
        """Raise the error a plain SOAP answer reports (4.1.0 API).

        Raises
        ------
        XDSMissingDocumentError
            When every RegistryError is ``XDSMissingDocument``.
        Rad69ServerError
            For other RegistryErrors and SOAP Faults.
        ResponseFormatError
            When the answer is not SOAP, or reports no error.
        """
        url = getattr(response, "url", None)
        status = response.status_code
        try:
            answer = parse_response(content_of(response))
        except ResponseFormatError as error:
            error.url, error.status_code = error.url or url, status
            raise
        if answer.fault is not None:
            raise Rad69ServerError(
                f"RAD-69: SOAP Fault {answer.fault}", url=url, status_code=status
            )
        if not answer.errors:
            raise ResponseFormatError(
                "RAD-69: Could not find any rad69 soap errors in the answer "
                f"(status {answer.outcome or 'none'})",
                url=url,
                status_code=status,
            )
        raise _registry_error(
            f"RAD-69: {_errors_text(answer.outcome, answer.errors)}",
            answer.errors,
            [e.location for e in answer.errors if e.location],
            url=url,
            status_code=status,
        )

    def parse_rad69_response(self, response: Any) -> Iterator[Dataset]:
        """The datasets in a RAD-69 answer, while it arrives (4.1.0 API).

        Takes a requests.Response (read while it arrives when it was asked for
        with ``stream=True``) or any object with ``status_code``, ``headers``
        and ``content``. Errors, from :meth:`check_for_response_errors` or
        reported in the answer, go through :meth:`handle_response_error`: they
        are raised unless they are in errors_to_ignore.
        """
        try:
            self.check_for_response_errors(response)
        except DICOMTrolleyError as error:
            _close(response)
            self.handle_response_error(error)
            return
        what = "RAD-69"
        ready: list[Dataset] = []
        done: set[str] = set()
        headers = getattr(response, "headers", None) or {}
        reader = XopReader.for_content_type(
            headers.get("Content-Type", ""),
            lambda cid: _AnyDocumentSink(what, ready, done),
        )
        try:
            for event in self._answer_events(response, what):
                reader.feed(event)
                yield from ready
                ready.clear()
            result = reader.close()
            yield from ready
        except BaseException:
            reader.abort()
            raise
        finally:
            _close(response)
        listed = [doc.document_unique_id for doc in result.response.documents]
        failure = _outcome_error(result, listed, done, what)
        if failure is not None:
            failure.url = getattr(response, "url", None)
            failure.status_code = response.status_code
            self.handle_response_error(failure)

    def _answer_events(self, response: Any, what: str) -> Iterator[Event]:
        """Part events of a multipart answer: streamed, or from its content."""
        if (
            isinstance(response, requests.Response)
            and not getattr(response, "_content_consumed", True)
            and response.raw is not None
        ):
            yield from iter_parts(response, self.http_chunk_size, what=what)
            return
        headers = getattr(response, "headers", None) or {}
        parser = MultipartParser(boundary_from_content_type(headers["Content-Type"]))
        yield from parser.feed(content_of(response))
        yield from parser.close()

    def verify_response(self, response: Any) -> None:
        """Did nothing in 4.1.0 and does nothing here; deprecated.

        Use :meth:`check_for_response_errors` (or :meth:`parse_rad69_response`,
        which checks every answer).
        """
        warnings.warn(
            "Rad69.verify_response does nothing; use "
            "Rad69.check_for_response_errors instead",
            DeprecationWarning,
            stacklevel=2,
        )

    # -- save_all (the template of Downloader) --------------------------------
    # Requests run max_workers at a time (or this downloader's max_workers with
    # use_async). A failed request goes into the report with the UIDs of the
    # instances it did not deliver, unless its error is ignored.

    failures_per_unit = True

    def plan_saves(self, job: SaveJob) -> list[_Batch]:
        """The requests for the instances not yet on disk."""
        refs = list(dict.fromkeys(to_instance_refs(job.objects)))
        todo = job.skip_present(refs)
        job.progress.add_total(instances=len(todo))
        return self.request_batches(todo, self.save_workers(job))

    def save_workers(self, job: SaveJob) -> int:
        return self._workers(job.max_workers)

    def prepare_workers(self, workers: int) -> None:
        self.transport.ensure_pool_size(workers)

    def save_unit(self, job: SaveJob, unit: _Batch) -> None:
        """Stream each document of one request to its file while it arrives."""
        done: set[str] = set()

        def new_sink() -> _Sink:
            return PartFile(job.storage, job.output_dir, job.saved)

        try:
            self._fetch(unit, new_sink, done, job.progress)
        except DICOMTrolleyError as error:
            self.handle_response_error(error)  # raises unless ignored


# --------------------------------------------------------------------------- #
# Sinks: where each document goes while it arrives
# --------------------------------------------------------------------------- #


class _Sink(Protocol):
    """Receives one document: write() its bytes, then finish(ref) or discard().

    Saving to disk: :class:`~dicomtrolley.streaming.PartFile`, the path every
    HTTP downloader writes parts by; in memory: :class:`_MemorySink`.
    """

    def write(self, data: bytes | memoryview) -> None: ...

    def finish(self, expected: InstanceReference) -> object: ...

    def discard(self) -> None: ...


class _MemorySink:
    """Collects a document in memory; finish() parses and checks it."""

    def __init__(self, what: str, datasets: dict[str, Dataset]) -> None:
        self.what = what
        self.datasets = datasets
        self.buffer: io.BytesIO | None = io.BytesIO()

    def write(self, data: bytes | memoryview) -> None:
        if self.buffer is not None:
            self.buffer.write(data)

    def finish(self, ref: InstanceReference) -> None:
        buffer, self.buffer = self.buffer or io.BytesIO(), None
        buffer.seek(0)
        dataset = read_dataset(buffer, self.what, ref.uids())
        got = str(dataset.get("SOPInstanceUID", ""))
        if got != ref.instance_uid:
            raise DICOMParseError(
                f"{self.what}: asked for instance {ref.instance_uid}, received "
                f"{got or 'an instance without SOPInstanceUID'}",
                uids=ref.uids(),
            )
        self.datasets[ref.instance_uid] = dataset

    def discard(self) -> None:
        self.buffer = None


class _AnyDocumentSink:
    """An AttachmentSink that parses whichever document its part turns out to be."""

    def __init__(self, what: str, ready: list[Dataset], done: set[str]) -> None:
        self.what = what
        self.ready = ready
        self.done = done
        self.buffer: io.BytesIO | None = io.BytesIO()

    def write(self, data: bytes | memoryview) -> None:
        if self.buffer is not None:
            self.buffer.write(data)

    def complete(self, document: DocumentResponse) -> None:
        buffer, self.buffer = self.buffer or io.BytesIO(), None
        buffer.seek(0)
        uid = document.document_unique_id
        self.ready.append(read_dataset(buffer, self.what, (uid,)))
        self.done.add(uid)

    def discard(self) -> None:
        self.buffer = None


class _Dispatch:
    """The AttachmentSink for one part: its bytes go to a sink of the caller's.

    Which document a part holds is known only once both the part and the SOAP
    root have been read; then the document is finished as the instance that
    was asked for under its DocumentUniqueId, or thrown away when none was.
    """

    def __init__(
        self,
        wanted: dict[str, InstanceReference],
        done: set[str],
        sink: _Sink,
        what: str,
    ) -> None:
        self.wanted = wanted
        self.done = done
        self.sink = sink
        self.what = what

    def write(self, data: bytes | memoryview) -> None:
        self.sink.write(data)

    def complete(self, document: DocumentResponse) -> None:
        ref = self.wanted.get(document.document_unique_id)
        if ref is None:
            logger.warning(
                "%s: server sent document %s, which was not asked for; skipped",
                self.what,
                document.document_unique_id,
            )
            self.sink.discard()
            return
        if ref.instance_uid in self.done:  # sent twice (or again after a retry)
            logger.warning(
                "%s: document %s came twice; the second copy is skipped",
                self.what,
                ref.instance_uid,
            )
            self.sink.discard()
            return
        self.sink.finish(ref)
        self.done.add(ref.instance_uid)

    def discard(self) -> None:
        self.sink.discard()


# --------------------------------------------------------------------------- #
# What an answer means
# --------------------------------------------------------------------------- #


def _outcome_error(
    result: XopResult,
    wanted: Collection[str],
    done: set[str],
    what: str,
) -> DICOMTrolleyError | None:
    """The error for what an answer did not deliver, or None when all came."""
    response = result.response
    missing = [uid for uid in wanted if uid not in done]
    if response.fault is not None:
        return Rad69ServerError(f"{what}: SOAP Fault {response.fault}", uids=missing)
    for cid in result.unreferenced:
        logger.warning("%s: part %s is not referenced by the envelope", what, cid)
    errors = [e for e in response.errors if not e.is_warning]
    for warning in (e for e in response.errors if e.is_warning):
        logger.warning("%s: server warning %s", what, warning)
    outcome = response.outcome
    if outcome not in (SUCCESS, PARTIAL_SUCCESS, FAILURE):
        return ResponseFormatError(
            f"{what}: unknown RegistryResponse status {response.status!r}",
            uids=missing,
        )
    if not missing and outcome != FAILURE:
        if errors:
            logger.warning(
                "%s: %s with errors: %s", what, outcome, _listing(map(str, errors))
            )
        return None
    locations = [e.location for e in errors if e.location]
    uids = list(dict.fromkeys([*locations, *missing]))
    if errors:
        return _registry_error(f"{what}: {_errors_text(outcome, errors)}", errors, uids)
    never_came = {doc.document_unique_id for doc in result.missing_parts}
    if never_came & set(missing):
        lost = [uid for uid in missing if uid in never_came]
        return ResponseFormatError(
            f"{what}: the envelope lists {len(lost)} document(s) whose part never "
            f"came: {_listing(lost)}",
            uids=lost,
        )
    if outcome == FAILURE:
        return Rad69ServerError(
            f"{what}: server answered Failure without a RegistryErrorList",
            uids=missing,
        )
    return XDSMissingDocumentError(
        f"{what}: server answered {outcome} but did not send {len(missing)} "
        f"document(s): {_listing(missing)}",
        uids=missing,
    )


def _errors_text(outcome: str, errors: Sequence[RegistryError]) -> str:
    """What a server reported; "Server returns N errors" is 4.1.0's wording."""
    listing = _listing(str(e) for e in errors)
    if all(e.error_code == "XDSMissingDocument" for e in errors):
        listing = f"missing document(s): {listing}"
    return (
        f"server answered {outcome or 'without a status'}. Server returns "
        f"{len(errors)} errors: {listing}"
    )


def _registry_error(
    message: str,
    errors: Sequence[RegistryError],
    uids: Sequence[str],
    *,
    url: str | None = None,
    status_code: int | None = None,
) -> Rad69ServerError:
    """XDSMissingDocumentError when every error is XDSMissingDocument."""
    missing = all(e.error_code == "XDSMissingDocument" for e in errors)
    cls = XDSMissingDocumentError if missing else Rad69ServerError
    return cls(message, url=url, status_code=status_code, uids=uids)


def _close(response: Any) -> None:
    close = getattr(response, "close", None)
    if callable(close):
        close()


def _chunks(
    refs: Sequence[InstanceReference], size: int
) -> list[Sequence[InstanceReference]]:
    return [refs[i : i + size] for i in range(0, len(refs), size)]


def _listing(items: Iterator[str] | Sequence[str]) -> str:
    shown = list(items)
    text = "; ".join(shown[:_LISTED])
    if len(shown) > _LISTED:
        text += f"; ... and {len(shown) - _LISTED} more"
    return text


def _peek(response: requests.Response, limit: int = 200) -> str:
    """The start of an unexpected answer, tags removed, for error messages."""
    try:
        raw = response.raw.read(4096, decode_content=True) or b""
    except Exception:  # a courtesy for the message, never required
        raw = b""
    text = raw.decode("utf-8", errors="replace")
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", text, flags=re.I | re.S)
    text = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
