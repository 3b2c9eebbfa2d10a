"""Where passwords, tokens and client secrets come from: never from a URL or a log.

A secret is looked for, in this order:

1. a literal value (given in code, on the command line, or written in a profile;
   a profile file holding one should be readable by its owner only),
2. the environment variable named for it (``password_env = "PACS_PASSWORD"``),
3. ``~/.netrc`` (or the file in ``$NETRC``) for the server's host, when asked
   for with ``netrc = true`` (a password, and the user name when none is given),
4. a prompt with hidden input, only when standard input is a terminal.

Otherwise :class:`MissingSecretError` names the variable to set: a job started by
cron fails at once with one line saying what to do, instead of waiting for an
answer that never comes.

About netrc: requests reads ``~/.netrc`` by itself for a session without auth.
dicomtrolley's sessions never rely on that: a session built from a profile or
the command line carries an explicit auth (:class:`NoAuth` when there is none),
so ``~/.netrc`` is used only where a profile says ``netrc = true``.
"""

from __future__ import annotations

import getpass
import netrc
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from dicomtrolley.exceptions import PermanentError

__all__ = [
    "ConfigError",
    "MissingSecretError",
    "NoAuth",
    "Secrets",
    "netrc_credentials",
]


class ConfigError(PermanentError):
    """A profile or config file is missing, malformed, or names something unknown,
    or settings given in code cannot work (a FallbackDownloader without any
    downloader, an OAuth2 client_auth that is not 'basic' or 'body').

    For a file, the message names the file, the profile and the key.
    """


class MissingSecretError(ConfigError):
    """A secret is needed but not set, and there is no terminal to ask on."""


class NoAuth(requests.auth.AuthBase):
    """No credentials, on purpose: stops requests from reading ``~/.netrc``."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r

    def __repr__(self) -> str:
        return "NoAuth()"


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdin
        return False


def _getpass(prompt: str) -> str:
    return getpass.getpass(f"{prompt}: ")


def netrc_credentials(
    url: str, path: Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, str] | None:
    """(login, password) for the host of url in a netrc file, or None.

    path: the file; default ``$NETRC`` or ``~/.netrc``. A missing file is None;
    a malformed one (or, for ``~/.netrc``, one that others may read) is a
    ConfigError naming the file and line.
    """
    env = os.environ if environ is None else environ
    if path is None:
        path = Path(env["NETRC"]) if env.get("NETRC") else Path.home() / ".netrc"
    host = urlsplit(url).hostname or ""
    if not host or not path.is_file():
        return None
    try:
        entries = netrc.netrc(str(path))
    except netrc.NetrcParseError as error:
        raise ConfigError(f"{path}: {error.msg} (line {error.lineno})") from None
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from None
    found = entries.authenticators(host)
    if found is None:
        return None
    login, _, password = found
    return login, password or ""


@dataclass
class Secrets:
    """How to find secrets: environment, netrc, and a prompt when on a terminal.

    ``ask(prompt)`` reads a hidden answer (default: getpass);
    ``is_terminal()`` says whether asking is possible (default: stdin is a tty).
    """

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    ask: Callable[[str], str] = _getpass
    is_terminal: Callable[[], bool] = _stdin_is_terminal

    def get(
        self,
        what: str,
        *,
        literal: str | None = None,
        env: str | None = None,
        from_netrc: str | None = None,
        where: str = "",
    ) -> str:
        """The secret described by what (e.g. ``password for alice``).

        from_netrc: a password already found in netrc. where: prefix of error
        messages (``config.toml: profile "pacs": auth.password``).

        Raises MissingSecretError when nothing gives it and no terminal is there.
        """
        if literal is not None:
            return literal
        if env and self.environ.get(env):
            return self.environ[env]
        if from_netrc is not None:
            return from_netrc
        if self.is_terminal():
            return self.ask(what[:1].upper() + what[1:])
        prefix = f"{where}: " if where else ""
        hint = f"set the environment variable {env}" if env else "set it"
        raise MissingSecretError(
            f"{prefix}no {what} given and no terminal to ask on: {hint}"
        )
