"""From connection options to a :class:`requests.Session`: auth, TLS, timeouts.

Secrets stay secret: a password is read from ``DICOMTROLLEY_PASSWORD`` or asked
for with hidden input, a bearer token from ``DICOMTROLLEY_TOKEN``. Both may be
given on the command line too, with a warning, since other users of the machine
can read command lines. Neither is ever printed: :class:`ConnectionSettings`
leaves them out of its ``repr``, and the library strips credentials from URLs.

The session is a plain one from :func:`dicomtrolley.transport.new_session`; a
script that wants the same connection builds it in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import click
import requests
import urllib3
from click.core import ParameterSource

from dicomtrolley.transport import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    BearerAuth,
    Retry,
    Timeout,
    new_session,
)

PASSWORD_ENV = "DICOMTROLLEY_PASSWORD"
TOKEN_ENV = "DICOMTROLLEY_TOKEN"


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach a server: credentials, TLS verification, timeouts, retries."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify: bool = True
    timeout: Timeout = DEFAULT_TIMEOUT
    retry: Retry = DEFAULT_RETRY
    timeout_total: float | None = None  # --timeout-total as given (0: none)

    def auth(self) -> requests.auth.AuthBase | None:
        """Bearer auth for a token, basic auth for a user, else None."""
        if self.token:
            return BearerAuth(self.token)
        if self.user is not None:
            return requests.auth.HTTPBasicAuth(self.user, self.password or "")
        return None

    def session(self, pool_size: int = 10) -> requests.Session:
        """A new session with this auth and TLS setting, keeping pool_size connections."""
        return new_session(self.auth(), verify=self.verify, pool_size=pool_size)


def resolve_settings(
    *,
    user: str | None,
    password: str | None,
    password_source: ParameterSource | None,
    token: str | None,
    token_source: ParameterSource | None,
    insecure: bool,
    timeout: Timeout,
    retries: int | None,
    warn: Callable[[str], None],
    ask_password: Callable[[str], str],
    timeout_total: float | None = None,
) -> ConnectionSettings:
    """ConnectionSettings from parsed options; warns and prompts where needed.

    Raises
    ------
    click.UsageError
        For ``--user`` together with ``--token``, and ``--password`` without
        ``--user``.
    """
    on_command_line = ParameterSource.COMMANDLINE
    if user is not None and token:
        raise click.UsageError(
            "--user and --token exclude each other: use basic auth or a bearer "
            f"token (is {TOKEN_ENV} set?)"
        )
    if password_source == on_command_line:
        if user is None:
            raise click.UsageError("--password needs --user")
        warn(
            "--password on the command line may be visible to other users of this "
            f"machine (process list, shell history); prefer {PASSWORD_ENV} or the "
            "prompt"
        )
    if token_source == on_command_line:
        warn(
            "--token on the command line may be visible to other users of this "
            f"machine (process list, shell history); prefer {TOKEN_ENV}"
        )
    if user is None:
        password = None  # a password in the environment is only used with --user
    elif password is None:
        password = ask_password(f"Password for {user}")
    if insecure:
        warn(
            "TLS certificate verification is off (--insecure): anyone on the "
            "network path can read and change what is sent and received"
        )
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return ConnectionSettings(
        user=user,
        password=password,
        token=token or None,
        verify=not insecure,
        timeout=timeout,
        retry=DEFAULT_RETRY if retries is None else Retry(total=retries),
        timeout_total=timeout_total,
    )
