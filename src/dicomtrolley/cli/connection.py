"""From connection options and profiles to a :class:`requests.Session`: auth, TLS,
timeouts, retries.

``--profile NAME`` (or ``DICOMTROLLEY_PROFILE``) reads a server's settings from
the config file (``--config``, ``DICOMTROLLEY_CONFIG``, else
``~/.config/dicomtrolley/config.toml``; see :mod:`dicomtrolley.config`). Its
values become the defaults of the command's options, so that any option given on
the command line wins over the profile. Without a profile, the options' defaults
come from the environment (``DICOMTROLLEY_URL``, ``DICOMTROLLEY_USER`` ...: see
:data:`dicomtrolley.config.ENVIRONMENT`); with one, only the variables the
profile names are read, so that one server's credentials never go to another.

Secrets stay secret: a password is read from ``DICOMTROLLEY_PASSWORD`` (or the
profile's ``password_env``), or asked for with hidden input when standard input
is a terminal; otherwise the command stops at once with exit code 2 and a line
naming the variable to set (a cron job never hangs on a prompt). A bearer token
comes from ``DICOMTROLLEY_TOKEN``. Both may be given on the command line too,
with a warning, since other users of the machine can read command lines. None is
ever printed: :class:`ConnectionSettings` leaves them out of its ``repr``, and
the library strips credentials from URLs.

``--user`` with ``--login-url`` (and ``--realm``) logs in the Vitrea way
(:class:`~dicomtrolley.auth.VitreaAuth`) instead of HTTP basic auth.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import requests
import urllib3
from click.core import ParameterSource

from dicomtrolley.auth import DEFAULT_REALM, VitreaAuth
from dicomtrolley.config import (
    DIMSE_PROTOCOLS,
    BasicAuthConfig,
    Profile,
    VitreaAuthConfig,
    getenv,
    load_profile,
)
from dicomtrolley.credentials import NoAuth, Secrets
from dicomtrolley.dimse.settings import DIMSETimeouts
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
PROFILE_ENV = "DICOMTROLLEY_PROFILE"
CONFIG_ENV = "DICOMTROLLEY_CONFIG"
PROFILE_KEY = "dicomtrolley.profile"
_SEEN_KEY = "dicomtrolley.profile-options"

#: Option name -> environment variable giving its default when no profile is used.
OPTION_ENVIRONMENT = {
    "url": "DICOMTROLLEY_URL",
    "mint_url": "DICOMTROLLEY_MINT_URL",
    "wado_uri_url": "DICOMTROLLEY_WADO_URI_URL",
    "rad69_url": "DICOMTROLLEY_RAD69_URL",
    "login_url": "DICOMTROLLEY_LOGIN_URL",
    "realm": "DICOMTROLLEY_REALM",
    "user": "DICOMTROLLEY_USER",
}


def stdin_is_terminal() -> bool:
    """Whether a prompt can be answered (tests replace this)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach a server: credentials, TLS verification, timeouts, retries.

    ``profile``: the profile the settings came from, if any (its ordered
    ``download`` protocols, for instance). ``dimse_timeout``: the profile's
    DIMSE timeouts, when ``--timeout`` did not override them.
    """

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    timeout: Timeout = DEFAULT_TIMEOUT
    retry: Retry = DEFAULT_RETRY
    timeout_total: float | None = None  # --timeout-total as given (0: none)
    login_url: str | None = None
    realm: str = DEFAULT_REALM
    cert: str | tuple[str, str] | None = None
    profile: Profile | None = None
    dimse_timeout: DIMSETimeouts | None = None
    auth_override: requests.auth.AuthBase | None = field(
        default=None, repr=False, compare=False
    )

    def auth(self) -> requests.auth.AuthBase:
        """The auth of the profile, else Vitrea/basic for a user, bearer for a token.

        Without credentials: :class:`~dicomtrolley.credentials.NoAuth`, so that
        requests does not send ``~/.netrc`` entries on its own.
        """
        if self.auth_override is not None:
            return self.auth_override
        if self.token:
            return BearerAuth(self.token)
        if self.user is not None and self.login_url:
            return VitreaAuth(
                self.login_url,
                self.user,
                self.password or "",
                self.realm,
                timeout=self.timeout,
            )
        if self.user is not None:
            return requests.auth.HTTPBasicAuth(self.user, self.password or "")
        return NoAuth()

    def session(self, pool_size: int = 10) -> requests.Session:
        """A new session with this auth and TLS setting, keeping pool_size connections."""
        session = new_session(self.auth(), verify=self.verify, pool_size=pool_size)
        session.cert = self.cert
        return session


# -- --profile and --config ------------------------------------------------------------


def _profile_option_seen(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of --profile and --config (both eager): once both are known, load
    the profile and make its values the defaults of the command's options."""
    seen: dict[str, Any] = ctx.meta.setdefault(_SEEN_KEY, {})
    seen[str(param.name)] = value
    if len(seen) < 2:
        return value
    name, path = seen.get("profile"), seen.get("config_file")
    defaults: dict[str, Any]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if name:
            profile = load_profile(name, path)
            ctx.meta[PROFILE_KEY] = profile
            defaults = profile_defaults(profile, ctx.command.name or "")
        else:
            defaults = environment_defaults()
    for warning in caught:
        click.echo(click.style(f"Warning: {warning.message}", fg="yellow"), err=True)
    known = {p.name for p in ctx.command.params}
    ctx.default_map = {
        **(ctx.default_map or {}),
        **{key: value for key, value in defaults.items() if key in known},
    }
    return value


