"""Fault campaigns: a Trolley downloads through a :class:`FaultProxy`, round after round.

Shared by ``tests/faults`` (a short seeded campaign in CI) and
``benchmarks/faults.py`` (a long one). A campaign runs one protocol pair
(search + download) against one server. Each round:

1. points a fresh Trolley (short timeouts, retries on) at the proxy, with a
   :class:`RandomSchedule` for this round, then searches and downloads
   everything (study, series or instance level; one or two workers);
2. checks the outcome: every instance is in the output folder and identical
   to its source file (HTTP: the same bytes; DIMSE: the same data set without
   file meta), or the download raised
   :class:`~dicomtrolley.exceptions.DownloadIncompleteError` naming it (its
   SOP, series or study UID). A search may fail instead, with a
   TransientError or PermanentError; a search that silently finds less is a
   violation. Every error raised, and every error in the report, must be a
   TransientError or a PermanentError;
3. re-runs the job with no faults and generous timeouts into the same folder:
   then everything must be there;
4. checks that the output folder holds nothing but final ``.dcm`` files (no
   ``.dicomtrolley-*.part`` temporary or other partial file), that nothing was
   written next to it or left in the system temporary folder (pointed at a
   folder of the campaign), and that the process did not grow beyond a bound.

Rounds go on until the proxy has injected ``target_faults`` faults (or the
time budget is spent). Everything that went wrong is a *violation* with the
round, the seed and the faults of the round, so a failure can be replayed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import random
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pydicom
import requests
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicomtrolley.auth import create_session
from dicomtrolley.core import Query, QueryLevels, Study
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet, DICOMQRMove, DIMSETimeouts
from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.exceptions import (
    DownloadIncompleteError,
    PermanentError,
    TransientError,
)
from dicomtrolley.files import TEMP_PREFIX, TEMP_SUFFIX
from dicomtrolley.mint import Mint
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.rad69 import Rad69
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.synthetic import SeriesSpec, StudySpec, synthetic_uid, write_studies
from dicomtrolley.transport import Retry, Timeout
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.faults.proxy import (
    DIMSE_KINDS,
    HTTP_KINDS,
    FaultProxy,
    Injected,
    NoFaults,
    Pacing,
    RandomSchedule,
)
from tests.orthanc_server import OrthancServer, free_port

USER, PASSWORD = "trolley", "trolley"
STORE_AET = "FAULT-STORE"
LAYOUT = "{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless]

#: Whether dicomtrolley.transport.Timeout has an overall deadline per answer.
#: Without it, trickles are short (a few hundred bytes, then full speed); with
#: it, trickles never end and only the deadline can stop them.
TIMEOUT_FIELDS = frozenset(f.name for f in dataclasses.fields(Timeout))
TOTAL_DEADLINE = "total" in TIMEOUT_FIELDS

HTTP_WEIGHTS = {
    "cut": 3.0,
    "stall": 1.0,
    "reset": 1.5,
    "500": 1.0,
    "503": 1.0,
    "429": 1.0,
    "trickle": 1.0,
}
DIMSE_WEIGHTS = {"cut": 2.0, "stall": 1.0, "reset": 1.0, "abort": 2.0, "trickle": 1.0}
#: The longest the process may grow during one campaign (RSS).
RSS_BOUND = 256 * 1024 * 1024


# -- the data -----------------------------------------------------------------


def campaign_studies() -> list[StudySpec]:
    """Two small studies, 12 instances: explicit, implicit, RLE, a multi-frame."""

    def series(key: str, number: int, count: int, syntax: str, **kw: Any) -> SeriesSpec:
        return SeriesSpec(
            series_uid=synthetic_uid("fault-series", key, str(number)),
            series_number=number,
            modality=kw.pop("modality", "CT"),
            description=f"{key} {number}",
            instance_count=count,
            transfer_syntax=syntax,
            **kw,
        )

    return [
        StudySpec(
            patient_id="FLT001",
            patient_name="Fault^One",
            study_uid=synthetic_uid("fault-study", "one"),
            description="CT faults",
            series=(
                series("one", 1, 4, ExplicitVRLittleEndian),
                series("one", 2, 3, RLELossless),
            ),
        ),
        StudySpec(
            patient_id="FLT002",
            patient_name="Fault^Two",
            study_uid=synthetic_uid("fault-study", "two"),
            description="MR faults",
            series=(
                series("two", 1, 4, ImplicitVRLittleEndian, modality="MR"),
                series("two", 2, 1, ExplicitVRLittleEndian, modality="OT", frames=4),
            ),
        ),
    ]


@dataclass(frozen=True)
class Source:
    """One instance as the servers hold it."""

    study_uid: str
    series_uid: str
    sop_uid: str
    path: Path
    data: bytes


@dataclass
class SourceData:
    """The campaign's instances by SOP Instance UID."""

    root: Path
    by_uid: dict[str, Source]

    @property
    def study_uids(self) -> set[str]:
        return {source.study_uid for source in self.by_uid.values()}

    @property
    def paths(self) -> list[Path]:
        return [source.path for source in self.by_uid.values()]


