"""dicomtrolley 4.1.0 behaviour outside the protocol adapters that scripts rely on.

- Storage subclasses that override ``save()`` or ``generate_path()`` are used
  by downloads (streaming ones included), as 4.1.0's downloaders called
  ``storage.save(dataset, path)`` for every instance.
- ``FlatStorageDir`` is a ``StorageDir``; a dataset without SOPInstanceUID is
  saved as ``unknown``, while unsafe UIDs are still refused.
- Error messages keep the words 4.1.0 users match on.
- The IMPAX login can still send its credentials the 4.1.0 way, on request.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from dicomtrolley.auth import create_session
from dicomtrolley.caching import DICOMObjectCache, NodeNotFound
from dicomtrolley.core import (
    DICOMObjectLevels,
    InstanceReference,
    Query,
    Searcher,
    SeriesReference,
    Study,
    StudyReference,
)
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyError,
    NoReferencesFoundError,
    StorageError,
    UnSupportedParameterError,
)
from dicomtrolley.mint import Mint, MintQuery, parse_mint_studies_response
from dicomtrolley.parsing import DICOMObjectNotFound, DICOMObjectTree
from dicomtrolley.servers import IMPAXDataCenter
from dicomtrolley.storage import FlatStorageDir, StorageDir
from dicomtrolley.transport import Retry
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.fakes import (
    FakeServer,
    Recorded,
    Reply,
    dicom_file,
    html_reply,
    multipart_reply,
    tree,
    unused_url,
)

STUDY = "1.2.826.0.1.3680043.8.498.700"
SERIES = f"{STUDY}.1"
NO_RETRY = Retry(total=0, backoff_factor=0)


def refs(count: int = 2) -> list[InstanceReference]:
    return [InstanceReference(STUDY, SERIES, f"{SERIES}.{n}") for n in range(count)]


def wado_uri_route(instances: Sequence[InstanceReference]) -> Any:
    files = {
        ref.instance_uid: dicom_file(ref.study_uid, ref.series_uid, ref.instance_uid)
        for ref in instances
    }

    def answer(request: Recorded) -> Reply:
        body = files.get(request.param("objectUID") or "")
        if body is None:
            return Reply(404, b"unknown")
        return Reply(200, body, {"Content-Type": "application/dicom"})

    return answer


class NoSearch(Searcher):
    def find_studies(self, query: Query) -> Sequence[Study]:
        raise AssertionError("no search expected")


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in tree(folder) if p.is_file())


# --------------------------------------------------------------------------- #
# Storage subclasses: overridden save() and generate_path() are honoured
# --------------------------------------------------------------------------- #


class RecordingSave(StorageDir):
    """A 4.1.0-style subclass: changes each dataset, then saves it itself."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.calls: list[tuple[str, str | None]] = []

    def save(self, dataset: Dataset, path: str | Path | None = None) -> Path:
        self.calls.append((dataset.SOPInstanceUID, None if path is None else str(path)))
        dataset.PatientName = "Anonymous"
        return super().save(dataset, path)


class ByPatient(FlatStorageDir):
    """A 4.1.0-style subclass with its own layout."""

    def generate_path(self, dataset: Dataset) -> Path:
        return (
            Path("by-patient")
            / str(dataset.PatientID)
            / f"{dataset.SOPInstanceUID}.dcm"
        )


def test_overridden_save_is_called_for_every_streamed_instance(
    session: requests.Session, tmp_path: Path
) -> None:
    from dicomtrolley.storage import uses_4_1_0_save

    instances = refs(3)
    storage = RecordingSave(str(tmp_path / "default"))
    assert uses_4_1_0_save(storage)
    with FakeServer({"/wado": wado_uri_route(instances)}) as fake:
        trolley = Trolley(
            downloader=WadoURI(session, fake.url + "/wado", retry=NO_RETRY),
            searcher=NoSearch(),
            storage=storage,
        )
        trolley.download(instances, tmp_path / "out")
    assert sorted(uid for uid, _ in storage.calls) == [
        r.instance_uid for r in instances
    ]
    assert {path for _, path in storage.calls} == {str(tmp_path / "out")}
    saved = [
        pydicom.dcmread(tmp_path / "out" / name) for name in files_in(tmp_path / "out")
    ]
    assert len(saved) == 3
    assert {str(ds.PatientName) for ds in saved} == {"Anonymous"}
    assert not any(name.endswith(".part") for name in files_in(tmp_path))


