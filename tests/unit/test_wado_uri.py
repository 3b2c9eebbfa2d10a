"""WADO-URI downloads against a fake server: the query string, skipping, error paths."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from dicomtrolley.core import (
    InstanceReference,
    NonInstanceParameterError,
    SeriesReference,
    StudyReference,
)
from dicomtrolley.download import DownloadReport
from dicomtrolley.exceptions import (
    DICOMParseError,
    IncompleteResponseError,
    ResponseFormatError,
    ServerHTTPError,
)
from dicomtrolley.storage import StorageDir
from dicomtrolley.transport import Retry
from dicomtrolley.wado_uri import WadoURI
from tests.fakes import (
    FakeServer,
    Recorded,
    RecordingProgress,
    Reply,
    dicom_file,
    html_reply,
    tree,
)

PATH = "/wado"
STUDY = "1.2.826.0.1.3680043.8.498.300"
SERIES = "1.2.826.0.1.3680043.8.498.300.1"
NO_RETRY = Retry(total=0, backoff_factor=0)


def instance(n: int) -> InstanceReference:
    return InstanceReference(
        study_uid=STUDY, series_uid=SERIES, instance_uid=f"{SERIES}.{n}"
    )


def content(ref: InstanceReference) -> bytes:
    return dicom_file(ref.study_uid, ref.series_uid, ref.instance_uid)


class Archive:
    """A WADO-URI route that answers with the instance asked for.

    delays maps an objectUID to seconds of silence before its answer.
    """

    def __init__(self, refs: list[InstanceReference], **delays: float) -> None:
        self.files = {ref.instance_uid: content(ref) for ref in refs}
        self.delays = delays

    def __call__(self, request: Recorded) -> Reply:
        uid = request.param("objectUID") or ""
        if uid not in self.files:
            return Reply(404, b"unknown instance")
        wait = self.delays.get(uid, 0.0)
        return Reply(
            200, self.files[uid], {"Content-Type": "application/dicom"}, wait=wait
        )


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def wado(fake: FakeServer, session: requests.Session, **kwargs: Any) -> WadoURI:
    kwargs.setdefault("retry", NO_RETRY)
    return WadoURI(session, fake.url + PATH, **kwargs)


def save(
    downloader: WadoURI,
    refs: list[Any],
    out: Path,
    max_workers: int | None = None,
) -> DownloadReport:
    return downloader.save_all(refs, StorageDir(out), out, max_workers=max_workers)


def stored(out: Path, ref: InstanceReference) -> Path:
    """Where StorageDir puts an instance."""
    return (
        out
        / ref.study_uid.replace(".", "_")
        / ref.series_uid.replace(".", "_")
        / ref.instance_uid.replace(".", "_")
    )


def all_files(folder: Path) -> list[Path]:
    return sorted(path for path in tree(folder) if path.is_file())


# --------------------------------------------------------------------------- #
# What goes on the wire
# --------------------------------------------------------------------------- #


def test_exact_query_string(session: requests.Session) -> None:
    ref = instance(1)
    with FakeServer({PATH: Archive([ref])}) as fake:
        dataset = wado(fake, session).get_dataset(ref)
    assert dataset.SOPInstanceUID == ref.instance_uid
    [request] = fake.requests
    assert request.path == PATH
    assert request.query == (
        f"requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}"
        f"&objectUID={ref.instance_uid}&contentType=application/dicom"
    )


@pytest.mark.parametrize(
    "ref",
    [
        StudyReference(study_uid=STUDY),
        SeriesReference(study_uid=STUDY, series_uid=SERIES),
    ],
    ids=["study", "series"],
)
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_study_and_series_need_instances(
    session: requests.Session, ref: Any, use_async: bool
) -> None:
    with FakeServer({}) as fake:
        downloader = wado(fake, session, use_async=use_async)
        with pytest.raises(NonInstanceParameterError) as caught:
            downloader.check_references([ref])
        assert STUDY in caught.value.uids
        with pytest.raises(NonInstanceParameterError):
            list(downloader.datasets([ref]))
        with pytest.raises(NonInstanceParameterError):
            list(downloader.datasets_async([ref]))
    assert fake.requests == []


# --------------------------------------------------------------------------- #
# In memory
# --------------------------------------------------------------------------- #


def test_datasets_async_yields_all_in_order(session: requests.Session) -> None:
    refs = [instance(n) for n in range(1, 7)]
    # the first ones asked for answer last: order must not follow completion
    delays = {ref.instance_uid: 0.05 * (6 - n) for n, ref in enumerate(refs)}
    archive = Archive(refs)
    archive.delays = delays
    with FakeServer({PATH: archive}) as fake:
        downloader = wado(fake, session, use_async=True, max_workers=3)
        datasets = list(downloader.datasets(refs))
    assert [ds.SOPInstanceUID for ds in datasets] == [ref.instance_uid for ref in refs]
    assert len(fake.requests) == 6
    assert fake.max_active > 1


def test_datasets_async_stopped_early_asks_for_little_more(
    session: requests.Session,
) -> None:
    refs = [instance(n) for n in range(1, 21)]
    with FakeServer({PATH: Archive(refs)}) as fake:
        downloader = wado(fake, session, use_async=True, max_workers=2)
        datasets = downloader.datasets(refs)
        first = next(datasets)
        datasets.close()  # waits for the transfers under way
        asked = len(fake.requests)
    assert first.SOPInstanceUID == refs[0].instance_uid
    assert asked <= 2 * 2 + 1  # a window ahead of what was taken, not all 20


def test_datasets_sync_one_at_a_time(session: requests.Session) -> None:
    refs = [instance(n) for n in range(1, 4)]
    with FakeServer({PATH: Archive(refs)}) as fake:
        datasets = list(wado(fake, session).datasets(refs))
    assert [ds.SOPInstanceUID for ds in datasets] == [ref.instance_uid for ref in refs]
    assert fake.max_active == 1


def test_gzip_encoded_answer_is_accepted(session: requests.Session) -> None:
    """Content-Length counts compressed bytes; the decoded file may be shorter."""
    ref = instance(1)
    raw = content(ref)
    packed = gzip.compress(raw, compresslevel=0)  # stored: a little longer
    assert len(packed) > len(raw)
    reply = Reply(
        200,
        packed,
        {"Content-Type": "application/dicom", "Content-Encoding": "gzip"},
    )
    with FakeServer({PATH: reply}) as fake:
        dataset = wado(fake, session).get_dataset(ref)
    assert dataset.SOPInstanceUID == ref.instance_uid


def test_get_dataset_retries_a_cut_answer(session: requests.Session) -> None:
    ref = instance(1)
    body = content(ref)
    answers = iter(
        [
            Reply(200, body, {"Content-Type": "application/dicom"}, cut_after=100),
            Reply(200, body, {"Content-Type": "application/dicom"}),
        ]
    )
    with FakeServer({PATH: lambda request: next(answers)}) as fake:
        downloader = wado(fake, session, retry=Retry(total=1, backoff_factor=0))
        dataset = downloader.get_dataset(ref)
    assert dataset.SOPInstanceUID == ref.instance_uid
    assert len(fake.requests) == 2


def test_save_all_progress_shows_the_bytes_of_a_retried_answer_once(
    session: requests.Session, tmp_path: Path
) -> None:
    ref = instance(1)
    body = content(ref)
    answers = iter(
        [
            Reply(200, body, {"Content-Type": "application/dicom"}, cut_after=300),
            Reply(200, body, {"Content-Type": "application/dicom"}),
        ]
    )
    progress = RecordingProgress()
    with FakeServer({PATH: lambda request: next(answers)}) as fake:
        downloader = wado(fake, session, retry=Retry(total=1, backoff_factor=0))
        report = downloader.save_all(
            [ref], StorageDir(tmp_path), tmp_path, progress=progress
        )
    assert report.failures == []
    assert len(fake.requests) == 2
    assert progress.total("advance") == len(body)
    assert progress.values("done") == [len(body)]


def test_get_dataset_server_error_tried_retry_total_plus_one_times(
    session: requests.Session,
) -> None:
    with FakeServer({PATH: Reply(503, b"busy")}) as fake:
        downloader = wado(fake, session, retry=Retry(total=2, backoff_factor=0))
        with pytest.raises(ServerHTTPError) as caught:
            downloader.get_dataset(instance(1))
    assert len(fake.requests) == 3
    assert instance(1).instance_uid in caught.value.uids


def test_html_answer_with_200_is_a_format_error(session: requests.Session) -> None:
    page = html_reply(200, "Welcome", "Single sign-on")
    with FakeServer({PATH: page}) as fake, pytest.raises(ResponseFormatError) as caught:
        wado(fake, session).get_dataset(instance(1))
    message = str(caught.value)
    assert "text/html" in message
    assert f"{fake.url}{PATH}?requestType=WADO" in message
    assert instance(1).instance_uid in message
    assert instance(1).instance_uid in caught.value.uids


# --------------------------------------------------------------------------- #
# Saving
# --------------------------------------------------------------------------- #


def test_save_all_skips_intact_files_and_repairs_damaged_ones(
    session: requests.Session, tmp_path: Path
) -> None:
    refs = [instance(n) for n in range(1, 5)]
    archive = Archive(refs)
    with FakeServer({PATH: archive}) as fake:
        downloader = wado(fake, session)

        first = save(downloader, refs, tmp_path, max_workers=2)
        assert first.failures == []
        assert sorted(first.saved) == sorted(stored(tmp_path, ref) for ref in refs)
        assert len(fake.requests) == 4

        second = save(downloader, refs, tmp_path, max_workers=2)
        assert len(fake.requests) == 4  # nothing asked again
        assert second.saved == []
        assert sorted(second.skipped) == sorted(first.saved)

        damaged = stored(tmp_path, refs[2])
        damaged.write_bytes(archive.files[refs[2].instance_uid][:-100])
        third = save(downloader, refs, tmp_path, max_workers=2)
        asked = [request.param("objectUID") for request in fake.requests[4:]]
        assert asked == [refs[2].instance_uid]
        assert third.saved == [damaged]
        assert len(third.skipped) == 3
    for ref in refs:
        assert stored(tmp_path, ref).read_bytes() == archive.files[ref.instance_uid]
    assert len(all_files(tmp_path)) == 4


def test_answer_for_another_instance_is_not_kept(
    session: requests.Session, tmp_path: Path
) -> None:
    asked, other = instance(1), instance(2)
    wrong = Reply(200, content(other), {"Content-Type": "application/dicom"})
    with FakeServer({PATH: wrong}) as fake:
        report = save(wado(fake, session), [asked], tmp_path)
    [failure] = report.failures
    assert isinstance(failure.error, DICOMParseError)
    assert asked.instance_uid in str(failure)
    assert other.instance_uid in str(failure)
    assert asked.instance_uid in failure.uids
    assert report.saved == []
    assert all_files(tmp_path) == []


def test_html_answer_when_saving_is_reported(
    session: requests.Session, tmp_path: Path
) -> None:
    with FakeServer({PATH: html_reply(200, "Login", "please")}) as fake:
        report = save(wado(fake, session), [instance(1)], tmp_path)
    [failure] = report.failures
    assert isinstance(failure.error, ResponseFormatError)
    assert failure.error.url is not None
    assert failure.error.url.startswith(f"{fake.url}{PATH}?requestType=WADO")
    assert instance(1).instance_uid in failure.uids
    assert all_files(tmp_path) == []


def test_cut_answer_leaves_no_file(session: requests.Session, tmp_path: Path) -> None:
    ref = instance(1)
    cut = Reply(200, content(ref), {"Content-Type": "application/dicom"}, cut_after=300)
    with FakeServer({PATH: cut}) as fake:
        report = save(
            wado(fake, session, retry=Retry(total=1, backoff_factor=0)), [ref], tmp_path
        )
    assert len(fake.requests) == 2
    [failure] = report.failures
    assert isinstance(failure.error, IncompleteResponseError)
    assert ref.instance_uid in failure.uids
    assert all_files(tmp_path) == []


def test_one_missing_instance_does_not_stop_the_others(
    session: requests.Session, tmp_path: Path
) -> None:
    refs = [instance(n) for n in range(1, 4)]
    archive = Archive([refs[0], refs[2]])  # refs[1] answers 404
    with FakeServer({PATH: archive}) as fake:
        report = save(wado(fake, session), refs, tmp_path, max_workers=3)
    [failure] = report.failures
    assert failure.error.status_code == 404
    assert refs[1].instance_uid in failure.uids
    assert sorted(report.saved) == sorted(
        stored(tmp_path, r) for r in (refs[0], refs[2])
    )
    for ref in (refs[0], refs[2]):
        saved = pydicom.dcmread(stored(tmp_path, ref))
        assert saved.SOPInstanceUID == ref.instance_uid
