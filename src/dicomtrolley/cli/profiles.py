"""``dicomtrolley profiles list|check``: the servers of the config file.

``list`` shows each profile's protocols, addresses and kind of auth (never a
secret) and names the profiles that do not validate. ``check NAME`` tries the
profile step by step, timing each: C-ECHO for a DIMSE server, the Vitrea login,
an OAuth2 token, then one small search with its search protocol. Exit code 0
when every step worked, 1 when one failed, 2 for a config error (or a secret that
is needed but not set, with no terminal to ask on).

The same, in a script::

    profile = load_profile("pacs1")
    session = profile.session()
    profile.searcher(session).find_studies(Query(PatientID="123"))
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import click
import requests
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dicomtrolley.auth import VitreaAuth
from dicomtrolley.cli.connection import CONFIG_ENV, stdin_is_terminal
from dicomtrolley.config import ConfigError, Profile, config_path, load_config
from dicomtrolley.core import Query
from dicomtrolley.credentials import Secrets
from dicomtrolley.dimse.echo import c_echo as send_c_echo
from dicomtrolley.dimse.settings import Peer
from dicomtrolley.exceptions import DICOMTrolleyError
from dicomtrolley.oauth import OAuth2ClientCredentials

#: A study UID no PACS holds: the check's C-FIND finds nothing, quickly.
ABSENT_STUDY_UID = "2.25.1"

_config_option = click.option(
    "--config",
    "config_file",
    envvar=CONFIG_ENV,
    show_envvar=True,
    metavar="PATH",
    help="The config file.  [default: ~/.config/dicomtrolley/config.toml]",
)


@click.group("profiles")
def profiles() -> None:
    """List the server profiles of the config file, or check one."""


@profiles.command("list")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_profiles(config_file: str | None, as_json: bool) -> None:
    """Names, protocols, URLs and auth kind of every profile (no secrets).

    Exit code 2 when a profile does not validate (its error is shown).
    """
    config = load_config(config_path(config_file))
    found: list[Profile] = []
    errors: list[str] = []
    for name in config.names:
        try:
            found.append(config.profile(name))
        except ConfigError as error:
            errors.append(str(error))
    if as_json:
        click.echo(json.dumps([p.describe() for p in found], indent=2))
    else:
        table = Table(caption=f"{len(found)} profiles in {config.path}")
        for heading in ("Profile", "Search", "Download", "Where", "Auth"):
            table.add_column(heading, overflow="fold")
        for profile in found:
            table.add_row(
                profile.name,
                profile.search_protocol,
                ", ".join(profile.download),
                "\n".join(_addresses(profile)),
                _auth(profile),
            )
        Console(highlight=False).print(table)
    for message in errors:
        click.echo(click.style(f"Error: {message}", fg="red"), err=True)
    if errors:
        click.get_current_context().exit(2)


def _addresses(profile: Profile) -> list[str]:
    described = profile.describe()
    lines = [
        f"{key}: {described[key]}"
        for key in ("url", "qido_url", "mint_url", "wado_uri_url", "rad69_url")
        if key in described
    ]
    if profile.dimse is not None:
        dimse = profile.dimse
        lines.append(f"dimse: {dimse.aec}@{dimse.host}:{dimse.port}")
    return lines


def _auth(profile: Profile) -> str:
    auth = profile.describe()["auth"]
    who = auth.get("user") or auth.get("client_id") or ""
    return f"{auth['type']}" + (f" ({who})" if who else "")


@dataclass
class Step:
    """One step of a check: what, how long, and how it went."""

    name: str
    seconds: float
    error: str | None = None
    detail: str = ""


def _timed(name: str, action: Callable[[], str]) -> Step:
    started = time.monotonic()
    try:
        detail = action()
    except DICOMTrolleyError as error:
        return Step(name, time.monotonic() - started, str(error))
    return Step(name, time.monotonic() - started, detail=detail)


def c_echo(profile: Profile) -> str:
    """A C-ECHO to the profile's DIMSE server (raises DICOMTrolleyError)."""
    dimse = profile.require_dimse("C-ECHO")
    peer = Peer(dimse.host, dimse.port, dimse.aet, dimse.aec, dimse.tls_settings())
    send_c_echo(peer, profile.timeouts.dimse())
    return f"{dimse.aec} at {dimse.host}:{dimse.port}"


def small_search(profile: Profile, session: requests.Session | None) -> str:
    """One cheap search with the profile's search protocol (no session: DIMSE)."""
    protocol = profile.search_protocol
    searcher = profile.searcher(session or requests.Session())
    query: Query
    if protocol == "qido-rs":
        from dicomtrolley.qido_rs import HierarchicalQuery

        query = HierarchicalQuery(limit=1)
    elif protocol == "mint":
        from dicomtrolley.mint import MintQuery

        query = MintQuery(limit=1)
    else:
        query = Query(StudyInstanceUID=ABSENT_STUDY_UID)
    studies = searcher.find_studies(query)
    return f"{protocol}: {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}"


def check_profile(profile: Profile, secrets: Secrets) -> list[Step]:
    """Try profile step by step (echo, login or token, one search)."""
    steps: list[Step] = []
    protocols = {profile.search_protocol, *profile.download}
    if profile.dimse is not None and protocols & {"c-find", "c-get", "c-move"}:
        steps.append(_timed("C-ECHO", lambda: c_echo(profile)))
    http = protocols - {"c-find", "c-get", "c-move"}
    if not http and profile.search_protocol == "c-find":
        steps.append(_timed("search", lambda: small_search(profile, None)))
        return steps
    auth = profile.build_auth(secrets)
    with profile.session(pool_size=2, auth=auth) as session:
        if isinstance(auth, VitreaAuth):

            def log_in() -> str:
                auth.log_in(session)
                return f"as {auth.user}"

            steps.append(_timed("login", log_in))
        elif isinstance(auth, OAuth2ClientCredentials):

            def token() -> str:
                auth.token()
                return f"client {auth.client_id}"

            steps.append(_timed("token", token))
        if all(step.error is None for step in steps):
            steps.append(_timed("search", lambda: small_search(profile, session)))
    return steps


@profiles.command("check")
@click.argument("name")
@_config_option
def check(name: str, config_file: str | None) -> None:
    """Try profile NAME: C-ECHO, login or token, one small search, with timings."""
    profile = load_config(config_path(config_file)).profile(name)
    secrets = Secrets(ask=_ask, is_terminal=stdin_is_terminal)
    steps = check_profile(profile, secrets)
    console = Console(highlight=False)
    for step in steps:
        mark, style = ("ok", "green") if step.error is None else ("FAILED", "red")
        line = Text(f"{step.name:<7} ", style="bold")
        line.append(f"{mark:<6}", style=style)
        line.append(f" {step.seconds * 1000:7.0f} ms  ")
        line.append(step.error if step.error is not None else step.detail)
        console.print(line)
    if any(step.error is not None for step in steps):
        click.get_current_context().exit(1)


def _ask(prompt: str) -> str:
    text: str = click.prompt(prompt, hide_input=True, err=True)
    return text
