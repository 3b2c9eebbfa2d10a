"""Profiles from TOML: what is accepted, what is refused (naming file, profile,
key), where secrets come from, and what a profile builds."""

from __future__ import annotations

import re
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from dicomtrolley.auth import VitreaAuth
from dicomtrolley.config import (
    ConfigError,
    ConfigWarning,
    DeprecatedNameWarning,
    MissingSecretError,
    Profile,
    TLSConfig,
    config_path,
    getenv,
    load_config,
    load_profile,
)
from dicomtrolley.credentials import NoAuth, Secrets, netrc_credentials
from dicomtrolley.dicom_qr import DICOMQRGet, DICOMQRMove
from dicomtrolley.mint import Mint
from dicomtrolley.oauth import OAuth2ClientCredentials
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.rad69 import Rad69
from dicomtrolley.transport import BearerAuth
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI

FULL = """
[profiles.pacs1]
url = "https://pacs/dicom-web"
search = "qido-rs"
download = ["wado-rs", "c-get", "c-move"]
workers = 8
dimse = { host = "pacs", port = 104, aet = "ME", aec = "PACS", store_port = 11113 }
auth = { type = "basic", user = "alice", password_env = "PACS1_PASSWORD" }
tls = { verify = true }
timeouts = { connect = 3, read = 30, total = 0, dimse_idle = 45, dimse_total = 600 }
retry = { total = 5, backoff_factor = 0.1 }

[profiles.vitrea]
search = "mint"
download = "rad69"
mint_url = "https://vitrea/rest/api/vault/mint"
rad69_url = "https://vitrea/rad69"
auth = { type = "vitrea", login_url = "https://vitrea/login", user = "bob" }

[profiles.idp]
url = "https://pacs/dicom-web"
auth = { type = "oauth2", token_url = "https://idp/token", client_id = "trolley" }
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def no_terminal(environ: dict[str, str] | None = None) -> Secrets:
    return Secrets(environ=environ or {}, is_terminal=lambda: False)


def test_a_full_profile_is_read(tmp_path: Path) -> None:
    profile = load_config(write(tmp_path, FULL)).profile("pacs1")
    assert profile.name == "pacs1"
    assert profile.download == ("wado-rs", "c-get", "c-move")
    assert profile.workers == 8
    timeout = profile.http_timeout()
    assert (timeout.connect, timeout.read, timeout.total) == (3, 30, None)
    dimse = profile.timeouts.dimse()
    assert (dimse.connect, dimse.idle, dimse.total) == (3, 45, 600)
    assert profile.retry_policy().total == 5
    assert profile.retry_policy().backoff_factor == 0.1


def test_a_single_download_protocol_may_be_a_string(tmp_path: Path) -> None:
    profile = load_config(write(tmp_path, FULL)).profile("vitrea")
    assert profile.download == ("rad69",)
    assert profile.search == "mint"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("timeouts = { read = 0 }", "timeouts.read: must be > 0"),
        ("timeouts = { reed = 5 }", "timeouts.reed: unknown key"),
        ("colour = 'red'", "colour: unknown key"),
        ("workers = 0", "workers: must be >= 1"),
        ("download = []", "download: must list at least one protocol"),
        ("download = ['wado-rs', 'ftp']", "download[1]: must be one of"),
        ("search = 'wado-rs'", "search: must be one of"),
        ("url = 'ftp://pacs/'", "url: must be an http:// or https:// URL"),
        ("url = 'https://me:pw@pacs/'", "url: must not hold credentials"),
        ("dimse = { host = 'h', port = 70000 }", "dimse.port: must be <= 65535"),
        ("dimse = { port = 104 }", "dimse.host: required"),
        ("dimse = { host = 'h', port = 1, aec = 'A\\\\B' }", "dimse.aec:"),
        ("auth = { type = 'kerberos' }", "auth.type: must be one of"),
        ("auth = { user = 'x' }", "auth: needs type"),
        ("auth = { type = 'basic', pasword = 'x' }", "auth.pasword: unknown key"),
        ("auth = { type = 'vitrea', user = 'x' }", "auth.login_url: required"),
        ("auth = { type = 'oauth2', token_url = 'https://t' }", "auth.client_id:"),
        ("tls = { client_key = 'k.pem' }", "tls: client_key needs client_cert"),
        ("name = 'other'", "name: unknown key"),
    ],
)
def test_errors_name_file_profile_and_key(
    tmp_path: Path, table: str, message: str
) -> None:
    path = write(tmp_path, f"[profiles.pacs1]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path).profile("pacs1")
    assert str(caught.value).startswith(f'{path}: profile "pacs1": ')
    assert message in str(caught.value)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"config.toml: .*line 1"):
        load_config(write(tmp_path, "[profiles.x\n"))
    with pytest.raises(ConfigError, match="servers: unknown key"):
        load_config(write(tmp_path, "[servers.x]\n"))
    with pytest.raises(ConfigError, match=r'no profile "nope" \(profiles: pacs1,'):
        load_config(write(tmp_path, FULL)).profile("nope")


def test_one_broken_profile_does_not_hide_the_others(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL + "\n[profiles.broken]\nworkers = -1\n"))
    assert config.profile("vitrea").name == "vitrea"
    with pytest.raises(ConfigError, match='"broken": workers'):
        config.profile("broken")


def test_config_path_order(tmp_path: Path) -> None:
    home = Path.home()
    assert config_path(None, {}) == home / ".config/dicomtrolley/config.toml"
    assert config_path(None, {"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "dicomtrolley/config.toml"
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path), "DICOMTROLLEY_CONFIG": "/etc/dt.toml"}
    assert config_path(None, env) == Path("/etc/dt.toml")
    assert config_path("/x.toml", env) == Path("/x.toml")


def test_load_profile_reads_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    env = {"DICOMTROLLEY_CONFIG": str(path), "DICOMTROLLEY_PROFILE": "vitrea"}
    assert load_profile(environ=env).name == "vitrea"
    assert load_profile("idp", environ=env).name == "idp"
    with pytest.raises(ConfigError, match="DICOMTROLLEY_PROFILE"):
        load_profile(environ={"DICOMTROLLEY_CONFIG": str(path)})


# -- secrets -------------------------------------------------------------------------


def test_password_from_the_named_variable(tmp_path: Path) -> None:
    profile = load_config(write(tmp_path, FULL)).profile("pacs1")
    auth = profile.build_auth(no_terminal({"PACS1_PASSWORD": "s3cret"}))
    assert isinstance(auth, requests.auth.HTTPBasicAuth)
    assert (auth.username, auth.password) == ("alice", "s3cret")


def test_missing_password_without_terminal_names_the_variable(tmp_path: Path) -> None:
    profile = load_config(write(tmp_path, FULL)).profile("pacs1")
    with pytest.raises(MissingSecretError) as caught:
        profile.build_auth(no_terminal())
    message = str(caught.value)
    assert 'profile "pacs1": auth.password' in message
    assert "set the environment variable PACS1_PASSWORD" in message
    assert "\n" not in message


def test_missing_password_on_a_terminal_is_asked_for(tmp_path: Path) -> None:
    profile = load_config(write(tmp_path, FULL)).profile("vitrea")
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "typed"

    auth = profile.build_auth(Secrets(environ={}, ask=ask, is_terminal=lambda: True))
    assert isinstance(auth, VitreaAuth)
    assert (auth.user, auth.password, auth.login_url) == (
        "bob",
        "typed",
        "https://vitrea/login",
    )
    assert asked == ["Password for bob"]


def test_oauth2_secret_and_bearer_token_from_default_variables(tmp_path: Path) -> None:
    text = FULL + "\n[profiles.tok]\nauth = { type = 'bearer' }\n"
    config = load_config(write(tmp_path, text))
    env = {"DICOMTROLLEY_CLIENT_SECRET": "cs", "DICOMTROLLEY_TOKEN": "tk"}
    oauth = config.profile("idp").build_auth(no_terminal(env))
    assert isinstance(oauth, OAuth2ClientCredentials)
    assert "cs" not in repr(oauth)
    bearer = config.profile("tok").build_auth(no_terminal(env))
    assert isinstance(bearer, BearerAuth)
    assert bearer.token == "tk"


def test_literal_secret_warns_when_others_may_read_the_file(tmp_path: Path) -> None:
    text = "[profiles.p]\nauth = { type = 'basic', user = 'u', password = 'pw' }\n"
    with pytest.warns(ConfigWarning, match=r'profile "p": auth.password.*chmod 600'):
        profile = load_config(write(tmp_path, text, mode=0o644)).profile("p")
    assert "pw" not in repr(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profile = load_config(write(tmp_path, text, mode=0o600)).profile("p")
    auth = profile.build_auth(no_terminal())
    assert isinstance(auth, requests.auth.HTTPBasicAuth)
    assert auth.password == "pw"


def test_netrc_only_when_asked_for(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pacs login carol password fromnetrc\n")
    netrc.chmod(0o600)
    assert netrc_credentials("https://pacs/x", netrc) == ("carol", "fromnetrc")
    assert netrc_credentials("https://other/x", netrc) is None
    text = (
        "[profiles.n]\nurl = 'https://pacs/dicom-web'\n"
        f"auth = {{ type = 'basic', netrc = '{netrc}' }}\n"
        "[profiles.plain]\nurl = 'https://pacs/dicom-web'\n"
    )
    config = load_config(write(tmp_path, text))
    auth = config.profile("n").build_auth(no_terminal())
    assert isinstance(auth, requests.auth.HTTPBasicAuth)
    assert (auth.username, auth.password) == ("carol", "fromnetrc")
    # without auth, no credentials at all: requests' own netrc lookup is off
    session = config.profile("plain").session(secrets=no_terminal())
    assert isinstance(session.auth, NoAuth)
    request = session.prepare_request(requests.Request("GET", "https://pacs/x"))
    assert "Authorization" not in request.headers


def test_deprecated_environment_name_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecatedNameWarning, match="DICOMTROLLEY_WADO_URI_URL"):
        assert getenv("DICOMTROLLEY_WADO_URI_URL", {"DICOMTROLLEY_WADO_URL": "u"}) == (
            "u"
        )
    both = {"DICOMTROLLEY_WADO_URL": "old", "DICOMTROLLEY_WADO_URI_URL": "new"}
    assert getenv("DICOMTROLLEY_WADO_URI_URL", both) == "new"


# -- what a profile builds -------------------------------------------------------------


def test_profile_builds_searchers_and_downloaders(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    pacs = config.profile("pacs1")
    session = pacs.session(secrets=no_terminal({"PACS1_PASSWORD": "x"}))
    assert isinstance(pacs.searcher(session), QidoRS)
    assert isinstance(pacs.downloader(session=session), WadoRS)
    assert isinstance(pacs.downloader("wado-uri", session), WadoURI)
    get = pacs.downloader("c-get", session)
    assert isinstance(get, DICOMQRGet)
    move = pacs.downloader("c-move", session)
    assert isinstance(move, DICOMQRMove)
    vitrea = config.profile("vitrea")
    session = vitrea.session(secrets=no_terminal({"DICOMTROLLEY_PASSWORD": "x"}))
    assert isinstance(vitrea.searcher(session), Mint)
    assert isinstance(vitrea.downloader(session=session), Rad69)
    with pytest.raises(ConfigError, match=r'"vitrea": url: required for wado-rs'):
        vitrea.downloader("wado-rs", session)
    with pytest.raises(ConfigError, match=r'"vitrea": dimse: required for c-get'):
        vitrea.downloader("c-get", session)


def test_describe_shows_no_secret(tmp_path: Path) -> None:
    text = "[profiles.p]\nauth = { type = 'vitrea', login_url = 'https://v/login', user = 'u', password = 'hunter2' }\n"
    profile = load_config(write(tmp_path, text)).profile("p")
    assert "hunter2" not in str(profile.describe())
    assert profile.describe()["auth"] == {
        "type": "vitrea",
        "user": "u",
        "login_url": "https://v/login",
        "realm": "DefaultSystemRealm",
    }


def _toml_blocks(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)


def test_the_readme_example_config_is_valid(tmp_path: Path) -> None:
    readme = Path(__file__).parents[2] / "README.md"
    (block,) = _toml_blocks(readme.read_text(encoding="utf-8"))
    config = load_config(write(tmp_path, block))
    assert config.names == ["pacs1", "vitrea", "cloud"]
    profiles = {name: config.profile(name) for name in config.names}
    assert profiles["pacs1"].download == ("wado-rs", "c-get", "c-move")
    assert profiles["vitrea"].auth.type == "vitrea"
    assert profiles["cloud"].tls.requests_cert() == (
        str(Path("~/.certs/me.pem").expanduser()),
        str(Path("~/.certs/me.key").expanduser()),
    )


def test_the_module_docstring_example_is_valid(tmp_path: Path) -> None:
    import dicomtrolley.config

    doc = dicomtrolley.config.__doc__ or ""
    start = doc.index("    [profiles.vitrea]")
    block = textwrap.dedent(doc[start : doc.index("A script uses")])
    profile = load_config(write(tmp_path, block)).profile("vitrea")
    assert profile.download == ("rad69", "wado-uri")
    assert profile.auth.type == "vitrea"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Profile(url="ftp://pacs/"), "Profile: url: must be an http"),
        (lambda: Profile(workers=0), "Profile: workers: must be >= 1"),
        (lambda: Profile(timeouts={"read": 0}), "Profile: timeouts.read: must be > 0"),
        (lambda: TLSConfig(client_key="k.pem"), "client_key needs client_cert"),
        (lambda: Profile(auth={"type": "kerberos"}), "auth.type: must be one of"),
    ],
)
def test_models_built_in_code_raise_config_error_naming_the_key(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert message in str(caught.value)
    assert not isinstance(caught.value, ValueError)  # not pydantic's error


def test_the_config_modules_keep_every_name_importable_from_config() -> None:
    import dicomtrolley.config as facade
    from dicomtrolley import config_build, config_env, config_files, config_model

    for module in (config_build, config_env, config_files, config_model):
        for name in module.__all__:
            if name != "describe_validation_error" and not name.startswith("profile_"):
                assert getattr(facade, name) is getattr(module, name), name
    assert sorted(facade.__all__) == sorted(set(facade.__all__))