def test_overridden_generate_path_decides_where_streamed_files_go(
    session: requests.Session, tmp_path: Path
) -> None:
    instances = refs(2)
    files = [dicom_file(STUDY, SERIES, ref.instance_uid) for ref in instances]
    with FakeServer(
        {f"/rs/studies/{STUDY}/series/{SERIES}": multipart_reply(files)}
    ) as fake:
        WadoRS(session, fake.url + "/rs", retry=NO_RETRY).save_all(
            [SeriesReference(STUDY, SERIES)], ByPatient(tmp_path), tmp_path
        )
    assert files_in(tmp_path) == [
        f"by-patient/FAKE/{r.instance_uid}.dcm" for r in instances
    ]


def test_existing_file_knows_where_an_overridden_layout_put_a_file(
    tmp_path: Path,
) -> None:
    """The folder's index records where a subclass put each file, so a re-run
    skips it whatever the layout (4.1.0 could not skip at all)."""
    ref = refs(1)[0]
    writer = ByPatient(tmp_path).open_writer(tmp_path, expected=ref)
    writer.write(dicom_file(*ref.uids()))
    path = writer.commit()
    assert path == (tmp_path / f"by-patient/FAKE/{ref.instance_uid}.dcm").resolve()
    assert ByPatient(tmp_path).existing_file(ref, tmp_path) == path
    # another layout saves its own copy
    assert FlatStorageDir(tmp_path).existing_file(ref, tmp_path) is None
    path.unlink()
    assert ByPatient(tmp_path).existing_file(ref, tmp_path) is None


def test_an_overridden_layout_still_cannot_leave_the_folder(tmp_path: Path) -> None:
    class Escaping(StorageDir):
        def generate_path(self, dataset: Dataset) -> Path:
            return Path("..") / "outside"

    dataset = pydicom.dcmread(io.BytesIO(dicom_file(*refs(1)[0].uids())))
    with pytest.raises(StorageError):
        Escaping(tmp_path / "inside").save(dataset)
    assert not (tmp_path / "outside").exists()


# --------------------------------------------------------------------------- #
# FlatStorageDir and missing UIDs
# --------------------------------------------------------------------------- #


def test_flat_storage_dir_is_a_storage_dir_with_a_flat_layout(tmp_path: Path) -> None:
    assert issubclass(FlatStorageDir, StorageDir)
    ref = refs(1)[0]
    dataset = pydicom.dcmread(io.BytesIO(dicom_file(*ref.uids())))
    FlatStorageDir(tmp_path).save(dataset)
    assert files_in(tmp_path) == [ref.instance_uid.replace(".", "_")]
    assert FlatStorageDir.get_value(dataset, "SOPInstanceUID") == files_in(tmp_path)[0]


def _without_sop_uid() -> Dataset:
    dataset = pydicom.dcmread(io.BytesIO(dicom_file(*refs(1)[0].uids())))
    del dataset.SOPInstanceUID
    return dataset


def test_a_dataset_without_sop_instance_uid_is_saved_as_unknown(tmp_path: Path) -> None:
    StorageDir(tmp_path / "tree").save(_without_sop_uid())
    FlatStorageDir(tmp_path / "flat").save(_without_sop_uid())
    folders = f"{STUDY.replace('.', '_')}/{SERIES.replace('.', '_')}"
    assert files_in(tmp_path / "tree") == [f"{folders}/unknown"]
    assert files_in(tmp_path / "flat") == ["unknown"]
    assert StorageDir.get_value(_without_sop_uid(), "SOPInstanceUID") == "unknown"


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("hostile", ["../../etc/passwd", "..", "1.2/../../x", "/abs"])
def test_unsafe_uids_are_still_refused(tmp_path: Path, hostile: str) -> None:
    dataset = _without_sop_uid()
    dataset.SOPInstanceUID = hostile
    with pytest.raises(StorageError):
        StorageDir(tmp_path / "out").save(dataset)
    with pytest.raises(StorageError):
        StorageDir.get_value(dataset, "SOPInstanceUID")
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------- #
# Error messages keep 4.1.0's words
# --------------------------------------------------------------------------- #


