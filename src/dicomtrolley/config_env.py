"""The environment variables dicomtrolley reads, in one table, and old names.

The CLI, the library and ``examples/`` read the same variables
(:data:`ENVIRONMENT`); an old name still works with a
:class:`DeprecatedNameWarning` (:data:`DEPRECATED_ENVIRONMENT`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

__all__ = [
    "DEPRECATED_ENVIRONMENT",
    "ENVIRONMENT",
    "DeprecatedNameWarning",
    "getenv",
]

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
