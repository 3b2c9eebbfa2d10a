"""RAD-69 downloads against a fake server over real HTTP: requests, answers, errors.

The fake server (tests/fakes.py) does not keep request bodies, so the session
gets an adapter that keeps each body and tags the request with its number; the
fake's handler reads the SOAP request from there and answers it like an
Imaging Document Source would.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree.ElementTree import Element

import pytest
import requests
from defusedxml.ElementTree import fromstring
from requests.adapters import HTTPAdapter

from dicomtrolley.core import (
    InstanceReference,
    NonInstanceParameterError,
    Query,
    Searcher,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.download import DownloadReport
from dicomtrolley.exceptions import (
    DICOMParseError,
    DICOMTrolleyError,
    DownloadIncompleteError,
    IncompleteResponseError,
    InvalidUIDError,
    Rad69ServerError,
    ResponseFormatError,
    ServerHTTPError,
    XDSMissingDocumentError,
)
from dicomtrolley.parsing import DICOMParseTree
from dicomtrolley.rad69 import (
    DEFAULT_REPOSITORY_UNIQUE_ID,
    DEFAULT_TRANSFER_SYNTAXES,
    RAD69_RETRY,
    Rad69,
)
from dicomtrolley.storage import StorageDir
from dicomtrolley.transport import Retry
from dicomtrolley.trolley import Trolley
from tests.fakes import FakeServer, Recorded, Reply, dicom_file, html_reply, tree

PATH = "/rad69"
STUDY = "1.2.826.0.1.3680043.8.498.300"
NO_RETRY = Retry(total=0, backoff_factor=0, backoff_jitter=0)
QUICK_RETRY = Retry(
    total=2,
    backoff_factor=0,
    backoff_jitter=0,
    allowed_methods=RAD69_RETRY.allowed_methods,
)

S = "{http://www.w3.org/2003/05/soap-envelope}"
WSA = "{http://www.w3.org/2005/08/addressing}"
RAD = "{urn:ihe:rad:xdsi-b:2009}"
IHE = "{urn:ihe:iti:xds-b:2007}"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
BOUNDARY = "MIMEBoundary_urn_uuid_0F4B1C"


def series_uid(n: int) -> str:
    return f"{STUDY}.{n}"


def sop_uid(series: int, n: int) -> str:
    return f"{STUDY}.{series}.{n}"


def ref(series: int, n: int) -> InstanceReference:
    return InstanceReference(STUDY, series_uid(series), sop_uid(series, n))


def refs_of(layout: dict[int, int]) -> list[InstanceReference]:
    """Instance references for {series number: instance count}."""
    return [ref(s, n) for s, count in layout.items() for n in range(1, count + 1)]


# --------------------------------------------------------------------------- #
# The wire: a body-keeping adapter and SOAP/MTOM answers built by hand
# --------------------------------------------------------------------------- #


class BodyTap(HTTPAdapter):
    """Keeps every request body and sends its number in X-Test-Request."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: dict[int, bytes] = {}
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> Any:  # type: ignore[override]
        with self._lock:
            number = next(self._numbers)
        body = request.body
        self.bodies[number] = body if isinstance(body, bytes) else str(body).encode()
        request.headers["X-Test-Request"] = str(number)
        return super().send(request, **kwargs)

    def body(self, request: Recorded) -> bytes:
        return self.bodies[int(request.headers["X-Test-Request"])]


@dataclass
class Asked:
    """What one RAD-69 request asked for, as the server reads it."""

    root: Element
    documents: list[tuple[str, str, str]]  # (study, series, sop) in order
    syntaxes: list[str]
    repositories: set[str]

    @property
    def sops(self) -> list[str]:
        return [sop for _, _, sop in self.documents]

    @property
    def to(self) -> str:
        return self.root.findtext(f"{S}Header/{WSA}To") or ""


