"""C-GET and C-MOVE speed: dicomtrolley against DCMTK, same Orthanc, same study, one run.

For a large synthetic study (default 300 MB in instances of 20 MiB, and the
105-instance demo set with ``--demo``):

1. DCMTK ``/usr/bin/getscu`` retrieves the study into a folder (Study Root,
   ``TCP_NODELAY=1`` as for Orthanc: Debian's DCMTK leaves Nagle on otherwise);
2. dicomtrolley (``DICOMQRGet.save_all`` of a ``StudyReference`` into a
   ``TemplateStorage``, in a child process) retrieves the same study.

With ``--move``, the same studies also by C-MOVE:

3. DCMTK ``movescu`` moves the study into a DCMTK ``storescp`` started beforehand
   (its start is not timed);
4. dicomtrolley (``DICOMQRMove.save_all``, whose storage SCP starts and stops
   inside the timed call) moves the same study.

Prints each one's best wall time, throughput, and the ratios dicomtrolley/getscu
(the target of issue 5: at most 1.5), dicomtrolley C-MOVE/movescu+storescp (issue
12: at most 1) and dicomtrolley C-MOVE/dicomtrolley C-GET (issue 12: at most 1.5). dicomtrolley's time is measured around
``save_all`` (the interpreter start and imports of the child are left out; they
are printed separately); getscu's is the whole process.

With ``--find`` (instead of the retrieves): C-FIND of the 10,000 instances of
one study (``--find-instances``; tiny synthetic ones, one series) at IMAGE level,
DCMTK ``findscu`` against dicomtrolley's ``DICOMQR.send_c_find`` (one relational
query with the study and series UIDs, as findscu's), printing the ratio.
``--trolley-src`` runs dicomtrolley (every child: C-GET, C-MOVE, C-FIND) from
another checkout's ``src`` (an older commit, for before/after numbers);
``--baseline-src`` runs another checkout's C-GET and C-MOVE in every attempt as
well, interleaved with ours, and prints both (before/after under the same load
on a shared machine).

With ``--tls`` (instead of the comparison with DCMTK): dicomtrolley's C-GET of
the large study and of the demo set from two Orthancs holding the same studies,
one on plain TCP and one with ``DicomTlsEnabled`` (a throwaway CA made by
``openssl``, client certificate required), printing the TLS/plain ratio. As
Orthanc's sending may set the pace, the same section also times our
``Link.receive`` alone: ``--mb`` of P-DATA PDUs (128 KiB, as we announce) from a
Python sender process that only writes, over TLS and plain TCP.

Run it in the loopback-only namespace, as Orthanc binds every interface:

    bash scripts/loopback-only.sh .venv/bin/python benchmarks/dimse.py [--mb 300]
        [--repeat 3] [--demo] [--move] [--workers 1]
    bash scripts/loopback-only.sh .venv/bin/python benchmarks/dimse.py --find
        [--find-instances 10000] [--trolley-src ../old/src]
    bash scripts/loopback-only.sh .venv/bin/python benchmarks/dimse.py --tls
        [--mb 300] [--repeat 3] [--trolley-src ../old/src]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicomtrolley import synthetic  # noqa: E402
from tests.orthanc_server import (  # noqa: E402
    OrthancServer,
    free_port,
    generate_studies,
)

GETSCU = "/usr/bin/getscu"
MOVESCU = "/usr/bin/movescu"
STORESCP = "/usr/bin/storescp"
ECHOSCU = "/usr/bin/echoscu"
FINDSCU = "/usr/bin/findscu"
#: Move destinations Orthanc knows (AE title -> our port, chosen at start)
TROLLEY_STORE = "TROLLEYSTORE"
DCMTK_STORE = "DCMTKSTORE"

CHILD = r"""
import json, os, sys, time
started = time.perf_counter()
from dicomtrolley.core import StudyReference
from dicomtrolley.dicom_qr import DICOMQRGet, DICOMQRMove
from dicomtrolley.storage import TemplateStorage
port, aec, out, workers = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
move_port, studies = int(sys.argv[5]), sys.argv[6:]
storage = TemplateStorage(out, "{StudyInstanceUID}/{SOPInstanceUID}.dcm")
options = {}
if os.environ.get("BENCH_DIMSE_TLS"):  # DIMSETLS arguments, as JSON
    from dicomtrolley.dimse.tls import DIMSETLS
    options["tls"] = DIMSETLS(**json.loads(os.environ["BENCH_DIMSE_TLS"]))
