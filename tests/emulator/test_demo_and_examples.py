"""The main command (`dicomtrolley demo`), the examples, MINT and resuming, end to end.

The demo and the examples run as subprocesses, the way a user runs them; the
examples get their server settings from the environment, pointing at the
session's emulator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import requests

from dicomtrolley.auth import create_session
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.emulator import Emulator
from dicomtrolley.exceptions import DICOMTrolleyAuthError
from dicomtrolley.mint import Mint, MintQuery
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import StorageDir
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI
from tests.emulator.conftest import PASSWORD, USER, DemoData
from tests.fakes import tree

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in tree(folder) if p.is_file())


def _sop_uids(files: list[Path]) -> set[str]:
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files
    }


def _run(
    args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_command_downloads_everything_and_resumes(
    tmp_path: Path, demo: DemoData
) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "120"}
    command = [sys.executable, "-m", "dicomtrolley.cli.main", "demo"]
    first = _run(command, tmp_path, env)
    assert first.returncode == 0, first.stdout + first.stderr
    for protocol in ("wado-uri", "wado-rs", "rad69", "c-get", "c-move"):
        files = _files(tmp_path / "dicomtrolley-demo" / protocol)
        assert _sop_uids(files) == set(demo.by_uid), protocol
        assert not [f for f in files if f.name.endswith(".part")]
    assert "Studies (MINT, STUDY level)" in first.stdout
    assert "Müller^Jürgen" in first.stdout

    again = _run(command, tmp_path, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count(f"skipped {len(demo.by_uid)} already present") == 5


def test_examples_run_against_the_emulator(
    tmp_path: Path, emulator: Emulator, demo: DemoData
) -> None:
    env = {
        "DICOMTROLLEY_LOGIN_URL": emulator.login_url,
        "DICOMTROLLEY_MINT_URL": emulator.mint_url,
        "DICOMTROLLEY_WADO_URI_URL": emulator.wado_uri_url,
        "DICOMTROLLEY_RAD69_URL": emulator.rad69_url,
        "DICOMTROLLEY_USER": USER,
        "DICOMTROLLEY_PASSWORD": PASSWORD,
    }
    study = demo.study("DTR002")
    searched = _run([sys.executable, str(EXAMPLES / "search_mint.py")], tmp_path, env)
    assert searched.returncode == 0, searched.stderr
    assert f"Found {len(demo.studies)} studies" in searched.stdout
    assert study.series[0].series_uid in searched.stdout

    out = tmp_path / "mint-wado-uri"
    downloaded = _run(
        [sys.executable, str(EXAMPLES / "download_mint_wado_uri.py")],
        tmp_path,
        {**env, "DICOMTROLLEY_PATIENT_ID": "DTR002", "DICOMTROLLEY_OUTPUT": str(out)},
    )
    assert downloaded.returncode == 0, downloaded.stderr
    assert _sop_uids(_files(out)) == set(demo.files_of(study.study_uid))

    out = tmp_path / "mint-rad69"
    over_rad69 = _run(
        [sys.executable, str(EXAMPLES / "download_mint_rad69.py")],
        tmp_path,
        {**env, "DICOMTROLLEY_PATIENT_ID": "DTR002", "DICOMTROLLEY_OUTPUT": str(out)},
    )
    assert over_rad69.returncode == 0, over_rad69.stderr
    files = _files(out)
    assert {p.read_bytes() for p in files} == set(
        demo.files_of(study.study_uid).values()
    )

    first_series = study.series[0]
    triples = " ".join(
        f"{study.study_uid}/{first_series.series_uid}/{first_series.instance_uid(i)}"
        for i in range(2)
    )
    flat = tmp_path / "wado-only"
    only = _run(
        [sys.executable, str(EXAMPLES / "wado_uri_only.py")],
        tmp_path,
        {**env, "DICOMTROLLEY_INSTANCES": triples, "DICOMTROLLEY_OUTPUT": str(flat)},
    )
    assert only.returncode == 0, only.stderr
    files = _files(flat)
    assert len(files) == 2
    for path in files:
        uid = str(pydicom.dcmread(path).SOPInstanceUID)
        assert path.read_bytes() == demo.by_uid[uid].read_bytes()

    # the examples' old variable name still works, with a warning
    old_name = {
        **{k: v for k, v in env.items() if k != "DICOMTROLLEY_WADO_URI_URL"},
        "DICOMTROLLEY_WADO_URL": emulator.wado_uri_url,
    }
    renamed = _run(
        [sys.executable, str(EXAMPLES / "wado_uri_only.py")],
        tmp_path,
        {
            **old_name,
            "DICOMTROLLEY_INSTANCES": triples,
            "DICOMTROLLEY_OUTPUT": str(tmp_path / "old-name"),
        },
    )
    assert renamed.returncode == 0, renamed.stderr
    assert "DICOMTROLLEY_WADO_URL is deprecated" in renamed.stderr
    assert len(_files(tmp_path / "old-name")) == 2


def test_profile_example_runs_against_the_emulator(
    tmp_path: Path, emulator: Emulator, demo: DemoData
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[profiles.emu]\n"
        'search = "mint"\n'
        'download = ["rad69"]\n'
        f'mint_url = "{emulator.mint_url}"\n'
        f'rad69_url = "{emulator.rad69_url}"\n'
        f'auth = {{ type = "vitrea", login_url = "{emulator.login_url}", '
        f'user = "{USER}", password_env = "EMU_PASSWORD" }}\n'
    )
    out = tmp_path / "out"
    result = _run(
        [sys.executable, str(EXAMPLES / "download_with_profile.py")],
        tmp_path,
        {
            "DICOMTROLLEY_CONFIG": str(config),
            "DICOMTROLLEY_PROFILE": "emu",
            "EMU_PASSWORD": PASSWORD,
            "DICOMTROLLEY_PATIENT_ID": "DTR003",
            "DICOMTROLLEY_OUTPUT": str(out),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "with mint; downloading over rad69" in result.stdout
    study = demo.study("DTR003")
    assert _sop_uids(_files(out)) == set(demo.files_of(study.study_uid))


@pytest.mark.parametrize("level", list(QueryLevels))
def test_mint_client_at_every_level(
    emulator: Emulator, demo: DemoData, level: QueryLevels
) -> None:
    session = create_session(emulator.login_url, USER, PASSWORD)
    mint = Mint(session, emulator.mint_url)
    studies = mint.find_studies(MintQuery(query_level=level, PatientID="DTR00*"))
    assert {s.uid for s in studies} == {s.study_uid for s in demo.studies}
    instances = {i.uid for s in studies for i in s.all_instances()}
    if level == QueryLevels.INSTANCE:
        assert instances == set(demo.by_uid)
    else:
        assert not instances
    if level == QueryLevels.STUDY:
        assert all(not s.series for s in studies)
    assert all(s.mint_uuid and s.last_modified for s in studies)


def test_mint_include_fields_and_wrong_password(
    emulator: Emulator, demo: DemoData
) -> None:
    session = create_session(emulator.login_url, USER, PASSWORD)
    mint = Mint(session, emulator.mint_url)
    study = demo.study("DTR003")
    found = mint.find_study(
        MintQuery(
            StudyInstanceUID=study.study_uid,
            query_level=QueryLevels.SERIES,
            include_fields=["PatientName", "SeriesDescription"],
        )
    )
    assert str(found.data.PatientName) == study.patient_name
    assert {str(s.data.SeriesDescription) for s in found.series} == {
        s.description for s in study.series
    }
    bad = Mint(create_session(emulator.login_url, USER, "wrong"), emulator.mint_url)
    with pytest.raises(DICOMTrolleyAuthError) as info:
        bad.find_studies(Query())
    assert "wrong" not in str(info.value)


def test_wado_rs_second_run_skips_series_known_to_be_complete(
    tmp_path: Path, emulator: Emulator, demo: DemoData
) -> None:
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    trolley = Trolley(
        searcher=QidoRS(session, emulator.dicomweb_url),
        downloader=WadoRS(session, emulator.dicomweb_url),
        storage=StorageDir(tmp_path),
    )
    study = demo.study("DTR001", "Chest")
    found = trolley.find_study_by_id(study.study_uid, QueryLevels.INSTANCE)
    first = trolley.download(found, tmp_path, use_async=True, max_workers=2)
    assert len(first.saved) == study.instance_count
    damaged = first.saved[0]
    damaged.write_bytes(damaged.read_bytes()[:-10])
    second = trolley.download(found, tmp_path)
    # only the series with the damaged file is fetched again
    assert len(second.skipped) + len(second.saved) == study.instance_count
    assert 0 < len(second.saved) < study.instance_count
    assert damaged in second.saved
    assert _sop_uids(_files(tmp_path)) == set(demo.files_of(study.study_uid))


def test_wado_uri_behind_vitrea_login(
    tmp_path: Path, emulator: Emulator, demo: DemoData
) -> None:
    session = create_session(emulator.login_url, USER, PASSWORD)
    trolley = Trolley(
        searcher=Mint(session, emulator.mint_url),
        downloader=WadoURI(session, emulator.wado_uri_url),
        storage=StorageDir(tmp_path),
    )
    study = demo.study("DTR004")
    trolley.download(trolley.find_studies(Query(PatientID="DTR004")), tmp_path)
    files = _files(tmp_path)
    expected = demo.files_of(study.study_uid)
    assert {p.read_bytes() for p in files} == set(expected.values())
