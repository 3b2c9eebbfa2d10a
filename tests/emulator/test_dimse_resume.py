"""C-GET and C-MOVE retries against the emulator's DIMSE service.

:class:`FlakyDimse` is the emulator's DIMSE service with a fault added: the
retrieves of one study abort their association (A-ABORT) after a number of
instances, as often as it is told to. It keeps every retrieve and C-FIND it
was asked for, so the tests see what a retry asks. The downloads go through
dicomtrolley's own client (DICOMQRGet / DICOMQRMove / DICOMQR).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomtrolley.core import Query, StudyReference
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet, DICOMQRMove
from dicomtrolley.dimse.errors import AssociationAbortedError
from dicomtrolley.emulator import DimseService, Emulator
from dicomtrolley.exceptions import DownloadIncompleteError
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.transport import Retry
from tests.emulator.conftest import DemoData
from tests.fakes import tree

HOST = "127.0.0.1"
FAST = Retry(total=2, backoff_factor=0)


class FlakyDimse(DimseService):
    """A DIMSE service whose retrieves of ``study`` break off (see the module
    docstring): the next ``breaks`` of them abort after ``after`` instances."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self.arm("", after=0, breaks=0)

    def arm(self, study: str, *, after: int, breaks: int) -> None:
        with self._lock:
            self.study, self.after, self.breaks = study, after, breaks
            #: (operation, level, SOP Instance UIDs) of every C-GET and C-MOVE
            self.retrieves: list[tuple[str, str, list[str]]] = []
            self.finds: list[str] = []  # the level of every C-FIND

    def _instances(self, event: Any) -> Any:
        model, instances = super()._instances(event)
        identifier = event.identifier
        value = identifier.get("SOPInstanceUID") or []
        uids = [str(value)] if isinstance(value, str) else [str(v) for v in value]
        with self._lock:
            level = str(identifier.QueryRetrieveLevel)
            self.retrieves.append((model.operation, level, uids))
        return model, instances

    def _on_find(self, event: Any) -> Iterator[Any]:
        with self._lock:
            self.finds.append(str(event.identifier.get("QueryRetrieveLevel", "")))
        yield from super()._on_find(event)

    def _send(self, event: Any, instances: Any, accepted: Any) -> Iterator[Any]:
        with self._lock:
            study = str(event.identifier.get("StudyInstanceUID", ""))
            breaking = self.breaks > 0 and study == self.study
            if breaking:
                self.breaks -= 1
        for number, item in enumerate(super()._send(event, instances, accepted)):
            if breaking and number == self.after:
                event.assoc.abort()
                return
            yield item


@pytest.fixture(scope="module")
def emulator(demo: DemoData) -> Iterator[Emulator]:
    with Emulator(demo.root, services=[FlakyDimse()], rescan_interval=None) as running:
        yield running


@pytest.fixture
def flaky(emulator: Emulator) -> Iterator[FlakyDimse]:
    service = emulator.dimse
    assert isinstance(service, FlakyDimse)
    yield service
    service.arm("", after=0, breaks=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def get(service: DimseService, retry: Retry = FAST) -> DICOMQRGet:
    return DICOMQRGet(HOST, service.port, "TROLLEY", service.ae_title, retry=retry)


def move(service: DimseService, retry: Retry = FAST) -> DICOMQRMove:
    port = free_port()
    service.move_destinations["TROLLEY-STORE"] = (HOST, port)
    return DICOMQRMove(
        HOST,
        service.port,
        "TROLLEY",
        service.ae_title,
        store_aet="TROLLEY-STORE",
        store_port=port,
        retry=retry,
    )


def saved(folder: Path) -> dict[str, Dataset]:
    """SOP Instance UID -> dataset of every file under folder."""
    found: dict[str, Dataset] = {}
    for path in tree(folder):
        if path.is_file():
            dataset = pydicom.dcmread(path)
            found[str(dataset.SOPInstanceUID)] = dataset
    return found


def assert_same(received: dict[str, Dataset], demo: DemoData) -> None:
    for uid, dataset in received.items():
        original = pydicom.dcmread(demo.by_uid[uid])
        assert dataset == original
        assert dataset.PixelData == original.PixelData


def storage(folder: Path) -> TemplateStorage:
    return TemplateStorage(folder, "{StudyInstanceUID}/{SOPInstanceUID}.dcm")


def test_c_get_resumes_a_study_after_listing_it_with_c_find(
    flaky: FlakyDimse, demo: DemoData, tmp_path: Path
) -> None:
    study = demo.study("DTR003").study_uid
    everything = set(demo.files_of(study))
    flaky.arm(study, after=5, breaks=1)

    report = get(flaky).save_all([StudyReference(study)], storage(tmp_path), tmp_path)

    assert not report.failures
    received = saved(tmp_path)
    assert set(received) == everything and len(everything) == 22
    assert_same(received, demo)
    assert len(report.saved) == 22 == len(set(report.saved))
    first, *retries = flaky.retrieves
    assert first == ("get", "STUDY", [])
    assert "IMAGE" in flaky.finds  # the study's instances listed on the retry
    asked = [uid for _, level, uids in retries for uid in uids]
    assert {level for _, level, _ in retries} == {"IMAGE"}
    assert len(asked) == len(set(asked)) == 17  # 22 less the 5 that arrived
    assert set(asked) < everything


def test_c_move_resumes_the_missing_instances_of_a_search_result(
    flaky: FlakyDimse, demo: DemoData, tmp_path: Path
) -> None:
    spec = demo.study("DTR003")
    searcher = DICOMQR(HOST, flaky.port, "TROLLEY", flaky.ae_title)
    [study] = searcher.find_studies(Query(PatientID="DTR003", query_level="INSTANCE"))
    first_series = study.series[0]
    flaky.arm(spec.study_uid, after=7, breaks=1)

    report = move(flaky).save_all([study], storage(tmp_path), tmp_path)

    assert not report.failures
    received = saved(tmp_path)
    assert set(received) == set(demo.files_of(spec.study_uid))
    assert_same(received, demo)
    assert len(report.saved) == 22 == len(set(report.saved))
    levels = [(operation, level) for operation, level, _ in flaky.retrieves]
    assert levels == [("move", "SERIES"), ("move", "IMAGE"), ("move", "SERIES")]
    retried = flaky.retrieves[1][2]
    series_uids = {i.uid for i in first_series.instances}
    assert len(retried) == len(series_uids) - 7 and set(retried) < series_uids
    assert flaky.finds == []  # the search had listed the instances


def test_c_move_that_keeps_breaking_fails_its_study_and_others_continue(
    flaky: FlakyDimse, demo: DemoData, tmp_path: Path
) -> None:
    broken = demo.study("DTR003").study_uid
    other = demo.study("DTR004").study_uid
    flaky.arm(broken, after=2, breaks=100)

    report = move(flaky, Retry(total=1, backoff_factor=0)).save_all(
        [StudyReference(broken), StudyReference(other)], storage(tmp_path), tmp_path
    )

    [failure] = report.failures
    assert isinstance(failure.error, AssociationAbortedError)
    received = saved(tmp_path)
    assert set(demo.files_of(other)) <= set(received)
    arrived = set(received) & set(demo.files_of(broken))
    missing = set(demo.files_of(broken)) - arrived
    assert len(arrived) == 4  # 2 on the first try, 2 on the one retry
    assert failure.uids[0] == broken and set(failure.uids[1:]) == missing
    assert "tried 2 times; 18 instance(s) missing" in str(failure.error)
    with pytest.raises(DownloadIncompleteError) as raised:
        report.raise_for_failures()
    assert missing <= set(raised.value.uids)
