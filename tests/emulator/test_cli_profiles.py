"""The CLI with profiles, environment variables and the Vitrea stack (MINT search,
RAD-69 download, login), end to end against the emulator."""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner, Result

from dicomtrolley.cli.main import main
from dicomtrolley.emulator import DimseService, Emulator, default_services
from tests.emulator.conftest import PASSWORD, USER, DemoData

#: Environment variables a test run must not inherit.
CLEAN = {
    name: None
    for name in (
        "DICOMTROLLEY_CONFIG",
        "DICOMTROLLEY_PROFILE",
        "DICOMTROLLEY_URL",
        "DICOMTROLLEY_MINT_URL",
        "DICOMTROLLEY_WADO_URI_URL",
        "DICOMTROLLEY_WADO_URL",
        "DICOMTROLLEY_RAD69_URL",
        "DICOMTROLLEY_LOGIN_URL",
        "DICOMTROLLEY_REALM",
        "DICOMTROLLEY_USER",
        "DICOMTROLLEY_PASSWORD",
        "DICOMTROLLEY_TOKEN",
        "DICOMTROLLEY_CLIENT_SECRET",
        "PACS_PASSWORD",
    )
}


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), env={**CLEAN, **env})


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def vitrea_profile(emulator: Emulator, name: str = "vitrea") -> str:
    return (
        f"[profiles.{name}]\n"
        'search = "mint"\n'
        'download = ["rad69"]\n'
        f'mint_url = "{emulator.mint_url}"\n'
        f'rad69_url = "{emulator.rad69_url}"\n'
        f'auth = {{ type = "vitrea", login_url = "{emulator.login_url}", '
        f'user = "{USER}", password_env = "PACS_PASSWORD" }}\n'
    )


