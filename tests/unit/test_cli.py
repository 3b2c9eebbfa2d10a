"""The ``dicomtrolley`` command line against a small fake DICOMweb server.

The fake (``FakePacs``) is a ``http.server`` on 127.0.0.1 in a thread. It holds
two studies: S1 (patient P1, one CT series of two instances) and S2 (patient P2,
one MR series of one instance), and answers QIDO-RS searches with fixed DICOM
JSON, WADO-RS series requests with multipart bodies of real DICOM files, and
WADO-URI requests with single files. It records every request, so tests can
check what was asked for and with which credentials.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import pydicom
import pytest
from click.testing import CliRunner, Result
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian
from rich.console import Console

from dicomtrolley.cli import progress as progress_module
from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.cli.dimse import DIMSESettings
from dicomtrolley.cli.download import default_wado_uri_url
from dicomtrolley.cli.main import connection_options, main, parse_date, parse_timeout
from dicomtrolley.cli.progress import RichProgress, TransferCounts, seconds_remaining
from dicomtrolley.cli.search import dataset_as_json, json_value, text_value
from dicomtrolley.transport import Retry, Timeout
from tests.fakes import FakeServer, Reply, tree

ROOT = "1.2.826.0.1.3680043.8.498.7777"
S1, S2 = f"{ROOT}.1", f"{ROOT}.2"
SE1, SE2 = f"{S1}.1", f"{S2}.1"
I1, I2, I3 = f"{SE1}.1", f"{SE1}.2", f"{SE2}.1"
CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
PASSWORD = "s3cret-Pa55"
TOKEN = "tok-9f8e7d"


# -- test data --------------------------------------------------------------------


@dataclass(frozen=True)
class FakeInstance:
    patient_id: str
    patient_name: str
    study_date: str
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    number: int

    def dicom_bytes(self) -> bytes:
        dataset = Dataset()
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.MediaStorageSOPClassUID = CT_IMAGE
        dataset.file_meta.MediaStorageSOPInstanceUID = UID(self.sop_uid)
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset.SOPClassUID = CT_IMAGE
        dataset.SOPInstanceUID = self.sop_uid
        dataset.StudyInstanceUID = self.study_uid
        dataset.SeriesInstanceUID = self.series_uid
        dataset.PatientID = self.patient_id
        dataset.PatientName = self.patient_name
        dataset.StudyDate = self.study_date
        dataset.Modality = self.modality
        dataset.InstanceNumber = self.number
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


INSTANCES = (
    FakeInstance("P1", "Doe^John", "20200105", S1, SE1, I1, "CT", 1),
    FakeInstance("P1", "Doe^John", "20200105", S1, SE1, I2, "CT", 2),
    FakeInstance("P2", "Müller^Jürgen", "20210607", S2, SE2, I3, "MR", 1),
)
DESCRIPTIONS = {S1: "CT [bold]Chest[/bold]", S2: "MR Schädel"}


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": value} for value in values]}
    return {"vr": vr, "Value": list(values)}


def _study_json(study_uid: str) -> dict[str, Any]:
    members = [i for i in INSTANCES if i.study_uid == study_uid]
    first = members[0]
    return {
        "00080020": _attr("DA", first.study_date),
        "00080050": _attr("SH", f"ACC-{first.patient_id}"),
        "00080061": _attr("CS", *sorted({i.modality for i in members})),
        "00081030": _attr("LO", DESCRIPTIONS[study_uid]),
        "00100010": _attr("PN", first.patient_name),
        "00100020": _attr("LO", first.patient_id),
        "0020000D": _attr("UI", study_uid),
        "00201206": _attr("IS", len({i.series_uid for i in members})),
        "00201208": _attr("IS", len(members)),
    }


def _series_json(series_uid: str) -> dict[str, Any]:
    members = [i for i in INSTANCES if i.series_uid == series_uid]
    first = members[0]
    return {
        "00080060": _attr("CS", first.modality),
        "0008103E": _attr("LO", f"{first.modality} series"),
        "0020000D": _attr("UI", first.study_uid),
        "0020000E": _attr("UI", series_uid),
        "00200011": _attr("IS", 1),
        "00201209": _attr("IS", len(members)),
    }


def _instance_json(instance: FakeInstance) -> dict[str, Any]:
    return {
        "00080016": _attr("UI", CT_IMAGE),
        "00080018": _attr("UI", instance.sop_uid),
        "0020000D": _attr("UI", instance.study_uid),
        "0020000E": _attr("UI", instance.series_uid),
        "00200013": _attr("IS", instance.number),
    }


# -- the fake server ---------------------------------------------------------------


@dataclass
class Recorded:
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class FakePacs:
    """A DICOMweb server on 127.0.0.1 that answers from INSTANCES."""

    server: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)
    failing_series: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        return f"{self.base}/dicom-web"

    def paths(self) -> list[str]:
        """The paths asked for, each once (QIDO-RS paging asks twice)."""
        return list(dict.fromkeys(request.path for request in self.requests))

    def qido(self) -> list[Recorded]:
        return [r for r in self.requests if "json" in r.headers.get("Accept", "")]


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer
    pacs: FakePacs  # set on the subclass made for each server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = parse_qs(parts.query)
        with self.pacs.lock:
            self.pacs.requests.append(
                Recorded(parts.path, params, {k: v for k, v in self.headers.items()})
            )
        segments = [s for s in parts.path.split("/") if s]
        if segments[:1] == ["broken"]:
            self._send(500, "text/html", b"<html><title>Oops</title>kaputt</html>")
        elif segments[:1] == ["locked"]:
            self._send(401, "text/plain", b"who are you?")
        elif segments[:1] == ["wado"]:
            self._wado_uri(params)
        elif segments[:1] == ["dicom-web"]:
            self._dicomweb(segments[1:], params)
        else:
            self._send(404, "text/plain", b"no such thing")

    def _dicomweb(self, segments: list[str], params: dict[str, list[str]]) -> None:
        def wanted(instance: FakeInstance) -> bool:
            for keyword, value in (
                ("StudyInstanceUID", instance.study_uid),
                ("SeriesInstanceUID", instance.series_uid),
                ("PatientID", instance.patient_id),
            ):
                if keyword in params and params[keyword][0] != value:
                    return False
            return True

        members = [i for i in INSTANCES if wanted(i)]
        if len(segments) >= 2 and segments[0] == "studies":
            members = [i for i in members if i.study_uid == segments[1]]
        if len(segments) >= 4 and segments[2] == "series":
            members = [i for i in members if i.series_uid == segments[3]]
        shape = [s if i % 2 == 0 else "{}" for i, s in enumerate(segments)]
        if shape in (["studies"], ["studies", "{}"]) and "json" in self._accept:
            body = [
                _study_json(uid) for uid in dict.fromkeys(i.study_uid for i in members)
            ]
        elif shape in (["series"], ["studies", "{}", "series"]):
            body = [
                _series_json(uid)
                for uid in dict.fromkeys(i.series_uid for i in members)
            ]
        elif shape in (
            ["instances"],
            ["studies", "{}", "instances"],
            ["studies", "{}", "series", "{}", "instances"],
        ):
            body = [_instance_json(i) for i in members]
        elif shape == ["studies", "{}", "series", "{}"]:
            self._wado_rs(segments[3], members)
            return
        else:
            self._send(404, "text/plain", b"unknown resource")
            return
        self._send(200, "application/dicom+json", json.dumps(body).encode())

    @property
    def _accept(self) -> str:
        return self.headers.get("Accept", "")

    def _wado_rs(self, series_uid: str, members: list[FakeInstance]) -> None:
        if series_uid in self.pacs.failing_series or not members:
            self._send(404, "text/plain", b"series not found")
            return
        boundary = "fake-boundary-42"
        body = b""
        for instance in members:
            body += (
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + instance.dicom_bytes()
                + b"\r\n"
            )
        body += f"--{boundary}--\r\n".encode()
        content_type = (
            f'multipart/related; type="application/dicom"; boundary={boundary}'
        )
        self._send(200, content_type, body)

    def _wado_uri(self, params: dict[str, list[str]]) -> None:
        wanted = params.get("objectUID", [""])[0]
        for instance in INSTANCES:
            if instance.sop_uid == wanted:
                self._send(200, "application/dicom", instance.dicom_bytes())
                return
        self._send(404, "text/plain", b"no such instance")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def pacs_server() -> Iterator[FakePacs]:
    """The fake server for this module; stopped at its end."""
    handler: type[_Handler] = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    pacs = FakePacs(server)
    handler.pacs = pacs
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield pacs
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def pacs(pacs_server: FakePacs) -> FakePacs:
    """The fake server with an empty request log and nothing failing."""
    pacs_server.requests.clear()
    pacs_server.failing_series.clear()
    return pacs_server


@pytest.fixture(autouse=True)
def _no_secrets_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DICOMTROLLEY_PASSWORD", raising=False)
    monkeypatch.delenv("DICOMTROLLEY_TOKEN", raising=False)


def run(*args: str, input: str | None = None, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env or None)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the group ---------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "search" in result.output
    assert "download" in result.output


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.startswith("dicomtrolley, version ")


def test_url_is_required() -> None:
    result = run("search")
    assert result.exit_code == 2
    assert "--url" in result.output


# -- search output -----------------------------------------------------------------


def test_search_prints_a_table(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, COLUMNS="200")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    first = next(line for line in lines if " P1 " in line)
    for value in ("Doe^John", "2020-01-05", "CT", "ACC-P1", S1):
        assert value in first
    assert "[bold]Chest[/bold]" in first  # shown as is, not as markup
    assert any("Müller^Jürgen" in line and S2 in line for line in lines)
    assert "2 studies found" in result.stdout


def test_search_table_on_a_narrow_terminal_lists_uids_apart(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, COLUMNS="80")
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "2 studies found" in result.stdout
    assert any(line.split() == ["1", S1] for line in result.stdout.splitlines())
    assert any(line.split() == ["2", S2] for line in result.stdout.splitlines())


def test_search_json_is_one_object_per_study(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, "--json")
    assert result.exit_code == 0, result.output
    studies = json.loads(result.stdout)
    assert [study["StudyInstanceUID"] for study in studies] == [S1, S2]
    first = studies[0]
    assert list(first)[:9] == [
        "PatientID",
        "PatientName",
        "StudyDate",
        "ModalitiesInStudy",
        "StudyDescription",
        "AccessionNumber",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyInstanceUID",
    ]
    assert first["PatientName"] == "Doe^John"
    assert first["ModalitiesInStudy"] == ["CT"]
    assert first["NumberOfStudyRelatedInstances"] == 2
    assert first["StudyDate"] == "20200105"


def test_search_json_lists_asked_fields_even_when_missing(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, "--json", "--include-field", "StudyTime")
    assert result.exit_code == 0, result.output
    assert all(study["StudyTime"] is None for study in json.loads(result.stdout))
    assert pacs.qido()[0].params["includefield"].count("StudyTime") == 1


def test_search_csv(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0][:3] == ["PatientID", "PatientName", "StudyDate"]
    assert len(rows) == 3
    assert rows[2][:2] == ["P2", "Müller^Jürgen"]
    assert rows[1][rows[0].index("StudyInstanceUID")] == S1


def test_search_series_level_csv(pacs: FakePacs) -> None:
    result = run(
        "search", "--url", pacs.url, "--study-uid", S1, "--level", "series", "--csv"
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["SeriesInstanceUID"] for row in rows] == [SE1]
    assert rows[0]["Modality"] == "CT"
    assert rows[0]["StudyInstanceUID"] == S1
    assert pacs.paths() == [f"/dicom-web/studies/{S1}/series"]


def test_search_instance_level_table_keeps_uids_whole(pacs: FakePacs) -> None:
    result = run(
        "search", "--url", pacs.url, "--study-uid", S1, "--level", "instance",
        COLUMNS="250",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 instances found" in result.stdout
    assert I1 in result.stdout and I2 in result.stdout
    assert pacs.paths() == [f"/dicom-web/studies/{S1}/instances"]


def test_search_series_without_study_is_relational(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, "--level", "series", "--json")
    assert result.exit_code == 0, result.output
    assert pacs.paths() == ["/dicom-web/series"]
    assert {row["SeriesInstanceUID"] for row in json.loads(result.stdout)} == {
        SE1,
        SE2,
    }


def test_search_sends_the_query(pacs: FakePacs) -> None:
    result = run(
        "search",
        "--url",
        pacs.url,
        "--patient-id",
        "P1",
        "--min-date",
        "2020-01-01",
        "--max-date",
        "20201231",
        "--modalities",
        "ct,MR",
        "--limit",
        "5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    params = pacs.qido()[0].params
    assert params["PatientID"] == ["P1"]
    assert params["StudyDate"] == ["20200101-20201231"]
    assert params["ModalitiesInStudy"] == ["CT,MR"]
    assert params["limit"] == ["5"]
    assert "StudyDescription" in params["includefield"]


def test_qido_url_overrides_url(pacs: FakePacs) -> None:
    result = run(
        "search", "--url", f"{pacs.base}/nowhere", "--qido-url", pacs.url, "--csv"
    )
    assert result.exit_code == 0, result.output
    assert pacs.paths() == ["/dicom-web/studies"]


# -- usage errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study-uid", "1.2.x"], "not a DICOM UID"),
        (["--quiet", "-v"], "exclude each other"),
        (["--min-date", "2021-01-01", "--max-date", "2020-01-01"], "after"),
        (["--min-date", "01/02/2020", "--max-date", "2020-01-01"], "YYYY-MM-DD"),
        (["--min-date", "2020-02-30", "--max-date", "2020-03-01"], "2020-02-30"),
        (["--include-field", "NoSuchKeyword"], "not a DICOM keyword"),
        (["--modalities", "C-T"], "modality"),
        (["--timeout", "0"], "positive"),
        (["--series-uid", SE1], "StudyInstanceUID"),
        (["--level", "patient"], "patient"),
    ],
)
def test_usage_errors_exit_2(pacs: FakePacs, args: list[str], message: str) -> None:
    result = run("search", "--url", pacs.url, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert pacs.requests == []  # refused before anything is sent


def test_parse_date() -> None:
    assert parse_date("2024-02-29").strftime("%Y%m%d") == "20240229"
    assert parse_date("20240229").strftime("%Y%m%d") == "20240229"
    for bad in ("2023-02-29", "2024-2-29", "202402", "yesterday"):
        with pytest.raises(ValueError):
            parse_date(bad)


def test_parse_timeout() -> None:
    assert parse_timeout("7") == Timeout(connect=7.0, read=7.0)
    assert parse_timeout("3,60") == Timeout(connect=3.0, read=60.0)
    for bad in ("0", "-1", "a", "1,2,3", "inf", "nan"):
        with pytest.raises(ValueError):
            parse_timeout(bad)


def test_timeout_total_gives_up_on_a_trickling_server() -> None:
    answer = json.dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]).encode()
    trickle = Reply(
        200, answer, {"Content-Type": "application/dicom+json"}, piece_size=2,
        delay=0.05,
    )  # fmt: skip
    with FakeServer({"/studies": trickle}) as fake:
        slow = run("search", "--url", fake.url, "--timeout-total", "0.2",
                   "--retries", "0", "--csv")  # fmt: skip
        patient = run("search", "--url", fake.url, "--retries", "0", "--csv")
    assert slow.exit_code != 0
    assert "total deadline" in slow.output
    assert patient.exit_code == 0, patient.output  # the default waits long enough
    assert "1.2.3" in patient.output


@pytest.mark.parametrize(
    ("given", "dimse_total", "http_total"),
    [(None, None, 300.0), (0.0, None, None), (42.0, 42.0, 42.0)],
)
def test_timeout_total_reaches_http_and_dimse(
    monkeypatch: pytest.MonkeyPatch,
    given: float | None,
    dimse_total: float | None,
    http_total: float | None,
) -> None:
    seen: list[ConnectionSettings] = []

    def fake_search(**kwargs: object) -> None:
        seen.append(kwargs["connection"])  # type: ignore[arg-type]

    wrapped = connection_options(fake_search)
    args = {} if given is None else {"timeout_total": given}
    with click.Context(click.Command("x")):
        wrapped(
            user=None, password=None, token=None, insecure=False, timeout=None,
            retries=None, verbose=0, **{"timeout_total": None, **args},
        )  # fmt: skip
    (settings,) = seen
    assert settings.timeout.total == http_total
    assert DIMSESettings.timeouts(settings).total == dimse_total


# -- credentials -------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_password_from_the_environment(pacs: FakePacs) -> None:
    result = run(
        "search", "--url", pacs.url, "--user", "alice", "--csv",
        DICOMTROLLEY_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pacs.requests[0].headers["Authorization"] == _basic("alice", PASSWORD)
    assert PASSWORD not in result.output
    assert "Password for" not in result.output  # no prompt
    assert "Warning" not in result.stderr


def test_password_is_prompted_for_without_echo(
    pacs: FakePacs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dicomtrolley.cli.connection.stdin_is_terminal", lambda: True)
    result = run(
        "search", "--url", pacs.url, "--user", "alice", "--csv", input=f"{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Password for alice" in result.stderr
    assert PASSWORD not in result.output
    assert pacs.requests[0].headers["Authorization"] == _basic("alice", PASSWORD)


def test_password_on_the_command_line_warns(pacs: FakePacs) -> None:
    result = run(
        "search", "--url", pacs.url, "--user", "bob", "--password", PASSWORD, "--csv"
    )
    assert result.exit_code == 0, result.output
    assert "Warning" in result.stderr
    assert "visible to other users" in result.stderr
    assert PASSWORD not in result.output
    assert pacs.requests[0].headers["Authorization"] == _basic("bob", PASSWORD)


def test_password_without_user_is_a_usage_error(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, "--password", PASSWORD)
    assert result.exit_code == 2
    assert "--password needs --user" in result.stderr
    assert PASSWORD not in result.output


def test_password_in_environment_without_user_is_not_sent(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, "--csv", DICOMTROLLEY_PASSWORD=PASSWORD)
    assert result.exit_code == 0, result.output
    assert "Authorization" not in pacs.requests[0].headers


def test_token_from_the_environment(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, "--csv", DICOMTROLLEY_TOKEN=TOKEN)
    assert result.exit_code == 0, result.output
    assert pacs.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in result.output


def test_token_on_the_command_line_warns(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, "--csv", "--token", TOKEN)
    assert result.exit_code == 0, result.output
    assert "Warning" in result.stderr
    assert TOKEN not in result.output


def test_user_and_token_exclude_each_other(pacs: FakePacs) -> None:
    result = run(
        "search", "--url", pacs.url, "--user", "alice", DICOMTROLLEY_TOKEN=TOKEN
    )
    assert result.exit_code == 2
    assert "exclude each other" in result.stderr
    assert TOKEN not in result.output


def test_settings_repr_hides_secrets() -> None:
    settings = ConnectionSettings(user="alice", password=PASSWORD, token=TOKEN)
    assert PASSWORD not in repr(settings)
    assert TOKEN not in repr(settings)


def test_insecure_warns(pacs: FakePacs) -> None:
    result = run("search", "--url", pacs.url, "--insecure", "--csv")
    assert result.exit_code == 0, result.output
    assert "TLS certificate verification is off" in result.stderr


# -- errors ------------------------------------------------------------------------


def test_server_error_is_one_red_line_and_exit_1(pacs: FakePacs) -> None:
    result = run("search", "--url", f"{pacs.base}/broken/dicom-web")
    assert result.exit_code == 1
    assert "Error:" in result.stderr
    assert "500 - Internal Server Error" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 3


def test_traceback_only_with_two_v(pacs: FakePacs) -> None:
    result = run("search", "--url", f"{pacs.base}/broken/dicom-web", "-vv")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "500 - Internal Server Error" in result.stderr


def test_auth_error_gives_a_hint(pacs: FakePacs) -> None:
    result = run(
        "search", "--url", f"{pacs.base}/locked/dicom-web", "--user", "alice",
        DICOMTROLLEY_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "401" in result.stderr
    assert "--user" in result.stderr
    assert PASSWORD not in result.output


def test_connection_refused(pacs: FakePacs) -> None:
    url = f"http://127.0.0.1:{closed_port()}/dicom-web"
    result = run(
        "search", "--url", url, "--retries", "0", "--timeout", "5",
        "--user", "alice", DICOMTROLLEY_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "Error:" in result.stderr
    assert "refused" in result.stderr.lower()
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output


# -- download ----------------------------------------------------------------------


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in tree(folder) if path.is_file())


def test_download_refuses_everything_without_all(
    pacs: FakePacs, tmp_path: Path
) -> None:
    result = run("download", "--url", pacs.url, "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "--all" in result.stderr
    assert pacs.requests == []
    assert not (tmp_path / "out").exists()


def test_download_wado_rs_default_layout(pacs: FakePacs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(
        "download", "--url", pacs.url, "--study-uid", S1, "-o", str(out),
        "--workers", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = {out / "P1" / S1 / SE1 / f"{uid}.dcm" for uid in (I1, I2)}
    assert set(_files(out)) == expected
    for path in expected:
        assert pydicom.dcmread(path).SOPInstanceUID == path.stem
    assert "Saved 2 files (" in result.stdout
    assert "skipped 0 already present" in result.stdout
    assert str(out.resolve()) in result.stdout
    assert f"/dicom-web/studies/{S1}/series/{SE1}" in pacs.paths()


def test_download_wado_uri_derives_the_endpoint(pacs: FakePacs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(
        "download", "--url", pacs.url + "/", "--patient-id", "P1", "-o", str(out),
        "--protocol", "wado-uri", "--layout", "flat",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {path.name for path in _files(out)} == {
        uid.replace(".", "_") for uid in (I1, I2)
    }
    wado = [r for r in pacs.requests if r.path == "/wado"]
    assert sorted(r.params["objectUID"][0] for r in wado) == [I1, I2]


def test_download_wado_uri_needs_an_endpoint_it_cannot_guess(
    pacs: FakePacs, tmp_path: Path
) -> None:
    result = run(
        "download", "--url", f"{pacs.base}/dicomweb", "--study-uid", S1,
        "-o", str(tmp_path), "--protocol", "wado-uri",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--wado-uri-url" in result.stderr


def test_download_study_layout_and_series_level(pacs: FakePacs, tmp_path: Path) -> None:
    result = run(
        "download", "--url", pacs.url, "--study-uid", S1, "--level", "series",
        "-o", str(tmp_path), "--layout", "study", "--workers", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / S1.replace(".", "_") / SE1.replace(".", "_")
    names = {uid.replace(".", "_") for uid in (I1, I2)}
    assert set(_files(tmp_path)) == {folder / name for name in names}


def test_download_invalid_layout_is_a_usage_error(
    pacs: FakePacs, tmp_path: Path
) -> None:
    result = run(
        "download", "--url", pacs.url, "--study-uid", S1, "-o", str(tmp_path),
        "--layout", "{PatientID}/../{SOPInstanceUID}.dcm",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--layout" in result.stderr
    assert ".." in result.stderr
    assert pacs.requests == []


def test_download_nothing_found_is_an_error(pacs: FakePacs, tmp_path: Path) -> None:
    result = run(
        "download", "--url", pacs.url, "--study-uid", f"{ROOT}.999", "-o", str(tmp_path)
    )
    assert result.exit_code == 1
    assert "no studies match" in result.stderr


def test_download_failures_are_listed_and_exit_1(
    pacs: FakePacs, tmp_path: Path
) -> None:
    pacs.failing_series.add(SE2)
    result = run("download", "--url", pacs.url, "--all", "-o", str(tmp_path))
    assert result.exit_code == 1
    assert "Saved 2 files" in result.stdout
    assert "1 download(s) failed" in result.stderr
    assert SE2 in result.stderr
    assert "404" in result.stderr
    assert "Traceback" not in result.output
    assert len(_files(tmp_path)) == 2


def test_default_wado_uri_url() -> None:
    assert default_wado_uri_url("http://h:8042/dicom-web") == "http://h:8042/wado"
    assert default_wado_uri_url("https://h/pacs/dicom-web/") == "https://h/pacs/wado"
    assert default_wado_uri_url("https://h/dicomweb") is None


# -- values ------------------------------------------------------------------------


def test_json_values() -> None:
    dataset = Dataset()
    dataset.ModalitiesInStudy = "CT"
    dataset.Modality = "MR"
    dataset.NumberOfStudyRelatedInstances = "12"
    dataset.SliceThickness = "2.5"
    dataset.PatientName = "Doe^John"
    dataset.add(DataElement(0x00091001, "OB", b"\x01\x02"))
    item = Dataset()
    item.CodeValue = "T-1"
    dataset.ProcedureCodeSequence = DicomSequence([item])
    result = dataset_as_json(dataset, ["PatientID", "Modality"])
    assert list(result)[:2] == ["PatientID", "Modality"]
    assert result["PatientID"] is None
    assert result["Modality"] == "MR"
    assert result["ModalitiesInStudy"] == ["CT"]  # VM 1-n: always a list
    assert result["NumberOfStudyRelatedInstances"] == 12
    assert result["SliceThickness"] == 2.5
    assert result["PatientName"] == "Doe^John"
    assert result["00091001"] == "AQI="
    assert result["ProcedureCodeSequence"] == [{"CodeValue": "T-1"}]
    json.dumps(result)


def test_text_values() -> None:
    dataset = Dataset()
    dataset.ModalitiesInStudy = ["CT", "OT"]
    assert text_value(dataset["ModalitiesInStudy"]) == "CT\\OT"
    assert text_value(None) == ""
    assert json_value(None) is None


# -- progress ----------------------------------------------------------------------


def test_progress_counts_with_known_instances() -> None:
    progress = RichProgress(disable=True)
    with progress:
        progress.add_total(instances=4)
        progress.advance_bytes(500)
        progress.instance_done(500)
        progress.instance_done(skipped=True)
    counts = progress.counts
    assert counts == TransferCounts(
        instances_total=4,
        instances_done=2,
        skipped=1,
        bytes_total=None,
        bytes_received=500,
        bytes_saved=500,
    )
    assert counts.downloaded == 1
    assert counts.fraction() == 0.5


def test_progress_with_unknown_instances_follows_bytes() -> None:
    progress = RichProgress(disable=True)
    progress.add_total(nbytes=1000)
    progress.advance_bytes(250)
    assert progress.counts.known_instances_total is None
    assert progress.counts.fraction() == 0.25
    progress.add_total(nbytes=1000)  # another series announced itself
    assert progress.counts.fraction() == 0.125
    progress.instance_done(250)
    assert progress.counts.instances_done == 1


def test_progress_total_overtaken_counts_as_unknown() -> None:
    counts = TransferCounts(instances_total=1, instances_done=3)
    assert counts.known_instances_total is None
    assert counts.fraction() is None


def test_progress_is_thread_safe() -> None:
    progress = RichProgress(disable=True)

    def work() -> None:
        for _ in range(500):
            progress.advance_bytes(3)
            progress.instance_done(3)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = progress.counts
    assert counts.instances_done == 4000
    assert counts.bytes_received == counts.bytes_saved == 12000


def test_seconds_remaining() -> None:
    assert seconds_remaining(TransferCounts(), None) is None
    by_instances = TransferCounts(
        instances_total=10, instances_done=5, bytes_received=600, bytes_saved=500
    )
    # 100 bytes per instance, 5 to go, 100 bytes of them in flight: 400 at 100/s
    assert seconds_remaining(by_instances, 100.0) == pytest.approx(4.0)
    done = TransferCounts(instances_total=2, instances_done=2)
    assert seconds_remaining(done, 10.0) == 0.0
    by_bytes = TransferCounts(bytes_total=1000, bytes_received=400)
    assert seconds_remaining(by_bytes, 200.0) == pytest.approx(3.0)
    assert seconds_remaining(TransferCounts(bytes_received=5), 10.0) is None


def test_progress_display_shows_files_bytes_and_eta() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    with RichProgress(console=console, disable=False) as progress:
        progress.add_total(instances=4)
        progress.advance_bytes(2_000_000)
        progress.instance_done(2_000_000)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "1/4 files" in output
    assert "2.0 MB" in output
    assert "ETA" in output


def test_progress_display_off_without_terminal() -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    with RichProgress(console=console) as progress:
        progress.instance_done(10)
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]
    assert progress_module.TransferCounts().fraction() is None


def test_a_command_leaves_logging_as_it_was(pacs: FakePacs) -> None:
    logger = logging.getLogger("trolley")
    handlers, level = list(logger.handlers), logger.level
    result = run("search", "--url", pacs.url, "--csv", "-vv")
    assert result.exit_code == 0, result.output
    assert logger.handlers == handlers
    assert logger.level == level


def test_download_with_progress_and_an_explicit_wado_uri_endpoint(
    pacs: FakePacs, tmp_path: Path
) -> None:
    result = run(
        "download", "--url", f"{pacs.base}/elsewhere", "--qido-url", pacs.url,
        "--study-uid", S2, "-o", str(tmp_path), "--protocol", "wado-uri",
        "--wado-uri-url", f"{pacs.base}/wado", "--progress", "--workers", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1/1 files" in result.stderr
    assert [path.stem for path in _files(tmp_path)] == [I3]


@pytest.mark.parametrize("protocol", ["c-get", "c-move"])
def test_retries_reach_the_dimse_downloaders(protocol: str) -> None:
    settings = DIMSESettings(host="127.0.0.1", port=11112)
    connection = ConnectionSettings(retry=Retry(total=0))
    downloader = settings.downloader(protocol, connection, workers=2)
    assert downloader.retry.total == 0
