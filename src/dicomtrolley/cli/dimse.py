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

DICOM over TLS: ``--tls`` (the PACS's certificate checked against the system's
CAs), ``--tls-ca FILE`` (against this CA instead), ``--tls-cert FILE`` and
``--tls-key FILE`` (our certificate: the client's, and the C-MOVE storage SCP's),
the key's password in ``$DICOMTROLLEY_TLS_KEY_PASSWORD``. ``--tls-no-verify``
encrypts without checking who answers (tests only). Any ``--tls-*`` option
implies ``--tls``. In a script: ``tls=DIMSETLS(ca_file=..., cert_file=...,
key_file=...)``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.dimse.settings import (
    KEY_PASSWORD_ENV,
    DIMSETimeouts,
    check_ae_title,
)

if TYPE_CHECKING:  # the DIMSE stack is imported when a DIMSE protocol is used
    from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet, DICOMQRMove
    from dicomtrolley.dimse.tls import DIMSETLS

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
    tls: DIMSETLS | None = None

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
            host,
            port,
            self.aet,
            self.aec,
            timeout=self.timeouts(connection),
            tls=self.tls,
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
                tls=self.tls,
            )
        return DICOMQRGet(
            host,
            port,
            self.aet,
            self.aec,
            timeout=timeouts,
            max_workers=workers,
            retry=connection.retry,
            tls=self.tls,
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


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

_TLS_OPTIONS = (
    click.option(
        "--tls",
        is_flag=True,
        help="DIMSE protocols: DICOM over TLS; the PACS's certificate is checked "
        "against the system's CAs (or --tls-ca).",
    ),
    click.option(
        "--tls-ca",
        type=_FILE,
        metavar="FILE",
        help="DIMSE over TLS: the CA certificate(s) to check the PACS's against "
        "(PEM). Implies --tls.",
    ),
    click.option(
        "--tls-cert",
        type=_FILE,
        metavar="FILE",
        help="DIMSE over TLS: our certificate (PEM), shown to the PACS and used by "
        "the C-MOVE storage SCP. Implies --tls.",
    ),
    click.option(
        "--tls-key",
        type=_FILE,
        metavar="FILE",
        help=f"DIMSE over TLS: the private key of --tls-cert (PEM; an encrypted "
        f"one's password in ${KEY_PASSWORD_ENV}). Implies --tls.",
    ),
    click.option(
        "--tls-no-verify",
        is_flag=True,
        help="DIMSE over TLS without checking the PACS's certificate: anyone on the "
        "way could pose as the PACS. For tests only. Implies --tls.",
    ),
)


def tls_settings(
    tls: bool,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    no_verify: bool,
) -> DIMSETLS | None:
    """The TLS options as :class:`DIMSETLS` (None: plain TCP); files checked now."""
    from dicomtrolley.dimse.tls import DIMSETLS

    if not (tls or ca or cert or key or no_verify):
        return None
    if key is not None and cert is None:
        raise click.UsageError("--tls-key needs --tls-cert")
    if no_verify:
        if ca is not None:
            raise click.UsageError("--tls-ca and --tls-no-verify: choose one")
        click.echo(
            "warning: --tls-no-verify: the PACS's certificate is not checked; "
            "anyone on the way could pose as the PACS",
            err=True,
        )
    settings = DIMSETLS(
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        key_password=os.environ.get(KEY_PASSWORD_ENV) or None,
        verify=not no_verify,
    )
    settings.client_context()  # a ConfigError naming a file that cannot be used
    return settings


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
            tls: bool = False,
            tls_ca: Path | None = None,
            tls_cert: Path | None = None,
            tls_key: Path | None = None,
            tls_no_verify: bool = False,
            **kwargs: Any,
        ) -> R:
            settings = DIMSESettings(
                host=host.strip() if host else None,
                port=port,
                aet=aet,
                aec=aec,
                store_aet=store_aet,
                store_port=store_port,
                tls=tls_settings(tls, tls_ca, tls_cert, tls_key, tls_no_verify),
            )
            return func(*args, dimse=settings, **kwargs)

        options = _ADDRESS_OPTIONS + _TLS_OPTIONS + (_STORE_OPTIONS if store else ())
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