def oauth2_profile(
    emulator: Emulator, tmp_path: Path, *extra: str, auth_extra: str = ""
) -> Path:
    """A config with profile "idp": WADO-URI, OAuth2 client "cli" of emulator;
    extra lines in the profile, auth_extra in its auth table."""
    return write_config(
        tmp_path,
        "[profiles.idp]\n"
        f'url = "{emulator.dicomweb_url}"\n'
        'download = ["wado-uri"]\n'
        + "".join(f"{line}\n" for line in extra)
        + f'auth = {{ type = "oauth2", token_url = "{emulator.token_url}", '
        f'client_id = "cli"{auth_extra} }}\n',
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def files_of(folder: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for the DICOM files below folder."""
    found: dict[str, Path] = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            try:
                dataset = pydicom.dcmread(path, stop_before_pixels=True)
            except pydicom.errors.InvalidDicomError:
                continue  # the folder's index or manifest
            found[str(dataset.SOPInstanceUID)] = path
    return found


def test_search_with_a_vitrea_profile(emulator: Emulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, vitrea_profile(emulator))
    result = run(
        "search", "--profile", "vitrea", "--patient-id", "DTR00*", "--format", "csv",
        DICOMTROLLEY_CONFIG=str(config), PACS_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(row["PatientID"] for row in rows) == [
        "DTR001",
        "DTR001",
        "DTR002",
        "DTR003",
        "DTR004",
    ]
    assert {row["PatientName"] for row in rows} >= {"Doe^John", "Smith^Anna"}
    assert PASSWORD not in result.output


def test_download_with_a_vitrea_profile_over_rad69(
    emulator: Emulator, demo: DemoData, tmp_path: Path
) -> None:
    config = write_config(tmp_path, vitrea_profile(emulator))
    out = tmp_path / "out"
    result = run(
        "download", "--config", str(config), "--profile", "vitrea",
        "--patient-id", "DTR002", "-o", str(out), "--layout", "study",
        PACS_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "RAD-69" in result.stderr
    study = demo.study("DTR002")
    expected = demo.files_of(study.study_uid)
    saved = files_of(out)
    assert set(saved) == set(expected)
    for uid, path in saved.items():
        assert path.read_bytes() == expected[uid]


def test_the_vitrea_stack_without_a_profile(
    emulator: Emulator, demo: DemoData, tmp_path: Path
) -> None:
    """--protocol mint / rad69 with --login-url and --user, as issue 11 asks."""
    login = ["--login-url", emulator.login_url, "--user", USER]
    searched = run(
        "search", "--protocol", "mint", "--mint-url", emulator.mint_url, *login,
        "--patient-id", "DTR004", "--level", "series", "--format", "json",
        DICOMTROLLEY_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert searched.exit_code == 0, searched.output
    series = json.loads(searched.stdout)
    assert [s["SeriesDescription"] for s in series] == [
        "Head soft tissue",
        "Head bone",
    ] or sorted(s["SeriesDescription"] for s in series) == [
        "Head bone",
        "Head soft tissue",
    ]
    out = tmp_path / "out"
    downloaded = run(
        "download", "--protocol", "rad69", "--rad69-url", emulator.rad69_url,
        "--mint-url", emulator.mint_url, *login, "--patient-id", "DTR004",
        "-o", str(out), DICOMTROLLEY_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert downloaded.exit_code == 0, downloaded.output
    assert set(files_of(out)) == set(demo.files_of(demo.study("DTR004").study_uid))


def test_a_wrong_vitrea_password_is_an_auth_error(emulator: Emulator) -> None:
    result = run(
        "search", "--protocol", "mint", "--url", emulator.mint_url,
        "--login-url", emulator.login_url, "--user", USER, "--patient-id", "X",
        DICOMTROLLEY_PASSWORD="wrong",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "login failed" in result.stderr
    assert "wrong" not in result.output


def test_command_line_options_override_the_profile(
    emulator: Emulator, tmp_path: Path
) -> None:
    text = (
        "[profiles.p]\n"
        'url = "http://127.0.0.1:9/dicom-web"\n'  # nothing listens there
        f'auth = {{ type = "basic", user = "{USER}", password_env = "PACS_PASSWORD" }}\n'
        "timeouts = { connect = 2, read = 10 }\n"
    )
    config = write_config(tmp_path, text)
    env = {"DICOMTROLLEY_CONFIG": str(config), "PACS_PASSWORD": PASSWORD}
    refused = run("search", "--profile", "p", "--patient-id", "DTR004", **env)
    assert refused.exit_code == 1
    assert "127.0.0.1:9" in refused.stderr
    result = run(
        "search", "--profile", "p", "--url", emulator.dicomweb_url,
        "--patient-id", "DTR004", "--format", "json", **env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [row["PatientID"] for row in json.loads(result.stdout)] == ["DTR004"]


def test_profile_from_the_environment_variable(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = write_config(tmp_path, vitrea_profile(emulator, "v"))
    result = run(
        "search", "--patient-id", "DTR003", "--format", "csv",
        DICOMTROLLEY_CONFIG=str(config), DICOMTROLLEY_PROFILE="v",
        PACS_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "DTR003" in result.stdout


def test_profile_errors_exit_2_naming_file_profile_and_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[profiles.p]\ntimeouts = { read = -1 }\n")
    result = run("search", "--config", str(config), "--profile", "p")
    assert result.exit_code == 2
    assert f'{config}: profile "p": timeouts.read: must be > 0' in result.stderr
    missing = run("search", "--config", str(config), "--profile", "nope")
    assert missing.exit_code == 2
    assert 'no profile "nope"' in missing.stderr


def test_a_missing_secret_without_terminal_exits_2_naming_the_variable(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = write_config(tmp_path, vitrea_profile(emulator))
    result = run("search", "--profile", "vitrea", DICOMTROLLEY_CONFIG=str(config))
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "set the environment variable PACS_PASSWORD" in lines[0]
    assert 'profile "vitrea": auth.password' in lines[0]


def test_user_without_password_in_cron_exits_2(emulator: Emulator) -> None:
    result = run("search", "--url", emulator.dicomweb_url, "--user", USER)
    assert result.exit_code == 2
    assert "set the environment variable DICOMTROLLEY_PASSWORD" in result.stderr


def test_environment_variables_without_a_profile(emulator: Emulator) -> None:
    result = run(
        "search", "--patient-id", "DTR004", "--format", "csv",
        DICOMTROLLEY_URL=emulator.dicomweb_url, DICOMTROLLEY_USER=USER,
        DICOMTROLLEY_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "DTR004" in result.stdout


def test_deprecated_wado_url_variable_still_works_with_a_warning(
    emulator: Emulator, tmp_path: Path
) -> None:
    result = run(
        "download", "--protocol", "wado-uri", "--study-uid", "1.2.3.4",
        "-o", str(tmp_path),
        DICOMTROLLEY_URL=emulator.dicomweb_url,
        DICOMTROLLEY_WADO_URL=emulator.wado_uri_url,
        DICOMTROLLEY_USER=USER, DICOMTROLLEY_PASSWORD=PASSWORD,
    )  # fmt: skip
    assert "DICOMTROLLEY_WADO_URL is deprecated: use DICOMTROLLEY_WADO_URI_URL" in (
        result.stderr
    )
    assert "no studies match" in result.stderr  # it ran: the study is unknown


def test_profiles_list_shows_no_secret(emulator: Emulator, tmp_path: Path) -> None:
    text = vitrea_profile(emulator) + (
        "[profiles.pacs]\n"
        f'url = "{emulator.dicomweb_url}"\n'
        'download = ["wado-rs", "c-get"]\n'
        'dimse = { host = "127.0.0.1", port = 11112, aec = "PACS" }\n'
        'auth = { type = "basic", user = "u", password = "hunter2" }\n'
        "[profiles.broken]\nworkers = 0\n"
    )
    config = write_config(tmp_path, text)
    result = run("profiles", "list", "--config", str(config), "--json")
    assert result.exit_code == 2  # one profile does not validate
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert listed["vitrea"]["search"] == "mint"
    assert listed["pacs"]["download"] == ["wado-rs", "c-get"]
    assert listed["pacs"]["url"] == emulator.dicomweb_url
    assert 'profile "broken": workers: must be >= 1' in result.stderr
    assert "hunter2" not in result.output
    table = run("profiles", "list", "--config", str(config))
    assert "vitrea" in table.stdout and "hunter2" not in table.output


def test_profiles_check_logs_in_and_searches(
    emulator: Emulator, tmp_path: Path
) -> None:
    config = write_config(tmp_path, vitrea_profile(emulator))
    result = run(
        "profiles", "check", "vitrea", "--config", str(config), PACS_PASSWORD=PASSWORD
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["login", "ok"]
    assert lines[1].split()[:2] == ["search", "ok"]
    assert " ms " in lines[0]
    bad = run(
        "profiles", "check", "vitrea", "--config", str(config), PACS_PASSWORD="nope"
    )
    assert bad.exit_code == 1
    assert bad.stdout.split()[:2] == ["login", "FAILED"]


def test_profiles_check_echoes_a_dimse_server(
    demo: DemoData, make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emulator = make_emulator(
        demo.root, services=[*default_services(), DimseService(0, "EMU")]
    )
    host, port = emulator.dimse.address
    config = write_config(
        tmp_path,
        "[profiles.d]\n"
        'download = ["c-get"]\n'
        f'dimse = {{ host = "{host}", port = {port}, aec = "EMU" }}\n'
        "[profiles.wrong]\n"
        'download = ["c-get"]\n'
        f'dimse = {{ host = "{host}", port = {closed_port()}, aec = "EMU" }}\n',
    )
    result = run("profiles", "check", "d", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["C-ECHO", "ok"],
        ["search", "ok"],
    ]
    wrong = run("profiles", "check", "wrong", "--config", str(config))
    assert wrong.exit_code == 1
    assert wrong.stdout.split()[:2] == ["C-ECHO", "FAILED"]


@pytest.mark.parametrize("workers", ["1", "4"])
def test_download_with_an_oauth2_profile_and_short_tokens(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    tmp_path: Path,
    workers: str,
) -> None:
    emulator = make_emulator(
        demo.root, oauth2_clients={"cli": "cli-secret"}, token_lifetime=0.3
    )
    config = oauth2_profile(emulator, tmp_path)
    out = tmp_path / "out"
    result = run(
        "download", "--config", str(config), "--profile", "idp",
        "--patient-id", "DTR00*", "-o", str(out), "--workers", workers,
        DICOMTROLLEY_CLIENT_SECRET="cli-secret",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(files_of(out)) == len(demo.paths)
    tokens = emulator.tokens
    assert tokens is not None
    assert tokens.issued >= 2
    assert tokens.expired_refusals == 0
    assert "cli-secret" not in result.output


def test_profiles_check_gets_an_oauth2_token(
    demo: DemoData, make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emulator = make_emulator(demo.root, oauth2_clients={"cli": "cli-secret"})
    config = write_config(
        tmp_path,
        "[profiles.idp]\n"
        f'url = "{emulator.dicomweb_url}"\n'
        f'auth = {{ type = "oauth2", token_url = "{emulator.token_url}", '
        'client_id = "cli", client_secret_env = "IDP_SECRET" }\n',
    )
    result = run(
        "profiles", "check", "idp", "--config", str(config), IDP_SECRET="cli-secret"
    )
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["token", "ok"],
        ["search", "ok"],
    ]
    refused = run(
        "profiles", "check", "idp", "--config", str(config), IDP_SECRET="wrong"
    )
    assert refused.exit_code == 1
    assert refused.stdout.split()[:2] == ["token", "FAILED"]
    assert "invalid_client" in refused.stdout
    missing = run("profiles", "check", "idp", "--config", str(config))
    assert missing.exit_code == 2
    assert "set the environment variable IDP_SECRET" in missing.stderr


def test_batch_with_an_oauth2_profile_whose_tokens_expire_mid_batch(
    demo: DemoData, make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    """Tokens valid 0.05 s, a batch of every demo study one file at a time (it
    takes longer than that): new tokens are fetched as the batch goes on, a
    request that meets an expired one gets a new token and is sent again."""
    emulator = make_emulator(
        demo.root, oauth2_clients={"cli": "cli-secret"}, token_lifetime=0.05
    )
    config = oauth2_profile(
        emulator, tmp_path, "workers = 1", auth_extra=", refresh_margin = 0"
    )
    batch = tmp_path / "cohort.csv"
    batch.write_text(
        "AccessionNumber\n" + "".join(f"{s.accession_number}\n" for s in demo.studies)
    )
    out = tmp_path / "out"
    result = run(
        "batch", str(batch), "--config", str(config), "--profile", "idp",
        "-o", str(out), DICOMTROLLEY_CLIENT_SECRET="cli-secret",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(files_of(out)) == len(demo.paths)
    tokens = emulator.tokens
    assert tokens is not None
    assert tokens.issued >= 2
    assert "cli-secret" not in result.output
