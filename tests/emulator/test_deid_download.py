"""De-identified downloads against the emulator: WADO-RS, WADO-URI, RAD-69, C-GET.

Synthetic studies carrying every PS3.15 Table E.1-1 attribute are downloaded
with a :class:`~dicomtrolley.deid.Deidentifier` on the storage; no source
value may be left in a file or a path, burned-in cases are flagged, the
mapping file is private, a re-run fetches nothing, and a folder of one key
refuses another key and a download without de-identification. The CLI runs
twice in two processes into two folders: the same pseudonyms and paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dicomtrolley.core import Downloader, Query, QueryLevels
from dicomtrolley.deid import Deidentifier, DeidFolderError
from dicomtrolley.dicom_qr import DICOMQRGet
from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.exceptions import StorageError
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.rad69 import Rad69
from dicomtrolley.storage import TemplateStorage
from dicomtrolley.synthetic import phi_studies, write_studies
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.deid_checks import (
    KEY,
    LAYOUT,
    OTHER_KEY,
    assert_no_source_data,
    expected_flags,
    flagged,
    mapping,
    output_files,
)
from tests.emulator.conftest import PASSWORD, USER
from tests.emulator.transfer_helpers import cli_command, run_cli

HOST = "127.0.0.1"
STUDIES = phi_studies(2, 2)
INSTANCES = sum(study.instance_count for study in STUDIES)


@pytest.fixture(scope="module")
def phi_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    root = tmp_path_factory.mktemp("phi-data")
    write_studies(root, STUDIES)
    with Emulator(root, services=[*default_services(), DimseService()]) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.auth = (USER, PASSWORD)
        yield http


def downloader(
    protocol: str, emulator: Emulator, session: requests.Session
) -> Downloader:
    if protocol == "wado-rs":
        return WadoRS(session, emulator.dicomweb_url)
    if protocol == "wado-uri":
        return WadoURI(session, emulator.wado_uri_url)
    if protocol == "rad69":
        return Rad69(session, emulator.rad69_url)
    service = emulator.dimse
    return DICOMQRGet(HOST, service.port, "TROLLEY", service.ae_title)


def download(
    protocol: str,
    emulator: Emulator,
    session: requests.Session,
    out: Path,
    transform: Deidentifier | None,
) -> int:
    trolley = Trolley(
        downloader(protocol, emulator, session),
        QidoRS(session, emulator.dicomweb_url),
        storage=TemplateStorage(out, LAYOUT, transform=transform),
    )
    studies = trolley.find_studies(
        Query(PatientID="PHIPAT*", query_level=QueryLevels.INSTANCE)
    )
    report = trolley.download(studies, out, use_async=True, max_workers=2)
    return len(report.saved)


@pytest.mark.parametrize("protocol", ["wado-rs", "wado-uri", "rad69", "c-get"])
def test_deidentified_download(
    protocol: str, phi_emulator: Emulator, session: requests.Session, tmp_path: Path
) -> None:
    deid = Deidentifier(KEY)
    saved = download(protocol, phi_emulator, session, tmp_path, deid)
    assert saved == INSTANCES == len(output_files(tmp_path))
    assert_no_source_data(tmp_path, STUDIES)
    patients = {path.relative_to(tmp_path).parts[0] for path in output_files(tmp_path)}
    assert patients == {deid.pseudonym(s.patient_id) for s in STUDIES}
    lines = mapping(tmp_path)
    uids = {line["source"]: line["mapped"] for line in lines if line["type"] == "uid"}
    for study in STUDIES:
        assert uids[study.study_uid] == deid.map_uid(study.study_uid)
    assert flagged(tmp_path) == expected_flags(tmp_path) != set()
    # a re-run: everything is there, nothing is fetched
    again = download(protocol, phi_emulator, session, tmp_path, Deidentifier(KEY))
    assert again == 0 and len(output_files(tmp_path)) == INSTANCES
    # another key, or none, must not write into this folder
    with pytest.raises(DeidFolderError, match="another key"):
        download(protocol, phi_emulator, session, tmp_path, Deidentifier(OTHER_KEY))
    with pytest.raises(StorageError, match="de-identified"):
        download(protocol, phi_emulator, session, tmp_path, None)
    assert len(output_files(tmp_path)) == INSTANCES


def cli_download(emulator: Emulator, out: Path, *extra: str) -> list[str]:
    return cli_command(
        "download",
        "--url",
        emulator.dicomweb_url,
        "--user",
        USER,
        "--patient-id",
        "PHIPAT*",
        "-o",
        str(out),
        "--no-progress",
        "--deidentify",
        "basic",
        *extra,
    )


def test_cli_two_processes_same_pseudonyms(
    phi_emulator: Emulator, tmp_path: Path
) -> None:
    env = {"DICOMTROLLEY_DEID_KEY": KEY, "DICOMTROLLEY_PASSWORD": PASSWORD}
    first, second = tmp_path / "a", tmp_path / "b"
    for out, workers in ((first, "1"), (second, "3")):
        result = run_cli(cli_download(phi_emulator, out, "--workers", workers), env)
        assert result.returncode == 0, result.stderr
    names = [
        sorted(str(p.relative_to(out)) for p in output_files(out))
        for out in (first, second)
    ]
    assert names[0] == names[1] and len(names[0]) == INSTANCES
    for out in (first, second):
        assert_no_source_data(out, STUDIES)
    again = run_cli(cli_download(phi_emulator, first), env)
    assert again.returncode == 0, again.stderr
    other = run_cli(
        cli_download(phi_emulator, first), {**env, "DICOMTROLLEY_DEID_KEY": OTHER_KEY}
    )
    assert other.returncode == 2 and "another key" in other.stderr
    dates = run_cli(cli_download(phi_emulator, first, "--deid-retain-dates"), env)
    assert dates.returncode == 2 and "profile" in dates.stderr
    plain = run_cli(cli_download(phi_emulator, first)[:-2], env)
    assert plain.returncode != 0 and "de-identified" in plain.stderr
    assert sorted(str(p.relative_to(first)) for p in output_files(first)) == names[0]


def test_cli_refuses_a_folder_of_identified_files(
    phi_emulator: Emulator, tmp_path: Path
) -> None:
    env = {"DICOMTROLLEY_DEID_KEY": KEY, "DICOMTROLLEY_PASSWORD": PASSWORD}
    plain = run_cli(cli_download(phi_emulator, tmp_path)[:-2], env)
    assert plain.returncode == 0, plain.stderr
    deid = run_cli(cli_download(phi_emulator, tmp_path), env)
    assert deid.returncode == 2 and "without de-identification" in deid.stderr
    assert os.listdir(tmp_path / ".dicomtrolley").count("deid.json") == 0