if move_port:
    downloader = DICOMQRMove(
        "127.0.0.1", port, aec=aec, store_aet="TROLLEYSTORE", store_port=move_port,
        **options,
    )
else:
    downloader = DICOMQRGet("127.0.0.1", port, aec=aec, **options)
ready = time.perf_counter()
report = downloader.save_all(
    [StudyReference(uid) for uid in studies], storage, out, max_workers=workers
)
elapsed = time.perf_counter() - ready
report.raise_for_failures()
print(json.dumps({
    "seconds": elapsed,
    "startup": ready - started,
    "bytes": report.bytes_written,
    "files": len(report.saved),
}))
"""


FIND_CHILD = r"""
import json, sys, time
from dicomtrolley.dicom_qr import DICOMQR, DICOMQuery
port, aec, study, series = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
searcher = DICOMQR("127.0.0.1", port, aec=aec, relational=True, timeout=60)
query = DICOMQuery(
    StudyInstanceUID=study, SeriesInstanceUID=series, query_level="INSTANCE"
)
started = time.perf_counter()
found = searcher.send_c_find(query)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "matches": len(found)}))
"""


def findscu(port: int, aec: str, study: str, series: str) -> float:
    """Wall time of one findscu IMAGE-level query of a series (Study Root)."""
    start = time.perf_counter()
    subprocess.run(
        [
            FINDSCU, "-S", "-aec", aec, "-q",
            "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study}",
            "-k", f"SeriesInstanceUID={series}", "-k", "SOPInstanceUID",
            "127.0.0.1", str(port),
        ],
        check=True,
        env=dict(os.environ, TCP_NODELAY="1"),
    )  # fmt: skip
    return time.perf_counter() - start


def trolley_find(
    port: int, aec: str, study: str, series: str, src: Path
) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", FIND_CHILD, str(port), aec, study, series],
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(src)),
    )
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def bench_find(args: argparse.Namespace) -> int:
    """C-FIND of one big series: findscu against dicomtrolley, best of repeat."""
    work = args.keep or Path(tempfile.mkdtemp(prefix="dicomtrolley-bench-find-"))
    work.mkdir(parents=True, exist_ok=True)
    [spec] = synthetic.cohort_studies(
        1, instances=args.find_instances, size=2, key="bench-find"
    )
    print(f"generating {args.find_instances} tiny instances ...")
    paths = synthetic.write_studies(work / "find", [spec])
    best_dcmtk = best_ours = float("inf")
    matches = 0
    with OrthancServer() as server:
        print("uploading them to Orthanc ...")
        server.upload(paths)
        study, series = spec.study_uid, spec.series[0].series_uid
        for _ in range(args.repeat):
            best_dcmtk = min(
                best_dcmtk, findscu(server.dicom_port, server.aet, study, series)
            )
            result = trolley_find(
                server.dicom_port, server.aet, study, series, args.trolley_src
            )
            best_ours = min(best_ours, result["seconds"])
            matches = int(result["matches"])
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if matches != args.find_instances:
        print(f"dicomtrolley found {matches} of {args.find_instances}", file=sys.stderr)
        return 1
    print()
    print(
        f"{'C-FIND':>6} {'matches':>8} {'findscu s':>10} {'trolley s':>10} {'ratio':>6}"
    )
    print(
        f"{'IMAGE':>6} {matches:8d} {best_dcmtk:10.2f} {best_ours:10.2f} "
        f"{best_ours / best_dcmtk:6.2f}"
    )
    return 0


def getscu(
    port: int, aec: str, study_uids: list[str], out: Path, pdu: int = 16384
) -> float:
    """Wall time of getscu retrieving the studies (one process per study)."""
    options = ["-od", str(out), "--max-pdu", str(pdu)]
    return per_study(GETSCU, options, port, aec, study_uids)


def movescu(port: int, aec: str, study_uids: list[str]) -> float:
    """Wall time of movescu moving the studies into a running storescp."""
    return per_study(MOVESCU, ["-aem", DCMTK_STORE], port, aec, study_uids)


def per_study(
    tool: str, options: list[str], port: int, aec: str, study_uids: list[str]
) -> float:
    """Wall time of a DCMTK retrieve tool run once per study (Study Root)."""
    environment = dict(os.environ, TCP_NODELAY="1")
    start = time.perf_counter()
    for uid in study_uids:
        subprocess.run(
            [
                tool, "-S", "-aec", aec, "-q", *options,
                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
                "127.0.0.1", str(port),
            ],
            check=True,
            env=environment,
        )  # fmt: skip
    return time.perf_counter() - start


class StoreSCP:
    """DCMTK's storescp on store_port, writing into out, while in the with block."""

    def __init__(self, store_port: int, out: Path, pdu: int) -> None:
        self.command = [
            STORESCP, "-aet", DCMTK_STORE, "+xa", "--max-pdu", str(pdu),
            "-od", str(out), str(store_port),
        ]  # fmt: skip
        self.port = store_port
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StoreSCP:
        environment = dict(os.environ, TCP_NODELAY="1")
        self.process = subprocess.Popen(self.command, env=environment)
        deadline = time.monotonic() + 10
        while subprocess.run(
            [ECHOSCU, "-aec", DCMTK_STORE, "127.0.0.1", str(self.port)],
            capture_output=True,
        ).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("storescp did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)


def trolley(
    server: OrthancServer,
    study_uids: list[str],
    out: Path,
    args: argparse.Namespace,
    move_port: int = 0,
    tls: dict[str, str] | None = None,
    src: Path | None = None,
) -> dict[str, float]:
    """dicomtrolley's C-GET (or C-MOVE to move_port) of study_uids, in a child
    running src (default args.trolley_src) with args.workers; over TLS with
    tls (DIMSETLS arguments)."""
    environment = dict(os.environ, PYTHONPATH=str(src or args.trolley_src))
    if tls:
        environment["BENCH_DIMSE_TLS"] = json.dumps(tls)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(server.dicom_port),
            server.aet,
            str(out),
            str(args.workers),
            str(move_port),
            *study_uids,
        ],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
    )
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def bench(
    name: str,
    server: OrthancServer,
    study_uids: list[str],
    work: Path,
    args: argparse.Namespace,
) -> dict[str, float]:
    best_dcmtk = best_ours = best_before = float("inf")
    startup = 0.0
    size = files = 0
    for attempt in range(args.repeat):
        out = work / f"getscu-{name}-{attempt}"
        out.mkdir()
        best_dcmtk = min(
            best_dcmtk, getscu(server.dicom_port, server.aet, study_uids, out, args.pdu)
        )
        dcmtk_files, _ = folder_bytes(out)
        shutil.rmtree(out)
        if args.baseline_src:
            out = work / f"before-{name}-{attempt}"
            before = trolley(server, study_uids, out, args, src=args.baseline_src)
            shutil.rmtree(out)
            best_before = min(best_before, before["seconds"])
        out = work / f"trolley-{name}-{attempt}"
        result = trolley(server, study_uids, out, args)
        shutil.rmtree(out)
        best_ours = min(best_ours, result["seconds"])
        startup = result["startup"]
        size, files = int(result["bytes"]), int(result["files"])
        if files != dcmtk_files:
            raise RuntimeError(
                f"getscu saved {dcmtk_files} files, dicomtrolley {files}"
            )
    return {
        "files": files,
        "mb": size / 1e6,
        "getscu_s": best_dcmtk,
        "trolley_s": best_ours,
        "startup_s": startup,
        "ratio": best_ours / best_dcmtk,
        "before_s": best_before,
        "before_ratio": best_before / best_dcmtk,
    }