def parse_request(body: bytes) -> Asked:
    root = fromstring(body, forbid_dtd=True)
    request = root.find(f"{S}Body/{RAD}RetrieveImagingDocumentSetRequest")
    assert request is not None
    documents = [
        (
            study.get("studyInstanceUID", ""),
            series.get("seriesInstanceUID", ""),
            doc.findtext(f"{IHE}DocumentUniqueId") or "",
        )
        for study in request.findall(f"{RAD}StudyRequest")
        for series in study.findall(f"{RAD}SeriesRequest")
        for doc in series.findall(f"{IHE}DocumentRequest")
    ]
    return Asked(
        root=root,
        documents=documents,
        syntaxes=[
            e.text or ""
            for e in request.findall(
                f"{RAD}TransferSyntaxUIDList/{RAD}TransferSyntaxUID"
            )
        ],
        repositories={e.text or "" for e in request.iter(f"{IHE}RepositoryUniqueId")},
    )


def envelope(
    status: str, documents: str = "", errors: Sequence[tuple[str, str, str]] = ()
) -> bytes:
    error_list = "".join(
        f'<rs:RegistryError codeContext="{context}" errorCode="{code}" '
        f'location="{location}" severity="{ERROR}"/>'
        for code, context, location in errors
    )
    if error_list:
        error_list = f"<rs:RegistryErrorList>{error_list}</rs:RegistryErrorList>"
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Header>'
        '<a:Action xmlns:a="http://www.w3.org/2005/08/addressing" '
        'env:mustUnderstand="true">urn:ihe:iti:2007:RetrieveDocumentSetResponse'
        "</a:Action></env:Header><env:Body>"
        '<RetrieveDocumentSetResponse xmlns="urn:ihe:iti:xds-b:2007" '
        'xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0">'
        f'<rs:RegistryResponse status="{status}">{error_list}</rs:RegistryResponse>'
        f"{documents}</RetrieveDocumentSetResponse></env:Body></env:Envelope>"
    ).encode()


def content_id(sop: str) -> str:
    return f"{sop}.urn:uuid:part@apache.org"


def document_response(sop: str) -> str:
    href = "cid:" + quote(content_id(sop), safe="")
    return (
        f"<DocumentResponse><RepositoryUniqueId>{DEFAULT_REPOSITORY_UNIQUE_ID}"
        f"</RepositoryUniqueId><DocumentUniqueId>{sop}</DocumentUniqueId>"
        "<HomeCommunityId/><mimeType>application/dicom</mimeType><Document>"
        '<xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" '
        f'href="{href}"/></Document></DocumentResponse>'
    )


def mtom_reply(
    delivered: Sequence[tuple[str, bytes]],
    *,
    status: str = SUCCESS,
    errors: Sequence[tuple[str, str, str]] = (),
    listed: Sequence[str] | None = None,
    root_last: bool = False,
    **reply: Any,
) -> Reply:
    """A multipart/related MTOM answer: root part plus one part per document."""
    root_cid = "0.urn:uuid:root@apache.org"
    sops = [sop for sop, _ in delivered] if listed is None else listed
    root = (
        f"--{BOUNDARY}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
        'type="application/soap+xml"\r\nContent-Transfer-Encoding: binary\r\n'
        f"Content-ID: <{root_cid}>\r\n\r\n"
    ).encode()
    root += envelope(status, "".join(document_response(s) for s in sops), errors)
    root += b"\r\n"
    parts = []
    for n, (sop, data) in enumerate(delivered):
        # angle brackets around the Content-ID on some parts only, as servers vary
        cid = f"<{content_id(sop)}>" if n % 2 == 0 else content_id(sop)
        head = (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: {cid}\r\n\r\n"
        ).encode()
        parts.append(head + data + b"\r\n")
    ordered = [*parts, root] if root_last else [root, *parts]
    body = b"".join(ordered) + f"--{BOUNDARY}--\r\n".encode()
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{BOUNDARY}"; '
        f'start="<{root_cid}>"; start-info="application/soap+xml"'
    )
    return Reply(body=body, headers={"Content-Type": content_type}, **reply)


def soap_reply(body: bytes, status: int = 200, **reply: Any) -> Reply:
    return Reply(
        status=status,
        body=body,
        headers={"Content-Type": "application/soap+xml; charset=utf-8"},
        **reply,
    )


def missing_errors(sops: Iterable[str]) -> list[tuple[str, str, str]]:
    return [("XDSMissingDocument", "Unable to locate SOP from MINT.", s) for s in sops]


