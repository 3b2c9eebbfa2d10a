"""OAuth2ClientCredentials against token endpoints that misbehave (fake server on
loopback), and its refresh timing on a fake clock."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from dicomtrolley.credentials import ConfigError
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    ResponseFormatError,
    ServerHTTPError,
)
from dicomtrolley.oauth import OAuth2ClientCredentials
from dicomtrolley.transport import Retry
from tests.fakes import FakeServer, Recorded, Reply

TOKEN_PATH = "/token"


def token_reply(status: int = 200, **payload: Any) -> Reply:
    return Reply(
        status,
        json.dumps(payload).encode(),
        {"Content-Type": "application/json"},
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def credentials(server: FakeServer, **kwargs: Any) -> OAuth2ClientCredentials:
    kwargs.setdefault("retry", Retry(total=0))
    return OAuth2ClientCredentials(
        server.url + TOKEN_PATH, "my client", "s:cret&", **kwargs
    )


def test_client_is_authenticated_with_form_encoded_basic_auth() -> None:
    with FakeServer(
        {TOKEN_PATH: token_reply(access_token="t1", token_type="bearer")}
    ) as server:
        auth = credentials(server, scope=["a", "b"])
        assert auth.token().value == "t1"
        sent = server.requests[0]
    assert sent.method == "POST"
    expected = base64.b64encode(b"my+client:s%3Acret%26").decode()
    assert sent.headers["Authorization"] == f"Basic {expected}"


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (
            token_reply(401, error="invalid_client"),
            DICOMTrolleyAuthError,
            "invalid_client",
        ),
        (
            token_reply(400, error="invalid_scope"),
            DICOMTrolleyAuthError,
            "invalid_scope",
        ),
        (token_reply(token_type="bearer"), ResponseFormatError, "no access_token"),
        (token_reply(access_token="x", token_type="mac"), ResponseFormatError, "'mac'"),
        (Reply(200, b"<html>login</html>"), ResponseFormatError, "not a JSON object"),
        (token_reply(503), ServerHTTPError, "503"),
    ],
)
def test_token_endpoint_failures(
    reply: Reply, error: type[Exception], text: str
) -> None:
    with FakeServer({TOKEN_PATH: reply}) as server:
        auth = credentials(server)
        with pytest.raises(error) as caught:
            auth.token()
    assert text in str(caught.value)
    assert "s:cret" not in str(caught.value)


def test_token_requests_are_retried_although_post() -> None:
    answers = iter(
        [token_reply(503), token_reply(access_token="t", token_type="Bearer")]
    )

    def route(request: Recorded) -> Reply:
        return next(answers)

    with FakeServer({TOKEN_PATH: route}) as server:
        auth = credentials(server, retry=Retry(total=2, backoff_factor=0))
        assert auth.token().value == "t"
        assert len(server.requests) == 2


def test_renewed_before_expiry_with_a_margin() -> None:
    issued = iter(range(1, 100))

    def route(request: Recorded) -> Reply:
        return token_reply(
            access_token=f"t{next(issued)}", token_type="Bearer", expires_in=100
        )

    clock = Clock()
    with FakeServer({TOKEN_PATH: route}) as server:
        auth = credentials(server, refresh_margin=10, clock=clock)
        assert auth.token().value == "t1"
        clock.now += 89  # 11 s left: kept
        assert auth.token().value == "t1"
        clock.now += 2  # 9 s left: renewed
        assert auth.token().value == "t2"
        assert auth.fetches == 2


def test_short_lifetimes_keep_half_of_it() -> None:
    clock = Clock()
    reply = token_reply(access_token="t", token_type="Bearer", expires_in=4)
    with FakeServer({TOKEN_PATH: reply}) as server:
        auth = credentials(server, refresh_margin=30, clock=clock)
        auth.token()
        clock.now += 1.9
        auth.token()
        assert auth.fetches == 1
        clock.now += 0.2
        auth.token()
        assert auth.fetches == 2


def test_without_expires_in_a_token_lasts_until_a_401() -> None:
    clock = Clock()
    reply = token_reply(access_token="t", token_type="Bearer")
    with FakeServer({TOKEN_PATH: reply}) as server:
        auth = credentials(server, clock=clock)
        auth.token()
        clock.now += 10**6
        auth.token()
        assert auth.fetches == 1


def test_a_second_401_is_returned_as_it_is() -> None:
    tokens = iter(range(1, 10))

    def token(request: Recorded) -> Reply:
        return token_reply(access_token=f"t{next(tokens)}", token_type="Bearer")

    with FakeServer({TOKEN_PATH: token, "/data": Reply(401)}) as server:
        auth = credentials(server)
        with requests.Session() as session:
            answer = session.get(server.url + "/data", auth=auth, timeout=5)
        data = server.requests_to("/data")
    assert answer.status_code == 401
    assert [r.headers["Authorization"] for r in data] == ["Bearer t1", "Bearer t2"]
    assert auth.fetches == 2


def test_repr_hides_the_secret() -> None:
    auth = OAuth2ClientCredentials("https://idp/token", "c", "topsecret")
    assert "topsecret" not in repr(auth)
    with pytest.raises(ConfigError, match="client_auth"):
        OAuth2ClientCredentials("https://idp/token", "c", "s", client_auth="digest")
    with pytest.raises(ConfigError, match="refresh_margin"):
        OAuth2ClientCredentials("https://idp/token", "c", "s", refresh_margin=-1)
