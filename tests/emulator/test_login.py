"""Vitrea-style login, sessions and their expiry, basic and bearer auth, 401 pages."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable

import pytest
import requests

from dicomtrolley.emulator import Emulator, Request, SessionStore
from tests.emulator.conftest import PASSWORD, USER, DemoData, login, mint

LOGIN_HEADERS = {
    "X-Userid": USER,
    "X-Password": PASSWORD,
    "X-Realm": "DefaultSystemRealm",
}


def test_login_sets_a_session_cookie_and_answers_a_token(emulator: Emulator) -> None:
    response = requests.post(emulator.login_url, headers=LOGIN_HEADERS)
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("JSESSIONID=")
    assert "; Path=/" in cookie
    assert "HttpOnly" in cookie
    assert response.cookies["JSESSIONID"]
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert len(body["access_token"]) > 20
    # the cookie opens the other endpoints
    with requests.Session() as session:
        session.cookies = response.cookies
        assert mint(session, emulator, "QueryLevel=STUDY").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {**LOGIN_HEADERS, "X-Password": "wrong"},
        {**LOGIN_HEADERS, "X-Userid": "nobody"},
        {**LOGIN_HEADERS, "X-Realm": "OtherRealm"},
        {"X-Realm": "DefaultSystemRealm"},
    ],
)
def test_bad_login_is_401_page(emulator: Emulator, headers: dict[str, str]) -> None:
    response = requests.post(emulator.login_url, headers=headers)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"Login failed: bad username/password" in response.content
    assert "Set-Cookie" not in response.headers


def test_login_wants_post(emulator: Emulator) -> None:
    response = requests.get(emulator.login_url)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("path", "challenge"),
    [
        ("/rest/api/vault/mint/studies?QueryLevel=STUDY", False),
        ("/dicom-web/studies", True),
        ("/wado?requestType=WADO", True),
    ],
)
def test_no_auth_is_401_page(emulator: Emulator, path: str, challenge: bool) -> None:
    response = requests.get(emulator.base_url + path)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"you need to log in" in response.content
    if challenge:
        assert (
            response.headers["WWW-Authenticate"] == 'Basic realm="DefaultSystemRealm"'
        )
    else:
        assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/rest/api/vault/mint/studies?QueryLevel=STUDY",
        "/dicom-web/studies",
    ],
)
def test_basic_auth_works_everywhere(emulator: Emulator, path: str) -> None:
    assert (
        requests.get(emulator.base_url + path, auth=(USER, PASSWORD)).status_code == 200
    )
    assert (
        requests.get(emulator.base_url + path, auth=(USER, "wrong")).status_code == 401
    )


def test_wado_uri_with_basic_auth(emulator: Emulator, demo: DemoData) -> None:
    uid, path = next(iter(demo.by_uid.items()))
    study, series = path.parts[-3], path.parts[-2]
    response = requests.get(
        emulator.wado_uri_url,
        params={
            "requestType": "WADO",
            "studyUID": study,
            "seriesUID": series,
            "objectUID": uid,
            "contentType": "application/dicom",
        },
        auth=(USER, PASSWORD),
    )
    assert response.status_code == 200


def test_bearer_token_works(emulator: Emulator) -> None:
    token = requests.post(emulator.login_url, headers=LOGIN_HEADERS).json()[
        "access_token"
    ]
    url = f"{emulator.dicomweb_url}/studies"
    assert (
        requests.get(url, headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    assert (
        requests.get(url, headers={"Authorization": "Bearer nonsense"}).status_code
        == 401
    )


def test_garbage_credentials_are_401(emulator: Emulator) -> None:
    url = f"{emulator.dicomweb_url}/studies"
    for value in (
        "Basic !!!",
        "Basic " + base64.b64encode(b"\xff\xfe").decode(),
        "Digest x",
    ):
        assert requests.get(url, headers={"Authorization": value}).status_code == 401
    response = requests.get(url, headers={"Cookie": 'JSESSIONID="unterminated'})
    assert response.status_code == 401


def test_session_expires_after_inactivity(
    demo: DemoData, make_emulator: Callable[..., Emulator]
) -> None:
    emulator = make_emulator(demo.root, session_timeout=0.4)
    with login(emulator) as session:
        for _ in range(3):  # activity keeps the session alive
            time.sleep(0.2)
            assert (
                mint(session, emulator, "QueryLevel=STUDY&limit=1").status_code == 200
            )
        time.sleep(0.6)
        response = mint(session, emulator, "QueryLevel=STUDY&limit=1")
        assert response.status_code == 401
        assert b"you need to log in" in response.content
        # a new login opens a new session
        assert (
            session.post(emulator.login_url, headers=LOGIN_HEADERS).status_code == 200
        )
        assert mint(session, emulator, "QueryLevel=STUDY&limit=1").status_code == 200


def test_other_users(demo: DemoData, make_emulator: Callable[..., Emulator]) -> None:
    emulator = make_emulator(demo.root, users={"alice": "wonder"}, realm="R1")
    url = f"{emulator.dicomweb_url}/studies"
    assert requests.get(url, auth=("alice", "wonder")).status_code == 200
    assert requests.get(url, auth=(USER, PASSWORD)).status_code == 401
    headers = {"X-Userid": "alice", "X-Password": "wonder", "X-Realm": "R1"}
    assert requests.post(emulator.login_url, headers=headers).status_code == 200


def test_passwords_are_never_logged(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-Passw0rd"
    with caplog.at_level(logging.DEBUG, logger="trolley"):
        requests.post(
            emulator.login_url, headers={**LOGIN_HEADERS, "X-Password": secret}
        )
        requests.get(f"{emulator.dicomweb_url}/studies", auth=(USER, secret))
        requests.post(emulator.login_url, headers=LOGIN_HEADERS)
    assert "Login refused for user 'trolley'" in caplog.text
    assert "Login of user 'trolley'" in caplog.text
    assert secret not in caplog.text


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_store_with_a_clock() -> None:
    clock = FakeClock()
    store = SessionStore({"a": "pw"}, timeout=10, clock=clock)
    assert store.verify("a", "pw")
    assert not store.verify("a", "PW")
    assert not store.verify("b", "pw")
    cookie, token = store.open("a")
    assert cookie != token
    clock.now += 9.9
    assert store.user_for(cookie) == "a"  # touches the session
    clock.now += 9.9
    assert store.user_for(token) == "a"
    clock.now += 10.1
    assert store.user_for(cookie) is None
    assert store.user_for(token) is None
    assert store.users == ["a"]
    with pytest.raises(ValueError):
        SessionStore({}, timeout=0)


def test_authenticate_prefers_the_cookie() -> None:
    from email.message import Message

    store = SessionStore({"a": "pw"}, timeout=10)
    cookie, _ = store.open("a")
    headers = Message()
    headers["Cookie"] = f"other=1; JSESSIONID={cookie}"
    headers["Authorization"] = "Basic " + base64.b64encode(b"a:wrong").decode()
    assert store.authenticate(Request("GET", "/", [], headers)) == "a"