# --------------------------------------------------------------------------- #
# A fake Imaging Document Source
# --------------------------------------------------------------------------- #


@dataclass
class FakeSource:
    """Answers RAD-69 requests from files it holds, like a real server would."""

    tap: BodyTap
    files: dict[str, bytes]
    missing: set[str] = field(default_factory=set)
    reply_options: dict[str, Any] = field(default_factory=dict)
    asked: list[Asked] = field(default_factory=list)
    override: Callable[[Asked, int], Reply | None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Recorded) -> Reply:
        asked = parse_request(self.tap.body(request))
        with self._lock:
            self.asked.append(asked)
            number = len(self.asked) - 1
        if self.override is not None:
            special = self.override(asked, number)
            if special is not None:
                return special
        present = [s for s in asked.sops if s in self.files and s not in self.missing]
        absent = [s for s in asked.sops if s not in present]
        if not present:
            return soap_reply(envelope(FAILURE, errors=missing_errors(absent)))
        return mtom_reply(
            [(s, self.files[s]) for s in present],
            status=PARTIAL if absent else SUCCESS,
            errors=missing_errors(absent),
            **self.reply_options,
        )


@dataclass
class Setup:
    server: FakeServer
    source: FakeSource
    session: requests.Session

    @property
    def url(self) -> str:
        return self.server.url + PATH

    def rad69(self, **kwargs: Any) -> Rad69:
        kwargs.setdefault("retry", NO_RETRY)
        return Rad69(self.session, self.url, **kwargs)


def files_for(refs: Iterable[InstanceReference]) -> dict[str, bytes]:
    return {
        r.instance_uid: dicom_file(r.study_uid, r.series_uid, r.instance_uid)
        for r in refs
    }


@pytest.fixture
def fake() -> Iterator[Callable[..., Setup]]:
    servers: list[FakeServer] = []

    def start(refs: Iterable[InstanceReference], **options: Any) -> Setup:
        tap = BodyTap()
        session = requests.Session()
        session.mount("http://", tap)
        source = FakeSource(tap, files_for(refs), **options)
        server = FakeServer({PATH: source})
        server.__enter__()
        servers.append(server)
        return Setup(server, source, session)

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def saved_files(folder: Path) -> dict[str, bytes]:
    """SOP Instance UID -> bytes of every file under folder (StorageDir layout)."""
    return {
        path.name.replace("_", "."): path.read_bytes()
        for path in tree(folder)
        if path.is_file()
    }


def temp_files(folder: Path) -> list[Path]:
    return [p for p in tree(folder) if p.name.startswith(".dicomtrolley-")]


def save(
    rad69: Rad69, refs: Sequence[InstanceReference], folder: Path, **kwargs: Any
) -> DownloadReport:
    return rad69.save_all(refs, StorageDir(folder), folder, **kwargs)


# --------------------------------------------------------------------------- #
# Requests
# --------------------------------------------------------------------------- #


def test_whole_study_one_request_per_series(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 3, 2: 2, 3: 1})
    setup = fake(refs)
    report = save(setup.rad69(), refs, tmp_path)

    assert report.failures == []
    assert saved_files(tmp_path) == setup.source.files
    assert len(report.saved) == 6
    requests_made = setup.server.requests_to(PATH)
    assert len(requests_made) == 3
    assert [a.documents for a in setup.source.asked] == [
        [(STUDY, series_uid(1), sop_uid(1, n)) for n in (1, 2, 3)],
        [(STUDY, series_uid(2), sop_uid(2, n)) for n in (1, 2)],
        [(STUDY, series_uid(3), sop_uid(3, 1))],
    ]
    first = requests_made[0]
    assert first.method == "POST"
    assert first.headers["Content-Type"] == (
        "application/soap+xml; charset=utf-8; "
        'action="urn:ihe:rad:2009:RetrieveImagingDocumentSet"'
    )
    assert first.headers["Accept"] == "multipart/related, application/soap+xml"
    asked = setup.source.asked[0]
    assert asked.syntaxes == list(DEFAULT_TRANSFER_SYNTAXES)
    assert asked.repositories == {DEFAULT_REPOSITORY_UNIQUE_ID}
    assert asked.to == setup.url
    assert not temp_files(tmp_path)


