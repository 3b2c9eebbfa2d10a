"""The config file: where it is, reading it, and its profiles checked.

The file is ``--config PATH``, else ``$DICOMTROLLEY_CONFIG``, else
``$XDG_CONFIG_HOME/dicomtrolley/config.toml`` (``~/.config/...``). Its only
top-level table is ``[profiles]``; each ``[profiles.NAME]`` is checked when it
is asked for (:meth:`Config.profile`), so one broken profile does not stop the
use of the others.
"""

from __future__ import annotations

import os
import stat
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

from dicomtrolley.config_model import Profile, describe_validation_error
from dicomtrolley.credentials import ConfigError

__all__ = [
    "Config",
    "ConfigWarning",
    "config_path",
    "load_config",
    "load_profile",
    "profile_names",
]


class ConfigWarning(UserWarning):
    """Something in a config file works but should be changed (shown to users)."""


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
            raise ConfigError(f"{where}: {describe_validation_error(error)}") from None
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
