"""C-GET retries (dicomtrolley.dimse.resume) against scripted peers on loopback.

Each test scripts the associations one after the other (tests/dimse_peer.py):
a first one that breaks off after some instances (A-ABORT, or a connection
closed in the middle of an instance), then what the retries find. The peer
keeps every identifier it was asked for, so the tests see what a retry asks.
Emulator and C-MOVE retries are in tests/emulator/test_dimse_resume.py.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom.dsutils import decode

from dicomtrolley.core import Instance, Series, Study, StudyReference
from dicomtrolley.dicom_qr import DICOMQRGet
from dicomtrolley.dimse.errors import AssociationAbortedError, DIMSEStatusError
from dicomtrolley.download import DownloadReport
from dicomtrolley.exceptions import DownloadIncompleteError
from dicomtrolley.formats import dul
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.transport import Retry
from tests.dimse_peer import SERIES, STUDY, Peer, instance
from tests.fakes import tree as output_tree

Script = Callable[[Peer], None]
FAST = Retry(total=2, backoff_factor=0)


def uids(count: int) -> list[str]:
    return [str(generate_uid()) for _ in range(count)]


def tree(sops: list[str]) -> Study:
    """A search result down to the instances: one series of sops."""
    study = Study(uid=STUDY, data=Dataset(), series=[])
    series = Series(uid=SERIES, data=Dataset(), parent=study, instances=[])
    series.instances = [Instance(uid=u, data=Dataset(), parent=series) for u in sops]
    study.series = [series]
    return study


def sop_uids(identifier: Dataset) -> list[str]:
    value = identifier.SOPInstanceUID
    return [value] if isinstance(value, str) else list(value)


def c_get(peer: Peer, asked: list[Dataset]) -> int:
    """Read a C-GET request, keep its identifier; its message ID."""
    request, identifier = peer.message()
    assert request[dul.COMMAND_FIELD] == dul.C_GET_RQ
    assert identifier is not None
    asked.append(decode(io.BytesIO(identifier), False, True))
    return dul.command_int(request, dul.MESSAGE_ID)


def send(peer: Peer, sops: list[str], answers: list[int] | None = None) -> None:
    """C-STORE each instance and wait for its response."""
    for sop in sops:
        peer.store(sop, instance(sop))
        status = dul.command_int(peer.message()[0], dul.STATUS)
        if answers is not None:
            answers.append(status)


def break_off(peer: Peer, how: str) -> None:
    """An A-ABORT, or half an instance and a closed connection."""
    if how == "abort":
        peer.send(dul.abort(2, 6))
        time.sleep(0.1)
        return
    sop = str(generate_uid())
    context_id = peer.contexts[CTImageStorage]
    command: dict[int, dul.CommandValue] = {
        dul.AFFECTED_SOP_CLASS_UID: CTImageStorage,
        dul.COMMAND_FIELD: dul.C_STORE_RQ,
        dul.MESSAGE_ID: 1,
        dul.PRIORITY: 0,
        dul.COMMAND_DATA_SET_TYPE: 0,
        dul.AFFECTED_SOP_INSTANCE_UID: sop,
    }
    raw = b"".join(
        dul.p_data(context_id, dul.encode_command(command), command=True, max_length=0)
    )
    peer.send(
        raw + next(dul.p_data(context_id, instance(sop), command=False, max_length=200))
    )


def breaking(asked: list[Dataset], sops: list[str], how: str = "abort") -> Script:
    """An association that sends sops, then breaks off."""

    def script(peer: Peer) -> None:
        c_get(peer, asked)
        send(peer, sops)
        break_off(peer, how)

    return script


def behaving(
    asked: list[Dataset], sops: list[str], answers: list[int] | None = None
) -> Script:
    """An association that sends sops and answers success."""

    def script(peer: Peer) -> None:
        msg_id = c_get(peer, asked)
        send(peer, sops, answers)
        peer.get_response(msg_id, 0x0000, completed=len(sops))
        peer.finish_release()

    return script


def downloader(peer: Peer, retry: Retry | None = FAST) -> DICOMQRGet:
    return DICOMQRGet("127.0.0.1", peer.port, aec="SCRIPTED", retry=retry)


def save(
    peer: Peer, out: Path, objects: list[object], **kwargs: object
) -> DownloadReport:
    storage = TemplateStorage(out, "{SOPInstanceUID}.dcm")
    report = downloader(peer, **kwargs).save_all(objects, storage, out)  # type: ignore[arg-type]
    peer.join()
    return report


def files(folder: Path) -> list[str]:
    """Every file name under folder: temporary ones would show here too."""
    return sorted(p.name for p in output_tree(folder) if p.is_file())


@pytest.mark.parametrize("how", ["abort", "cut"])
def test_a_retry_asks_only_for_the_missing_instances(tmp_path: Path, how: str) -> None:
    sops = uids(5)
    asked: list[Dataset] = []
    peer = Peer(breaking(asked, sops[:2], how), behaving(asked, sops[2:]))

    report = save(peer, tmp_path, [tree(sops)])

    assert peer.associations == 2
    assert [a.QueryRetrieveLevel for a in asked] == ["SERIES", "IMAGE"]
    assert asked[1].StudyInstanceUID == STUDY
    assert asked[1].SeriesInstanceUID == SERIES
    assert sop_uids(asked[1]) == sops[2:]
    assert files(tmp_path) == sorted(f"{sop}.dcm" for sop in sops)
    for sop in sops:
        saved = (tmp_path / f"{sop}.dcm").read_bytes()
        assert saved[128:132] == b"DICM" and saved.endswith(instance(sop))
    assert not report.failures
    assert sorted(p.name for p in report.saved) == files(tmp_path)
    assert report.skipped == []


def test_without_an_instance_list_the_unit_is_asked_for_again_whole(
    tmp_path: Path,
) -> None:
    """No list from the search and a C-FIND that fails: the study again, and
    what arrived before is accepted and thrown away."""
    sops = uids(5)
    asked: list[Dataset] = []
    found: list[Dataset] = []
    answers: list[int] = []

    def refuse_find(peer: Peer) -> None:
        request, identifier = peer.message()
        assert identifier is not None
        found.append(decode(io.BytesIO(identifier), False, True))
        peer.find_response(dul.command_int(request, dul.MESSAGE_ID), 0xC000)
        peer.finish_release()

    peer = Peer(breaking(asked, sops[:2]), refuse_find, behaving(asked, sops, answers))
    report = save(peer, tmp_path, [StudyReference(STUDY)])

    assert peer.associations == 3
    assert [a.QueryRetrieveLevel for a in asked] == ["STUDY", "STUDY"]
    assert found[0].StudyInstanceUID == STUDY
    assert answers == [0x0000] * 5  # the two sent again are taken, not refused
    assert files(tmp_path) == sorted(f"{sop}.dcm" for sop in sops)
    assert not report.failures
    assert len(report.saved) == 5 == len(set(report.saved))


def test_a_peer_that_always_breaks_off_fails_after_the_retries(
    tmp_path: Path,
) -> None:
    sops = uids(5)
    asked: list[Dataset] = []
    peer = Peer(*(breaking(asked, [sop]) for sop in sops[:3]))

    report = save(peer, tmp_path, [tree(sops)])

    assert peer.associations == 3  # Retry.total = 2 retries, then no more
    assert [sop_uids(a) for a in asked[1:]] == [sops[1:], sops[2:]]
    assert files(tmp_path) == sorted(f"{sop}.dcm" for sop in sops[:3])
    [failure] = report.failures
    assert isinstance(failure.error, AssociationAbortedError)
    assert "tried 3 times; 2 instance(s) missing" in str(failure.error)
    assert failure.uids == (STUDY, SERIES, *sops[3:])
    with pytest.raises(DownloadIncompleteError) as raised:
        report.raise_for_failures()
    assert set(sops[3:]) <= set(raised.value.uids)
    assert not set(sops[:3]) & set(raised.value.uids)
    assert all(sop in str(raised.value) for sop in sops[3:])


def test_no_retry_with_total_zero(tmp_path: Path) -> None:
    sops = uids(5)
    asked: list[Dataset] = []
    peer = Peer(breaking(asked, sops[:2]))

    report = save(peer, tmp_path, [tree(sops)], retry=Retry(total=0))

    assert peer.associations == 1 and len(asked) == 1
    [failure] = report.failures
    assert isinstance(failure.error, AssociationAbortedError)  # not "cannot connect"
    assert failure.uids == (STUDY, SERIES, *sops[2:])
    assert files(tmp_path) == sorted(f"{sop}.dcm" for sop in sops[:2])


def test_a_failure_status_is_not_retried(tmp_path: Path) -> None:
    asked: list[Dataset] = []

    def refuse(peer: Peer) -> None:
        peer.get_response(c_get(peer, asked), 0xC000, failed=0)
        peer.finish_release()

    peer = Peer(refuse)
    report = save(peer, tmp_path, [StudyReference(STUDY)], retry=None)  # default

    assert peer.associations == 1
    [failure] = report.failures
    assert isinstance(failure.error, DIMSEStatusError)


def test_the_retry_waits_its_backoff_and_asks_again_for_what_nothing_of_arrived(
    tmp_path: Path,
) -> None:
    sops = uids(3)
    asked: list[Dataset] = []
    peer = Peer(breaking(asked, []), behaving(asked, sops))
    retry = Retry(total=1, backoff_factor=0.3, backoff_jitter=0)

    started = time.monotonic()
    report = save(peer, tmp_path, [tree(sops)], retry=retry)

    assert time.monotonic() - started >= 0.3
    assert [a.QueryRetrieveLevel for a in asked] == ["SERIES", "SERIES"]
    assert not report.failures and len(report.saved) == 3


def test_datasets_in_memory_are_resumed_too() -> None:
    sops = uids(4)
    asked: list[Dataset] = []
    peer = Peer(breaking(asked, sops[:2], "cut"), behaving(asked, sops[2:]))

    received = list(downloader(peer).datasets([tree(sops)]))
    peer.join()

    assert [ds.SOPInstanceUID for ds in received] == sops
    assert sop_uids(asked[1]) == sops[2:]
