"""Login helpers for particular PACS/VNA products (kept from dicomtrolley 4.1.0).

- :class:`VitreaConnection`: Vitrea Connection (MINT search, WADO-URI download).
  Deprecated: a session from :func:`dicomtrolley.auth.create_session` does the
  same and logs in again when the Vitrea session expires.
- :class:`IMPAXDataCenter`: AGFA IMPAX Data Center WADO (servlet form login)
  with DICOM query/retrieve for searching.

Unlike 4.1.0, the IMPAX login sends the password in the body of a form POST
(``application/x-www-form-urlencoded``, the servlet form-login convention),
not in a URL, and every call has a timeout. ``IMPAXDataCenter(...,
credentials_in_url=True)`` restores 4.1.0's GET with the credentials in the
query string, for servers that accept nothing else.

``Mint`` and ``DICOMQR`` can be imported from here, as in 4.1.0; their modules
are loaded on first use.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

from dicomtrolley.auth import DEFAULT_REALM, VitreaAuth, _mask
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyError,
    PermanentError,
    redact_url,
)
from dicomtrolley.logs import get_module_logger
from dicomtrolley.transport import (
    Timeout,
    error_for_response,
    map_requests_error,
    new_session,
)
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_uri import WadoURI

if TYPE_CHECKING:
    from dicomtrolley.core import Searcher

__all__ = ["DICOMTrolleyError", "IMPAXDataCenter", "VitreaConnection"]

logger = get_module_logger("servers")

TimeoutLike = Timeout | float | tuple[float | None, float | None] | None


class VitreaConnection:
    """A Vitrea Connection server (deprecated: use :class:`~dicomtrolley.auth.VitreaAuth`).

    Parameters
    ----------
    login_url:
        Full URL of the login call, including ``https://``.
    timeout:
        Timeouts of the login calls (default: :class:`~dicomtrolley.transport.Timeout`).
    """

    def __init__(self, login_url: str, *, timeout: TimeoutLike = None) -> None:
        warnings.warn(
            "VitreaConnection is deprecated and will be removed; use "
            "dicomtrolley.auth.create_session or dicomtrolley.auth.VitreaAuth",
            DeprecationWarning,
            stacklevel=2,
        )
        self.login_url = login_url
        self.timeout = Timeout.coerce(timeout)

    def __repr__(self) -> str:
        return f"VitreaConnection(login_url={redact_url(self.login_url)!r})"

    def log_in(
        self, user: str, password: str, realm: str = DEFAULT_REALM
    ) -> requests.Session:
        """A session logged in to Vitrea now, which logs in again when it expires.

        Raises
        ------
        DICOMTrolleyAuthError
            If the login is refused (a DICOMTrolleyError, as in 4.1.0).
        """
        session = new_session()
        auth = VitreaAuth(self.login_url, user, password, realm, timeout=self.timeout)
        session.auth = auth
        auth.log_in(session)
        return session

    def get_mint_trolley(
        self,
        user: str,
        password: str,
        realm: str,
        wado_url: str,
        mint_url: str,
    ) -> Trolley:
        """A logged-in Trolley: MINT search at mint_url, WADO-URI at wado_url."""
        searcher_class = _load_mint()
        session = self.log_in(user=user, password=password, realm=realm)
        return Trolley(
            downloader=WadoURI(session=session, url=wado_url),
            searcher=searcher_class(session=session, url=mint_url),
        )


class IMPAXDataCenter:
    """WADO login for AGFA IMPAX Data Center (3.1.1 in dicomtrolley 4.1.0).

    The login is the Java servlet form login: a first GET of the WADO URL gives
    the server-side session its cookie, then a POST of ``j_username`` and
    ``j_password`` to ``{wado_url}/j_security_check`` authenticates it. IMPAX
    answers a refused login with a page saying ``Login Failed!`` (status 200)
    and an accepted one with a redirect or even a 403, so the page text decides.

    Parameters
    ----------
    wado_url:
        Full URL of the WADO endpoint, including ``https://`` and port.
    timeout:
        Timeouts of the login calls (default: :class:`~dicomtrolley.transport.Timeout`).
    credentials_in_url:
        Log in as dicomtrolley 4.1.0 did: ``GET {wado_url}/j_security_check
        ?j_username=...&j_password=...``. **Warning**: the password is then
        part of a URL, and URLs end up in the access logs of the server and of
        every proxy on the way (and in urllib3's debug log). Use it only for a
        server that refuses the POST login. Default False (POST).
    """

    def __init__(
        self,
        wado_url: str,
        *,
        timeout: TimeoutLike = None,
        credentials_in_url: bool = False,
    ) -> None:
        self.wado_url = wado_url
        self.timeout = Timeout.coerce(timeout)
        self.credentials_in_url = credentials_in_url

    def __repr__(self) -> str:
        return f"IMPAXDataCenter(wado_url={redact_url(self.wado_url)!r})"

    @property
    def login_url(self) -> str:
        return f"{self.wado_url.rstrip('/')}/j_security_check"

    def log_in(self, user: str, password: str) -> requests.Session:
        """A session logged in to this server's WADO.

        Raises
        ------
        DICOMTrolleyAuthError
            The server refused the user name or password.
        DICOMTrolleyConnectionError
            The server could not be reached (or did not answer in time).
        """
        session = new_session()
        what = f"IMPAX login as {user!r}"
        timeout = self.timeout.as_requests()
        logger.info("logging in to %s as %r", redact_url(self.login_url), user)
        try:
            # Any answer will do: this only opens the server-side session.
            session.get(self.wado_url, timeout=timeout).close()
        except requests.RequestException as error:
            raise self._connection_error(error, "GET", self.wado_url, what) from error
        credentials = {"j_username": user, "j_password": password}
        method = "GET" if self.credentials_in_url else "POST"
        try:
            if self.credentials_in_url:
                response = session.get(
                    self.login_url, params=credentials, timeout=timeout
                )
            else:
                response = session.post(
                    self.login_url, data=credentials, timeout=timeout
                )
        except requests.RequestException as error:
            raise self._connection_error(error, method, self.login_url, what) from error
        try:
            if "Login Failed!" in response.text:
                raise DICOMTrolleyAuthError(
                    f"Logging in to {redact_url(self.wado_url)} failed. Invalid "
                    f"Credentials? ({what}: the server refused the user name or "
                    "password)",
                    url=self.login_url,
                    status_code=response.status_code,
                )
            if response.status_code == 401 or response.status_code >= 500:
                failure = error_for_response(response, what)
                raise DICOMTrolleyAuthError(
                    _mask(failure.message, password),
                    url=self.login_url,
                    status_code=response.status_code,
                )
        finally:
            response.close()
        return session

    def _connection_error(
        self, error: requests.RequestException, method: str, url: str, what: str
    ) -> DICOMTrolleyError:
        """The mapped error, worded as 4.1.0's: "Error logging in to ...: ..."."""
        mapped = map_requests_error(error, method, url, what)
        return type(mapped)(
            f"Error logging in to {redact_url(self.wado_url)}: {mapped.message}",
            url=mapped.url,
        )

    def get_dicom_qr_trolley(
        self,
        wado_user: str,
        wado_pass: str,
        host: str,
        port: int,
        aet: str = "DICOMTROLLEY",
        aec: str = "ANY-SCP",
    ) -> Trolley:
        """Log in to WADO; a Trolley searching with DICOM-QR, downloading with WADO-URI.

        The DICOM-QR side is only checked by the first search.
        """
        searcher_class = _load_dicom_qr()
        session = self.log_in(wado_user, wado_pass)
        return Trolley(
            downloader=WadoURI(session=session, url=self.wado_url),
            searcher=searcher_class(host=host, port=port, aet=aet, aec=aec),
        )


_LAZY_SEARCHERS = {"Mint": "dicomtrolley.mint", "DICOMQR": "dicomtrolley.dicom_qr"}


def __getattr__(name: str) -> Any:
    """``servers.Mint`` and ``servers.DICOMQR`` (4.1.0 names), loaded when used."""
    module = _LAZY_SEARCHERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _load_mint() -> Callable[..., Searcher]:
    """The Mint searcher class (its module is imported only when needed)."""
    return _load_searcher("dicomtrolley.mint", "Mint", "the MINT searcher")


def _load_dicom_qr() -> Callable[..., Searcher]:
    """The DICOMQR searcher class, or a clear error where it is not available."""
    return _load_searcher("dicomtrolley.dicom_qr", "DICOMQR", "the DICOM-QR searcher")


def _load_searcher(module: str, name: str, what: str) -> Callable[..., Searcher]:
    try:
        found: Callable[..., Searcher] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise PermanentError(
            f"{what} ({module}.{name}) is not available in this installation "
            f"of dicomtrolley: {error}"
        ) from error
    return found
