"""WADO-RS downloads against a fake DICOMweb server: wire details and error paths."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from dicomtrolley.core import (
    InstanceReference,
    NonSeriesParameterError,
    Query,
    Searcher,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.download import DownloadReport
from dicomtrolley.exceptions import (
    ClientHTTPError,
    DICOMParseError,
    DICOMTrolleyError,
    DownloadIncompleteError,
    IncompleteResponseError,
    MultipartContentError,
    ResponseFormatError,
    ServerHTTPError,
)
from dicomtrolley.storage import StorageDir
from dicomtrolley.transport import Retry
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS, WadoRSMetaData
from tests.fakes import (
    FakeServer,
    Recorded,
    RecordingProgress,
    Reply,
    dicom_file,
    html_reply,
    json_reply,
    multipart_body,
    multipart_reply,
    tree,
)

ROOT = "/dicom-web"
STUDY = "1.2.826.0.1.3680043.8.498.200"
DEFAULT_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
NO_RETRY = Retry(total=0, backoff_factor=0)


def series_uid(n: int) -> str:
    return f"{STUDY}.{n}"


def instance_uid(series: int, n: int) -> str:
    return f"{STUDY}.{series}.{n}"


def series_files(series: int, count: int = 3) -> dict[str, bytes]:
    """SOP Instance UID -> file bytes for one series."""
    return {
        instance_uid(series, n): dicom_file(
            STUDY, series_uid(series), instance_uid(series, n)
        )
        for n in range(1, count + 1)
    }


def series_path(series: int) -> str:
    return f"{ROOT}/studies/{STUDY}/series/{series_uid(series)}"


def series_ref(series: int) -> SeriesReference:
    return SeriesReference(study_uid=STUDY, series_uid=series_uid(series))


def saved_files(folder: Path) -> dict[str, bytes]:
    """SOP Instance UID -> bytes of every file below folder."""
    found = {}
    for path in tree(folder):
        if path.is_file():
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            found[uid] = path.read_bytes()
    return found


def leftovers(folder: Path) -> list[Path]:
    """Temporary or partial files: there must never be any after a download."""
    return [
        path
        for path in tree(folder)
        if path.name.endswith(".part") or path.name.startswith(".dicomtrolley-")
    ]


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def wado(fake: FakeServer, session: requests.Session, **kwargs: Any) -> WadoRS:
    kwargs.setdefault("retry", NO_RETRY)
    return WadoRS(session, fake.url + ROOT, **kwargs)


def save(
    downloader: WadoRS, refs: list[Any], out: Path, max_workers: int | None = None
) -> DownloadReport:
    return downloader.save_all(refs, StorageDir(out), out, max_workers=max_workers)


class NoSearch(Searcher):
    """A searcher for Trolley tests that must not be asked anything."""

    def find_studies(self, query: Query) -> list[Study]:
        raise AssertionError(f"no search expected, got {query}")


# --------------------------------------------------------------------------- #
# What goes on the wire
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("transfer_syntax", "accept"),
    [
        ("*", DEFAULT_ACCEPT),
        (
            "1.2.840.10008.1.2.1",
            'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.1",
        ),
        (None, 'multipart/related; type="application/dicom"'),
    ],
)
def test_accept_header(
    session: requests.Session, transfer_syntax: str | None, accept: str
) -> None:
    with FakeServer(
        {series_path(1): multipart_reply(list(series_files(1).values()))}
    ) as fake:
        downloader = wado(fake, session, transfer_syntax=transfer_syntax)
        assert len(list(downloader.datasets([series_ref(1)]))) == 3
    [request] = fake.requests
    assert request.headers["Accept"] == accept


def test_accept_header_by_default(session: requests.Session, tmp_path: Path) -> None:
    with FakeServer(
        {series_path(1): multipart_reply(list(series_files(1).values()))}
    ) as fake:
        save(WadoRS(session, fake.url + ROOT), [series_ref(1)], tmp_path)
    assert fake.requests[0].headers["Accept"] == DEFAULT_ACCEPT


@pytest.mark.parametrize(
    ("ref", "path"),
    [
        (StudyReference(study_uid=STUDY), f"{ROOT}/studies/{STUDY}"),
        (series_ref(1), series_path(1)),
        (
            InstanceReference(
                study_uid=STUDY,
                series_uid=series_uid(1),
                instance_uid=instance_uid(1, 2),
            ),
            f"{series_path(1)}/instances/{instance_uid(1, 2)}",
        ),
    ],
    ids=["study", "series", "instance"],
)
def test_url_per_level(session: requests.Session, ref: Any, path: str) -> None:
    body = dicom_file(STUDY, series_uid(1), instance_uid(1, 2))
    with FakeServer({path: multipart_reply([body])}) as fake:
        downloader = wado(fake, session, request_per_series=False)
        datasets = list(downloader.datasets([ref]))
    assert [ds.SOPInstanceUID for ds in datasets] == [instance_uid(1, 2)]
    assert [request.path for request in fake.requests] == [path]


def test_get_dataset_asks_for_the_instance(session: requests.Session) -> None:
    ref = InstanceReference(
        study_uid=STUDY, series_uid=series_uid(1), instance_uid=instance_uid(1, 1)
    )
    path = f"{series_path(1)}/instances/{instance_uid(1, 1)}"
    body = dicom_file(STUDY, series_uid(1), instance_uid(1, 1))
    with FakeServer({path: multipart_reply([body])}) as fake:
        dataset = wado(fake, session).get_dataset(ref)
    assert dataset.SOPInstanceUID == instance_uid(1, 1)


def test_study_reference_needs_series_when_requesting_per_series(
    session: requests.Session,
) -> None:
    downloader = WadoRS(session, "http://127.0.0.1:9/dicom-web")
    with pytest.raises(NonSeriesParameterError) as caught:
        downloader.check_references([StudyReference(study_uid=STUDY)])
    assert STUDY in caught.value.uids
    WadoRS(session, "http://127.0.0.1:9", request_per_series=False).check_references(
        [StudyReference(study_uid=STUDY)]
    )
    downloader.check_references([series_ref(1)])


# --------------------------------------------------------------------------- #
# Saving
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("quoted", [True, False], ids=["quoted", "unquoted"])
def test_save_all_writes_every_part_to_its_own_file(
    session: requests.Session, tmp_path: Path, quoted: bool
) -> None:
    files = {1: series_files(1), 2: series_files(2, count=2)}
    routes = {
        series_path(n): multipart_reply(
            list(content.values()), f"bound-{n}.x", quoted=quoted
        )
        for n, content in files.items()
    }
    with FakeServer(routes) as fake:
        report = save(wado(fake, session), [series_ref(1), series_ref(2)], tmp_path)
    assert report.failures == []
    expected = files[1] | files[2]
    assert saved_files(tmp_path) == expected
    assert len(report.saved) == len(set(report.saved)) == 5
    assert report.bytes_written == sum(len(content) for content in expected.values())
    for path in report.saved:  # StorageDir layout: study/series/instance, . -> _
        assert path.relative_to(tmp_path).parts[0] == STUDY.replace(".", "_")
    assert leftovers(tmp_path) == []


def test_single_part_dicom_answer_is_accepted(
    session: requests.Session, tmp_path: Path
) -> None:
    body = dicom_file(STUDY, series_uid(1), instance_uid(1, 1))
    single = Reply(200, body, {"Content-Type": "application/dicom"})
    with FakeServer({series_path(1): single}) as fake:
        report = save(wado(fake, session), [series_ref(1)], tmp_path)
    assert report.failures == []
    assert saved_files(tmp_path) == {instance_uid(1, 1): body}


def test_missing_boundary_is_reported_with_the_series(
    session: requests.Session, tmp_path: Path
) -> None:
    parts = list(series_files(1).values())
    no_boundary = Reply(
        200,
        multipart_body(parts, "hidden"),
        {"Content-Type": 'multipart/related; type="application/dicom"'},
    )
    with FakeServer({series_path(1): no_boundary}) as fake:
        report = save(wado(fake, session), [series_ref(1)], tmp_path)
        [failure] = report.failures
        assert isinstance(failure.error, MultipartContentError)
        assert series_uid(1) in failure.uids
        assert series_uid(1) in str(failure)

        trolley = Trolley(wado(fake, session), NoSearch(), storage=StorageDir(tmp_path))
        with pytest.raises(DownloadIncompleteError) as caught:
            trolley.download([series_ref(1)], tmp_path)
    assert series_uid(1) in str(caught.value)
    assert "boundary" in str(caught.value)
    assert series_uid(1) in caught.value.uids
    assert saved_files(tmp_path) == {}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_truncated_multipart_keeps_complete_instances_only(
    session: requests.Session, tmp_path: Path, chunked: bool
) -> None:
    files = series_files(1)
    body = multipart_body(list(files.values()), "cut-here")
    third = body.index(files[instance_uid(1, 3)])
    cut = multipart_reply(
        list(files.values()),
        "cut-here",
        cut_after=third + 200,  # in the middle of the third file
        chunked=chunked,
        piece_size=256,
    )
    with FakeServer({series_path(1): cut}) as fake:
        report = save(wado(fake, session), [series_ref(1)], tmp_path)
    [failure] = report.failures
    assert isinstance(failure.error, IncompleteResponseError)
    assert series_uid(1) in failure.uids
    assert failure.error.url == fake.url + series_path(1)
    wanted = {uid: files[uid] for uid in (instance_uid(1, 1), instance_uid(1, 2))}
    assert saved_files(tmp_path) == wanted
    assert leftovers(tmp_path) == []


def test_missing_closing_delimiter_is_incomplete(
    session: requests.Session, tmp_path: Path
) -> None:
    files = series_files(1, count=2)
    body = multipart_body(list(files.values()), "b")
    unterminated = body[
        : body.rindex(b"--b--")
    ]  # complete HTTP body, no last delimiter
    reply = Reply(
        200, unterminated, {"Content-Type": 'multipart/related; boundary="b"'}
    )
    with FakeServer({series_path(1): reply}) as fake:
        report = save(wado(fake, session), [series_ref(1)], tmp_path)
    [failure] = report.failures
    assert isinstance(failure.error, IncompleteResponseError)
    assert series_uid(1) in failure.uids
    assert leftovers(tmp_path) == []


def first_fails(broken: Reply, then: Reply) -> Callable[[Recorded], Reply]:
    """A handler that answers broken to the first request and then to the rest."""
    calls: list[int] = []
    lock = threading.Lock()

    def handler(request: Recorded) -> Reply:
        with lock:
            calls.append(1)
            first = len(calls) == 1
        return broken if first else then

    return handler


@pytest.mark.parametrize(
    "how", ["reset-before-answer", "cut-mid-body"], ids=lambda how: how
)
def test_broken_connection_then_success_on_retry(
    session: requests.Session, tmp_path: Path, how: str
) -> None:
    files = series_files(1)
    good = multipart_reply(list(files.values()))
    if how == "reset-before-answer":
        broken = Reply(reset=True)
    else:
        broken = multipart_reply(list(files.values()), cut_after=len(good.body) - 100)
    with FakeServer({series_path(1): first_fails(broken, good)}) as fake:
        report = save(
            wado(fake, session, retry=Retry(total=2, backoff_factor=0)),
            [series_ref(1)],
            tmp_path,
        )
    assert report.failures == []
    assert len(fake.requests) == 2
    assert saved_files(tmp_path) == files
    # instances saved by the broken try are not counted twice
    assert sorted(report.saved) == sorted(set(report.saved))
    assert len(report.saved) == 3
    assert report.bytes_written == sum(len(content) for content in files.values())
    assert leftovers(tmp_path) == []


def test_progress_shows_the_bytes_of_a_retried_answer_once(
    session: requests.Session, tmp_path: Path
) -> None:
    files = series_files(1)
    good = multipart_reply(list(files.values()))
    broken = multipart_reply(list(files.values()), cut_after=len(good.body) - 100)
    progress = RecordingProgress()
    with FakeServer({series_path(1): first_fails(broken, good)}) as fake:
        downloader = wado(fake, session, retry=Retry(total=2, backoff_factor=0))
        report = downloader.save_all(
            [series_ref(1)], StorageDir(tmp_path), tmp_path, progress=progress
        )
    assert report.failures == []
    assert len(fake.requests) == 2
    assert progress.total("advance") == len(good.body)
    assert progress.total("bytes_total") == len(good.body)
    assert progress.values("done") == [len(content) for content in files.values()]


def test_always_truncated_answer_is_tried_retry_total_plus_one_times(
    session: requests.Session, tmp_path: Path
) -> None:
    files = series_files(1)
    good = multipart_reply(list(files.values()))
    cut = multipart_reply(list(files.values()), cut_after=len(good.body) - 100)
    with FakeServer({series_path(1): cut}) as fake:
        report = save(
            wado(fake, session, retry=Retry(total=2, backoff_factor=0)),
            [series_ref(1)],
            tmp_path,
        )
    assert len(fake.requests) == 3
    [failure] = report.failures
    assert isinstance(failure.error, IncompleteResponseError)
    assert len(report.saved) == len(set(report.saved)) == 2
    assert leftovers(tmp_path) == []


def test_server_error_is_tried_retry_total_plus_one_times(
    session: requests.Session, tmp_path: Path
) -> None:
    """The transport retries the request; the download must not retry it again."""
    with FakeServer({series_path(1): Reply(503, b"busy")}) as fake:
        report = save(
            wado(fake, session, retry=Retry(total=2, backoff_factor=0)),
            [series_ref(1)],
            tmp_path,
        )
    assert len(fake.requests) == 3
    [failure] = report.failures
    assert isinstance(failure.error, ServerHTTPError)
    assert failure.error.status_code == 503


def test_non_dicom_part_is_a_parse_error(
    session: requests.Session, tmp_path: Path
) -> None:
    good = dicom_file(STUDY, series_uid(1), instance_uid(1, 1))
    reply = multipart_reply(
        [good, b"this is not a DICOM file\n" * 20],
        part_types=["application/dicom", "text/plain"],
    )
    with FakeServer({series_path(1): reply}) as fake:
        report = save(wado(fake, session), [series_ref(1)], tmp_path)
    [failure] = report.failures
    assert isinstance(failure.error, DICOMParseError)
    assert series_uid(1) in failure.uids
    assert series_uid(1) in str(failure)
    assert saved_files(tmp_path) == {instance_uid(1, 1): good}
    assert leftovers(tmp_path) == []


def test_answer_without_instances_is_a_failure(
    session: requests.Session, tmp_path: Path
) -> None:
    empty = Reply(
        200, b"--e--\r\n", {"Content-Type": 'multipart/related; boundary="e"'}
    )
    with FakeServer({series_path(1): empty}) as fake:
        report = save(wado(fake, session), [series_ref(1)], tmp_path)
    [failure] = report.failures
    assert "no instances" in str(failure.error)
    assert series_uid(1) in failure.uids


def test_404_for_one_series_does_not_stop_the_others(
    session: requests.Session, tmp_path: Path
) -> None:
    files = series_files(2)
    routes = {series_path(2): multipart_reply(list(files.values()))}  # 1: 404
    with FakeServer(routes) as fake:
        trolley = Trolley(
            wado(fake, session, retry=Retry(total=3, backoff_factor=0)),
            NoSearch(),
            storage=StorageDir(tmp_path),
        )
        with pytest.raises(DownloadIncompleteError) as caught:
            trolley.download([series_ref(1), series_ref(2)], tmp_path)
    assert len(fake.requests_to(series_path(1))) == 1  # 404 is not retried
    assert saved_files(tmp_path) == files
    assert series_uid(1) in str(caught.value)
    assert series_uid(2) not in str(caught.value)
    assert series_uid(1) in caught.value.uids
    assert "404" in str(caught.value)


def test_404_error_in_the_report(session: requests.Session, tmp_path: Path) -> None:
    with FakeServer({}) as fake:
        report = save(wado(fake, session), [series_ref(1)], tmp_path)
    [failure] = report.failures
    assert isinstance(failure.error, ClientHTTPError)
    assert failure.error.status_code == 404
    assert failure.error.url == fake.url + series_path(1)


# --------------------------------------------------------------------------- #
# Concurrency
# --------------------------------------------------------------------------- #


def test_series_are_fetched_concurrently_within_max_workers(
    session: requests.Session, tmp_path: Path
) -> None:
    files = {n: series_files(n, count=1) for n in range(1, 9)}
    routes = {
        series_path(n): multipart_reply(list(content.values()), wait=0.3)
        for n, content in files.items()
    }
    with FakeServer(routes) as fake:
        trolley = Trolley(wado(fake, session), NoSearch(), storage=StorageDir(tmp_path))
        report = trolley.download(
            [series_ref(n) for n in files], tmp_path, use_async=True, max_workers=4
        )
    assert len(report.saved) == 8
    assert len(fake.requests) == 8
    assert 2 <= fake.max_active <= 4


def test_without_async_one_series_at_a_time(
    session: requests.Session, tmp_path: Path
) -> None:
    files = {n: series_files(n, count=1) for n in range(1, 4)}
    routes = {
        series_path(n): multipart_reply(list(content.values()), wait=0.05)
        for n, content in files.items()
    }
    with FakeServer(routes) as fake:
        trolley = Trolley(wado(fake, session), NoSearch(), storage=StorageDir(tmp_path))
        trolley.download([series_ref(n) for n in files], tmp_path)
    assert fake.max_active == 1
    assert len(saved_files(tmp_path)) == 3


# --------------------------------------------------------------------------- #
# In memory
# --------------------------------------------------------------------------- #


def test_datasets_in_memory_in_order(session: requests.Session) -> None:
    files = {1: series_files(1), 2: series_files(2)}
    routes = {
        series_path(n): multipart_reply(list(content.values()), piece_size=300)
        for n, content in files.items()
    }
    with FakeServer(routes) as fake:
        datasets = list(wado(fake, session).datasets([series_ref(2), series_ref(1)]))
    assert [ds.SOPInstanceUID for ds in datasets] == list(files[2]) + list(files[1])


def test_datasets_non_dicom_part_names_the_series(session: requests.Session) -> None:
    reply = multipart_reply([b"plain text"], part_types=["text/plain"])
    with (
        FakeServer({series_path(1): reply}) as fake,
        pytest.raises(DICOMParseError) as caught,
    ):
        list(wado(fake, session).datasets([series_ref(1)]))
    assert series_uid(1) in str(caught.value)
    assert series_uid(1) in caught.value.uids


# --------------------------------------------------------------------------- #
# Metadata
# --------------------------------------------------------------------------- #


def metadata_json(series: int, n: int) -> dict[str, Any]:
    return {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080018": {"vr": "UI", "Value": [instance_uid(series, n)]},
        "0020000D": {"vr": "UI", "Value": [STUDY]},
        "0020000E": {"vr": "UI", "Value": [series_uid(series)]},
        "00280010": {"vr": "US", "Value": [1]},
    }


def test_metadata_asks_for_dicom_json(session: requests.Session) -> None:
    answer = json_reply([metadata_json(1, 1), metadata_json(1, 2)])
    with FakeServer({series_path(1) + "/metadata": answer}) as fake:
        downloader = WadoRSMetaData(session, fake.url + ROOT, retry=NO_RETRY)
        datasets = list(downloader.datasets([series_ref(1)]))
    assert [ds.SOPInstanceUID for ds in datasets] == [
        instance_uid(1, 1),
        instance_uid(1, 2),
    ]
    assert datasets[0].file_meta.MediaStorageSOPInstanceUID == instance_uid(1, 1)
    [request] = fake.requests
    assert request.headers["Accept"] == "application/dicom+json"


def test_metadata_get_dataset_of_a_missing_instance(session: requests.Session) -> None:
    ref = InstanceReference(
        study_uid=STUDY, series_uid=series_uid(1), instance_uid=instance_uid(1, 9)
    )
    path = f"{series_path(1)}/instances/{instance_uid(1, 9)}/metadata"
    with FakeServer({path: json_reply([])}) as fake:
        downloader = WadoRSMetaData(session, fake.url + ROOT, retry=NO_RETRY)
        with pytest.raises(DICOMTrolleyError) as caught:
            downloader.get_dataset(ref)
    assert instance_uid(1, 9) in str(caught.value)
    assert instance_uid(1, 9) in caught.value.uids


def test_metadata_html_answer_is_a_format_error(session: requests.Session) -> None:
    page = html_reply(200, "Login", "please")
    with FakeServer({series_path(1) + "/metadata": page}) as fake:
        downloader = WadoRSMetaData(session, fake.url + ROOT, retry=NO_RETRY)
        with pytest.raises(ResponseFormatError) as caught:
            list(downloader.datasets([series_ref(1)]))
    assert caught.value.url == fake.url + series_path(1) + "/metadata"
    assert series_uid(1) in str(caught.value)
