"""Options for DIMSE protocols: ``--host``, ``--port``, AE titles, the C-MOVE destination.

``dicomtrolley search --protocol c-find`` and ``dicomtrolley download --protocol
c-get|c-move`` talk DICOM networking instead of DICOMweb; ``--url`` is then not
needed. The command receives ``dimse=`` (:class:`DIMSESettings`), the same as,
in a script::

    searcher = DICOMQR(host, port, aet=aet, aec=aec)
    downloader = DICOMQRGet(host, port, aet=aet, aec=aec)
    downloader = DICOMQRMove(host, port, aet=aet, aec=aec,
                             store_aet=store_aet, store_port=store_port)

``--timeout CONNECT,READ`` applies too: CONNECT to the connection and the
association request, READ as the idle timeout (the longest silence of the PACS).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.dimse.settings import DIMSETimeouts, check_ae_title

if TYPE_CHECKING:  # the DIMSE stack is imported when a DIMSE protocol is used
    from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet, DICOMQRMove

R = TypeVar("R")

DIMSE_PROTOCOLS = ("c-find", "c-get", "c-move")
DEFAULT_AET = "DICOMTROLLEY"
DEFAULT_AEC = "ANY-SCP"
DEFAULT_STORE_PORT = 11112


@dataclass(frozen=True)
class DIMSESettings:
    """Where the PACS listens, the AE titles, and the C-MOVE destination."""

    host: str | None = None
    port: int | None = None
    aet: str = DEFAULT_AET
    aec: str = DEFAULT_AEC
    store_aet: str | None = None
    store_port: int = DEFAULT_STORE_PORT

    def require_address(self, protocol: str) -> tuple[str, int]:
        """(host, port), or a usage error naming what is missing."""
        missing = [
            name
            for name, value in (("--host", self.host), ("--port", self.port))
            if not value
        ]
        if missing:
            raise click.UsageError(
                f"--protocol {protocol} needs {' and '.join(missing)} (the PACS's "
                "DICOM address)"
            )
        assert self.host is not None and self.port is not None
        return self.host, self.port

    @staticmethod
    def timeouts(connection: ConnectionSettings) -> DIMSETimeouts:
        """--timeout CONNECT,READ as DIMSE timeouts (READ is the idle timeout),
        else the profile's (``timeouts.dimse_idle``, ``timeouts.dimse_total``).

        ``--timeout-total`` bounds each DIMSE operation (0: no bound).
        """
        timeouts = connection.dimse_timeout or DIMSETimeouts.coerce(connection.timeout)
        if connection.timeout_total is not None:
            timeouts = replace(timeouts, total=connection.timeout_total or None)
        return timeouts

    def searcher(self, connection: ConnectionSettings) -> DICOMQR:
        from dicomtrolley.dicom_qr import DICOMQR

        host, port = self.require_address("c-find")
        return DICOMQR(
            host, port, self.aet, self.aec, timeout=self.timeouts(connection)
        )

    def downloader(
        self, protocol: str, connection: ConnectionSettings, workers: int
    ) -> DICOMQRGet | DICOMQRMove:
        from dicomtrolley.dicom_qr import DICOMQRGet, DICOMQRMove

        host, port = self.require_address(protocol)
        timeouts = self.timeouts(connection)
        if protocol == "c-move":
            return DICOMQRMove(
                host,
                port,
                self.aet,
                self.aec,
                store_aet=self.store_aet,
                store_port=self.store_port,
                timeout=timeouts,
                max_workers=workers,
                retry=connection.retry,
            )
        return DICOMQRGet(
            host,
            port,
            self.aet,
            self.aec,
            timeout=timeouts,
            max_workers=workers,
            retry=connection.retry,
        )


def _ae_title(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    if value is None:
        return None
    try:
        return check_ae_title(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


_ADDRESS_OPTIONS = (
    click.option(
        "--host",
        metavar="HOST",
        help="DIMSE protocols: the PACS's host name or address.",
    ),
    click.option(
        "--port",
        type=click.IntRange(1, 65535),
        help="DIMSE protocols: the PACS's DICOM port.",
    ),
    click.option(
        "--aet",
        default=DEFAULT_AET,
        show_default=True,
        callback=_ae_title,
        help="DIMSE protocols: our (calling) AE title.",
    ),
    click.option(
        "--aec",
        default=DEFAULT_AEC,
        show_default=True,
        callback=_ae_title,
        help="DIMSE protocols: the PACS's (called) AE title.",
    ),
)

_STORE_OPTIONS = (
    click.option(
        "--store-aet",
        callback=_ae_title,
        help="C-MOVE: the move destination AE title the PACS knows (default: --aet).",
    ),
    click.option(
        "--store-port",
        type=click.IntRange(1, 65535),
        default=DEFAULT_STORE_PORT,
        show_default=True,
        help="C-MOVE: the port to receive on, as registered on the PACS.",
    ),
)


def _apply(
    options: tuple[Callable[[Callable[..., Any]], Callable[..., Any]], ...],
    func: Callable[..., R],
) -> Callable[..., R]:
    for option in reversed(options):
        func = option(func)
    return func


def dimse_options(
    store: bool = False,
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Add the DIMSE options (with ``store``: the C-MOVE destination ones too);
    the command receives ``dimse=`` (:class:`DIMSESettings`)."""

    def decorate(func: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(func)
        def wrapper(
            *args: Any,
            host: str | None,
            port: int | None,
            aet: str,
            aec: str,
            store_aet: str | None = None,
            store_port: int = DEFAULT_STORE_PORT,
            **kwargs: Any,
        ) -> R:
            settings = DIMSESettings(
                host=host.strip() if host else None,
                port=port,
                aet=aet,
                aec=aec,
                store_aet=store_aet,
                store_port=store_port,
            )
            return func(*args, dimse=settings, **kwargs)

        options = _ADDRESS_OPTIONS + (_STORE_OPTIONS if store else ())
        return _apply(options, wrapper)

    return decorate


def optional_url_option(func: Callable[..., R]) -> Callable[..., R]:
    """``--url`` that DIMSE protocols do without (checked by :func:`require_url`)."""
    return click.option(
        "--url",
        metavar="URL",
        help="DICOMweb root of the server, e.g. http://127.0.0.1:8042/dicom-web "
        "(not needed with a DIMSE --protocol)",
    )(func)


def require_url(url: str | None, protocol: str) -> str:
    """url, or the usage error click gives for a missing required option."""
    if not url:
        raise click.UsageError(
            f"Missing option '--url' (needed for --protocol {protocol}; use "
            "--protocol c-find/c-get/c-move with --host and --port for DIMSE)"
        )
    return url
