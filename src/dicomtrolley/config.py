"""Profiles: named servers in a TOML file, and the environment variables read.

The file is ``--config PATH``, else ``$DICOMTROLLEY_CONFIG``, else
``$XDG_CONFIG_HOME/dicomtrolley/config.toml`` (``~/.config/dicomtrolley/config.toml``).
Each ``[profiles.NAME]`` table describes one server::

    [profiles.vitrea]
    search = "mint"                          # qido-rs | mint | c-find
    download = ["rad69", "wado-uri"]         # in order of preference
    mint_url = "https://vitrea/rest/api/vault/mint"
    rad69_url = "https://vitrea/rad69"
    wado_uri_url = "https://vitrea/wado"
    workers = 4
    timeouts = { connect = 5, read = 60 }

    [profiles.vitrea.auth]
    type = "vitrea"
    login_url = "https://vitrea/login"
    user = "me"
    password_env = "VITREA_PASSWORD"

A script uses the same profile as the command line::

    from dicomtrolley.config import load_profile
    trolley = load_profile("vitrea").trolley(storage=TemplateStorage("out", ...))

Every key is checked (pydantic): an unknown key or a bad value is a
:class:`~dicomtrolley.credentials.ConfigError` naming the file, the profile and
the key (``config.toml: profile "pacs1": timeouts.read: must be > 0``).
Secrets are never required in the file (see :mod:`dicomtrolley.credentials`);
one written there is accepted with a warning when others may read the file.
"""

from __future__ import annotations

import os
import stat
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import requests
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

from dicomtrolley.auth import DEFAULT_REALM, VitreaAuth
from dicomtrolley.core import Downloader, Searcher
from dicomtrolley.credentials import (
    ConfigError,
    MissingSecretError,
    NoAuth,
    Secrets,
    netrc_credentials,
)
from dicomtrolley.dimse.settings import DIMSETimeouts, check_ae_title
from dicomtrolley.oauth import DEFAULT_REFRESH_MARGIN, OAuth2ClientCredentials
from dicomtrolley.storage import DICOMDiskStorage
from dicomtrolley.transport import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    BearerAuth,
    Retry,
    Timeout,
    new_session,
)
from dicomtrolley.trolley import Trolley

__all__ = [
    "DEPRECATED_ENVIRONMENT",
    "ENVIRONMENT",
    "Config",
    "ConfigError",
    "ConfigWarning",
    "DeprecatedNameWarning",
    "MissingSecretError",
    "Profile",
    "config_path",
    "getenv",
    "load_config",
    "load_profile",
]

SearchProtocol = Literal["qido-rs", "mint", "c-find"]
DownloadProtocol = Literal["wado-rs", "wado-uri", "rad69", "c-get", "c-move"]
SEARCH_PROTOCOLS: tuple[str, ...] = ("qido-rs", "mint", "c-find")
DOWNLOAD_PROTOCOLS: tuple[str, ...] = (
    "wado-rs",
    "wado-uri",
    "rad69",
    "c-get",
    "c-move",
)
DIMSE_PROTOCOLS = frozenset({"c-find", "c-get", "c-move"})
#: What RAD-69 asks for unless a profile says otherwise: the lossless syntaxes
#: first, then lossy ones, so that files come as stored rather than failing
#: (a RAD-69 server sends only a syntax that was asked for).
RAD69_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)

#: The environment variables dicomtrolley reads (CLI, library, examples).
ENVIRONMENT: dict[str, str] = {
    "DICOMTROLLEY_CONFIG": "the config file (default ~/.config/dicomtrolley/config.toml)",
    "DICOMTROLLEY_PROFILE": "the profile to use when --profile is not given",
    "DICOMTROLLEY_URL": "DICOMweb root (--url), without a profile",
    "DICOMTROLLEY_MINT_URL": "MINT root (--mint-url), without a profile",
    "DICOMTROLLEY_WADO_URI_URL": "WADO-URI endpoint (--wado-uri-url), without a profile",
    "DICOMTROLLEY_RAD69_URL": "RAD-69 endpoint (--rad69-url), without a profile",
    "DICOMTROLLEY_LOGIN_URL": "Vitrea login URL (--login-url), without a profile",
    "DICOMTROLLEY_REALM": "Vitrea realm (--realm), without a profile",
    "DICOMTROLLEY_USER": "user name (--user), without a profile",
    "DICOMTROLLEY_PASSWORD": "password of --user; of a profile without password_env",
    "DICOMTROLLEY_TOKEN": "bearer token (--token); of a profile without token_env",
    "DICOMTROLLEY_CLIENT_SECRET": "OAuth2 client secret of a profile without "
    "client_secret_env",
}
#: Old names still read, with a warning: old name -> new name.
DEPRECATED_ENVIRONMENT: dict[str, str] = {
    "DICOMTROLLEY_WADO_URL": "DICOMTROLLEY_WADO_URI_URL",
}


