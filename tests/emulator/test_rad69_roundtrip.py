"""dicomtrolley's RAD-69 client against the emulator's RAD-69 server, over HTTP.

Both were written separately from the IHE texts (RAD-69, ITI-43, SOAP 1.2,
XOP); here each checks the other. Studies are found with MINT behind the Vitrea
login, as a user of Vitrea Connection would, and downloaded with
:class:`~dicomtrolley.rad69.Rad69`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicomtrolley.auth import create_session
from dicomtrolley.core import InstanceReference, Query, QueryLevels, Study
from dicomtrolley.emulator import Emulator
from dicomtrolley.exceptions import (
    DownloadIncompleteError,
    Rad69ServerError,
    XDSMissingDocumentError,
)
from dicomtrolley.mint import Mint
from dicomtrolley.rad69 import Rad69
from dicomtrolley.trolley import Trolley
from tests.emulator.conftest import PASSWORD, USER, DemoData
from tests.fakes import tree

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless]
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
UNKNOWN_SOP = "1.2.3.4.5.6.7.8.9"


@pytest.fixture
def session(emulator: Emulator) -> Iterator[requests.Session]:
    """A session that logs in the Vitrea way when the emulator asks for it."""
    with create_session(emulator.login_url, USER, PASSWORD) as logged_in:
        yield logged_in


def rad69(session: requests.Session, emulator: Emulator, **options: Any) -> Rad69:
    options.setdefault("transfer_syntax_list", SYNTAXES)
    return Rad69(session, emulator.base_url + "/rad69", **options)


def trolley(session: requests.Session, emulator: Emulator, **options: Any) -> Trolley:
    return Trolley(
        searcher=Mint(session, emulator.mint_url),
        downloader=rad69(session, emulator, **options),
    )


def saved_files(folder: Path) -> dict[str, bytes]:
    """SOP Instance UID -> bytes of every file below folder."""
    files = {}
    for path in tree(folder):
        if path.is_file():
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert uid not in files, f"{uid} saved twice"
            files[uid] = path.read_bytes()
    return files


def expected(demo: DemoData, uids: set[str] | None = None) -> dict[str, bytes]:
    return {
        uid: path.read_bytes()
        for uid, path in demo.by_uid.items()
        if uids is None or uid in uids
    }


def refs_of(
    demo: DemoData, patient_id: str, description: str = ""
) -> list[InstanceReference]:
    study = demo.study(patient_id, description)
    return [
        InstanceReference(study.study_uid, series.series_uid, series.instance_uid(i))
        for series in study.series
        for i in range(series.instance_count)
    ]


def test_a_whole_study_by_series(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    # a study-level search: the trolley asks MINT for the instances itself
    cart = trolley(session, emulator)
    study = cart.find_study(Query(PatientID="DTR004"))
    assert not study.series
    cart.download(study, tmp_path)
    wanted = demo.study("DTR004").study_uid
    assert saved_files(tmp_path) == demo.files_of(wanted)


def test_everything_in_batches(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    cart = trolley(session, emulator, request_per_series=False, batch_size=7)
    studies = cart.find_studies(
        Query(PatientName="*", query_level=QueryLevels.INSTANCE)
    )
    assert sum(len(s.all_instances()) for s in studies) == len(demo.by_uid)
    report = cart.download(studies, tmp_path)
    assert len(report.saved) == len(demo.by_uid)
    assert saved_files(tmp_path) == expected(demo)


def test_everything_with_four_workers(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    cart = trolley(session, emulator, use_async=True, max_workers=4)
    studies = cart.find_studies(Query(PatientName="*"))
    cart.download(studies, tmp_path, use_async=True, max_workers=4)
    assert saved_files(tmp_path) == expected(demo)


def test_batches_with_four_workers(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    downloader = rad69(
        session, emulator, request_per_series=False, use_async=True, max_workers=4
    )
    cart = Trolley(searcher=Mint(session, emulator.mint_url), downloader=downloader)
    studies = cart.find_studies(Query(PatientID="DTR002"))
    cart.download(studies, tmp_path, use_async=True, max_workers=4)
    wanted = demo.study("DTR002").study_uid
    assert saved_files(tmp_path) == demo.files_of(wanted)


def test_datasets_in_memory(
    emulator: Emulator, demo: DemoData, session: requests.Session
) -> None:
    cart = trolley(session, emulator, use_async=True, max_workers=4)
    study: Study = cart.find_study(Query(PatientID="DTR003"))
    datasets = list(cart.fetch_all_datasets([study]))
    spec = demo.study("DTR003")
    assert {str(ds.SOPInstanceUID) for ds in datasets} == set(
        demo.files_of(spec.study_uid)
    )
    for dataset in datasets:
        stored = pydicom.dcmread(demo.by_uid[str(dataset.SOPInstanceUID)])
        assert dataset.file_meta.TransferSyntaxUID == stored.file_meta.TransferSyntaxUID
        assert dataset.PixelData == stored.PixelData


def test_one_instance(
    emulator: Emulator, demo: DemoData, session: requests.Session
) -> None:
    ref = refs_of(demo, "DTR001", "MR")[-1]  # an RLE instance
    dataset = rad69(session, emulator).get_dataset(ref)
    assert str(dataset.SOPInstanceUID) == ref.instance_uid
    assert dataset.file_meta.TransferSyntaxUID == RLELossless


def test_a_missing_document_is_named(
    emulator: Emulator, demo: DemoData, session: requests.Session
) -> None:
    ref = refs_of(demo, "DTR004")[0]
    missing = InstanceReference(ref.study_uid, ref.series_uid, UNKNOWN_SOP)
    downloader = rad69(session, emulator)
    with pytest.raises(XDSMissingDocumentError) as caught:
        downloader.get_dataset(missing)
    assert UNKNOWN_SOP in str(caught.value)
    assert UNKNOWN_SOP in caught.value.uids


def test_partial_success_saves_what_came_and_names_the_rest(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    refs = refs_of(demo, "DTR004")
    missing = InstanceReference(refs[0].study_uid, refs[0].series_uid, UNKNOWN_SOP)
    cart = trolley(session, emulator)
    with pytest.raises(DownloadIncompleteError) as caught:
        cart.download([*refs, missing], tmp_path)
    assert caught.value.uids == (UNKNOWN_SOP,)
    (failure,) = caught.value.report.failures
    assert isinstance(failure.error, XDSMissingDocumentError)
    assert "PartialSuccess" in str(failure.error)
    assert saved_files(tmp_path) == expected(demo, {r.instance_uid for r in refs})


def test_ignored_missing_documents(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    refs = refs_of(demo, "DTR001", "MR")
    first = refs[0]
    # one series request with a missing document among present ones
    # (PartialSuccess), and one series where nothing exists (Failure)
    partial = InstanceReference(first.study_uid, first.series_uid, UNKNOWN_SOP)
    failed = InstanceReference(first.study_uid, "1.2.3.4", UNKNOWN_SOP + ".1")
    cart = trolley(session, emulator, errors_to_ignore=[XDSMissingDocumentError])
    report = cart.download([partial, *refs, failed], tmp_path)
    assert not report.failures
    assert saved_files(tmp_path) == expected(demo, {r.instance_uid for r in refs})
    datasets = list(cart.fetch_all_datasets([partial, *refs[:3], failed]))
    assert [str(ds.SOPInstanceUID) for ds in datasets] == [
        r.instance_uid for r in refs[:3]
    ]


def test_missing_documents_in_memory_are_raised(
    emulator: Emulator, demo: DemoData, session: requests.Session
) -> None:
    refs = refs_of(demo, "DTR004")[:2]
    missing = InstanceReference(refs[0].study_uid, refs[0].series_uid, UNKNOWN_SOP)
    cart = trolley(session, emulator, request_per_series=False)
    received = []
    with pytest.raises(XDSMissingDocumentError) as caught:
        for dataset in cart.fetch_all_datasets([*refs, missing]):
            received.append(str(dataset.SOPInstanceUID))
    assert received == [r.instance_uid for r in refs]
    assert UNKNOWN_SOP in caught.value.uids


def test_transfer_syntax_not_possible(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    refs = refs_of(demo, "DTR004")  # explicit and implicit VR little endian
    downloader = rad69(session, emulator, transfer_syntax_list=[JPEG_LOSSLESS])
    with pytest.raises(Rad69ServerError) as caught:
        downloader.get_dataset(refs[0])
    assert not isinstance(caught.value, XDSMissingDocumentError)
    assert "urn:dicom:wado:0007" in str(caught.value)
    assert refs[0].instance_uid in caught.value.uids
    cart = Trolley(searcher=Mint(session, emulator.mint_url), downloader=downloader)
    with pytest.raises(DownloadIncompleteError) as incomplete:
        cart.download(refs, tmp_path)
    assert set(incomplete.value.uids) == {r.instance_uid for r in refs}
    assert all(
        "urn:dicom:wado:0007" in str(f.error) for f in incomplete.value.report.failures
    )
    assert not saved_files(tmp_path)


def test_only_explicit_vr_leaves_the_rest_failed(
    emulator: Emulator, demo: DemoData, session: requests.Session, tmp_path: Path
) -> None:
    refs = refs_of(demo, "DTR004")
    cart = trolley(
        session,
        emulator,
        request_per_series=False,
        transfer_syntax_list=[ExplicitVRLittleEndian],
    )
    with pytest.raises(DownloadIncompleteError) as caught:
        cart.download(refs, tmp_path)
    spec = demo.study("DTR004")
    implicit = {
        series.instance_uid(i)
        for series in spec.series
        if series.transfer_syntax == ImplicitVRLittleEndian
        for i in range(series.instance_count)
    }
    assert set(caught.value.uids) == implicit
    assert saved_files(tmp_path) == expected(
        demo, {r.instance_uid for r in refs} - implicit
    )