def test_batches_when_not_per_series(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 4, 2: 3, 3: 3})
    setup = fake(refs)
    rad69 = setup.rad69(request_per_series=False, batch_size=4)
    report = save(rad69, refs, tmp_path)

    assert report.failures == []
    assert saved_files(tmp_path) == setup.source.files
    assert [len(a.documents) for a in setup.source.asked] == [4, 4, 2]
    second = setup.source.asked[1]
    # a batch spanning two series holds one SeriesRequest for each
    assert second.documents == [
        (STUDY, series_uid(2), sop_uid(2, n)) for n in (1, 2, 3)
    ] + [(STUDY, series_uid(3), sop_uid(3, 1))]
    series_requests = second.root.findall(f".//{RAD}SeriesRequest")
    assert [s.get("seriesInstanceUID") for s in series_requests] == [
        series_uid(2),
        series_uid(3),
    ]


def test_not_per_series_without_batch_size_is_one_request(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2, 2: 2})
    setup = fake(refs)
    save(setup.rad69(request_per_series=False), refs, tmp_path)
    assert [len(a.documents) for a in setup.source.asked] == [4]
    assert saved_files(tmp_path) == setup.source.files


def test_batch_size_splits_a_large_series(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 5})
    setup = fake(refs)
    report = save(setup.rad69(batch_size=2), refs, tmp_path)
    assert [len(a.documents) for a in setup.source.asked] == [2, 2, 1]
    assert len(report.saved) == 5


def test_custom_transfer_syntaxes_repository_and_to_address(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 1})
    setup = fake(refs)
    rad69 = setup.rad69(
        transfer_syntax_list=["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1"],
        repository_unique_id="1.3.6.1.4.1.21367.13.80.110",
        to_address="http://ids.example/IHEXDSIDocSource.svc",
    )
    save(rad69, refs, tmp_path)
    (asked,) = setup.source.asked
    assert asked.syntaxes == ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1"]
    assert asked.repositories == {"1.3.6.1.4.1.21367.13.80.110"}
    assert asked.to == "http://ids.example/IHEXDSIDocSource.svc"


