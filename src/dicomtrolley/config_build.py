"""From a profile to working objects: auth, sessions, searchers, downloaders.

:func:`build_auth` looks the secrets up (:mod:`dicomtrolley.credentials`) and
returns the requests auth of an auth table (basic, bearer, Vitrea login, OAuth2
client credentials); :func:`make_searcher` and :func:`make_downloader` build a
protocol's adapter from a profile's addresses, timeouts and retries. The
methods of :class:`~dicomtrolley.config_model.Profile` (``session()``,
``searcher()``, ``downloader()``, ``trolley()``) call these.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import requests
from pydantic import SecretStr

from dicomtrolley.auth import VitreaAuth
from dicomtrolley.config_model import (
    BasicAuthConfig,
    BearerAuthConfig,
    NoAuthConfig,
    OAuth2Config,
    Profile,
    TLSConfig,
    VitreaAuthConfig,
)
from dicomtrolley.credentials import (
    ConfigError,
    NoAuth,
    Secrets,
    netrc_credentials,
)
from dicomtrolley.oauth import OAuth2ClientCredentials
from dicomtrolley.transport import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    BearerAuth,
    Retry,
    Timeout,
    new_session,
)

if TYPE_CHECKING:  # imported when used: they bring pydicom (see dicomtrolley/__init__)
    from dicomtrolley.core import Downloader, Searcher
    from dicomtrolley.storage import DICOMDiskStorage
    from dicomtrolley.trolley import Trolley

__all__ = [
    "build_auth",
    "make_downloader",
    "make_searcher",
    "profile_auth",
    "profile_session",
    "profile_trolley",
]


def profile_auth(
    profile: Profile, secrets: Secrets | None = None
) -> requests.auth.AuthBase:
    """The requests auth of profile; its secrets are looked for now."""
    return build_auth(
        profile.auth,
        secrets or Secrets(),
        where=f"{profile.where}: auth",
        timeout=profile.http_timeout(),
        retry=profile.retry_policy(),
        tls=profile.tls,
        base_url=profile.url
        or profile.mint_url
        or profile.rad69_url
        or profile.wado_uri_url,
    )


def profile_session(
    profile: Profile,
    pool_size: int | None = None,
    *,
    secrets: Secrets | None = None,
    auth: requests.auth.AuthBase | None = None,
) -> requests.Session:
    """A requests session with profile's auth and TLS settings."""
    session = new_session(
        auth if auth is not None else profile_auth(profile, secrets),
        verify=profile.tls.requests_verify(),
        pool_size=pool_size or profile.workers,
    )
    session.cert = profile.tls.requests_cert()
    return session


def profile_trolley(
    profile: Profile,
    storage: DICOMDiskStorage | None = None,
    *,
    protocol: str | None = None,
    secrets: Secrets | None = None,
) -> Trolley:
    """A Trolley with profile's searcher and (first, or protocol) downloader."""
    from dicomtrolley.trolley import Trolley

    session = profile_session(profile, secrets=secrets)
    return Trolley(
        profile.downloader(protocol, session),
        profile.searcher(session),
        storage=storage,
        retry=profile.retry_policy(),
    )


def make_searcher(
    protocol: str, profile: Profile, session: requests.Session
) -> Searcher:
    """A searcher for protocol, from profile's addresses, timeouts and retries."""
    timeout, retry = profile.http_timeout(), profile.retry_policy()
    if protocol == "mint":
        from dicomtrolley.mint import Mint

        return Mint(session, profile.endpoint("mint"), timeout=timeout, retry=retry)
    if protocol == "qido-rs":
        from dicomtrolley.qido_rs import QidoRS

        return QidoRS(
            session, profile.endpoint("qido-rs"), timeout=timeout, retry=retry
        )
    if protocol == "c-find":
        from dicomtrolley.dicom_qr import DICOMQR

        dimse = profile.require_dimse(protocol)
        return DICOMQR(
            dimse.host,
            dimse.port,
            dimse.aet,
            dimse.aec,
            timeout=profile.timeouts.dimse(),
            tls=dimse.tls_settings(),
        )
    raise ConfigError(f"{profile.where}: search: unknown protocol {protocol!r}")