class ConfigWarning(UserWarning):
    """Something in a config file works but should be changed (shown to users)."""


class DeprecatedNameWarning(FutureWarning):
    """An old environment variable name was used (FutureWarning: users see it)."""


def getenv(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of environment variable name, or of its old name (with a warning)."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value:
        return value
    for old, new in DEPRECATED_ENVIRONMENT.items():
        if new == name and env.get(old):
            warnings.warn(
                f"the environment variable {old} is deprecated: use {new}",
                DeprecatedNameWarning,
                stacklevel=2,
            )
            return env[old]
    return None


# -- the model -------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def _check_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not hold credentials: put them in auth")
    return value


Url = Annotated[str, Field(min_length=1)]


class Timeouts(_Model):
    """Seconds: HTTP connect/read/total (0: no total), DIMSE idle/total."""

    connect: Seconds | None = None
    read: Seconds | None = None
    total: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    dimse_idle: Seconds | None = None
    dimse_total: Seconds | None = None

    def http(self) -> Timeout:
        timeout = DEFAULT_TIMEOUT
        if self.connect is not None:
            timeout = replace(timeout, connect=self.connect)
        if self.read is not None:
            timeout = replace(timeout, read=self.read)
        if self.total is not None:
            timeout = replace(timeout, total=self.total or None)
        return timeout

    def dimse(self) -> DIMSETimeouts:
        defaults = DIMSETimeouts()
        return DIMSETimeouts(
            connect=self.connect or defaults.connect,
            idle=self.dimse_idle or self.read or defaults.idle,
            total=self.dimse_total,
        )


class RetryConfig(_Model):
    """Tries after transient failures, and the backoff between them."""

    total: Annotated[int, Field(ge=0)] = DEFAULT_RETRY.total
    backoff_factor: Annotated[float, Field(ge=0, allow_inf_nan=False)] = (
        DEFAULT_RETRY.backoff_factor
    )
    backoff_max: Seconds = DEFAULT_RETRY.backoff_max

    def policy(self) -> Retry:
        return replace(
            DEFAULT_RETRY,
            total=self.total,
            backoff_factor=self.backoff_factor,
            backoff_max=self.backoff_max,
        )


class DimseConfig(_Model):
    """Where the PACS listens for DIMSE, and the C-MOVE destination."""

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)]
    aet: str = "DICOMTROLLEY"
    aec: str = "ANY-SCP"
    store_aet: str | None = None
    store_port: Annotated[int, Field(ge=1, le=65535)] = 11112

    @field_validator("aet", "aec", "store_aet")
    @classmethod
    def _ae_title(cls, value: str | None) -> str | None:
        return None if value is None else check_ae_title(value)


class TLSConfig(_Model):
    """Server certificate checks and our client certificate."""

    verify: bool = True
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @model_validator(mode="after")
    def _files(self) -> TLSConfig:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        if self.ca_bundle is not None and not self.verify:
            raise ValueError("ca_bundle with verify = false: choose one")
        return self

    def requests_verify(self) -> bool | str:
        if self.ca_bundle is not None:
            return str(self.ca_bundle.expanduser())
        return self.verify

    def requests_cert(self) -> str | tuple[str, str] | None:
        if self.client_cert is None:
            return None
        cert = str(self.client_cert.expanduser())
        if self.client_key is None:
            return cert
        return cert, str(self.client_key.expanduser())


class NoAuthConfig(_Model):
    type: Literal["none"] = "none"


