"""The :class:`Emulator`: one data folder, one index, several protocols, one port."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from dicomtrolley.emulator.dicomweb import DICOMWEB_ROOT, DicomWebService
from dicomtrolley.emulator.dimse import DimseService
from dicomtrolley.emulator.index import DicomIndex
from dicomtrolley.emulator.login import LOGIN_PATH, LoginService, SessionStore
from dicomtrolley.emulator.mint import MINT_ROOT, MintService
from dicomtrolley.emulator.oauth2 import (
    DEFAULT_TOKEN_LIFETIME,
    OAUTH2_TOKEN_PATH,
    OAuth2Service,
    TokenStore,
)
from dicomtrolley.emulator.rad69 import RAD69_PATH, Rad69Service
from dicomtrolley.emulator.server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY,
    ConcurrencyCounter,
    HTTPServer,
    Router,
)
from dicomtrolley.emulator.service import Service
from dicomtrolley.emulator.wado_uri import WADO_URI_PATH, WadoURIService

logger = logging.getLogger("trolley.emulator")

#: The user of an emulator that is given none: name -> password.
DEFAULT_USERS: Mapping[str, str] = {"trolley": "trolley"}
DEFAULT_REALM = "DefaultSystemRealm"


def default_services() -> list[Service]:
    """Fresh instances of the services an Emulator runs unless told otherwise.

    DIMSE is not among them (it listens on a port of its own): add it with
    ``services=[*default_services(), DimseService()]``.
    """
    return [
        LoginService(),
        MintService(),
        WadoURIService(),
        DicomWebService(),
        Rad69Service(),
    ]


class Emulator:
    """A reference PACS serving the DICOM files of a folder, in this process.

    Vitrea-style login at :attr:`login_url`, MINT search at :attr:`mint_url`,
    WADO-URI at :attr:`wado_uri_url`, QIDO-RS and WADO-RS at
    :attr:`dicomweb_url`; DIMSE query/retrieve (:attr:`dimse`) when a
    :class:`~dicomtrolley.emulator.dimse.DimseService` is among the services.
    Binds ``host`` (loopback by default) on ``port``
    (0: a free port; see :attr:`port` after :meth:`start`) and serves from
    background threads, several clients at once::

        with Emulator("data") as emulator:
            session = requests.Session()
            session.auth = ("trolley", "trolley")
            requests.get(f"{emulator.dicomweb_url}/studies", auth=session.auth)

    Parameters
    ----------
    data_dir:
        The folder of DICOM files (any layout). Files added, changed or removed
        while the emulator runs are noticed within ``rescan_interval`` seconds.
    users:
        name -> password; default ``{"trolley": "trolley"}``.
    session_timeout:
        Seconds of inactivity after which a login session expires.
    realm:
        The login realm (``X-Realm``) the emulator accepts.
    services:
        The protocols to serve; default :func:`default_services`.
    rescan_interval:
        At most one walk of the data folder per this many seconds (None: only
        at start).
    max_body, idle_timeout:
        Largest request body accepted (bytes); seconds a silent connection is
        kept open.
    oauth2_clients:
        client id -> secret: serve an OAuth2 token endpoint at
        :attr:`token_url` and accept only its bearer tokens everywhere else
        (see :mod:`~dicomtrolley.emulator.oauth2`; :attr:`tokens` counts).
    token_lifetime:
        Seconds an OAuth2 token is valid.
    """

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
        session_timeout: float = 3600.0,
        realm: str = DEFAULT_REALM,
        *,
        services: Iterable[Service] | None = None,
        rescan_interval: float | None = 1.0,
        max_body: int = DEFAULT_MAX_BODY,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        oauth2_clients: Mapping[str, str] | None = None,
        token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self._requested_port = port
        self.realm = realm
        self.index = DicomIndex(self.data_dir, rescan_interval)
        self.sessions = SessionStore(
            DEFAULT_USERS if users is None else users, session_timeout
        )
        self.services = default_services() if services is None else list(services)
        self.tokens: TokenStore | None = None
        if oauth2_clients:
            self.tokens = TokenStore(oauth2_clients, token_lifetime)
            self.services.append(OAuth2Service(self.tokens))
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        #: requests in progress per client address, and the most at once
        self.concurrency = ConcurrencyCounter()
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._started: list[Service] = []

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> Emulator:
        """Index the folder, bind the port, start the services; returns self."""
        if self._server is not None:
            raise RuntimeError("emulator is already running")
        self.index.refresh(force=True)
        router = Router(
            [],
            self.sessions.authenticate
            if self.tokens is None
            else self.tokens.authenticate,
            realm=self.realm,
            before_request=self.index.refresh,
            bearer_challenge=self.tokens is not None,
            concurrency=self.concurrency,
        )
        self._server = HTTPServer(
            self.host,
            self._requested_port,
            router,
            max_body=self.max_body,
            idle_timeout=self.idle_timeout,
            on_stale=self.index.invalidate,
        )
        try:
            for service in self.services:
                service.start(self)
                self._started.append(service)
            router.routes = [route for s in self.services for route in s.routes()]
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"dicomtrolley-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        stats = self.index.stats()
        logger.info(
            "Emulator serving %s (%d studies, %d instances) at %s",
            self.data_dir,
            stats.studies,
            stats.instances,
            self.base_url,
        )
        return self

    def stop(self) -> None:
        """Stop serving: close connections, stop services. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        if thread is not None:
            server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join()
        while self._started:
            service = self._started.pop()
            try:
                service.stop()
            except Exception:
                logger.exception("Service %s did not stop cleanly", service.name)
        self._server = self._thread = None
        logger.info("Emulator stopped")

    def service(self, name: str) -> Service:
        """The service with this name (``"mint"``, ``"dicomweb"`` ...)."""
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service named {name!r}")

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port served on (the one picked when 0 was asked for)."""
        if self._server is None:
            return self._requested_port
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """``http://host:port``; only known once started."""
        if self._server is None:
            raise RuntimeError("the emulator is not running: call start() first")
        return self._server.url

    @property
    def login_url(self) -> str:
        return self.base_url + LOGIN_PATH

    @property
    def mint_url(self) -> str:
        return self.base_url + MINT_ROOT

    @property
    def wado_uri_url(self) -> str:
        return self.base_url + WADO_URI_PATH

    @property
    def dicomweb_url(self) -> str:
        return self.base_url + DICOMWEB_ROOT

    @property
    def rad69_url(self) -> str:
        return self.base_url + RAD69_PATH

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint (served with ``oauth2_clients`` only)."""
        return self.base_url + OAUTH2_TOKEN_PATH

    @property
    def dimse(self) -> DimseService:
        """The DIMSE service (its ``port`` and ``ae_title``); LookupError if none."""
        for service in self.services:
            if isinstance(service, DimseService):
                return service
        raise LookupError(
            "this emulator serves no DIMSE: pass "
            "services=[*default_services(), DimseService()]"
        )

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "not running"
        return f"<Emulator {self.data_dir} {where}>"