def test_vitrea_login_refused_says_login_failed_unauthorized() -> None:
    login = {"/login": Reply(401, b"Login failed: bad username/password")}
    studies = {"/mint/studies": Reply(401, b"you need to log in")}
    with (
        FakeServer(login) as fake,
        FakeServer(studies) as pacs,
        pytest.raises(DICOMTrolleyAuthError) as caught,
    ):
        session = create_session(fake.url + "/login", "user", "wrong")
        Mint(session, pacs.url + "/mint", retry=NO_RETRY).find_studies(Query())
    assert "login failed. 401: Unauthorized" in str(caught.value)
    assert "wrong" not in str(caught.value)


def test_unparseable_mint_answer_says_could_not_parse(
    session: requests.Session,
) -> None:
    page = html_reply(200, "Error", "Request failed")
    with (
        FakeServer({"/mint/studies": page}) as fake,
        pytest.raises(DICOMTrolleyError, match="Could not parse server response"),
    ):
        Mint(session, fake.url + "/mint", retry=NO_RETRY).find_studies(Query())
    with pytest.raises(DICOMTrolleyError, match="Could not parse"):
        parse_mint_studies_response(b"<not xml")


def test_impax_refusal_says_invalid_credentials() -> None:
    routes = {
        "/wado": Reply(200, b"login page"),
        "/wado/j_security_check": Reply(200, b"<html>Login Failed!</html>"),
    }
    with FakeServer(routes) as fake, pytest.raises(DICOMTrolleyError) as caught:
        IMPAXDataCenter(fake.url + "/wado").log_in("user", "wrong")
    expected = f"Logging in to {fake.url}/wado failed. Invalid Credentials?"
    assert expected in str(caught.value)


def test_impax_unreachable_says_error_logging_in() -> None:
    url = unused_url() + "/wado"
    with pytest.raises(
        DICOMTrolleyError, match=re.escape(f"Error logging in to {url}")
    ):
        IMPAXDataCenter(url, timeout=2).log_in("user", "secret")


def test_model_and_cache_messages() -> None:
    tree = DICOMObjectTree([])
    with pytest.raises(
        DICOMObjectNotFound, match=r"Study with uid 9\.9 not found in tree"
    ):
        tree.retrieve(StudyReference("9.9"))
    with pytest.raises(NodeNotFound, match="No node found in cache for reference"):
        DICOMObjectCache().retrieve(StudyReference("9.9"))
    with pytest.raises(NoReferencesFoundError, match="does not contain references of"):
        StudyReference("9.9").contained_references(DICOMObjectLevels.SERIES)
    with pytest.raises(UnSupportedParameterError, match="Conversion from"):
        MintQuery.init_from_query(Query(include_fields=["SOPClassUID"]))


def test_cache_argument_mistakes_are_value_errors_as_in_4_1_0() -> None:
    study = Study(uid="1.2", data=Dataset(), series=[])
    with pytest.raises(ValueError, match="Expected list"):
        DICOMObjectCache(initial_objects=study)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a single object"):
        DICOMObjectCache().add_all(study)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# IMPAX: 4.1.0's login on request, the safe one by default
# --------------------------------------------------------------------------- #


def _impax(credentials_in_url: bool) -> list[Recorded]:
    routes = {"/wado": Reply(200, b"login page"), "/wado/j_security_check": Reply(403)}
    with FakeServer(routes) as fake:
        IMPAXDataCenter(
            fake.url + "/wado", credentials_in_url=credentials_in_url
        ).log_in("user", "s3cret")
    return fake.requests


def test_impax_credentials_in_url_logs_in_like_4_1_0() -> None:
    opened, login = _impax(credentials_in_url=True)
    assert (opened.method, opened.path) == ("GET", "/wado")
    assert (login.method, login.path) == ("GET", "/wado/j_security_check")
    assert login.params == [("j_username", "user"), ("j_password", "s3cret")]


def test_impax_default_login_keeps_the_password_out_of_urls() -> None:
    requests_seen = _impax(credentials_in_url=False)
    assert requests_seen[-1].method == "POST"
    assert all("s3cret" not in r.target for r in requests_seen)