def bench_move(
    name: str,
    server: OrthancServer,
    study_uids: list[str],
    work: Path,
    args: argparse.Namespace,
    get_seconds: float,
) -> dict[str, float]:
    """C-MOVE: movescu into storescp, then dicomtrolley's DICOMQRMove."""
    best_dcmtk = best_ours = best_before = float("inf")
    size = files = 0
    for attempt in range(args.repeat):
        out = work / f"movescu-{name}-{attempt}"
        out.mkdir()
        with StoreSCP(args.dcmtk_store_port, out, args.pdu):
            best_dcmtk = min(
                best_dcmtk,
                movescu(server.dicom_port, server.aet, study_uids),
            )
        dcmtk_files, _ = folder_bytes(out)
        shutil.rmtree(out)
        if args.baseline_src:
            out = work / f"before-move-{name}-{attempt}"
            port = args.trolley_store_port
            before = trolley(server, study_uids, out, args, port, src=args.baseline_src)
            shutil.rmtree(out)
            best_before = min(best_before, before["seconds"])
        out = work / f"trolley-move-{name}-{attempt}"
        result = trolley(server, study_uids, out, args, args.trolley_store_port)
        shutil.rmtree(out)
        best_ours = min(best_ours, result["seconds"])
        size, files = int(result["bytes"]), int(result["files"])
        if files != dcmtk_files:
            raise RuntimeError(
                f"movescu+storescp saved {dcmtk_files} files, dicomtrolley {files}"
            )
    return {
        "files": files,
        "mb": size / 1e6,
        "movescu_s": best_dcmtk,
        "trolley_s": best_ours,
        "ratio": best_ours / best_dcmtk,
        "vs_get": best_ours / get_seconds,
        "before_s": best_before,
        "before_ratio": best_before / best_dcmtk,
    }


