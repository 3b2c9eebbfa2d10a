"""Search answer → Study/Series/Instance tree: dicomtrolley against the 4.1.0 way.

A 10,000-instance QIDO-RS answer (10 studies x 10 series x 100 instances, about
14 attributes each, as a real server returns) is served from memory on loopback.
Timed, best of several runs, in this one process:

- baseline (the dicomtrolley 4.1.0 way): GET, ``json.loads``, ``Dataset.from_json``
  per result, then the tree;
- dicomtrolley: ``QidoRS(session, url).find_studies(query)`` (GET, paging probe,
  fast DICOM JSON parser, tree).

Target from issue 2: dicomtrolley <= 0.8 s (4.1.0 took 2.4 s on this machine).

Usage: python benchmarks/search_parse.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from pydicom.dataset import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicom_json_micro import qido_instance_answer
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.parsing import studies_from_datasets
from dicomtrolley.qido_rs import QidoRS


def serve(body: bytes) -> tuple[ThreadingHTTPServer, str]:
    """A loopback server answering the first page with body, later pages empty."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if "offset=" in self.path:
                self.send_response(204)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/dicom-web"


def best_of(repeat: int, func: Callable[[], int]) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = func()
        best = min(best, time.perf_counter() - start)
    return best, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    body = qido_instance_answer(10, 10, 100)
    server, url = serve(body)
    session = requests.Session()
    query = Query(PatientID="*", query_level=QueryLevels.INSTANCE)

    def baseline() -> int:
        response = session.get(f"{url}/instances", params={"PatientID": "*"})
        datasets = [Dataset.from_json(item) for item in json.loads(response.text)]
        return len(
            [i for s in studies_from_datasets(datasets) for i in s.all_instances()]
        )

    def ours() -> int:
        studies = QidoRS(session, url).find_studies(query)
        return sum(len(s.all_instances()) for s in studies)

    try:
        base_time, base_count = best_of(args.repeat, baseline)
        our_time, our_count = best_of(args.repeat, ours)
    finally:
        server.shutdown()
    assert base_count == our_count == 10_000, (base_count, our_count)
    print(f"QIDO-RS answer: {len(body) / 1e6:.1f} MB, {our_count} instances")
    print(f"baseline (4.1.0 way: Dataset.from_json): {base_time:.3f} s")
    print(f"dicomtrolley QidoRS.find_studies:        {our_time:.3f} s")
    print(f"speed-up: {base_time / our_time:.1f}x   (target: <= 0.8 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