def write_campaign_data(root: Path) -> SourceData:
    by_uid: dict[str, Source] = {}
    for path in write_studies(root, campaign_studies()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uid = str(ds.SOPInstanceUID)
        by_uid[uid] = Source(
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            uid,
            path,
            path.read_bytes(),
        )
    return SourceData(root, by_uid)


# -- the servers and the protocol pairs -----------------------------------------


@dataclass(frozen=True)
class Profile:
    """Timeouts and retries of one Trolley."""

    timeout: Timeout
    retry: Retry
    dimse: DIMSETimeouts
    faulty: bool


def faulty_profile(rng: random.Random) -> Profile:
    timeout_args: dict[str, float] = {"connect": 1.0, "read": 0.5}
    if TOTAL_DEADLINE:
        timeout_args["total"] = 1.0
    if "min_rate" in TIMEOUT_FIELDS:
        timeout_args["min_rate"] = 100_000.0  # + 1 s per 100 kB
    return Profile(
        timeout=Timeout(**timeout_args),
        retry=Retry(total=3, backoff_factor=rng.uniform(0.0, 0.05), backoff_jitter=0.0),
        dimse=DIMSETimeouts(connect=1.5, idle=0.5, total=1.5),
        faulty=True,
    )


CLEAN_PROFILE = Profile(
    timeout=Timeout(connect=5.0, read=30.0),
    retry=Retry(total=3, backoff_factor=0.05, backoff_jitter=0.0),
    dimse=DIMSETimeouts(connect=5.0, idle=30.0),
    faulty=False,
)

Factory = Callable[[FaultProxy, Profile], Trolley]


@dataclass
class Pair:
    """One protocol pair against one server, reached through a proxy."""

    name: str
    mode: str  # "http" or "dimse"
    upstream: tuple[str, int]
    make: Factory
    same_bytes: bool = True  # False: compare data sets (DIMSE writes its own meta)


def _accepts(cls: type, name: str) -> bool:
    return name in inspect.signature(cls).parameters


def _dimse_options(profile: Profile, cls: type) -> dict[str, Any]:
    """timeout, and retry when the DIMSE class takes one."""
    options: dict[str, Any] = {"timeout": profile.dimse}
    if _accepts(cls, "retry"):
        options["retry"] = profile.retry
    return options


def _basic_session() -> requests.Session:
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    return session


def emulator_pairs(emulator: Emulator) -> list[Pair]:
    """QIDO-RS + WADO-RS, MINT + WADO-URI, MINT + RAD-69, C-FIND + C-GET / C-MOVE."""
    http = ("127.0.0.1", emulator.port)
    dimse = emulator.dimse

    def qido_wado(proxy: FaultProxy, profile: Profile) -> Trolley:
        session, url = _basic_session(), proxy.url + "/dicom-web"
        kw = {"timeout": profile.timeout, "retry": profile.retry}
        return Trolley(
            searcher=QidoRS(session, url, **kw), downloader=WadoRS(session, url, **kw)
        )

    def vitrea(proxy: FaultProxy, profile: Profile) -> requests.Session:
        return create_session(
            proxy.url + "/login", USER, PASSWORD, timeout=profile.timeout
        )

    def mint_wado_uri(proxy: FaultProxy, profile: Profile) -> Trolley:
        session = vitrea(proxy, profile)
        kw = {"timeout": profile.timeout, "retry": profile.retry}
        return Trolley(
            searcher=Mint(session, proxy.url + "/rest/api/vault/mint", **kw),
            downloader=WadoURI(session, proxy.url + "/wado", **kw),
        )

    def mint_rad69(proxy: FaultProxy, profile: Profile) -> Trolley:
        session = vitrea(proxy, profile)
        post = dataclasses.replace(
            profile.retry,
            allowed_methods=profile.retry.allowed_methods | {"POST"},
        )
        return Trolley(
            searcher=Mint(
                session,
                proxy.url + "/rest/api/vault/mint",
                timeout=profile.timeout,
                retry=profile.retry,
            ),
            downloader=Rad69(
                session,
                proxy.url + "/rad69",
                transfer_syntax_list=SYNTAXES,
                timeout=profile.timeout,
                retry=post,
            ),
        )

    def find(proxy: FaultProxy, profile: Profile) -> DICOMQR:
        return DICOMQR(
            "127.0.0.1",
            proxy.port,
            aet="FAULTS",
            aec=dimse.ae_title,
            **_dimse_options(profile, DICOMQR),
        )

    def find_get(proxy: FaultProxy, profile: Profile) -> Trolley:
        getter = DICOMQRGet(
            "127.0.0.1",
            proxy.port,
            aet="FAULTS",
            aec=dimse.ae_title,
            **_dimse_options(profile, DICOMQRGet),
        )
        return Trolley(searcher=find(proxy, profile), downloader=getter)

    def find_move(proxy: FaultProxy, profile: Profile) -> Trolley:
        port = free_port()
        dimse.move_destinations[STORE_AET] = ("127.0.0.1", port)
        mover = DICOMQRMove(
            "127.0.0.1",
            proxy.port,
            aet="FAULTS",
            aec=dimse.ae_title,
            store_aet=STORE_AET,
            store_port=port,
            **_dimse_options(profile, DICOMQRMove),
        )
        return Trolley(searcher=find(proxy, profile), downloader=mover)

    dimse_up = ("127.0.0.1", dimse.port)
    return [
        Pair("emulator QIDO-RS + WADO-RS", "http", http, qido_wado),
        Pair("emulator MINT + WADO-URI", "http", http, mint_wado_uri),
        Pair("emulator MINT + RAD-69", "http", http, mint_rad69),
        Pair("emulator C-FIND + C-GET", "dimse", dimse_up, find_get, same_bytes=False),
        Pair(
            "emulator C-FIND + C-MOVE", "dimse", dimse_up, find_move, same_bytes=False
        ),
    ]


def orthanc_pairs(orthanc: OrthancServer) -> list[Pair]:
    """QIDO-RS + WADO-RS and C-FIND + C-GET against a real Orthanc."""

    def qido_wado(proxy: FaultProxy, profile: Profile) -> Trolley:
        session, url = requests.Session(), proxy.url + "/dicom-web"
        session.auth = orthanc.auth
        kw = {"timeout": profile.timeout, "retry": profile.retry}
        return Trolley(
            searcher=QidoRS(session, url, **kw), downloader=WadoRS(session, url, **kw)
        )

    def find_get(proxy: FaultProxy, profile: Profile) -> Trolley:
        common = {"aet": "FAULTS", "aec": orthanc.aet}
        return Trolley(
            searcher=DICOMQR(
                "127.0.0.1", proxy.port, **common, **_dimse_options(profile, DICOMQR)
            ),
            downloader=DICOMQRGet(
                "127.0.0.1",
                proxy.port,
                **common,
                **_dimse_options(profile, DICOMQRGet),
            ),
        )

    return [
        Pair(
            "Orthanc QIDO-RS + WADO-RS",
            "http",
            ("127.0.0.1", orthanc.http_port),
            qido_wado,
        ),
        Pair(
            "Orthanc C-FIND + C-GET",
            "dimse",
            ("127.0.0.1", orthanc.dicom_port),
            find_get,
            same_bytes=False,
        ),
    ]


@contextlib.contextmanager
def running_emulator(data: SourceData) -> Iterator[Emulator]:
    """An emulator over the campaign data, with its DIMSE service."""
    services = [*default_services(), DimseService()]
    with Emulator(data.root, services=services, rescan_interval=None) as emulator:
        yield emulator


@contextlib.contextmanager
def running_orthanc(data: SourceData) -> Iterator[OrthancServer]:
    """An Orthanc holding the campaign data (RuntimeError when it cannot start)."""
    server = OrthancServer()
    try:
        server.start()
        answers = server.upload(data.paths)
        refused = [a for a in answers if a.get("Status") != "Success"]
        if refused:
            raise RuntimeError(f"Orthanc did not store every instance: {refused[:3]}")
        yield server
    finally:
        server.stop()


# -- one campaign ---------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How long a campaign runs and how hard it hits."""

    seed: int
    target_faults: int = 30
    max_rounds: int = 400
    budget_seconds: float = 60.0
    http_rate: float = 0.3
    dimse_rate: float = 0.7


@dataclass
class Result:
    """What one campaign saw. ``violations`` must stay empty."""

    name: str
    seed: int
    mode: str
    rounds: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    cut_where: Counter[str] = field(default_factory=Counter)
    raised: int = 0
    incomplete_errors: int = 0
    lost_after_resume: int = 0
    partial_files: int = 0
    raw_exceptions: int = 0
    overstays: int = 0
    reused_requests: int = 0
    faults_on_reused: int = 0  # HTTP faults on the 2nd+ request of a connection
    requests: int = 0
    rss_growth: int = 0
    wall: float = 0.0
    violations: list[str] = field(default_factory=list)

    @property
    def total_faults(self) -> int:
        return sum(count for kind, count in self.faults.items() if kind != "none")

    def summary(self) -> str:
        lines = [
            f"{self.name} (seed {self.seed}): {self.rounds} rounds, "
            f"{self.total_faults} faults {dict(self.faults)}, "
            f"{len(self.violations)} violation(s)"
        ]
        lines += [f"  - {text}" for text in self.violations[:40]]
        if len(self.violations) > 40:
            lines.append(f"  ... and {len(self.violations) - 40} more")
        return "\n".join(lines)


def _seed_of(seed: int, *parts: object) -> int:
    return zlib.crc32("/".join(map(str, (seed, *parts))).encode()) & 0x7FFFFFFF


def _not_classified(error: BaseException) -> bool:
    """True for an error that is neither a TransientError nor a PermanentError."""
    return not isinstance(error, TransientError | PermanentError)


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__module__}.{type(error).__name__}: {text[:900]}"


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