def test_concurrency_is_bounded_by_max_workers(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({n: 1 for n in range(1, 7)})
    setup = fake(refs, reply_options={"piece_size": 400, "delay": 0.03})
    rad69 = setup.rad69(use_async=True, max_workers=2)
    report = save(rad69, refs, tmp_path)
    assert report.failures == []
    assert len(setup.source.asked) == 6
    assert setup.server.max_active == 2
    assert saved_files(tmp_path) == setup.source.files


def test_trolley_max_workers_overrides_and_sync_is_one_at_a_time(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({n: 1 for n in range(1, 5)})
    setup = fake(refs, reply_options={"piece_size": 400, "delay": 0.02})
    save(setup.rad69(), refs, tmp_path / "sync", max_workers=1)
    assert setup.server.max_active == 1
    save(setup.rad69(), refs, tmp_path / "three", max_workers=3)
    assert setup.server.max_active == 3


def test_default_retry_allows_post() -> None:
    rad69 = Rad69(requests.Session(), "http://pacs/rad69")
    assert rad69.transport.retry.is_retryable_method("POST")
    assert rad69.transport.retry.total == Retry().total
    explicit = Rad69(requests.Session(), "http://pacs/rad69", retry=Retry())
    assert not explicit.transport.retry.is_retryable_method("POST")


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        Rad69(requests.Session(), "http://pacs/rad69", transfer_syntax_list=[])
    with pytest.raises(InvalidUIDError):
        Rad69(requests.Session(), "http://pacs/rad69", transfer_syntax_list=["*"])
    with pytest.raises(ValueError):
        Rad69(requests.Session(), "http://pacs/rad69", batch_size=0)


def test_present_files_are_skipped(fake: Callable[..., Setup], tmp_path: Path) -> None:
    refs = refs_of({1: 2, 2: 1})
    setup = fake(refs)
    save(setup.rad69(), refs[:1], tmp_path)
    report = save(setup.rad69(), refs, tmp_path)
    assert len(report.skipped) == 1
    assert [a.sops for a in setup.source.asked] == [
        [sop_uid(1, 1)],
        [sop_uid(1, 2)],
        [sop_uid(2, 1)],
    ]
    assert saved_files(tmp_path) == setup.source.files


def test_uids_that_would_break_the_envelope_are_not_sent(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    bad = InstanceReference(STUDY, series_uid(1), '1.2"/><x a="')
    setup = fake([])
    report = save(setup.rad69(), [bad], tmp_path)
    assert isinstance(report.failures[0].error, InvalidUIDError)
    assert setup.server.requests == []


# --------------------------------------------------------------------------- #
# References and memory
# --------------------------------------------------------------------------- #


def test_study_and_series_references_need_instances() -> None:
    rad69 = Rad69(requests.Session(), "http://pacs/rad69")
    with pytest.raises(NonInstanceParameterError):
        rad69.check_references([StudyReference(STUDY)])
    with pytest.raises(NonInstanceParameterError):
        rad69.check_references([SeriesReference(STUDY, series_uid(1))])
    with pytest.raises(NonInstanceParameterError):
        list(rad69.datasets([StudyReference(STUDY)]))
    rad69.check_references([ref(1, 1)])


class InstanceSearcher(Searcher):
    """Finds the instances of the study, as an instance-level search would."""

    def __init__(self, refs: Sequence[InstanceReference]) -> None:
        self.refs = refs
        self.queries: list[Query] = []

    def find_studies(self, query: Query) -> Sequence[Study]:
        self.queries.append(query)
        tree = DICOMParseTree()
        for r in self.refs:
            tree.insert([], r.study_uid, r.series_uid, r.instance_uid)  # type: ignore[arg-type]
        return tree.as_studies()


def test_trolley_fills_in_instances_then_downloads(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2, 2: 1})
    setup = fake(refs)
    searcher = InstanceSearcher(refs)
    trolley = Trolley(setup.rad69(), searcher, storage=StorageDir(tmp_path))
    trolley.download(StudyReference(STUDY), tmp_path, use_async=True, max_workers=2)
    assert len(searcher.queries) == 1
    assert saved_files(tmp_path) == setup.source.files
    assert len(setup.source.asked) == 2


def test_datasets_in_memory(fake: Callable[..., Setup]) -> None:
    refs = refs_of({1: 2, 2: 2, 3: 1})
    setup = fake(refs)
    for rad69 in (setup.rad69(), setup.rad69(use_async=True, max_workers=2)):
        datasets = list(rad69.datasets(refs))
        assert [str(ds.SOPInstanceUID) for ds in datasets] == [
            r.instance_uid for r in refs
        ]
    dataset = setup.rad69().get_dataset(ref(2, 2))
    assert dataset.SOPInstanceUID == sop_uid(2, 2)
    assert setup.source.asked[-1].sops == [sop_uid(2, 2)]


# --------------------------------------------------------------------------- #
# Missing documents and server errors
# --------------------------------------------------------------------------- #


def test_missing_documents_raise_xds_missing_document_error(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2})
    setup = fake(refs, missing={sop_uid(1, 1), sop_uid(1, 2)})
    rad69 = setup.rad69()
    with pytest.raises(XDSMissingDocumentError) as caught:
        rad69.get_dataset(ref(1, 1))
    assert caught.value.uids == (sop_uid(1, 1),)
    assert "XDSMissingDocument" in str(caught.value)

    report = save(rad69, refs, tmp_path)
    (failure,) = report.failures
    assert isinstance(failure.error, XDSMissingDocumentError)
    assert set(failure.error.uids) == {sop_uid(1, 1), sop_uid(1, 2)}
    assert failure.error.status_code == 200
    with pytest.raises(DownloadIncompleteError):
        report.raise_for_failures()
    assert saved_files(tmp_path) == {}


def test_ignored_missing_documents_let_the_rest_download(
    fake: Callable[..., Setup], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refs = refs_of({1: 2, 2: 2, 3: 1})
    setup = fake(refs, missing={sop_uid(2, 1), sop_uid(2, 2)})
    rad69 = setup.rad69(errors_to_ignore=[XDSMissingDocumentError])
    with caplog.at_level(logging.WARNING, logger="trolley.rad69"):
        report = save(rad69, refs, tmp_path)
    assert report.failures == []
    expected = {
        k: v for k, v in setup.source.files.items() if k not in setup.source.missing
    }
    assert saved_files(tmp_path) == expected
    assert "Ignoring error" in caplog.text
    assert sop_uid(2, 1) in caplog.text

    datasets = list(rad69.datasets(refs))
    assert [str(d.SOPInstanceUID) for d in datasets] == list(expected)

    # not ignored: the datasets that came, then the error
    plain = setup.rad69()
    got: list[str] = []
    with pytest.raises(XDSMissingDocumentError):
        for dataset in plain.datasets(refs):
            got.append(str(dataset.SOPInstanceUID))
    assert got == [sop_uid(1, 1), sop_uid(1, 2)]


def test_partial_success_saves_what_came_and_names_the_missing(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 3})
    setup = fake(refs, missing={sop_uid(1, 2)})
    report = save(setup.rad69(), refs, tmp_path)
    (failure,) = report.failures
    assert isinstance(failure.error, XDSMissingDocumentError)
    assert failure.error.uids == (sop_uid(1, 2),)
    assert "PartialSuccess" in str(failure.error)
    assert saved_files(tmp_path) == {
        sop_uid(1, 1): setup.source.files[sop_uid(1, 1)],
        sop_uid(1, 3): setup.source.files[sop_uid(1, 3)],
    }

    ignoring = setup.rad69(errors_to_ignore=[XDSMissingDocumentError])
    report = save(ignoring, refs, tmp_path / "again")
    assert report.failures == []
    assert len(report.saved) == 2


def test_partial_success_without_error_list_still_names_the_missing(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2})

    def quiet(asked: Asked, number: int) -> Reply:
        sop = sop_uid(1, 1)
        return mtom_reply([(sop, setup.source.files[sop])], status=PARTIAL)

    setup = fake(refs, override=quiet)
    (failure,) = save(setup.rad69(), refs, tmp_path).failures
    assert isinstance(failure.error, XDSMissingDocumentError)
    assert failure.error.uids == (sop_uid(1, 2),)