def profile_defaults(profile: Profile, command: str) -> dict[str, Any]:
    """Option name -> default from profile, for the options a command has."""
    values: dict[str, Any] = {
        "url": profile.url,
        "qido_url": profile.qido_url,
        "mint_url": profile.mint_url,
        "wado_uri_url": profile.wado_uri_url,
        "rad69_url": profile.rad69_url,
        "workers": profile.workers,
        "search_protocol": profile.search_protocol,
        "protocol": profile.search_protocol
        if command == "search"
        else profile.download[0],
        "protocols": list(profile.download),  # download, batch: in order
    }
    if profile.dimse is not None:
        values.update(profile.dimse.model_dump())
    return {key: value for key, value in values.items() if value is not None}


def environment_defaults() -> dict[str, Any]:
    """Option name -> default from the environment (no profile in use)."""
    values = {option: getenv(name) for option, name in OPTION_ENVIRONMENT.items()}
    return {key: value for key, value in values.items() if value}


PROFILE_OPTIONS = (
    click.option(
        "--profile",
        envvar=PROFILE_ENV,
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=_profile_option_seen,
        metavar="NAME",
        help="Server settings from this profile of the config file; options "
        "given here override them.",
    ),
    click.option(
        "--config",
        "config_file",
        envvar=CONFIG_ENV,
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=_profile_option_seen,
        metavar="PATH",
        help="The config file.  [default: ~/.config/dicomtrolley/config.toml]",
    ),
)

LOGIN_OPTIONS = (
    click.option(
        "--login-url",
        metavar="URL",
        help="Vitrea login URL: log in as --user there (session cookie) instead "
        "of HTTP basic auth.",
    ),
    click.option(
        "--realm",
        default=None,
        metavar="REALM",
        help=f"Vitrea login realm.  [default: {DEFAULT_REALM}]",
    ),
)


def current_profile() -> Profile | None:
    """The profile of the running command (None without --profile)."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(PROFILE_KEY)


# -- from options to settings ---------------------------------------------------------


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
    login_url: str | None = None,
    realm: str | None = None,
    profile: Profile | None = None,
    timeout_given: bool = False,
    is_terminal: Callable[[], bool] | None = None,
) -> ConnectionSettings:
    """ConnectionSettings from parsed options and a profile; warns and prompts.

    With a profile, its auth, TLS, timeouts and retries apply unless options
    override them: ``--user`` or ``--token`` replace its credentials (a Vitrea
    profile keeps logging in the Vitrea way, as ``--user``), ``--timeout``,
    ``--timeout-total``, ``--retries`` and ``--insecure`` its settings.

    Raises
    ------
    click.UsageError
        For ``--user`` together with ``--token``, and ``--password`` without
        ``--user``.
    MissingSecretError
        When a password is needed, not set, and no terminal is there to ask on.
    """
    on_command_line = ParameterSource.COMMANDLINE
    if profile is not None and token_source != on_command_line:
        token = None  # the profile says where its token comes from
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
    secrets = Secrets(ask=ask_password, is_terminal=is_terminal or stdin_is_terminal)
    profile_auth = profile.auth if profile is not None else None
    if isinstance(profile_auth, VitreaAuthConfig):
        login_url = login_url or profile_auth.login_url
        realm = realm or profile_auth.realm
    if user is None:
        password = None  # a password in the environment is only used with --user
    elif password is None:
        env = PASSWORD_ENV
        if isinstance(profile_auth, BasicAuthConfig):
            env = profile_auth.password_env
        password = secrets.get(f"password for {user}", env=env)
    override: requests.auth.AuthBase | None = None
    if profile is not None and user is None and not token:
        override = profile.build_auth(secrets)  # prompts or fails now
    if insecure or (profile is not None and not profile.tls.verify):
        warn(
            "TLS certificate verification is off (--insecure): anyone on the "
            "network path can read and change what is sent and received"
        )
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    verify: bool | str = not insecure
    if profile is not None and not insecure:
        verify = profile.tls.requests_verify()
    if profile is not None and not timeout_given:
        timeout = profile.http_timeout()
        if timeout_total is not None:
            timeout = Timeout(
                connect=timeout.connect,
                read=timeout.read,
                total=timeout_total or None,
                min_rate=timeout.min_rate,
            )
    if retries is not None:
        retry = Retry(total=retries)
    elif profile is not None:
        retry = profile.retry_policy()
    else:
        retry = DEFAULT_RETRY
    return ConnectionSettings(
        user=user,
        password=password,
        token=token or None,
        verify=verify,
        timeout=timeout,
        retry=retry,
        timeout_total=timeout_total,
        login_url=login_url or None,
        realm=realm or DEFAULT_REALM,
        cert=profile.tls.requests_cert() if profile is not None else None,
        profile=profile,
        dimse_timeout=(
            profile.timeouts.dimse() if profile and not timeout_given else None
        ),
        auth_override=override,
    )


__all__ = [
    "DIMSE_PROTOCOLS",
    "LOGIN_OPTIONS",
    "PROFILE_OPTIONS",
    "ConnectionSettings",
    "current_profile",
    "resolve_settings",
]