def make_downloader(
    protocol: str, profile: Profile, session: requests.Session, workers: int
) -> Downloader:
    """A downloader for protocol, from profile's addresses, timeouts and retries."""
    timeout, retry = profile.http_timeout(), profile.retry_policy()
    if protocol == "wado-rs":
        from dicomtrolley.wado_rs import WadoRS

        return WadoRS(
            session, profile.endpoint("wado-rs"), timeout=timeout, retry=retry
        )
    if protocol == "wado-uri":
        from dicomtrolley.wado_uri import WadoURI

        return WadoURI(
            session, profile.endpoint("wado-uri"), timeout=timeout, retry=retry
        )
    if protocol == "rad69":
        from dicomtrolley.rad69 import Rad69

        return Rad69(
            session,
            profile.endpoint("rad69"),
            max_workers=workers,
            transfer_syntax_list=profile.rad69_transfer_syntaxes,
            timeout=timeout,
            retry=retry,
        )
    if protocol in ("c-get", "c-move"):
        from dicomtrolley.dicom_qr import DICOMQRGet, DICOMQRMove

        dimse = profile.require_dimse(protocol)
        if protocol == "c-move":
            return DICOMQRMove(
                dimse.host,
                dimse.port,
                dimse.aet,
                dimse.aec,
                store_aet=dimse.store_aet,
                store_port=dimse.store_port,
                timeout=profile.timeouts.dimse(),
                max_workers=workers,
                retry=retry,
                tls=dimse.tls_settings(),
            )
        return DICOMQRGet(
            dimse.host,
            dimse.port,
            dimse.aet,
            dimse.aec,
            timeout=profile.timeouts.dimse(),
            max_workers=workers,
            retry=retry,
            tls=dimse.tls_settings(),
        )
    raise ConfigError(f"{profile.where}: download: unknown protocol {protocol!r}")


def build_auth(
    config: NoAuthConfig
    | BasicAuthConfig
    | BearerAuthConfig
    | VitreaAuthConfig
    | OAuth2Config,
    secrets: Secrets,
    *,
    where: str = "",
    timeout: Timeout = DEFAULT_TIMEOUT,
    retry: Retry = DEFAULT_RETRY,
    tls: TLSConfig | None = None,
    base_url: str | None = None,
) -> requests.auth.AuthBase:
    """The requests auth for an auth config, with its secrets looked up now.

    Raises MissingSecretError (naming the variable to set) when a secret is
    neither given nor in the environment and no terminal is there to ask on.
    """
    prefix = f"{where}." if where else ""
    if isinstance(config, OAuth2Config):
        secret = secrets.get(
            f"client secret of {config.client_id}",
            literal=_reveal(config.client_secret),
            env=config.client_secret_env,
            where=f"{prefix}client_secret",
        )
        extra = {"audience": config.audience} if config.audience else None
        tls = tls or TLSConfig()
        return OAuth2ClientCredentials(
            config.token_url,
            config.client_id,
            secret,
            scope=config.scope,
            extra=extra,
            client_auth=config.client_auth,
            refresh_margin=config.refresh_margin,
            timeout=timeout,
            retry=retry,
            verify=tls.requests_verify(),
            cert=tls.requests_cert(),
        )
    if isinstance(config, BearerAuthConfig):
        token = secrets.get(
            "bearer token",
            literal=_reveal(config.token),
            env=config.token_env,
            where=f"{prefix}token",
        )
        return BearerAuth(token)
    if isinstance(config, BasicAuthConfig):  # and VitreaAuthConfig
        host_url = (
            config.login_url if isinstance(config, VitreaAuthConfig) else base_url
        )
        found = None
        if config.netrc and host_url:
            path = config.netrc if isinstance(config.netrc, Path) else None
            found = netrc_credentials(host_url, path, secrets.environ)
        user = config.user or (found[0] if found else None)
        if not user:
            raise ConfigError(f"{prefix}user: required (or netrc = true with an entry)")
        password = secrets.get(
            f"password for {user}",
            literal=_reveal(config.password),
            env=config.password_env,
            from_netrc=found[1] if found and found[0] == user else None,
            where=f"{prefix}password",
        )
        if isinstance(config, VitreaAuthConfig):
            return VitreaAuth(
                config.login_url, user, password, config.realm, timeout=timeout
            )
        return requests.auth.HTTPBasicAuth(user, password)
    return NoAuth()


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