def test_wrong_transfer_syntax_is_a_server_error(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2})

    def refuse(asked: Asked, number: int) -> Reply:
        errors = [
            ("urn:dicom:wado:0007", "Transfer syntax not possible", sop)
            for sop in asked.sops
        ]
        return soap_reply(envelope(FAILURE, errors=errors))

    setup = fake(refs, override=refuse)
    rad69 = setup.rad69(errors_to_ignore=[XDSMissingDocumentError])
    report = save(rad69, refs, tmp_path)
    (failure,) = report.failures
    error = failure.error
    assert type(error) is Rad69ServerError
    assert "urn:dicom:wado:0007" in str(error)
    assert "Transfer syntax not possible" in str(error)
    assert set(error.uids) == {sop_uid(1, 1), sop_uid(1, 2)}
    with pytest.raises(Rad69ServerError):
        rad69.get_dataset(ref(1, 1))


def test_mixed_errors_are_a_server_error_listing_all(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2})

    def mixed(asked: Asked, number: int) -> Reply:
        errors = [
            ("XDSMissingDocument", "gone", sop_uid(1, 1)),
            ("XDSRepositoryError", "disk on fire", sop_uid(1, 2)),
        ]
        return soap_reply(envelope(FAILURE, errors=errors), status=500)

    setup = fake(refs, override=mixed)
    (failure,) = save(setup.rad69(), refs, tmp_path).failures
    assert type(failure.error) is Rad69ServerError
    assert "XDSMissingDocument" in str(failure.error)
    assert "XDSRepositoryError" in str(failure.error)
    assert "disk on fire" in str(failure.error)
    assert failure.error.status_code == 500
    assert len(setup.source.asked) == 1  # a SOAP error answer is not retried