class BasicAuthConfig(_Model):
    """HTTP basic auth; the password from password_env, netrc or a prompt."""

    type: Literal["basic"]
    user: str | None = None
    password: SecretStr | None = None
    password_env: EnvName = "DICOMTROLLEY_PASSWORD"
    netrc: bool | Path = False


class BearerAuthConfig(_Model):
    """A fixed bearer token (from token_env)."""

    type: Literal["bearer"]
    token: SecretStr | None = None
    token_env: EnvName = "DICOMTROLLEY_TOKEN"


class VitreaAuthConfig(BasicAuthConfig):
    """Vitrea Connection's login (session cookie, renewed on 401)."""

    type: Literal["vitrea"]  # type: ignore[assignment]
    login_url: Url
    realm: str = DEFAULT_REALM

    @field_validator("login_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value) or value


class OAuth2Config(_Model):
    """OAuth2 client credentials; tokens renewed before they expire."""

    type: Literal["oauth2"]
    token_url: Url
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: SecretStr | None = None
    client_secret_env: EnvName = "DICOMTROLLEY_CLIENT_SECRET"
    scope: str | list[str] | None = None
    audience: str | None = None
    client_auth: Literal["basic", "body"] = "basic"
    refresh_margin: Annotated[float, Field(ge=0, allow_inf_nan=False)] = (
        DEFAULT_REFRESH_MARGIN
    )

    @field_validator("token_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value) or value


AuthConfig = Annotated[
    NoAuthConfig | BasicAuthConfig | BearerAuthConfig | VitreaAuthConfig | OAuth2Config,
    Field(discriminator="type"),
]
_AUTH_TYPES = ("none", "basic", "bearer", "vitrea", "oauth2")


class Profile(_Model):
    """One server: protocols, addresses, auth, TLS, timeouts, retries, workers.

    ``name`` and ``source`` (the file) are filled in by :func:`load_profile`.
    """

    name: str = ""
    source: str = ""
    search: SearchProtocol | None = None
    download: tuple[DownloadProtocol, ...] = ("wado-rs",)
    url: str | None = None
    qido_url: str | None = None
    mint_url: str | None = None
    wado_uri_url: str | None = None
    rad69_url: str | None = None
    rad69_transfer_syntaxes: tuple[
        Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$")], ...
    ] = Field(default=RAD69_TRANSFER_SYNTAXES, min_length=1)
    dimse: DimseConfig | None = None
    auth: AuthConfig = NoAuthConfig()
    tls: TLSConfig = TLSConfig()
    timeouts: Timeouts = Timeouts()
    retry: RetryConfig = RetryConfig()
    workers: Annotated[int, Field(ge=1, le=64)] = 4

    @field_validator("url", "qido_url", "mint_url", "wado_uri_url", "rad69_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _check_url(value)

    @field_validator("download", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("must list at least one protocol")
            if len(set(value)) != len(value):
                raise ValueError("lists a protocol twice")
        return value

    # -- where things are ------------------------------------------------------

    @property
    def search_protocol(self) -> str:
        """:attr:`search`, or when not given: C-FIND for a DIMSE-only server,
        MINT for one with only a MINT URL, else QIDO-RS."""
        if self.search is not None:
            return self.search
        if not (self.url or self.qido_url):
            if self.dimse is not None:
                return "c-find"
            if self.mint_url:
                return "mint"
        return "qido-rs"

    @property
    def where(self) -> str:
        """``config.toml: profile "name"``, the prefix of messages about it."""
        return f'{self.source or "<profile>"}: profile "{self.name}"'

    def endpoint(self, protocol: str) -> str:
        """The URL of an HTTP protocol; ConfigError naming the missing key."""
        if protocol == "qido-rs":
            found, key = self.qido_url or self.url, "url"
        elif protocol == "wado-rs":
            found, key = self.url, "url"
        elif protocol == "mint":
            found, key = self.mint_url, "mint_url"
        elif protocol == "rad69":
            found, key = self.rad69_url, "rad69_url"
        elif protocol == "wado-uri":
            found, key = self.wado_uri_url or _wado_uri_from(self.url), "wado_uri_url"
        else:
            raise ConfigError(f"{self.where}: {protocol} is not an HTTP protocol")
        if not found:
            raise ConfigError(f"{self.where}: {key}: required for {protocol}")
        return found

    def require_dimse(self, protocol: str) -> DimseConfig:
        if self.dimse is None:
            raise ConfigError(
                f"{self.where}: dimse: required for {protocol} (host, port, aec)"
            )
        return self.dimse

    def describe(self) -> dict[str, Any]:
        """What ``profiles list`` shows: no secret, ever."""
        urls = {
            key: value
            for key in ("url", "qido_url", "mint_url", "wado_uri_url", "rad69_url")
            if (value := getattr(self, key))
        }
        auth: dict[str, Any] = {"type": self.auth.type}
        for key in ("user", "login_url", "realm", "token_url", "client_id"):
            if getattr(self.auth, key, None):
                auth[key] = getattr(self.auth, key)
        dimse = None
        if self.dimse is not None:
            dimse = self.dimse.model_dump(exclude_none=True)
        return {
            "name": self.name,
            "search": self.search_protocol,
            "download": list(self.download),
            **urls,
            **({"dimse": dimse} if dimse else {}),
            "auth": auth,
            "workers": self.workers,
        }

    # -- building the objects --------------------------------------------------

    def http_timeout(self) -> Timeout:
        return self.timeouts.http()

    def retry_policy(self) -> Retry:
        return self.retry.policy()

    def build_auth(self, secrets: Secrets | None = None) -> requests.auth.AuthBase:
        """The requests auth of this profile; secrets are looked for now."""
        return build_auth(
            self.auth,
            secrets or Secrets(),
            where=f"{self.where}: auth",
            timeout=self.http_timeout(),
            retry=self.retry_policy(),
            tls=self.tls,
            base_url=self.url or self.mint_url or self.rad69_url or self.wado_uri_url,
        )

    def session(
        self,
        pool_size: int | None = None,
        *,
        secrets: Secrets | None = None,
        auth: requests.auth.AuthBase | None = None,
    ) -> requests.Session:
        """A requests session with this profile's auth and TLS settings."""
        session = new_session(
            auth if auth is not None else self.build_auth(secrets),
            verify=self.tls.requests_verify(),
            pool_size=pool_size or self.workers,
        )
        session.cert = self.tls.requests_cert()
        return session

    def searcher(self, session: requests.Session | None = None) -> Searcher:
        """The searcher of :attr:`search` (a session is made when not given)."""
        return make_searcher(self.search_protocol, self, session or self.session())

    def downloader(
        self,
        protocol: str | None = None,
        session: requests.Session | None = None,
        workers: int | None = None,
    ) -> Downloader:
        """The downloader for protocol (default: the first of :attr:`download`)."""
        chosen = protocol or self.download[0]
        return make_downloader(
            chosen, self, session or self.session(), workers or self.workers
        )

    def trolley(
        self,
        storage: DICOMDiskStorage | None = None,
        *,
        protocol: str | None = None,
        secrets: Secrets | None = None,
    ) -> Trolley:
        """A Trolley with this profile's searcher and (first) downloader."""
        session = self.session(secrets=secrets)
        return Trolley(
            self.downloader(protocol, session),
            self.searcher(session),
            storage=storage,
            retry=self.retry_policy(),
        )


def _wado_uri_from(url: str | None) -> str | None:
    if not url:
        return None
    base = url.rstrip("/")
    return base[: -len("/dicom-web")] + "/wado" if base.endswith("/dicom-web") else None


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
            )
        return DICOMQRGet(
            dimse.host,
            dimse.port,
            dimse.aet,
            dimse.aec,
            timeout=profile.timeouts.dimse(),
            max_workers=workers,
            retry=retry,
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


# -- files ---------------------------------------------------------------------------


def config_path(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The config file: path, else $DICOMTROLLEY_CONFIG, else the XDG location."""
    env = os.environ if environ is None else environ
    if path:
        return Path(path).expanduser()
    if env.get("DICOMTROLLEY_CONFIG"):
        return Path(env["DICOMTROLLEY_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "dicomtrolley" / "config.toml"


class Config:
    """A parsed config file: its profiles, each checked when asked for."""

    def __init__(self, path: Path, data: Mapping[str, Any]) -> None:
        self.path = path
        unknown = sorted(set(data) - {"profiles"})
        if unknown:
            raise ConfigError(
                f"{path}: {unknown[0]}: unknown key (expected [profiles.NAME])"
            )
        profiles = data.get("profiles", {})
        if not isinstance(profiles, dict):
            raise ConfigError(f"{path}: profiles: must be a table of [profiles.NAME]")
        self._raw: dict[str, Any] = profiles

    @property
    def names(self) -> list[str]:
        return list(self._raw)

    def profile(self, name: str) -> Profile:
        """The profile called name, checked; ConfigError naming file, profile, key."""
        where = f'{self.path}: profile "{name}"'
        if name not in self._raw:
            known = ", ".join(self.names) or "none"
            raise ConfigError(f'{self.path}: no profile "{name}" (profiles: {known})')
        raw = self._raw[name]
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table ([profiles.{name}])")
        for key in ("name", "source"):
            if key in raw:
                raise ConfigError(f"{where}: {key}: unknown key")
        try:
            profile = Profile.model_validate(
                {**raw, "name": name, "source": str(self.path)}
            )
        except ValidationError as error:
            details = [_describe(detail) for detail in error.errors()]
            raise ConfigError(f"{where}: " + "; ".join(details)) from None
        self._warn_literal_secrets(profile)
        return profile

    def _warn_literal_secrets(self, profile: Profile) -> None:
        auth = profile.auth
        keys = [
            key
            for key in ("password", "token", "client_secret")
            if getattr(auth, key, None) is not None
        ]
        if not keys:
            return
        try:
            mode = self.path.stat().st_mode
        except OSError:
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.warn(
                f"{profile.where}: auth.{keys[0]} is written in the file, and "
                f"others may read it (mode {stat.filemode(mode)}): "
                f"chmod 600 {self.path}, or use {keys[0]}_env",
                ConfigWarning,
                stacklevel=3,
            )


def _describe(detail: Any) -> str:
    """``timeouts.read: must be > 0`` from one pydantic error."""
    loc = [str(part) for part in detail.get("loc", ())]
    if len(loc) >= 2 and loc[0] == "auth" and loc[1] in _AUTH_TYPES:
        del loc[1]
    key = ""
    for part in loc:
        key += f"[{part}]" if part.isdigit() else (f".{part}" if key else part)
    kind = detail.get("type", "")
    ctx = detail.get("ctx") or {}
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required"
    elif kind == "greater_than":
        message = f"must be > {_number(ctx.get('gt'))}"
    elif kind == "greater_than_equal":
        message = f"must be >= {_number(ctx.get('ge'))}"
    elif kind == "less_than_equal":
        message = f"must be <= {_number(ctx.get('le'))}"
    elif kind == "literal_error":
        message = f"must be one of {ctx.get('expected')}"
    elif kind == "union_tag_invalid":
        message = f"must be one of {', '.join(repr(t) for t in _AUTH_TYPES)}"
        key = key or "auth"
        key = key if key.endswith("type") else f"{key}.type"
    elif kind == "union_tag_not_found":
        message = f"needs type = one of {', '.join(repr(t) for t in _AUTH_TYPES)}"
    else:
        message = str(detail.get("msg", "invalid")).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
    return f"{key}: {message}" if key else message


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def load_config(path: str | Path | None = None) -> Config:
    """Read and parse the config file (see :func:`config_path`)."""
    found = config_path(path)
    try:
        text = found.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{found}: no such file") from None
    except OSError as error:
        raise ConfigError(f"{found}: {error.strerror or error}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{found}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{found}: {error}") from None
    return Config(found, data)


def load_profile(
    name: str | None = None,
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Profile:
    """The profile name (else ``$DICOMTROLLEY_PROFILE``) of the config file."""
    env = os.environ if environ is None else environ
    chosen = name or env.get("DICOMTROLLEY_PROFILE")
    if not chosen:
        raise ConfigError("no profile named: give one (or set DICOMTROLLEY_PROFILE)")
    return load_config(config_path(path, env)).profile(chosen)


def profile_names(path: str | Path | None = None) -> Sequence[str]:
    return load_config(path).names