LINK_SENDER = r"""
import socket, ssl, sys
from dicomtrolley.formats import dul
cert, key, total, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
context = None
if cert:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
pdu = b"".join(dul.p_data(1, bytes(131060), command=False, max_length=131072))
for _ in range(runs):
    sock, _ = server.accept()
    if context is not None:
        sock = context.wrap_socket(sock, server_side=True)
    for _ in range(total // 131060 + 1):
        sock.sendall(pdu)
    sock.recv(1)  # until the reader has it all and closes
    sock.close()
"""

LINK_READER = r"""
import json, socket, ssl, sys, time
from dicomtrolley.dimse.link import Link
from dicomtrolley.dimse.settings import DIMSETimeouts, Peer
from dicomtrolley.formats import dul
port, ca, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sock = socket.create_connection(("127.0.0.1", port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if ca:
    context = ssl.create_default_context(cafile=ca)
    sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
link = Link(sock, Peer("127.0.0.1", port), DIMSETimeouts(), {}, 0, "C-GET")
got = 0
started, cpu = time.perf_counter(), time.process_time()
while got < total:
    for event in link.receive():
        if isinstance(event, dul.Fragment):
            got += len(event.data)
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu": cpu}))
sock.close()
"""


def link_receive(args: argparse.Namespace, pki: Any) -> dict[str, float]:
    """Best seconds of Link.receive taking args.mb of P-DATA, plain and TLS
    (the sender may set the pace: the reader's CPU seconds too)."""
    total = int(args.mb * 1e6)
    best = {}
    environment = dict(os.environ, PYTHONPATH=str(args.trolley_src))
    for kind, cert, key, ca in (
        ("plain", "", "", ""),
        ("tls", str(pki.server.cert), str(pki.server.key), str(pki.ca)),
    ):
        sender = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LINK_SENDER,
                cert,
                key,
                str(total),
                str(args.repeat),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        assert sender.stdout is not None
        port = sender.stdout.readline().strip()
        times, cpu = [], []
        for _ in range(args.repeat):
            result = subprocess.run(
                [sys.executable, "-c", LINK_READER, port, ca, str(total)],
                check=True,
                capture_output=True,
                text=True,
                env=environment,
            )
            measured = json.loads(result.stdout)
            times.append(measured["seconds"])
            cpu.append(measured["cpu"])
        sender.wait(30)
        best[kind], best[f"{kind}_cpu"] = min(times), min(cpu)
    return best


