"""``dicomtrolley serve``: the emulator PACS over a folder of DICOM files.

The same as, in a script::

    with Emulator(data, host, port, users={"trolley": "trolley"}) as emulator:
        ...  # serves until the with block ends

It prints the addresses of every protocol (Vitrea login, MINT, WADO-URI,
DICOMweb; DIMSE with ``--dimse-port``) and serves until Ctrl-C (or SIGTERM). Files added to the folder while
it runs are picked up within a second. ``--port 0`` picks a free port. Without
``--user`` the one user is ``trolley`` with password ``trolley``. Fill an empty
folder with ``dicomtrolley demo-data DIR``.

``--dimse-port N`` adds the DIMSE query/retrieve SCP (C-ECHO, C-FIND, C-GET,
C-MOVE) on port N (0: a free one) with AE title ``--dimse-aet``; C-MOVE
destinations are declared with ``--move-destination AET=HOST:PORT``. In a script:
``Emulator(data, services=[*default_services(), DimseService(port, aet)])``.

``--dimse-tls-cert FILE --dimse-tls-key FILE`` serve that port over TLS (DICOM
TLS, PS3.15 B) with this certificate, to try a TLS set-up locally; with
``--dimse-tls-ca FILE`` clients must present a certificate that CA signed, and
C-MOVE destinations must too (their host name checked). Without it, no client
certificate is asked for and C-MOVE destinations are not verified. An encrypted
key's password is read from ``$DICOMTROLLEY_TLS_KEY_PASSWORD``. In a script:
``DimseService(port, aet, tls=DIMSETLS(ca_file=..., cert_file=..., key_file=...))``.

``--oauth2 CLIENT:SECRET`` serves an OAuth2 token endpoint (client credentials)
at ``/oauth2/token``, issuing bearer tokens valid ``--token-lifetime`` seconds;
every other endpoint then accepts only those tokens. In a script:
``Emulator(data, oauth2_clients={"client": "secret"}, token_lifetime=60)``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from dicomtrolley.cli.main import configure_logging, warn
from dicomtrolley.credentials import ConfigError
from dicomtrolley.dimse.settings import KEY_PASSWORD_ENV
from dicomtrolley.dimse.tls import DIMSETLS
from dicomtrolley.emulator import (
    DEFAULT_AE_TITLE,
    DEFAULT_REALM,
    DEFAULT_USERS,
    DimseService,
    Emulator,
    default_services,
)

Command = TypeVar("Command", bound=Callable[..., Any])


def _users(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> dict[str, str]:
    users: dict[str, str] = {}
    for item in value:
        name, separator, password = item.partition(":")
        if not separator or not name.strip() or not password:
            raise click.BadParameter(
                f"expected NAME:PASSWORD, got {item.split(':')[0]!r}..."
            )
        users[name.strip()] = password
    return users


def _destinations(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> dict[str, tuple[str, int]]:
    destinations: dict[str, tuple[str, int]] = {}
    for item in value:
        title, _, address = item.partition("=")
        host, _, port = address.rpartition(":")
        if not title.strip() or not host or not port.isdigit():
            raise click.BadParameter(f"expected AET=HOST:PORT, got {item!r}")
        destinations[title.strip()] = (host.strip("[]"), int(port))
    return destinations


@contextlib.contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """Let SIGTERM end the wait like Ctrl-C does (main thread only)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def banner(emulator: Emulator, users: dict[str, str]) -> list[str]:
    """The lines printed at start: what is served where, and who may log in."""
    stats = emulator.index.stats()
    if users:
        who = f"Users     {', '.join(sorted(users))} (passwords as given)"
    else:
        name, password = next(iter(DEFAULT_USERS.items()))
        who = f"User      {name}, password {password}"
    return [
        f"dicomtrolley emulator: {stats.studies} studies, {stats.instances} "
        f"instances from {emulator.data_dir}",
        f"  Base URL  {emulator.base_url}",
        f"  Login     {emulator.login_url}  (POST with headers X-Userid, X-Password, "
        f"X-Realm: {emulator.realm})",
        f"  MINT      {emulator.mint_url}",
        f"  WADO-URI  {emulator.wado_uri_url}",
        f"  DICOMweb  {emulator.dicomweb_url}",
        *_dimse_lines(emulator),
        *(
            [
                f"  OAuth2    {emulator.token_url}  (client credentials; tokens "
                f"valid {emulator.tokens.lifetime:g} s, needed by every endpoint)"
            ]
            if emulator.tokens is not None
            else [f"  {who}; HTTP basic auth works too"]
        ),
        "Press Ctrl-C to stop.",
    ]


def _dimse_lines(emulator: Emulator) -> list[str]:
    try:
        dimse = emulator.dimse
    except LookupError:
        return []
    host, port = dimse.address
    lines = [
        f"  DIMSE     AE {dimse.ae_title} at {host} port {port} "
        "(C-ECHO, C-FIND, C-GET, C-MOVE)"
    ]
    if dimse.tls is not None:
        who = (
            f"client certificates of {dimse.tls.ca_file} required"
            if dimse.tls.verify
            else "no client certificate asked for"
        )
        lines.append(f"            over TLS: {dimse.tls.cert_file}; {who}")
    for title, (to_host, to_port) in sorted(dimse.move_destinations.items()):
        lines.append(f"            C-MOVE to {title} at {to_host} port {to_port}")
    return lines


def _pem_file(name: str, text: str) -> Callable[[Command], Command]:
    """An option naming a PEM file (certificate, key or CAs)."""
    return click.option(
        name,
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE",
        help=text,
    )


