"""The profile model: one server's protocols, addresses, auth, TLS and limits.

Pydantic models, frozen, that refuse unknown keys. :class:`Profile` is what a
``[profiles.NAME]`` table of the config file becomes
(:mod:`dicomtrolley.config_files` reads and checks the file); its methods that
build sessions, searchers and downloaders are in
:mod:`dicomtrolley.config_build`, imported when first used. Constructed in code
with a bad value, a model raises :class:`~dicomtrolley.credentials.ConfigError`
naming the key (never pydantic's ValidationError).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
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

from dicomtrolley.auth import DEFAULT_REALM
from dicomtrolley.credentials import ConfigError, Secrets
from dicomtrolley.dimse.settings import (
    KEY_PASSWORD_ENV,
    DIMSETimeouts,
    check_ae_title,
)
from dicomtrolley.oauth import DEFAULT_REFRESH_MARGIN
from dicomtrolley.transport import DEFAULT_RETRY, DEFAULT_TIMEOUT, Retry, Timeout

if TYPE_CHECKING:
    from dicomtrolley.core import Downloader, Searcher
    from dicomtrolley.dimse.tls import DIMSETLS
    from dicomtrolley.storage import DICOMDiskStorage
    from dicomtrolley.trolley import Trolley

__all__ = [
    "DIMSE_PROTOCOLS",
    "DOWNLOAD_PROTOCOLS",
    "RAD69_TRANSFER_SYNTAXES",
    "SEARCH_PROTOCOLS",
    "AuthConfig",
    "BasicAuthConfig",
    "BearerAuthConfig",
    "DimseConfig",
    "DimseTLSConfig",
    "NoAuthConfig",
    "OAuth2Config",
    "Profile",
    "RetryConfig",
    "TLSConfig",
    "Timeouts",
    "VitreaAuthConfig",
    "describe_validation_error",
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


# -- the model -------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigError(
                f"{type(self).__name__}: {describe_validation_error(error)}"
            ) from None

    # Pydantic calls an overridden __init__ for nested tables and model_validate
    # too; marked as its own, only a direct call (Profile(...)) comes here, so
    # a profile read from a file keeps its keys' full paths in the message.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


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


class DimseTLSConfig(_Model):
    """DICOM over TLS: the CAs to trust, our certificate, whether to verify.

    ``tls = {}`` (or ``tls = true``) checks the PACS's certificate against the
    system's CAs. The key's password comes from the variable ``key_password_env``.
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    key_password_env: EnvName = KEY_PASSWORD_ENV
    verify: bool = True
    check_hostname: bool = True

    @model_validator(mode="after")
    def _files(self) -> DimseTLSConfig:
        if self.key is not None and self.cert is None:
            raise ValueError("key needs cert")
        if self.ca is not None and not self.verify:
            raise ValueError("ca with verify = false: choose one")
        return self

    def settings(self, environ: Mapping[str, str] | None = None) -> DIMSETLS:
        """As :class:`~dicomtrolley.dimse.tls.DIMSETLS` (the password looked up now)."""
        from dicomtrolley.dimse.tls import DIMSETLS

        env = os.environ if environ is None else environ
        return DIMSETLS(
            ca_file=self.ca,
            cert_file=self.cert,
            key_file=self.key,
            key_password=env.get(self.key_password_env) or None,
            verify=self.verify,
            check_hostname=self.check_hostname,
        )


class DimseConfig(_Model):
    """Where the PACS listens for DIMSE, the C-MOVE destination, and TLS."""

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)]
    aet: str = "DICOMTROLLEY"
    aec: str = "ANY-SCP"
    store_aet: str | None = None
    store_port: Annotated[int, Field(ge=1, le=65535)] = 11112
    tls: DimseTLSConfig | None = None

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_flag(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    def tls_settings(self) -> DIMSETLS | None:
        """The TLS settings of the connections to the PACS (None: plain TCP)."""
        return None if self.tls is None else self.tls.settings()

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


class DeidConfig(_Model):
    """``[profiles.NAME.deid]``: de-identify every download of this profile
    (:mod:`dicomtrolley.deid`; needs the ``dicomtrolley[deid]`` extra).

    ``profile`` is ``basic`` (PS3.15 Basic Profile) or a deid recipe file; the
    secret key is ``key`` or the environment variable ``key_env``.
    """

    profile: Annotated[str, Field(min_length=1)] = "basic"
    retain_dates: bool = False
    retain_device: bool = False
    retain_uids: bool = False
    key: SecretStr | None = None
    key_env: EnvName = "DICOMTROLLEY_DEID_KEY"

    def secret_key(self) -> str | None:
        """The key: ``key``, else ``$key_env`` (None when neither is set)."""
        import os

        if self.key is not None:
            return self.key.get_secret_value()
        return os.environ.get(self.key_env) or None


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
    deid: DeidConfig | None = None

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
            dimse = self.dimse.model_dump(mode="json", exclude_none=True)
        return {
            "name": self.name,
            "search": self.search_protocol,
            "download": list(self.download),
            **urls,
            **({"dimse": dimse} if dimse else {}),
            "auth": auth,
            "workers": self.workers,
        }

    # -- building the objects (dicomtrolley.config_build) ------------------------

    def http_timeout(self) -> Timeout:
        return self.timeouts.http()

    def retry_policy(self) -> Retry:
        return self.retry.policy()

    def build_auth(self, secrets: Secrets | None = None) -> requests.auth.AuthBase:
        """The requests auth of this profile; secrets are looked for now."""
        from dicomtrolley.config_build import profile_auth

        return profile_auth(self, secrets)

    def session(
        self,
        pool_size: int | None = None,
        *,
        secrets: Secrets | None = None,
        auth: requests.auth.AuthBase | None = None,
    ) -> requests.Session:
        """A requests session with this profile's auth and TLS settings."""
        from dicomtrolley.config_build import profile_session

        return profile_session(self, pool_size, secrets=secrets, auth=auth)

    def searcher(self, session: requests.Session | None = None) -> Searcher:
        """The searcher of :attr:`search` (a session is made when not given)."""
        from dicomtrolley.config_build import make_searcher

        return make_searcher(self.search_protocol, self, session or self.session())

    def downloader(
        self,
        protocol: str | None = None,
        session: requests.Session | None = None,
        workers: int | None = None,
    ) -> Downloader:
        """The downloader for protocol (default: the first of :attr:`download`)."""
        from dicomtrolley.config_build import make_downloader

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
        from dicomtrolley.config_build import profile_trolley

        return profile_trolley(self, storage, protocol=protocol, secrets=secrets)


def _wado_uri_from(url: str | None) -> str | None:
    if not url:
        return None
    base = url.rstrip("/")
    return base[: -len("/dicom-web")] + "/wado" if base.endswith("/dicom-web") else None


def describe_validation_error(error: ValidationError) -> str:
    """``timeouts.read: must be > 0; workers: must be >= 1`` from pydantic's error."""
    return "; ".join(_describe(detail) for detail in error.errors())


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