@dataclass
class _Output:
    present: set[str]
    problems: list[str]
    partial: list[Path]


def inspect_output(out: Path, data: SourceData, same_bytes: bool) -> _Output:
    """What the output folder holds: instances present and identical, files
    that are partial or not final, and files that are wrong."""
    result = _Output(set(), [], [])
    if not out.exists():
        return result
    for path in sorted(out.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        name = path.name
        if _own_record(out, path):
            continue
        if (
            not path.is_file()
            or path.is_symlink()
            or name.startswith((TEMP_PREFIX, "."))
            or TEMP_SUFFIX in name
            or not name.endswith(".dcm")
        ):
            result.partial.append(path)
            continue
        source = data.by_uid.get(name[: -len(".dcm")])
        if source is None:
            result.problems.append(f"unexpected file {path.relative_to(out)}")
            continue
        expected = Path(source.study_uid, source.series_uid, name)
        if path.relative_to(out) != expected:
            result.problems.append(f"{path.relative_to(out)} should be at {expected}")
            continue
        if not _same_instance(path, source, same_bytes):
            result.problems.append(f"{path.relative_to(out)} differs from its source")
            continue
        result.present.add(source.sop_uid)
    return result


def _own_record(out: Path, path: Path) -> bool:
    """dicomtrolley's records in the output folder: its index (SQLite, with its
    WAL and shared-memory files) and the manifest. Anything else there counts."""
    relative = path.relative_to(out).parts
    if relative == ("manifest.jsonl",):
        return True
    return (
        len(relative) == 2
        and relative[0] == ".dicomtrolley"
        and relative[1] in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm")
    )


def _same_instance(path: Path, source: Source, same_bytes: bool) -> bool:
    data = path.read_bytes()
    if same_bytes:
        return data == source.data
    try:
        received = pydicom.dcmread(path)
    except Exception:
        return False
    original = pydicom.dcmread(source.path)
    return bool(received == original and received.PixelData == original.PixelData)


class Campaign:
    """Rounds of one protocol pair through one proxy, until enough faults."""

    def __init__(
        self,
        pair: Pair,
        data: SourceData,
        workdir: Path,
        settings: Settings,
    ) -> None:
        self.pair = pair
        self.data = data
        self.workdir = workdir
        self.settings = settings
        self.seed = _seed_of(settings.seed, pair.name)
        self.result = Result(pair.name, self.seed, pair.mode)
        self.systemp = workdir / "system-tmp"
        self.thread_errors: list[threading.ExceptHookArgs] = []

    def run(self) -> Result:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.systemp.mkdir(exist_ok=True)
        pacing = Pacing(cap=4.0)  # past every deadline of the faulty profile
        started = time.monotonic()
        before_cwd = set(os.listdir("."))
        saved_tempdir = tempfile.tempdir
        tempfile.tempdir = str(self.systemp)
        saved_hook = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            self.thread_errors.append(args)
            saved_hook(args)

        threading.excepthook = hook
        baseline = 0
        try:
            with FaultProxy(self.pair.upstream, self.pair.mode, pacing=pacing) as proxy:
                for number in range(self.settings.max_rounds):
                    if number == 1:
                        baseline = _rss()  # after the first round's warm-up
                    self._round(proxy, number)
                    self.result.rounds += 1
                    if self.result.total_faults >= self.settings.target_faults:
                        break
                    if time.monotonic() - started > self.settings.budget_seconds:
                        break
                    if baseline:
                        growth = _rss() - baseline
                        self.result.rss_growth = max(self.result.rss_growth, growth)
                self.result.requests = proxy.requests
                self.result.reused_requests = proxy.reused_requests
                if proxy.errors:
                    self._violate(-1, [], f"the proxy failed: {proxy.errors[:3]!r}")
        finally:
            tempfile.tempdir = saved_tempdir
            threading.excepthook = saved_hook
        self.result.wall = time.monotonic() - started
        if self.result.rss_growth > RSS_BOUND:
            self._violate(
                -1, [], f"RSS grew by {self.result.rss_growth / 2**20:.0f} MiB"
            )
        written = set(os.listdir(".")) - before_cwd
        if written:
            self._violate(-1, [], f"written in the working folder: {sorted(written)}")
        return self.result

    # -- one round ------------------------------------------------------------

    def _violate(self, number: int, faults: Sequence[Injected], text: str) -> None:
        shown = ", ".join(
            f"{f.kind}@c{f.connection}r{f.request}+{f.offset}({f.where})"
            for f in faults[:12]
        )
        where = f"round {number}" if number >= 0 else "campaign"
        self.result.violations.append(
            f"{where} [seed {self.seed}] {text}"
            + (f" | faults: {shown}" if shown else "")
        )

    def _round(self, proxy: FaultProxy, number: int) -> None:
        rng = random.Random(_seed_of(self.seed, "round", number))
        round_dir = self.workdir / f"round-{number:04d}"
        out = round_dir / "out"
        out.mkdir(parents=True)
        dimse = self.pair.mode == "dimse"
        proxy.schedule = RandomSchedule(
            seed=_seed_of(self.seed, "schedule", number),
            rate=self.settings.dimse_rate if dimse else self.settings.http_rate,
            weights=DIMSE_WEIGHTS if dimse else HTTP_WEIGHTS,
            endless_trickle=dimse or TOTAL_DEADLINE,
            dimse=dimse,
        )
        level = rng.choice(
            [QueryLevels.STUDY, QueryLevels.SERIES, QueryLevels.INSTANCE]
        )
        workers = rng.choice([1, 2])
        problems = self._faulty_run(proxy, faulty_profile(rng), out, level, workers)
        proxy.schedule = NoFaults()
        faults, overstays = proxy.take_injected()
        for fault in faults:
            self.result.faults[fault.kind] += 1
            if fault.kind == "cut":
                self.result.cut_where[fault.where] += 1
        self.result.faults_on_reused += sum(1 for f in faults if f.request > 0)
        self.result.overstays += len(overstays)
        for stay in overstays:
            problems.append(
                f"the client sat through a {stay.kind} until the proxy's cap: no "
                f"deadline ({stay.kind}@c{stay.connection}r{stay.request}"
                f"+{stay.offset}({stay.where}), maybe from an earlier round)"
            )
        problems += self._clean_run(proxy, out)
        errors, self.thread_errors = self.thread_errors, []
        for args in errors:
            self.result.raw_exceptions += 1
            thread = args.thread.name if args.thread else "?"
            problems.append(
                f"unhandled exception in thread {thread}: "
                f"{args.exc_type.__module__}.{args.exc_type.__name__}: {args.exc_value}"
            )
        leftovers = sorted(self.systemp.rglob("*"))
        if leftovers:
            problems.append(f"left in the system temporary folder: {leftovers[:5]}")
            for path in leftovers:
                with contextlib.suppress(OSError):
                    if path.is_file():
                        path.unlink()
        beside = sorted(p.name for p in round_dir.iterdir() if p.name != "out")
        if beside:
            problems.append(f"written next to the output folder: {beside}")
        for text in problems:
            self._violate(number, faults, text)

    def _faulty_run(
        self,
        proxy: FaultProxy,
        profile: Profile,
        out: Path,
        level: QueryLevels,
        workers: int,
    ) -> list[str]:
        problems: list[str] = []
        trolley = self.pair.make(proxy, profile)
        trolley.storage = TemplateStorage(out, LAYOUT)
        studies: list[Study] | None = None
        try:
            studies = trolley.find_studies(Query(PatientID="FLT*", query_level=level))
        except Exception as error:
            self.result.raised += 1
            if _not_classified(error):
                self.result.raw_exceptions += 1
                problems.append(f"search raised {_describe(error)}")
        if studies is not None:
            problems += self._check_search(studies, level)
            incomplete: DownloadIncompleteError | None = None
            try:
                trolley.download(
                    studies, out, use_async=workers > 1, max_workers=workers
                )
            except DownloadIncompleteError as error:
                self.result.raised += 1
                self.result.incomplete_errors += 1
                incomplete = error
                for failure in getattr(error.report, "failures", []):
                    if _not_classified(failure.error):
                        self.result.raw_exceptions += 1
                        problems.append(
                            f"download report holds {_describe(failure.error)}"
                        )
            except Exception as error:
                self.result.raised += 1
                if _not_classified(error):
                    self.result.raw_exceptions += 1
                problems.append(
                    f"download raised {_describe(error)} "
                    "instead of DownloadIncompleteError"
                )
            output = inspect_output(out, self.data, self.pair.same_bytes)
            problems += output.problems
            if output.partial:
                self.result.partial_files += len(output.partial)
                problems.append(f"partial files after the round: {output.partial[:5]}")
            searched = {
                source.sop_uid
                for source in self.data.by_uid.values()
                if source.study_uid in {study.uid for study in studies}
            }
            missing = searched - output.present
            if (
                missing
                and incomplete is None
                and not any(p.startswith("download raised") for p in problems)
            ):
                problems.append(
                    f"{len(missing)} instance(s) missing and no error raised: "
                    f"{sorted(missing)[:3]}"
                )
            if missing and incomplete is not None:
                named = set(incomplete.uids)
                unnamed = [
                    uid
                    for uid in sorted(missing)
                    if not named
                    & {
                        uid,
                        self.data.by_uid[uid].series_uid,
                        self.data.by_uid[uid].study_uid,
                    }
                ]
                if unnamed:
                    problems.append(
                        f"DownloadIncompleteError does not name {len(unnamed)} "
                        f"missing instance(s): {unnamed[:3]} (uids={list(named)[:4]})"
                    )
        return problems

    def _check_search(self, studies: list[Study], level: QueryLevels) -> list[str]:
        found = {study.uid for study in studies}
        if found != self.data.study_uids:
            return [
                f"{level.name} search answered {len(found)} of "
                f"{len(self.data.study_uids)} studies without an error"
            ]
        if level == QueryLevels.INSTANCE:
            instances = {i.uid for study in studies for i in study.all_instances()}
            if instances != set(self.data.by_uid):
                return [
                    f"INSTANCE search answered {len(instances)} of "
                    f"{len(self.data.by_uid)} instances without an error"
                ]
        return []

    def _clean_run(self, proxy: FaultProxy, out: Path) -> list[str]:
        """The same job without faults, into the same folder: all must arrive."""
        problems: list[str] = []
        trolley = self.pair.make(proxy, CLEAN_PROFILE)
        trolley.storage = TemplateStorage(out, LAYOUT)
        try:
            studies = trolley.find_studies(Query(PatientID="FLT*"))
            trolley.download(studies, out)
        except Exception as error:
            problems.append(f"clean re-run raised {_describe(error)}")
        output = inspect_output(out, self.data, self.pair.same_bytes)
        problems += [f"after the clean re-run: {text}" for text in output.problems]
        lost = set(self.data.by_uid) - output.present
        if lost:
            self.result.lost_after_resume += len(lost)
            problems.append(f"{len(lost)} instance(s) lost after the clean re-run")
        if output.partial:
            self.result.partial_files += len(output.partial)
            problems.append(f"partial files after the re-run: {output.partial[:5]}")
        return problems


def run_campaign(
    pair: Pair, data: SourceData, workdir: Path, settings: Settings
) -> Result:
    return Campaign(pair, data, workdir, settings).run()


# -- the table ------------------------------------------------------------------


def markdown_table(results: Sequence[Result]) -> str:
    """Per protocol pair: faults by kind, what raised, what was lost, wall time."""
    kinds = [k for k in dict.fromkeys((*HTTP_KINDS, *DIMSE_KINDS)) if k != "none"]
    header = [
        "protocol",
        "rounds",
        "faults",
        *kinds,
        "keep-alive reuses",
        "downloads raised",
        "lost after resume",
        "partial files",
        "raw exceptions",
        "violations",
        "RSS growth MiB",
        "wall s",
    ]
    rows = [header, ["---"] * len(header)]
    for result in results:
        cells = [
            result.name,
            str(result.rounds),
            str(result.total_faults),
        ]
        for kind in kinds:
            count = result.faults.get(kind, 0)
            text = str(count)
            if kind == "cut" and count:
                where = result.cut_where
                text += "".join(
                    f" {w[0]}{where[w]}"
                    for w in ("head", "body", "tail", "stream", "release")
                    if where[w]
                )
            cells.append(text)
        cells += [
            str(result.reused_requests) if result.mode == "http" else "-",
            str(result.raised),
            str(result.lost_after_resume),
            str(result.partial_files),
            str(result.raw_exceptions),
            str(len(result.violations)),
            f"{result.rss_growth / 2**20:.0f}",
            f"{result.wall:.1f}",
        ]
        rows.append(cells)
    total = sum(r.total_faults for r in results)
    wall = sum(r.wall for r in results)
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines.append(
        f"{total} faults in {wall:.1f} s; cut: h = header block, b = body, "
        f"t = last bytes, s = PDU stream, r = before A-RELEASE-RP; "
        f"total deadline {'on' if TOTAL_DEADLINE else 'absent (short trickles)'}"
    )
    return "\n".join(lines)
