"""The HTTP side: path traversal, limits, status codes, concurrency, plug-ins.

Raw requests go out byte for byte (``raw_request``), so that nothing on the
client normalises ``..`` or decodes ``%2F`` before the emulator sees it.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path

import pytest
import requests

from dicomtrolley.emulator import (
    Emulator,
    HTTPError,
    LoginService,
    Request,
    Response,
    Route,
    Service,
    default_services,
)
from dicomtrolley.emulator.server import Router, error_page
from tests.emulator.conftest import (
    PASSWORD,
    USER,
    DemoData,
    multipart_parts,
    raw_request,
    status_of,
)

AUTH = {
    "Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
}


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file outside the data folder that must never be served."""
    path = tmp_path_factory.mktemp("outside") / "secret.txt"
    path.write_text("TOP-SECRET-CONTENT")
    return path


@pytest.mark.parametrize(
    ("target", "statuses"),
    [
        ("/dicom-web/studies/..%2F..%2Fetc", {400}),
        ("/dicom-web/studies/..%2F..%2Fetc%2Fpasswd/metadata", {400}),
        ("/dicom-web/studies/../../etc/passwd", {404}),
        ("/dicom-web/studies/1.2.3/series/%2e%2e", {400}),
        ("/dicom-web/studies/1.2.3/series/..", {400}),
        ("/dicom-web/studies/%2Fetc%2Fpasswd", {400}),
        ("/dicom-web/studies/1.2.3%00/series", {400}),
        ("/../../etc/passwd", {404}),
        (
            "/wado?requestType=WADO&studyUID=1&seriesUID=1&objectUID=../../x&contentType=application/dicom",
            {400},
        ),
        (
            "/wado?requestType=WADO&studyUID=..%2F..&seriesUID=1&objectUID=1&contentType=application/dicom",
            {400},
        ),
        ("/wado/../../etc/passwd", {404}),
    ],
)
def test_path_traversal_serves_nothing(
    emulator: Emulator, secret_file: Path, target: str, statuses: set[int]
) -> None:
    raw = raw_request(
        emulator,
        target.replace("etc/passwd", str(secret_file).lstrip("/")),
        headers=AUTH,
    )
    assert status_of(raw) in statuses
    assert b"TOP-SECRET" not in raw
    assert b"root:" not in raw


def test_method_not_allowed(emulator: Emulator, http: requests.Session) -> None:
    response = http.post(f"{emulator.dicomweb_url}/studies", data=b"x")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert http.delete(emulator.wado_uri_url).status_code == 405


def test_unknown_path_is_404(emulator: Emulator, http: requests.Session) -> None:
    response = http.get(f"{emulator.base_url}/nothing/here")
    assert response.status_code == 404
    assert b"HTTP ERROR 404" in response.content


def test_request_body_limit(emulator: Emulator) -> None:
    raw = raw_request(emulator, "/login", "POST", {"Content-Length": str(10**9)})
    assert status_of(raw) == 413
    raw = raw_request(
        emulator, "/login", "POST", {"Transfer-Encoding": "chunked"}, b"0\r\n\r\n"
    )
    assert status_of(raw) == 411
    raw = raw_request(emulator, "/login", "POST", {"Content-Length": "ten"})
    assert status_of(raw) == 400


def test_request_line_limit(emulator: Emulator) -> None:
    raw = raw_request(
        emulator, "/dicom-web/studies?PatientID=" + "x" * 70000, headers=AUTH
    )
    assert status_of(raw) == 414


def test_keep_alive_serves_several_requests_per_connection(
    emulator: Emulator, http: requests.Session
) -> None:
    for _ in range(3):
        response = http.get(f"{emulator.dicomweb_url}/studies")
        assert response.status_code == 200
        assert response.headers.get("Connection", "keep-alive") != "close"


def test_eight_clients_download_at_once(emulator: Emulator, demo: DemoData) -> None:
    """8 clients, each fetching every study with WADO-RS, all at the same time."""
    barrier = threading.Barrier(8)

    def client(number: int) -> int:
        with requests.Session() as session:
            session.auth = (USER, PASSWORD)
            barrier.wait()
            fetched = 0
            studies = demo.studies[number % 5 :] + demo.studies[: number % 5]
            for study in studies:
                response = session.get(
                    f"{emulator.dicomweb_url}/studies/{study.study_uid}",
                    headers={"Accept": 'multipart/related; type="application/dicom"'},
                )
                parts = multipart_parts(response)
                files = demo.files_of(study.study_uid)
                assert sorted(body for _, body in parts) == sorted(files.values())
                fetched += len(parts)
            return fetched

    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(client, range(8)))
    assert counts == [105] * 8


# -- plug-ins and the router ----------------------------------------------------------


