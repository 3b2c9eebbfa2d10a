"""Run the python blocks of a 4.1.0 documentation page the way 4.1.0 ran them.

dicomtrolley 4.1.0 tested its docs with sybil (docs/conftest.py of its repository):
every python block of a page runs in order in one namespace, a failing block fails
on its own and the next blocks still run. That namespace held the names below; 4.1.0
put mocks behind ``a_session``, ``a_searcher``, ``a_downloader``, ``an_instance`` and
``trolley`` (whose ``download`` did nothing). Here they are real objects talking to
the emulator, so that every block really searches and downloads.

Usage: ``python run_doc_blocks.py PAGE.md REPORT.json`` with the environment:

- ``DTR_MINT_URL``, ``DTR_WADO_URI_URL``: the searcher and downloader behind
  ``a_searcher``, ``a_downloader`` and ``trolley`` (credentials: a netrc file named
  by ``NETRC``, as any plain ``requests.Session()`` gets them);
- ``DTR_AN_INSTANCE``: ``study/series/instance`` UIDs of the instance behind
  ``an_instance`` (found over MINT with ``include_fields=["Rows"]``); not set: none;
- ``DTR_PROBE_INSTANCE``: ``study/series/instance`` UIDs that probes download.

The report holds, per block, its line in the page, its error (if any), a summary
of the value of each expression statement (what an interactive session would show)
and of every name the block bound. Every Searcher or Trolley a block binds (or
whose searcher or downloader it swaps) is probed with a search for
``PatientName='B*'``, every Downloader with a download of the probe instance, so
that blocks that only construct objects show whether those objects work.
Exits 1 when a block failed, 0 otherwise.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from pydicom import Dataset
from pydicom.dataelem import DataElement

from dicomtrolley.auth import VitreaAuth
from dicomtrolley.core import (
    DICOMObject,
    Downloader,
    InstanceReference,
    Query,
    QueryLevels,
    Searcher,
    SeriesReference,
    StudyReference,
)
from dicomtrolley.dicom_qr import DICOMQR
from dicomtrolley.mint import Mint, MintQuery
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.rad69 import Rad69
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI

OPEN = re.compile(r"^```python\s*$")
CLOSE = re.compile(r"^```\s*$")


def blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the first code line, code) of each python block."""
    found, lines, start = [], [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if start == 0 and OPEN.match(line):
            start, lines = number + 1, []
        elif start and CLOSE.match(line):
            found.append((start, "\n".join(lines) + "\n"))
            start = 0
        elif start:
            lines.append(line)
    return found


def uids(path: str) -> tuple[str, str, str]:
    study, series, instance = path.split("/")
    return study, series, instance


def namespace() -> dict[str, Any]:
    """What 4.1.0's docs/conftest.py set up, with real objects for its mocks."""
    a_session = requests.Session()
    a_searcher = Mint(a_session, os.environ["DTR_MINT_URL"])
    a_downloader = WadoURI(a_session, os.environ["DTR_WADO_URI_URL"])
    names: dict[str, Any] = {
        "__name__": "__main__",
        "requests": requests,
        "Trolley": Trolley,
        "Mint": Mint,
        "WadoURI": WadoURI,
        "WadoRS": WadoRS,
        "Rad69": Rad69,
        "QidoRS": QidoRS,
        "Query": Query,
        "DICOMQR": DICOMQR,
        "QueryLevels": QueryLevels,
        "datetime": datetime,
        "MintQuery": MintQuery,
        "a_session": a_session,
        "a_searcher": a_searcher,
        "a_downloader": a_downloader,
        "StudyReference": StudyReference,
        "SeriesReference": SeriesReference,
        "InstanceReference": InstanceReference,
        "VitreaAuth": VitreaAuth,
        "trolley": Trolley(searcher=a_searcher, downloader=a_downloader),
    }
    if os.environ.get("DTR_AN_INSTANCE"):
        study, _, instance = uids(os.environ["DTR_AN_INSTANCE"])
        found = a_searcher.find_study(
            MintQuery(
                StudyInstanceUID=study,
                query_level=QueryLevels.INSTANCE,
                include_fields=["Rows"],
            )
        )
        names["an_instance"] = next(
            i for i in found.all_instances() if i.uid == instance
        )
    return names


def summary(value: Any) -> Any:
    """A JSON-able picture of a value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, DICOMObject):
        return f"{type(value).__name__} {value.uid}"
    if isinstance(value, (list, tuple)):
        return [summary(item) for item in value[:50]]
    if isinstance(value, DataElement):
        return f"DataElement {value.keyword} {value.value!r}"
    if isinstance(value, Dataset):
        return f"Dataset {sorted(value.dir())}"
    return f"{type(value).__name__} {value!r}"[:300]


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


def probe(value: Any) -> Any:
    """Use a searcher, downloader or trolley once against the emulator."""
    try:
        if isinstance(value, (Trolley, Searcher)):
            found = value.find_studies(Query(PatientName="B*"))
            return sorted(study.uid for study in found)
        if isinstance(value, Downloader):
            study, series, instance = uids(os.environ["DTR_PROBE_INSTANCE"])
            reference = InstanceReference(
                study_uid=study, series_uid=series, instance_uid=instance
            )
            return [str(ds.SOPInstanceUID) for ds in value.datasets([reference])]
    except Exception as error:  # a probe reports, it never stops the page
        return error_text(error)
    return None


def described(value: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"type": type(value).__name__}
    url = getattr(value, "url", None)
    if isinstance(url, str):
        info["url"] = url
    if isinstance(value, DICOMQR):
        info.update(host=value.host, port=value.port, aet=value.aet, aec=value.aec)
    if isinstance(value, Trolley):
        info["searcher"] = described(value.searcher)
        info["downloader"] = described(value.downloader)
        info["storage"] = type(value.storage).__name__
    return info


def state(names: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Identity of every name (and of a trolley's searcher and downloader)."""
    seen = {}
    for name, value in names.items():
        if name.startswith("__"):
            continue
        key: tuple[int, ...] = (id(value),)
        if isinstance(value, Trolley):
            key += (id(value.searcher), id(value.downloader))
        seen[name] = key
    return seen


def run_block(code: str, line: int, page: str, names: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"line": line, "error": None, "values": []}
    before = state(names)
    try:
        tree = ast.parse(code, filename=page)
        ast.increment_lineno(tree, line - 1)
        for statement in tree.body:
            if isinstance(statement, ast.Expr):
                expression = ast.Expression(statement.value)
                value = eval(compile(expression, page, "eval"), names)
                result["values"].append(summary(value))
            else:
                module = ast.Module([statement], type_ignores=[])
                exec(compile(module, page, "exec"), names)
    except Exception as error:
        result["error"] = error_text(error)
        result["traceback"] = traceback.format_exc()
    after = state(names)
    bound = {}
    for name, key in after.items():
        if before.get(name) == key:
            continue
        value = names[name]
        info = {"summary": summary(value), **described(value)}
        if isinstance(value, (Trolley, Searcher, Downloader)):
            info["probe"] = probe(value)
        bound[name] = info
    result["bound"] = bound
    return result


def main(page: str, report: str) -> int:
    text = Path(page).read_text(encoding="utf-8")
    names = namespace()
    results = [run_block(code, line, page, names) for line, code in blocks(text)]
    Path(report).write_text(json.dumps({"blocks": results}, indent=1), "utf-8")
    for result in results:
        status = result["error"] or "ok"
        print(f"{page}:{result['line']}: {status}", flush=True)
    return 1 if any(result["error"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
