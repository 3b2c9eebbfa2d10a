"""OAuth2 client credentials: the emulator's token endpoint (behind a flag) and
OAuth2ClientCredentials renewing short-lived tokens during real downloads."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from dicomtrolley.config import load_config
from dicomtrolley.core import Query
from dicomtrolley.credentials import Secrets
from dicomtrolley.emulator import Emulator
from dicomtrolley.exceptions import DICOMTrolleyAuthError
from dicomtrolley.oauth import OAuth2ClientCredentials
from dicomtrolley.qido_rs import QidoRS
from dicomtrolley.storage import StorageDir
from dicomtrolley.transport import new_session
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_uri import WadoURI
from tests.emulator.conftest import DemoData

CLIENT, SECRET = "trolley-client", "s3cr3t:&+"  # characters that need form-encoding


@pytest.fixture
def oauth_emulator(demo: DemoData, make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator(demo.root, oauth2_clients={CLIENT: SECRET}, token_lifetime=60)


def _basic(client: str, secret: str) -> str:
    from urllib.parse import quote_plus

    pair = f"{quote_plus(client)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def test_token_endpoint_issues_bearer_tokens(oauth_emulator: Emulator) -> None:
    answer = requests.post(
        oauth_emulator.token_url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": _basic(CLIENT, SECRET)},
        timeout=10,
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 60
    assert answer.headers["Cache-Control"] == "no-store"
    studies = requests.get(
        f"{oauth_emulator.dicomweb_url}/studies",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=10,
    )
    assert studies.status_code == 200
    # credentials in the form work too
    form = requests.post(
        oauth_emulator.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": SECRET,
        },
        timeout=10,
    )
    assert form.status_code == 200


@pytest.mark.parametrize(
    ("data", "auth", "status", "code"),
    [
        (
            {"grant_type": "client_credentials"},
            (CLIENT, "wrong"),
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials"},
            ("nobody", SECRET),
            401,
            "invalid_client",
        ),
        ({"grant_type": "password"}, (CLIENT, SECRET), 400, "unsupported_grant_type"),
    ],
)
def test_token_endpoint_refusals(
    oauth_emulator: Emulator,
    data: dict[str, str],
    auth: tuple[str, str],
    status: int,
    code: str,
) -> None:
    answer = requests.post(
        oauth_emulator.token_url,
        data=data,
        headers={"Authorization": _basic(*auth)},
        timeout=10,
    )
    assert (answer.status_code, answer.json()) == (status, {"error": code})


def test_with_oauth2_every_endpoint_needs_a_token(oauth_emulator: Emulator) -> None:
    for url in (
        f"{oauth_emulator.dicomweb_url}/studies",
        f"{oauth_emulator.mint_url}/studies?PatientID=*",
    ):
        basic = requests.get(url, auth=("trolley", "trolley"), timeout=10)
        assert basic.status_code == 401
        assert basic.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_without_the_flag_there_is_no_token_endpoint(emulator: Emulator) -> None:
    answer = requests.post(
        emulator.token_url, data={"grant_type": "client_credentials"}, timeout=10
    )
    assert answer.status_code == 404
    assert emulator.tokens is None


def auth_for(emulator: Emulator, **kwargs: object) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(emulator.token_url, CLIENT, SECRET, **kwargs)  # type: ignore[arg-type]


def test_one_token_serves_many_requests(oauth_emulator: Emulator) -> None:
    auth = auth_for(oauth_emulator)
    with new_session(auth) as session:
        for _ in range(5):
            answer = session.get(f"{oauth_emulator.dicomweb_url}/studies", timeout=10)
            assert answer.status_code == 200
    assert auth.fetches == 1
    assert oauth_emulator.tokens is not None and oauth_emulator.tokens.issued == 1


def test_a_401_gets_a_new_token_and_the_request_once_more(
    oauth_emulator: Emulator,
) -> None:
    auth = auth_for(oauth_emulator)
    tokens = oauth_emulator.tokens
    assert tokens is not None
    with new_session(auth) as session:
        assert session.get(f"{oauth_emulator.dicomweb_url}/studies").status_code == 200
        tokens.expire_all()  # the client still believes its token is good
        answer = session.get(f"{oauth_emulator.dicomweb_url}/studies", timeout=10)
    assert answer.status_code == 200
    assert answer.history and answer.history[0].status_code == 401
    assert auth.fetches == 2
    assert tokens.expired_refusals == 1


def test_threads_sharing_a_stale_token_fetch_one_new_token(
    oauth_emulator: Emulator,
) -> None:
    auth = auth_for(oauth_emulator)
    tokens = oauth_emulator.tokens
    assert tokens is not None
    with new_session(auth, pool_size=8) as session:
        session.get(f"{oauth_emulator.dicomweb_url}/studies", timeout=10)
        tokens.expire_all()
        barrier = threading.Barrier(8)

        def get(_: int) -> int:
            barrier.wait()
            url = f"{oauth_emulator.dicomweb_url}/studies"
            return session.get(url, timeout=10).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(get, range(8)))
    assert statuses == [200] * 8
    assert auth.fetches == 2  # one for the start, one after the expiry


def test_refused_client_is_an_auth_error_without_the_secret(
    oauth_emulator: Emulator,
) -> None:
    auth = OAuth2ClientCredentials(oauth_emulator.token_url, CLIENT, "bad-secret")
    with pytest.raises(DICOMTrolleyAuthError) as caught:
        auth.token()
    assert "invalid_client" in str(caught.value)
    assert "bad-secret" not in str(caught.value)
    assert "bad-secret" not in repr(auth)


def _download_all(
    emulator: Emulator, auth: OAuth2ClientCredentials, output: Path
) -> int:
    with new_session(auth, pool_size=4) as session:
        trolley = Trolley(
            WadoURI(session, emulator.wado_uri_url),
            QidoRS(session, emulator.dicomweb_url),
            storage=StorageDir(output),
        )
        studies = trolley.find_studies(Query(PatientID="DTR*"))
        assert len(studies) == 5
        report = trolley.download(studies, output, use_async=True, max_workers=4)
    return len(report.saved)


def test_tokens_expiring_during_a_multi_study_download(
    demo: DemoData, make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    """Short-lived tokens are renewed before they expire: no request is refused."""
    emulator = make_emulator(
        demo.root, oauth2_clients={CLIENT: SECRET}, token_lifetime=0.4
    )
    auth = auth_for(emulator)
    started = time.monotonic()
    saved = _download_all(emulator, auth, tmp_path)
    elapsed = time.monotonic() - started
    assert saved == len(demo.paths)
    assert emulator.tokens is not None
    assert emulator.tokens.issued == auth.fetches
    # the download outlived several tokens, and none was used after it expired
    assert auth.fetches >= 2, f"download took {elapsed:.2f} s"
    assert emulator.tokens.expired_refusals == 0


def test_tokens_revoked_during_a_download_are_replaced_on_401(
    demo: DemoData, make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    """A server that drops tokens early: each 401 gets a new token, job complete."""
    emulator = make_emulator(demo.root, oauth2_clients={CLIENT: SECRET})
    tokens = emulator.tokens
    assert tokens is not None
    auth = auth_for(emulator)
    done = threading.Event()

    def revoke() -> None:
        while not done.wait(0.05):
            tokens.expire_all()

    revoker = threading.Thread(target=revoke, daemon=True)
    revoker.start()
    try:
        saved = _download_all(emulator, auth, tmp_path)
    finally:
        done.set()
        revoker.join()
    assert saved == len(demo.paths)
    assert tokens.expired_refusals >= 1
    assert auth.fetches >= 2


def test_a_profile_with_oauth2_downloads(
    demo: DemoData, make_emulator: Callable[..., Emulator], tmp_path: Path
) -> None:
    emulator = make_emulator(
        demo.root, oauth2_clients={CLIENT: SECRET}, token_lifetime=0.5
    )
    config = tmp_path / "config.toml"
    config.write_text(
        "[profiles.idp]\n"
        f'url = "{emulator.dicomweb_url}"\n'
        'download = ["wado-uri"]\n'
        f'auth = {{ type = "oauth2", token_url = "{emulator.token_url}", '
        f'client_id = "{CLIENT}", client_secret_env = "IDP_SECRET" }}\n'
    )
    profile = load_config(config).profile("idp")
    secrets = Secrets(environ={"IDP_SECRET": SECRET}, is_terminal=lambda: False)
    out = tmp_path / "out"
    trolley = profile.trolley(StorageDir(out), secrets=secrets)
    studies = trolley.find_studies(Query(PatientID="DTR002"))
    report = trolley.download(studies, out, use_async=True, max_workers=4)
    assert len(report.saved) == 32
    assert emulator.tokens is not None and emulator.tokens.expired_refusals == 0


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level("DEBUG")
    yield
    assert SECRET not in caplog.text
    assert "access_token" not in caplog.text
