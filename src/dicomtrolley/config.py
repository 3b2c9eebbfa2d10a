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

This module is the façade; the parts live in

- :mod:`dicomtrolley.config_model`: the models (:class:`Profile` and its tables),
- :mod:`dicomtrolley.config_files`: finding, reading and checking the file,
- :mod:`dicomtrolley.config_build`: auth, sessions, searchers and downloaders,
- :mod:`dicomtrolley.config_env`: the environment variables (:data:`ENVIRONMENT`).
"""

from __future__ import annotations

from dicomtrolley.config_build import (
    build_auth,
    make_downloader,
    make_searcher,
)
from dicomtrolley.config_env import (
    DEPRECATED_ENVIRONMENT,
    ENVIRONMENT,
    DeprecatedNameWarning,
    getenv,
)
from dicomtrolley.config_files import (
    Config,
    ConfigWarning,
    config_path,
    load_config,
    load_profile,
    profile_names,
)
from dicomtrolley.config_model import (
    DIMSE_PROTOCOLS,
    DOWNLOAD_PROTOCOLS,
    RAD69_TRANSFER_SYNTAXES,
    SEARCH_PROTOCOLS,
    AuthConfig,
    BasicAuthConfig,
    BearerAuthConfig,
    DimseConfig,
    DimseTLSConfig,
    DownloadProtocol,
    NoAuthConfig,
    OAuth2Config,
    Profile,
    RetryConfig,
    SearchProtocol,
    Timeouts,
    TLSConfig,
    VitreaAuthConfig,
)
from dicomtrolley.credentials import ConfigError, MissingSecretError

__all__ = [
    "DEPRECATED_ENVIRONMENT",
    "DIMSE_PROTOCOLS",
    "DOWNLOAD_PROTOCOLS",
    "ENVIRONMENT",
    "RAD69_TRANSFER_SYNTAXES",
    "SEARCH_PROTOCOLS",
    "AuthConfig",
    "BasicAuthConfig",
    "BearerAuthConfig",
    "Config",
    "ConfigError",
    "ConfigWarning",
    "DeprecatedNameWarning",
    "DimseConfig",
    "DimseTLSConfig",
    "DownloadProtocol",
    "MissingSecretError",
    "NoAuthConfig",
    "OAuth2Config",
    "Profile",
    "RetryConfig",
    "SearchProtocol",
    "TLSConfig",
    "Timeouts",
    "VitreaAuthConfig",
    "build_auth",
    "config_path",
    "getenv",
    "load_config",
    "load_profile",
    "make_downloader",
    "make_searcher",
    "profile_names",
]
