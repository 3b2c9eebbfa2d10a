"""One fault at a chosen place, for each failure the campaigns can run into.

The campaigns find problems by chance; these tests pin each kind of problem
down with a :class:`~tests.faults.proxy.ScriptedSchedule` and no retries (or
retries where the behaviour under test is the retry), so that a failure is a
minimal reproduction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dicomtrolley.core import Query, QueryLevels, SeriesReference, StudyReference
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet, DIMSETimeouts
from dicomtrolley.emulator import Emulator
from dicomtrolley.exceptions import (
    DownloadIncompleteError,
    PermanentError,
    TransientError,
)
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.transport import Retry, Timeout
from dicomtrolley.wado_rs import WadoRS
from tests.fakes import FakeServer, dicom_file, multipart_reply
from tests.faults.campaign import (
    LAYOUT,
    PASSWORD,
    TOTAL_DEADLINE,
    USER,
    Profile,
    SourceData,
    emulator_pairs,
    inspect_output,
)
from tests.faults.proxy import Fault, FaultProxy, Pacing, ScriptedSchedule

NO_RETRY = Retry(total=0)
SHORT = Timeout(connect=1.0, read=0.5)
DIMSE_SHORT = DIMSETimeouts(connect=1.0, idle=0.5, total=2.0)
#: Longer than every timeout above: a client still there at the cap has none.
CAP = 4.0
#: The A-ASSOCIATE-AC of the emulator is 228 bytes; its C-FIND-RSP PDUs follow.
INSIDE_ASSOCIATE_AC = 100
INSIDE_FIRST_FIND_RESPONSE = 228 + 20


@pytest.fixture
def http_proxy(fault_emulator: Emulator) -> Iterator[FaultProxy]:
    upstream = ("127.0.0.1", fault_emulator.port)
    with FaultProxy(upstream, "http", pacing=Pacing(cap=CAP)) as proxy:
        yield proxy


@pytest.fixture
def dimse_proxy(fault_emulator: Emulator) -> Iterator[FaultProxy]:
    upstream = ("127.0.0.1", fault_emulator.dimse.port)
    with FaultProxy(upstream, "dimse", pacing=Pacing(cap=CAP)) as proxy:
        yield proxy


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as basic:
        basic.auth = (USER, PASSWORD)
        yield basic


@pytest.fixture
def thread_errors() -> Iterator[list[threading.ExceptHookArgs]]:
    """Unhandled exceptions in any thread while the test runs."""
    seen: list[threading.ExceptHookArgs] = []
    saved = threading.excepthook
    threading.excepthook = seen.append
    try:
        yield seen
    finally:
        threading.excepthook = saved


def first_series(data: SourceData) -> SeriesReference:
    source = sorted(data.by_uid.values(), key=lambda s: (s.study_uid, s.series_uid))[0]
    return SeriesReference(study_uid=source.study_uid, series_uid=source.series_uid)


def instances_of(data: SourceData, series: SeriesReference) -> set[str]:
    return {
        s.sop_uid for s in data.by_uid.values() if s.series_uid == series.series_uid
    }


def dimse_aec(emulator: Emulator) -> dict[str, str]:
    return {"aet": "FAULTS", "aec": emulator.dimse.ae_title}


# -- HTTP -------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_qido_answer_cut_in_its_header_block_is_not_an_empty_answer(
    http_proxy: FaultProxy, session: requests.Session, position: float
) -> None:
    """A QIDO-RS answer cut inside its status line or headers is an error
    (retryable), never a complete answer without studies."""
    http_proxy.schedule = ScriptedSchedule(
        [("GET /dicom-web/studies", Fault("cut", "head", position))]
    )
    qido = QidoRS(session, http_proxy.url + "/dicom-web", timeout=SHORT, retry=NO_RETRY)
    try:
        studies = qido.find_studies(Query(PatientID="FLT*"))
    except TransientError:
        return
    assert http_proxy.counts()["cut"] == 1
    pytest.fail(f"a cut header block was taken as an answer: {len(studies)} studies")


@pytest.mark.parametrize("missing", [1, 2])
def test_wado_rs_answer_complete_up_to_its_close_delimiter_is_accepted(
    http_proxy: FaultProxy,
    session: requests.Session,
    fault_data: SourceData,
    tmp_path: Path,
    missing: int,
) -> None:
    """The multipart body ends ``--boundary--\\r\\n``; when the connection drops
    after the close delimiter, every part has arrived and is saved."""
    series = first_series(fault_data)
    http_proxy.schedule = ScriptedSchedule(
        [("/series/", Fault("cut", "tail", (missing - 1) / 8))]
    )
    wado = WadoRS(session, http_proxy.url + "/dicom-web", timeout=SHORT, retry=NO_RETRY)
    storage = TemplateStorage(tmp_path, LAYOUT)
    try:
        wado.save_all([series], storage, tmp_path).raise_for_failures()
    finally:
        assert http_proxy.counts()["cut"] == 1
    output = inspect_output(tmp_path, fault_data, same_bytes=True)
    assert output.present == instances_of(fault_data, series)


@pytest.mark.parametrize("where", ["head", "body"])
@pytest.mark.skipif(not TOTAL_DEADLINE, reason="needs Timeout(total=...)")
def test_endless_trickle_is_stopped_by_the_total_deadline(
    http_proxy: FaultProxy,
    session: requests.Session,
    fault_data: SourceData,
    tmp_path: Path,
    where: str,
) -> None:
    """A server sending a few bytes every 20 ms never trips the read timeout;
    Timeout(total=...) must end the answer, as a TransientError."""
    series = first_series(fault_data)
    http_proxy.schedule = ScriptedSchedule(
        [("/series/", Fault("trickle", where, 0.5, trickle_bytes=None))]
    )
    timeout = Timeout(connect=1.0, read=0.5, total=1.0, min_rate=None)
    wado = WadoRS(
        session, http_proxy.url + "/dicom-web", timeout=timeout, retry=NO_RETRY
    )
    started = time.monotonic()
    report = wado.save_all([series], TemplateStorage(tmp_path, LAYOUT), tmp_path)
    elapsed = time.monotonic() - started
    assert http_proxy.counts()["trickle"] == 1
    assert not http_proxy.overstays, "the client sat through the trickle"
    assert elapsed < 4.0
    assert report.failures
    assert all(isinstance(f.error, TransientError) for f in report.failures)
    assert not inspect_output(tmp_path, fault_data, same_bytes=True).partial


def test_failed_reference_search_is_reported_with_the_study(
    fault_emulator: Emulator,
    fault_data: SourceData,
    tmp_path: Path,
) -> None:
    """WADO-URI needs instances: the Trolley searches for them. When that
    search fails, the download goes on and DownloadIncompleteError names the
    study (instead of the search error aborting the whole download)."""
    pair = next(p for p in emulator_pairs(fault_emulator) if "WADO-URI" in p.name)
    upstream = ("127.0.0.1", fault_emulator.port)
    with FaultProxy(upstream, "http", pacing=Pacing(cap=CAP)) as proxy:
        profile = Profile(SHORT, NO_RETRY, DIMSE_SHORT, faulty=True)
        trolley = pair.make(proxy, profile)
        trolley.storage = TemplateStorage(tmp_path, LAYOUT)
        studies = trolley.find_studies(Query(PatientID="FLT*"))
        assert len(studies) == 2
        failing = sorted(studies, key=lambda s: s.uid)[0]
        proxy.schedule = ScriptedSchedule(
            [(f"StudyInstanceUID={failing.uid}", Fault("500"))]
        )
        with pytest.raises(DownloadIncompleteError) as info:
            trolley.download(studies, tmp_path)
    assert failing.uid in info.value.uids
    other = next(s for s in studies if s.uid != failing.uid)
    present = inspect_output(tmp_path, fault_data, same_bytes=True).present
    assert present == {
        u for u, s in fault_data.by_uid.items() if s.study_uid == other.uid
    }


# -- DIMSE ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [INSIDE_ASSOCIATE_AC, INSIDE_FIRST_FIND_RESPONSE],
    ids=["inside A-ASSOCIATE-AC", "inside the first C-FIND-RSP"],
)
def test_c_find_stalled_inside_a_pdu_gives_up_in_time(
    fault_emulator: Emulator,
    dimse_proxy: FaultProxy,
    thread_errors: list[threading.ExceptHookArgs],
    offset: int,
) -> None:
    """A peer that goes silent in the middle of a PDU is as silent as one that
    goes silent between PDUs: connect, idle and total timeouts apply."""
    dimse_proxy.schedule = ScriptedSchedule([("", Fault("stall", offset=offset))])
    finder = DICOMQR(
        "127.0.0.1", dimse_proxy.port, **dimse_aec(fault_emulator), timeout=DIMSE_SHORT
    )
    started = time.monotonic()
    with pytest.raises(TransientError):
        finder.find_studies(Query(PatientID="FLT*"))
    elapsed = time.monotonic() - started
    assert dimse_proxy.counts()["stall"] == 1
    assert not dimse_proxy.overstays, (
        f"the client sat through the stall ({elapsed:.1f} s)"
    )
    assert elapsed < 3.5
    assert not thread_errors


@pytest.mark.parametrize(
    "offset",
    [INSIDE_ASSOCIATE_AC, 5000],
    ids=["inside A-ASSOCIATE-AC", "inside a C-STORE"],
)
def test_c_get_stalled_inside_a_pdu_gives_up_in_time(
    fault_emulator: Emulator,
    dimse_proxy: FaultProxy,
    fault_data: SourceData,
    tmp_path: Path,
    thread_errors: list[threading.ExceptHookArgs],
    offset: int,
) -> None:
    series = first_series(fault_data)
    dimse_proxy.schedule = ScriptedSchedule([("", Fault("stall", offset=offset))])
    getter = DICOMQRGet(
        "127.0.0.1",
        dimse_proxy.port,
        **dimse_aec(fault_emulator),
        timeout=DIMSE_SHORT,
        retry=NO_RETRY,
    )
    started = time.monotonic()
    report = getter.save_all([series], TemplateStorage(tmp_path, LAYOUT), tmp_path)
    elapsed = time.monotonic() - started
    assert dimse_proxy.counts()["stall"] == 1
    assert not dimse_proxy.overstays, (
        f"the client sat through the stall ({elapsed:.1f} s)"
    )
    assert elapsed < 3.5
    assert report.failures
    assert all(isinstance(f.error, TransientError) for f in report.failures)
    assert not thread_errors


@pytest.mark.parametrize("kind", ["stall", "cut", "abort"])
def test_c_find_whose_release_is_not_answered(
    fault_emulator: Emulator,
    dimse_proxy: FaultProxy,
    fault_data: SourceData,
    thread_errors: list[threading.ExceptHookArgs],
    kind: str,
) -> None:
    """Every C-FIND response arrived, then the A-RELEASE-RP does not: the
    search has its answer, and no thread dies of it."""
    dimse_proxy.schedule = ScriptedSchedule([("", Fault(kind, offset=10**9))])
    finder = DICOMQR(
        "127.0.0.1", dimse_proxy.port, **dimse_aec(fault_emulator), timeout=DIMSE_SHORT
    )
    try:
        studies = finder.find_studies(Query(PatientID="FLT*"))
    except (TransientError, PermanentError) as error:
        pytest.fail(f"a search whose answer was complete failed: {error}")
    assert {s.uid for s in studies} == fault_data.study_uids
    time.sleep(0.5)  # pynetdicom's reactor thread ends the association
    assert [f.where for f in dimse_proxy.injected] == ["release"]
    assert not thread_errors, [
        f"{a.exc_type.__name__}: {a.exc_value}" for a in thread_errors
    ]


@pytest.mark.parametrize("offset", [INSIDE_ASSOCIATE_AC, 3000, 20000])
def test_c_get_abort_is_retried(
    fault_emulator: Emulator,
    dimse_proxy: FaultProxy,
    fault_data: SourceData,
    tmp_path: Path,
    offset: int,
) -> None:
    """An A-ABORT in the middle of a C-GET is transient: with retries on, the
    study arrives whole."""
    study_uid = sorted(fault_data.study_uids)[0]
    dimse_proxy.schedule = ScriptedSchedule([("", Fault("abort", offset=offset))])
    getter = DICOMQRGet(
        "127.0.0.1",
        dimse_proxy.port,
        **dimse_aec(fault_emulator),
        timeout=DIMSE_SHORT,
        retry=Retry(total=2, backoff_factor=0.0, backoff_jitter=0.0),
    )
    storage = TemplateStorage(tmp_path, LAYOUT)
    getter.save_all([StudyReference(study_uid)], storage, tmp_path).raise_for_failures()
    assert dimse_proxy.counts()["abort"] == 1
    present = inspect_output(tmp_path, fault_data, same_bytes=False).present
    assert present == {
        u for u, s in fault_data.by_uid.items() if s.study_uid == study_uid
    }


def test_qido_level_search_through_the_proxy_is_unharmed(
    http_proxy: FaultProxy, session: requests.Session, fault_data: SourceData
) -> None:
    """Without faults the proxy changes nothing, and keeps connections alive."""
    qido = QidoRS(session, http_proxy.url + "/dicom-web", timeout=SHORT)
    for _ in range(3):
        studies = qido.find_studies(
            Query(PatientID="FLT*", query_level=QueryLevels.INSTANCE)
        )
        uids = {i.uid for s in studies for i in s.all_instances()}
        assert uids == set(fault_data.by_uid)
    assert http_proxy.connections == 1
    assert http_proxy.reused_requests >= 2


@pytest.mark.parametrize(
    "offset",
    [INSIDE_ASSOCIATE_AC, 228 + 20],
    ids=["inside A-ASSOCIATE-AC", "inside the first C-MOVE-RSP"],
)
def test_c_move_stalled_inside_a_pdu_gives_up_in_time(
    fault_emulator: Emulator,
    dimse_proxy: FaultProxy,
    fault_data: SourceData,
    tmp_path: Path,
    thread_errors: list[threading.ExceptHookArgs],
    offset: int,
) -> None:
    pair = next(p for p in emulator_pairs(fault_emulator) if "C-MOVE" in p.name)
    profile = Profile(SHORT, NO_RETRY, DIMSE_SHORT, faulty=True)
    mover = pair.make(dimse_proxy, profile).downloader
    series = first_series(fault_data)
    dimse_proxy.schedule = ScriptedSchedule([("", Fault("stall", offset=offset))])
    started = time.monotonic()
    report = mover.save_all([series], TemplateStorage(tmp_path, LAYOUT), tmp_path)
    elapsed = time.monotonic() - started
    assert dimse_proxy.counts()["stall"] == 1
    assert not dimse_proxy.overstays, (
        f"the client sat through the stall ({elapsed:.1f} s)"
    )
    assert elapsed < 3.5
    assert report.failures or inspect_output(
        tmp_path, fault_data, same_bytes=False
    ).present == instances_of(fault_data, series)
    assert not thread_errors


@pytest.mark.parametrize("position", [0.1, 0.4, 0.6, 0.8, 0.97])
def test_wado_rs_answer_framed_by_closing_cut_in_its_headers_is_retried(
    tmp_path: Path, position: float
) -> None:
    """Orthanc answers WADO-RS with ``Connection: close`` and no length. Cut
    inside its header block (even inside ``Content-Type``), such an answer is
    incomplete, a TransientError that the retry repairs, not a malformed one."""
    study, series = "1.2.3", "1.2.3.4"
    files = [dicom_file(study, series, f"1.2.3.4.{n}") for n in (1, 2)]
    reply = multipart_reply(files, boundary="b0undary-" + "x" * 60, unframed=True)
    with FakeServer(lambda request: reply) as upstream:
        port = int(upstream.url.rsplit(":", 1)[1])
        with FaultProxy(("127.0.0.1", port), pacing=Pacing(cap=CAP)) as proxy:
            proxy.schedule = ScriptedSchedule([("", Fault("cut", "head", position))])
            wado = WadoRS(
                requests.Session(),
                proxy.url + "/dicom-web",
                timeout=SHORT,
                retry=Retry(total=1, backoff_factor=0.0, backoff_jitter=0.0),
            )
            ref = SeriesReference(study_uid=study, series_uid=series)
            report = wado.save_all([ref], TemplateStorage(tmp_path, LAYOUT), tmp_path)
            assert proxy.counts() == {"cut": 1}
    assert not report.failures, [str(f) for f in report.failures]
    assert len(report.saved) == 2
