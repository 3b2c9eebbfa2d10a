"""Search answer → Study/Series/Instance tree: dicomtrolley against the 4.1.0 way.

A 10,000-instance QIDO-RS answer (10 studies x 10 series x 100 instances, about
14 attributes each, as a real server returns) is served from memory on loopback.
Timed, best of several runs, in this one process:

- baseline (the dicomtrolley 4.1.0 way): GET, ``json.loads``, ``Dataset.from_json``
  per result, then the tree;
- dicomtrolley: ``QidoRS(session, url).find_studies(query)`` (GET, paging probe,
  fast DICOM JSON parser, tree).

Target from issue 2: dicomtrolley <= 0.8 s (4.1.0 took 2.4 s on this machine).

MINT (issue 3): a 10,000-instance MINT answer (same tree; Vitrea's shape: no
whitespace, attrs after children; 4 attributes per instance, 4 per series, 7 per
study) served the same way, timed after a full garbage collection each run:

- baseline (the 4.1.0 way): GET, ``ElementTree.fromstring(response.text)``, a
  pydicom ``DataElement`` per attr set into a ``Dataset``, validated
  MintStudy/MintSeries/MintInstance objects;
- dicomtrolley: ``Mint(session, url).find_studies(MintQuery(query_level=
  "INSTANCE", ...))``.

Target from issue 3: dicomtrolley <= 0.25 s (4.1.0 took 0.8 s).

Usage: python benchmarks/search_parse.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.etree import ElementTree

import requests
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicom_json_micro import qido_instance_answer
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.mint import Mint, MintInstance, MintQuery, MintSeries, MintStudy
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
    print()
    mint_case(args.repeat)
    return 0


# --------------------------------------------------------------------------- MINT

MINT_ROOT = "1.2.826.0.1.3680043.8.498"
MINT_NS = "{http://medical.nema.org/mint}"


def mint_instance_answer(studies: int, series: int, instances: int) -> bytes:
    """An instance level MINT answer as Vitrea Connection sends it."""

    def attr(tag: str, vr: str, val: str) -> str:
        return f'<attr tag="{tag}" vr="{vr}" val="{val}" />'

    out = [
        "<?xml version='1.0' encoding='UTF-8'?><studySearchResults "
        'xmlns="http://medical.nema.org/mint" queryLevel="INSTANCE" '
        'queryfields="PatientID=*" includefields="SOPClassUID,InstanceNumber,'
        'SeriesNumber,SeriesDescription,Modality,StudyDate,StudyDescription">'
    ]
    for st in range(studies):
        study_uid = f"{MINT_ROOT}.{st + 1}.{1000 + st}"
        out.append(
            f'<study studyUUID="{st:08x}-c585-4570-8c1f-8514f27695e9" version="1" '
            f'lastModified="2021-03-09T06:42:{st % 60:02d}.825Z">'
        )
        for se in range(series):
            series_uid = f"{study_uid}.{se + 1}"
            out.append("<series>")
            for inst in range(instances):
                out.append(
                    "<instance>"
                    + attr("00080018", "UI", f"{series_uid}.{inst + 1}")
                    + attr("00020010", "UI", "1.2.840.10008.1.2.4.70")
                    + attr("00080016", "UI", "1.2.840.10008.5.1.4.1.1.2")
                    + attr("00200013", "IS", str(inst + 1))
                    + "</instance>"
                )
            out.append(
                attr("0020000e", "UI", series_uid)
                + attr("00080060", "CS", ("CT", "MR", "PT", "US")[se % 4])
                + attr("00200011", "IS", str(se + 1))
                + attr("0008103e", "LO", f"Series {se + 1} axial")
                + "</series>"
            )
        out.append(
            attr("0020000d", "UI", study_uid)
            + attr("00100020", "LO", f"PAT{st:05d}")
            + attr("00100010", "PN", f"Testpatient{st}^Anna^M")
            + attr("00080020", "DA", f"2024{(st % 12) + 1:02d}{(st % 28) + 1:02d}")
            + attr("00080050", "SH", f"ACC{st:08d}")
            + attr("00081030", "LO", "CT THORAX")
            + attr("00080061", "CS", "CT\\MR\\PT\\US")
            + "</study>"
        )
    out.append("</studySearchResults>")
    return "".join(out).encode("utf-8")


def serve_xml(body: bytes) -> tuple[ThreadingHTTPServer, str]:
    """A loopback server answering every GET with body as application/xml."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/xml;charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/rest/api/vault/mint"


def mint_attribs_4_1_0(element: ElementTree.Element) -> Dataset:
    """4.1.0's parse_attribs: a DataElement per attr, set into a Dataset."""
    dataset = Dataset()
    for child in element.findall(MINT_NS + "attr"):
        attrib = child.attrib
        dataset[attrib["tag"]] = DataElement(
            attrib["tag"], attrib["vr"], attrib.get("val", "")
        )
    return dataset


def mint_studies_4_1_0(text: str) -> list[MintStudy]:
    """4.1.0's parse_mint_studies_response: ElementTree, then validated models."""
    studies = []
    for study_element in ElementTree.fromstring(text).findall(MINT_NS + "study"):
        data = mint_attribs_4_1_0(study_element)
        study = MintStudy(
            data=data,
            uid=data.StudyInstanceUID,
            mint_uuid=study_element.attrib["studyUUID"],
            last_modified=study_element.attrib["lastModified"],
            series=[],
        )
        for series_element in study_element.findall(MINT_NS + "series"):
            series_data = mint_attribs_4_1_0(series_element)
            series = MintSeries(
                data=series_data,
                uid=series_data.SeriesInstanceUID,
                parent=study,
                instances=[],
            )
            for element in series_element.findall(MINT_NS + "instance"):
                instance_data = mint_attribs_4_1_0(element)
                series.instances.append(
                    MintInstance(
                        data=instance_data,
                        uid=instance_data.SOPInstanceUID,
                        parent=series,
                    )
                )
            study.series.append(series)
        studies.append(study)
    return studies


def best_of_collected(repeat: int, func: Callable[[], int]) -> tuple[float, int]:
    """Like best_of, with the garbage of earlier runs collected before each run."""
    best = float("inf")
    count = 0
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        count = func()
        best = min(best, time.perf_counter() - start)
    return best, count


def mint_case(repeat: int) -> None:
    body = mint_instance_answer(10, 10, 100)
    server, url = serve_xml(body)
    session = requests.Session()
    query = MintQuery(
        PatientID="*",
        query_level="INSTANCE",
        include_fields=["SOPClassUID", "InstanceNumber", "SeriesDescription"],
    )

    def baseline() -> int:
        response = session.get(f"{url}/studies", params=query.as_parameters())
        studies = mint_studies_4_1_0(response.text)
        return sum(len(s.all_instances()) for s in studies)

    def ours() -> int:
        studies = Mint(session, url).find_studies(query)
        return sum(len(s.all_instances()) for s in studies)

    try:
        base_time, base_count = best_of_collected(repeat, baseline)
        our_time, our_count = best_of_collected(repeat, ours)
    finally:
        server.shutdown()
    assert base_count == our_count == 10_000, (base_count, our_count)
    print(f"MINT answer: {len(body) / 1e6:.1f} MB, {our_count} instances")
    print(f"baseline (4.1.0 way: ElementTree + DataElement): {base_time:.3f} s")
    print(f"dicomtrolley Mint.find_studies:                  {our_time:.3f} s")
    print(f"speed-up: {base_time / our_time:.1f}x   (target: <= 0.25 s)")


if __name__ == "__main__":
    sys.exit(main())