def test_soap_fault_is_a_server_error_naming_code_and_reason(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    fault = (
        b'<?xml version="1.0"?><soap:Envelope xmlns:soap='
        b'"http://www.w3.org/2003/05/soap-envelope"><soap:Body><soap:Fault>'
        b"<soap:Code><soap:Value>soap:Receiver</soap:Value><soap:Subcode>"
        b"<soap:Value>ihe:Busy</soap:Value></soap:Subcode></soap:Code>"
        b'<soap:Reason><soap:Text xml:lang="en">Repository offline</soap:Text>'
        b"</soap:Reason></soap:Fault></soap:Body></soap:Envelope>"
    )
    refs = refs_of({1: 1})
    setup = fake(refs, override=lambda asked, n: soap_reply(fault, status=500))
    report = save(setup.rad69(retry=QUICK_RETRY), refs, tmp_path)
    (failure,) = report.failures
    assert type(failure.error) is Rad69ServerError
    assert "soap:Receiver/ihe:Busy" in str(failure.error)
    assert "Repository offline" in str(failure.error)
    assert len(setup.source.asked) == 1


# --------------------------------------------------------------------------- #
# Malformed and broken answers
# --------------------------------------------------------------------------- #


def test_html_page_with_200_is_a_format_error(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2})
    page = html_reply(200, "Login", "you need to log in")
    setup = fake(refs, override=lambda asked, n: page)
    (failure,) = save(setup.rad69(), refs, tmp_path).failures
    assert isinstance(failure.error, ResponseFormatError)
    assert "text/html" in str(failure.error)
    assert "you need to log in" in str(failure.error)
    assert not list(tmp_path.rglob("*.part")) and saved_files(tmp_path) == {}


def test_html_error_500_is_retried_then_reported(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 1})
    page = html_reply(500, "Request failed")

    def flaky(asked: Asked, number: int) -> Reply | None:
        return page if number == 0 else None

    setup = fake(refs, override=flaky)
    report = save(setup.rad69(retry=QUICK_RETRY), refs, tmp_path)
    assert report.failures == []
    assert len(setup.source.asked) == 2
    assert saved_files(tmp_path) == setup.source.files

    always = fake(refs, override=lambda asked, n: page)
    (failure,) = save(always.rad69(retry=QUICK_RETRY), refs, tmp_path / "b").failures
    assert isinstance(failure.error, ServerHTTPError)
    assert len(always.source.asked) == 3


@pytest.mark.parametrize(
    "body",
    [
        b"this is not xml",
        b"<html><body>oops</body></html>",
        b"<a:Envelope xmlns:a='x'/>",
    ],
)
def test_garbage_soap_is_a_format_error(
    fake: Callable[..., Setup], tmp_path: Path, body: bytes
) -> None:
    refs = refs_of({1: 1})
    setup = fake(refs, override=lambda asked, n: soap_reply(body))
    (failure,) = save(setup.rad69(), refs, tmp_path).failures
    assert isinstance(failure.error, ResponseFormatError)
    assert not isinstance(failure.error, IncompleteResponseError)
    assert not temp_files(tmp_path)


def test_truncated_answer_leaves_no_partial_files(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 3})
    setup = fake(refs)
    whole = mtom_reply([(s, setup.source.files[s]) for s in setup.source.files])
    cut = whole.body.index(setup.source.files[sop_uid(1, 2)]) + 100
    setup.source.override = lambda asked, n: mtom_reply(
        [(s, setup.source.files[s]) for s in asked.sops], cut_after=cut
    )
    report = save(setup.rad69(), refs, tmp_path)
    (failure,) = report.failures
    assert isinstance(failure.error, IncompleteResponseError)
    # the first document was complete: it is kept; the cut one is not there
    assert saved_files(tmp_path) == {sop_uid(1, 1): setup.source.files[sop_uid(1, 1)]}
    assert set(failure.error.uids) == {sop_uid(1, 2), sop_uid(1, 3)}
    assert not temp_files(tmp_path)


def test_truncated_plain_soap_answer_is_incomplete(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 1})
    body = envelope(FAILURE, errors=missing_errors([sop_uid(1, 1)]))
    setup = fake(refs, override=lambda asked, n: soap_reply(body, cut_after=50))
    (failure,) = save(setup.rad69(), refs, tmp_path).failures
    assert isinstance(failure.error, IncompleteResponseError)