def _dimse_tls(cert: Path | None, key: Path | None, ca: Path | None) -> DIMSETLS | None:
    """The DIMSE service's TLS from the --dimse-tls-* options, files checked."""
    if cert is None:
        if key is not None or ca is not None:
            raise click.UsageError(
                "--dimse-tls-key and --dimse-tls-ca need --dimse-tls-cert"
            )
        return None
    tls = DIMSETLS(
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        key_password=os.environ.get(KEY_PASSWORD_ENV) or None,
        verify=ca is not None,
    )
    try:
        tls.server_context()
        tls.client_context()
    except ConfigError as error:
        raise click.UsageError(str(error)) from error
    return tls


@click.command("serve")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Folder of DICOM files to serve (any layout).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 lets other machines in.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--user",
    "users",
    multiple=True,
    callback=_users,
    metavar="NAME:PASSWORD",
    help="Who may log in; repeatable.  [default: trolley:trolley]",
)
@click.option(
    "--session-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="A login session ends after this long without a request.",
)
@click.option(
    "--dimse-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Also serve DIMSE C-ECHO/C-FIND/C-GET/C-MOVE on this port (0: a free one).",
)
@click.option(
    "--dimse-aet",
    default=DEFAULT_AE_TITLE,
    show_default=True,
    metavar="AET",
    help="The AE title of the DIMSE service.",
)
@click.option(
    "--move-destination",
    "move_destinations",
    multiple=True,
    callback=_destinations,
    metavar="AET=HOST:PORT",
    help="A C-MOVE destination the DIMSE service knows; repeatable.",
)
@_pem_file(
    "--dimse-tls-cert",
    "Serve DIMSE over TLS with this certificate (PEM, with its chain).",
)
@_pem_file(
    "--dimse-tls-key",
    "The certificate's private key (PEM; default: in the certificate file; "
    f"an encrypted key's password in ${KEY_PASSWORD_ENV}).",
)
@_pem_file(
    "--dimse-tls-ca",
    "Require client certificates signed by these CAs (PEM), and verify "
    "C-MOVE destinations against them. Without it: no client certificates.",
)
@click.option(
    "--oauth2",
    "oauth2_clients",
    multiple=True,
    callback=_users,
    metavar="CLIENT:SECRET",
    help="Serve an OAuth2 token endpoint for this client (repeatable); every "
    "other endpoint then needs its bearer tokens.",
)
@click.option(
    "--token-lifetime",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long an OAuth2 token is valid.",
)
@click.option(
    "-v", "--verbose", count=True, help="Log requests to stderr; twice for debug."
)
def serve(
    data_dir: Path,
    host: str,
    port: int,
    users: dict[str, str],
    session_timeout: float,
    dimse_port: int | None,
    dimse_aet: str,
    move_destinations: dict[str, tuple[str, int]],
    dimse_tls_cert: Path | None,
    dimse_tls_key: Path | None,
    dimse_tls_ca: Path | None,
    oauth2_clients: dict[str, str],
    token_lifetime: float,
    verbose: int,
) -> None:
    """Serve a folder of DICOM files as a PACS: MINT, WADO-URI, DICOMweb (and
    DIMSE with --dimse-port).

    \b
    Examples:
      dicomtrolley demo-data data && dicomtrolley serve --data data
      dicomtrolley serve --data data --port 0 --user alice:secret
      dicomtrolley serve --data data --dimse-port 11112 --dimse-aet PACS
      dicomtrolley serve --data data --dimse-port 2762 --dimse-tls-cert pacs.pem
          --dimse-tls-key pacs.key --dimse-tls-ca ca.pem
      dicomtrolley serve --data data --oauth2 app:secret --token-lifetime 60
    """
    if not data_dir.is_dir():
        raise click.UsageError(
            f"{data_dir} is not a folder. Create it with demo studies: "
            f"dicomtrolley demo-data {data_dir}"
        )
    services = default_services()
    tls_options = (dimse_tls_cert, dimse_tls_key, dimse_tls_ca)
    if dimse_port is not None:
        tls = _dimse_tls(*tls_options)
        try:
            services.append(
                DimseService(
                    dimse_port,
                    dimse_aet,
                    move_destinations=move_destinations,
                    host=host,
                    tls=tls,
                )
            )
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--dimse-aet") from error
    elif move_destinations or dimse_aet != DEFAULT_AE_TITLE or any(tls_options):
        raise click.UsageError(
            "--dimse-aet, --move-destination and --dimse-tls-* need --dimse-port"
        )
    click.get_current_context().call_on_close(configure_logging(verbose))
    emulator = Emulator(
        data_dir,
        host=host,
        port=port,
        users=users or None,
        session_timeout=session_timeout,
        realm=DEFAULT_REALM,
        services=services,
        oauth2_clients=oauth2_clients or None,
        token_lifetime=token_lifetime,
    )
    try:
        emulator.start()
    except OSError as error:
        ports = f"port {port}" + (
            "" if dimse_port is None else f" or DIMSE port {dimse_port}"
        )
        raise click.ClickException(
            f"cannot listen on {host} {ports}: {error.strerror or error}"
        ) from error
    stop = threading.Event()
    try:
        for line in banner(emulator, users):
            click.echo(line)
        if emulator.index.stats().instances == 0:
            warn(
                f"{data_dir} holds no DICOM files yet. Fill it with demo studies: "
                f"dicomtrolley demo-data {data_dir}"
            )
        with _stop_on_sigterm(stop), contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    finally:
        emulator.stop()
    click.echo("Stopped.")