class EchoService(Service):
    """A plug-in like RAD-69 will be: a POST route, start and stop hooks."""

    name = "echo"

    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self, emulator: Emulator) -> None:
        super().start(emulator)
        self.events.append(f"start {emulator.port}")

    def stop(self) -> None:
        self.events.append("stop")
        super().stop()

    def routes(self) -> Sequence[Route]:
        return [
            Route("POST", "/echo", self.echo, basic_challenge=True),
            Route("GET", "/crash", self.crash, auth=False),
            Route("GET", "/teapot", self.teapot, auth=False),
        ]

    def echo(self, request: Request) -> Response:
        stats = self.emulator.index.stats()
        return Response(
            200, request.body + f" {stats.instances}".encode(), "text/plain"
        )

    def crash(self, request: Request) -> Response:
        raise RuntimeError("boom")

    def teapot(self, request: Request) -> Response:
        raise HTTPError(418, "I'm a teapot", [("X-Extra", "1")])


def test_a_service_plugs_in(
    demo: DemoData, make_emulator: Callable[..., Emulator]
) -> None:
    echo = EchoService()
    emulator = make_emulator(demo.root, services=[*default_services(), echo])
    assert echo.events == [f"start {emulator.port}"]
    response = requests.post(
        f"{emulator.base_url}/echo", data=b"hello", auth=(USER, PASSWORD)
    )
    assert response.content == b"hello 105"
    assert requests.post(f"{emulator.base_url}/echo", data=b"x").status_code == 401
    assert (
        requests.get(
            f"{emulator.dicomweb_url}/studies", auth=(USER, PASSWORD)
        ).status_code
        == 200
    )
    teapot = requests.get(f"{emulator.base_url}/teapot")
    assert teapot.status_code == 418
    assert teapot.headers["X-Extra"] == "1"
    emulator.stop()
    assert echo.events[-1] == "stop"
    with pytest.raises(RuntimeError):
        _ = echo.emulator


def test_a_crash_is_a_500_page_and_logged(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = make_emulator(demo.root, services=[EchoService()])
    with caplog.at_level("ERROR", logger="trolley.emulator"):
        response = requests.get(f"{emulator.base_url}/crash")
    assert response.status_code == 500
    assert b"Request failed." in response.content
    assert "boom" in caplog.text
    # the emulator carries on
    assert requests.get(f"{emulator.base_url}/teapot").status_code == 418


def test_only_the_services_given_are_served(
    demo: DemoData, make_emulator: Callable[..., Emulator]
) -> None:
    emulator = make_emulator(demo.root, services=[LoginService()])
    assert (
        requests.get(
            f"{emulator.dicomweb_url}/studies", auth=(USER, PASSWORD)
        ).status_code
        == 404
    )


def test_lifecycle(demo: DemoData) -> None:
    emulator = Emulator(demo.root)
    assert not emulator.running
    assert emulator.port == 0
    with pytest.raises(RuntimeError):
        _ = emulator.base_url
    with emulator:
        assert emulator.running
        assert emulator.base_url == f"http://127.0.0.1:{emulator.port}"
        assert emulator.login_url.endswith("/login")
        assert emulator.mint_url.endswith("/rest/api/vault/mint")
        assert emulator.wado_uri_url.endswith("/wado")
        assert emulator.dicomweb_url.endswith("/dicom-web")
        with pytest.raises(RuntimeError):
            emulator.start()
        assert emulator.service("dicomweb").name == "dicomweb"
        assert emulator.service("rad69").name == "rad69"
        assert emulator.rad69_url.endswith("/rad69")
        with pytest.raises(KeyError):
            emulator.service("nope")
        # an idle keep-alive connection does not hold up stop()
        session = requests.Session()
        session.get(f"{emulator.dicomweb_url}/studies", auth=(USER, PASSWORD))
    assert not emulator.running
    emulator.stop()  # twice is fine
    session.close()


def test_router_without_sockets() -> None:
    seen: list[dict[str, str]] = []

    def handler(request: Request) -> Response:
        seen.append(dict(request.params))
        return Response(200, b"ok")

    router = Router(
        [Route("GET", "/a/{study}/b/{series}", handler)],
        lambda request: "someone",
    )

    def get(path: str, method: str = "GET") -> Response:
        return router.dispatch(Request(method, path, [], Message()))

    assert get("/a/1.2/b/3%2E4").status == 200
    assert seen == [{"study": "1.2", "series": "3.4"}]
    assert get("/a/1.2/b/x").status == 400
    assert get("/a/1.2/b").status == 404
    assert get("/a/1.2/b/3", "PUT").status == 405
    assert get("/a/1.2/b/3", "HEAD").status == 200
    denied = Router([Route("GET", "/x", handler)], lambda request: None)
    assert denied.dispatch(Request("GET", "/x", [], Message())).status == 401


def test_error_page_escapes() -> None:
    page = error_page(400, "<script>alert(1)</script>", "/a<b>")
    assert b"<script>" not in page
    assert b"&lt;script&gt;" in page
    assert b"<h2>HTTP ERROR 400</h2>" in page