def test_cut_answer_is_asked_again_for_the_rest_only(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 3})
    setup = fake(refs)
    files = setup.source.files
    whole = mtom_reply([(s, files[s]) for s in files])
    cut = whole.body.index(files[sop_uid(1, 2)]) + 100

    def cut_once(asked: Asked, number: int) -> Reply | None:
        if number == 0:
            return mtom_reply([(s, files[s]) for s in asked.sops], cut_after=cut)
        return None

    setup.source.override = cut_once
    report = save(setup.rad69(retry=QUICK_RETRY), refs, tmp_path)
    assert report.failures == []
    assert [a.sops for a in setup.source.asked] == [
        [sop_uid(1, n) for n in (1, 2, 3)],
        [sop_uid(1, 2), sop_uid(1, 3)],
    ]
    assert saved_files(tmp_path) == files
    assert len(report.saved) == 3
    assert not temp_files(tmp_path)


def test_answer_cut_after_the_last_document_is_complete_enough(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2})
    setup = fake(refs)
    files = setup.source.files
    whole = mtom_reply([(s, files[s]) for s in files])
    # the last part ends at the delimiter; only its closing "--" never comes
    cut = len(whole.body) - len("--\r\n")
    setup.source.override = lambda asked, n: mtom_reply(
        [(s, files[s]) for s in asked.sops], cut_after=cut
    )
    report = save(setup.rad69(retry=QUICK_RETRY), refs, tmp_path)
    assert report.failures == []
    assert len(setup.source.asked) == 1
    assert saved_files(tmp_path) == files


def test_parts_before_the_root_part_are_saved(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 3})
    setup = fake(refs, reply_options={"root_last": True, "piece_size": 300})
    report = save(setup.rad69(), refs, tmp_path)
    assert report.failures == []
    assert saved_files(tmp_path) == setup.source.files
    assert not temp_files(tmp_path)


def test_document_that_is_not_what_the_envelope_says_is_refused(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2})

    def swapped(asked: Asked, number: int) -> Reply:
        files = setup.source.files
        # the envelope says sop 1 is in the first part, but it holds sop 2
        return mtom_reply(
            [(sop_uid(1, 1), files[sop_uid(1, 2)])], listed=[sop_uid(1, 1)]
        )

    setup = fake(refs, override=swapped)
    (failure,) = save(setup.rad69(), refs, tmp_path).failures
    assert isinstance(failure.error, DICOMParseError)
    assert saved_files(tmp_path) == {}
    assert not temp_files(tmp_path)


def test_documents_not_asked_for_are_skipped(
    fake: Callable[..., Setup], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refs = refs_of({1: 2})
    extra = ref(9, 9)
    setup = fake([*refs, extra])

    def generous(asked: Asked, number: int) -> Reply:
        files = setup.source.files
        return mtom_reply([(s, files[s]) for s in [*asked.sops, extra.instance_uid]])

    setup.source.override = generous
    with caplog.at_level(logging.WARNING, logger="trolley.rad69"):
        report = save(setup.rad69(), refs, tmp_path)
    assert report.failures == []
    assert set(saved_files(tmp_path)) == {r.instance_uid for r in refs}
    assert "not asked for" in caplog.text


def test_referenced_part_that_never_comes_is_a_format_error(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 2})

    def short(asked: Asked, number: int) -> Reply:
        first = sop_uid(1, 1)
        return mtom_reply([(first, setup.source.files[first])], listed=asked.sops)

    setup = fake(refs, override=short)
    (failure,) = save(setup.rad69(), refs, tmp_path).failures
    assert type(failure.error) is ResponseFormatError
    assert failure.error.uids == (sop_uid(1, 2),)
    assert set(saved_files(tmp_path)) == {sop_uid(1, 1)}


def test_errors_are_dicomtrolley_errors_with_context(
    fake: Callable[..., Setup], tmp_path: Path
) -> None:
    refs = refs_of({1: 1})
    setup = fake(refs, override=lambda asked, n: soap_reply(b"garbage"))
    with pytest.raises(DICOMTrolleyError) as caught:
        setup.rad69().get_dataset(refs[0])
    assert caught.value.url == setup.url
    assert "RAD-69" in str(caught.value)
