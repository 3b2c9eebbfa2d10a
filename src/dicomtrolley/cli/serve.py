"""``dicomtrolley serve``: the emulator PACS over a folder of DICOM files.

The same as, in a script::

    with Emulator(data, host, port, users={"trolley": "trolley"}) as emulator:
        ...  # serves until the with block ends

It prints the addresses of every protocol (Vitrea login, MINT, WADO-URI,
DICOMweb) and serves until Ctrl-C (or SIGTERM). Files added to the folder while
it runs are picked up within a second. ``--port 0`` picks a free port. Without
``--user`` the one user is ``trolley`` with password ``trolley``. Fill an empty
folder with ``dicomtrolley demo-data DIR``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click

from dicomtrolley.cli.main import configure_logging, warn
from dicomtrolley.emulator import DEFAULT_REALM, DEFAULT_USERS, Emulator


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
        f"  {who}; HTTP basic auth works too",
        "Press Ctrl-C to stop.",
    ]


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
    "-v", "--verbose", count=True, help="Log requests to stderr; twice for debug."
)
def serve(
    data_dir: Path,
    host: str,
    port: int,
    users: dict[str, str],
    session_timeout: float,
    verbose: int,
) -> None:
    """Serve a folder of DICOM files as a PACS: MINT, WADO-URI, DICOMweb.

    \b
    Examples:
      dicomtrolley demo-data data && dicomtrolley serve --data data
      dicomtrolley serve --data data --port 0 --user alice:secret
    """
    if not data_dir.is_dir():
        raise click.UsageError(
            f"{data_dir} is not a folder. Create it with demo studies: "
            f"dicomtrolley demo-data {data_dir}"
        )
    click.get_current_context().call_on_close(configure_logging(verbose))
    emulator = Emulator(
        data_dir,
        host=host,
        port=port,
        users=users or None,
        session_timeout=session_timeout,
        realm=DEFAULT_REALM,
    )
    try:
        emulator.start()
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {host} port {port}: {error.strerror or error}"
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