def bench_tls(args: argparse.Namespace) -> int:
    """dicomtrolley's C-GET over TLS against the same over plain TCP, each from
    an Orthanc of its own holding the same studies; best of args.repeat."""
    from tests.tls_pki import make_pki

    work = args.keep or Path(tempfile.mkdtemp(prefix="dicomtrolley-bench-tls-"))
    work.mkdir(parents=True, exist_ok=True)
    pki = make_pki(work / "pki")
    print(f"generating a study of {args.mb:.0f} MB and the demo set ...")
    large = synthetic.large_study(
        work / "large",
        int(args.mb * 1e6),
        instance_bytes=int(args.instance_mb * 1024**2),
        key="bench-dimse",
    )
    demo = generate_studies(work / "demo")
    sets = {
        "demo": [study.study_uid for study in demo.studies],
        "large": [_study_uid(large[0])],
    }
    secured = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(pki.server.cert),
        "DicomTlsPrivateKey": str(pki.server.key),
        "DicomTlsTrustedCertificates": str(pki.ca),
        "DicomTlsRemoteCertificateRequired": True,
    }
    ours = {"ca_file": str(pki.ca), "cert_file": str(pki.client.cert)}
    ours["key_file"] = str(pki.client.key)
    pdu = {"MaximumPduLength": args.pdu}
    results: dict[str, dict[str, float]] = {}
    with (
        OrthancServer(extra_config=pdu) as plain,
        OrthancServer(extra_config={**pdu, **secured}) as tls,
    ):
        for server in (plain, tls):
            server.upload([*large, *demo.paths])
        for name, uids in sets.items():
            best = {"plain": float("inf"), "tls": float("inf")}
            size = files = 0.0
            for attempt in range(args.repeat):
                for kind, server, settings in (
                    ("plain", plain, None),
                    ("tls", tls, ours),
                ):
                    out = work / f"{kind}-{name}-{attempt}"
                    result = trolley(server, uids, out, args, tls=settings)
                    shutil.rmtree(out)
                    best[kind] = min(best[kind], result["seconds"])
                    size, files = result["bytes"], result["files"]
            results[name] = {"files": files, "mb": size / 1e6, **best}
    results["Link"] = {"files": 0, "mb": args.mb, **link_receive(args, pki)}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{'C-GET':>6} {'files':>6} {'MB':>7} {'plain s':>8} {'TLS s':>8} "
        f"{'ratio':>6} {'plain MB/s':>11} {'TLS MB/s':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:>6} {r['files']:6.0f} {r['mb']:7.0f} {r['plain']:8.2f} "
            f"{r['tls']:8.2f} {r['tls'] / r['plain']:6.2f} "
            f"{r['mb'] / r['plain']:11.0f} {r['mb'] / r['tls']:9.0f}"
        )
    link = results["Link"]
    print(
        f"Link.receive's own CPU time: plain {link['plain_cpu']:.3f} s, TLS "
        f"{link['tls_cpu']:.3f} s (the rest of its time it waits for the sender)"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mb", type=float, default=300, help="large study size, MB")
    parser.add_argument("--instance-mb", type=float, default=20, help="per instance")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best counts")
    parser.add_argument("--workers", type=int, default=1, help="dicomtrolley workers")
    parser.add_argument("--demo", action="store_true", help="also the demo set")
    parser.add_argument("--move", action="store_true", help="also C-MOVE")
    parser.add_argument(
        "--pdu",
        type=int,
        default=16384,
        help="Orthanc's MaximumPduLength and getscu's --max-pdu (both sides the same)",
    )
    parser.add_argument("--keep", type=Path, help="work folder (default: temporary)")
    parser.add_argument("--find", action="store_true", help="C-FIND only (vs findscu)")
    parser.add_argument("--find-instances", type=int, default=10_000)
    parser.add_argument(
        "--tls", action="store_true", help="C-GET over TLS vs plain TCP only"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help=(
            "another checkout's src: its C-GET and C-MOVE run in every attempt "
            "too, interleaved with ours (before/after under the same load)"
        ),
    )
    parser.add_argument(
        "--trolley-src",
        type=Path,
        default=ROOT / "src",
        help="dicomtrolley's src folder for the children (another checkout)",
    )
    args = parser.parse_args()
    if args.find:
        return bench_find(args)
    if args.tls:
        return bench_tls(args)
    if not Path(GETSCU).exists():
        print(f"{GETSCU} is missing (apt-get install dcmtk)", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="dicomtrolley-bench-dimse-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"generating a study of {args.mb:.0f} MB ...")
    paths = synthetic.large_study(
        work / "large",
        int(args.mb * 1e6),
        instance_bytes=int(args.instance_mb * 1024**2),
        key="bench-dimse",
    )
    large_uid = _study_uid(paths[0])
    results = {}
    moves = {}
    args.trolley_store_port = free_port()
    args.dcmtk_store_port = free_port()
    modalities = {
        "TROLLEY": [TROLLEY_STORE, "127.0.0.1", args.trolley_store_port],
        "DCMTK": [DCMTK_STORE, "127.0.0.1", args.dcmtk_store_port],
    }
    with OrthancServer(
        modalities=modalities, extra_config={"MaximumPduLength": args.pdu}
    ) as server:
        server.upload(paths)
        shutil.rmtree(work / "large")
        sets = {"large": [large_uid]}
        if args.demo:
            demo = generate_studies(work / "demo")
            server.upload(demo.paths)
            sets["demo"] = [study.study_uid for study in demo.studies]
        for name, uids in sets.items():
            results[name] = bench(name, server, uids, work, args)
            if args.move:
                moves[name] = bench_move(
                    name, server, uids, work, args, results[name]["trolley_s"]
                )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{'study':>6} {'files':>6} {'MB':>7} {'getscu s':>9} {'trolley s':>10} "
        f"{'ratio':>6} {'getscu MB/s':>12} {'trolley MB/s':>13} {'startup s':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:>6} {r['files']:6.0f} {r['mb']:7.0f} {r['getscu_s']:9.2f} "
            f"{r['trolley_s']:10.2f} {r['ratio']:6.2f} {r['mb'] / r['getscu_s']:12.0f} "
            f"{r['mb'] / r['trolley_s']:13.0f} {r['startup_s']:10.2f}"
        )
    _print_before("C-GET", "getscu", results, args)
    if moves:
        print()
        print(
            f"{'C-MOVE':>6} {'files':>6} {'MB':>7} {'movescu s':>10} {'trolley s':>10} "
            f"{'ratio':>6} {'vs C-GET':>9} {'trolley MB/s':>13}"
        )
        for name, r in moves.items():
            print(
                f"{name:>6} {r['files']:6.0f} {r['mb']:7.0f} {r['movescu_s']:10.2f} "
                f"{r['trolley_s']:10.2f} {r['ratio']:6.2f} {r['vs_get']:9.2f} "
                f"{r['mb'] / r['trolley_s']:13.0f}"
            )
        _print_before("C-MOVE", "movescu+storescp", moves, args)
    return 0


def _print_before(
    operation: str,
    dcmtk: str,
    results: dict[str, dict[str, float]],
    args: argparse.Namespace,
) -> None:
    """With --baseline-src: the baseline's times and ratios next to ours."""
    if not args.baseline_src:
        return
    print(f"  {operation} before ({args.baseline_src}) and after, ratio to {dcmtk}:")
    for name, r in results.items():
        print(
            f"  {name:>6} before {r['before_s']:6.2f} s ({r['before_ratio']:4.2f}x)"
            f"  after {r['trolley_s']:6.2f} s ({r['ratio']:4.2f}x)"
        )


def _study_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


if __name__ == "__main__":
    os.environ.setdefault("TCP_NODELAY", "1")
    sys.exit(main())
