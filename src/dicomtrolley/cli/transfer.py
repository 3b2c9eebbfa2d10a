"""What ``download`` and ``batch`` share: where to, how, and the checks before work.

:func:`transfer_options` adds the options of a transfer (``--url``,
``--qido-url``, ``-o``, ``--layout``, ``--protocol`` (repeatable: an order of
preference), the DIMSE options, ``--wado-uri-url``, ``--workers``,
``--progress``, ``--manifest-csv``, ``--deidentify`` and its options); the
command receives ``transfer=`` (:class:`TransferOptions`).
:meth:`TransferOptions.open` turns them into a searcher and a downloader, a
:class:`~dicomtrolley.fallback.FallbackDownloader` when several protocols are
given. :func:`check_output` makes sure the output folder can be written before
any search is sent. :func:`interrupted` is the summary after Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import requests
from rich.filesize import decimal

from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.cli.dimse import (
    DIMSE_PROTOCOLS,
    DIMSESettings,
    dimse_options,
    optional_url_option,
    require_url,
)
from dicomtrolley.cli.main import quiet
from dicomtrolley.cli.progress import TransferCounts
from dicomtrolley.config import RAD69_TRANSFER_SYNTAXES
from dicomtrolley.exceptions import StorageError

if TYPE_CHECKING:  # the adapters are imported for the protocols used
    from dicomtrolley.core import Downloader, Searcher
    from dicomtrolley.deid import Deidentifier
    from dicomtrolley.storage import TemplateStorage

R = TypeVar("R")

DEFAULT_LAYOUT = (
    "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
)
DICOMWEB_SUFFIX = "/dicom-web"
DOWNLOAD_PROTOCOLS = ("wado-rs", "wado-uri", "rad69", "c-get", "c-move")
SEARCH_PROTOCOLS = ("qido-rs", "mint", "c-find")
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: Below this much free space a download warns even when its size is unknown.
LOW_SPACE = 1024**3


def storage_for(layout: str, output: Path) -> TemplateStorage:
    """The storage for a --layout: a path template, ``study`` or ``flat``.

    Raises StorageError for a template that is not a safe relative file path.
    """
    from dicomtrolley.storage import FlatStorageDir, StorageDir, TemplateStorage

    if layout == "study":
        return StorageDir(output)
    if layout == "flat":
        return FlatStorageDir(output)
    return TemplateStorage(output, layout)


def default_wado_uri_url(url: str) -> str | None:
    """``http://host/dicom-web`` -> ``http://host/wado``; None for other URLs."""
    base = url.rstrip("/")
    if not base.endswith(DICOMWEB_SUFFIX):
        return None
    return base[: -len(DICOMWEB_SUFFIX)] + "/wado"


@dataclass(frozen=True)
class TransferOptions:
    """The transfer options as given (see :func:`transfer_options`)."""

    url: str | None
    qido_url: str | None
    output: Path
    layout: str
    protocols: tuple[str, ...]
    dimse: DIMSESettings
    wado_uri_url: str | None
    workers: int
    show_progress: bool | None
    mint_url: str | None = None
    rad69_url: str | None = None
    search_protocol: str | None = None  # None: C-FIND, MINT or QIDO-RS (see search)
    manifest_csv: Path | None = None
    deidentify: str | None = None
    deid_retain_dates: bool = False
    deid_retain_device: bool = False

    @property
    def protocol(self) -> str:
        """The first choice."""
        return self.protocols[0]

    @property
    def search(self) -> str:
        """--search-protocol, else C-FIND when the first protocol is DIMSE, MINT
        when only --mint-url says where to search, else QIDO-RS."""
        if self.search_protocol:
            return self.search_protocol
        if self.protocol in DIMSE_PROTOCOLS:
            return "c-find"
        if self.mint_url and not (self.url or self.qido_url):
            return "mint"
        return "qido-rs"

    @property
    def dimse_search(self) -> bool:
        """Search with C-FIND, else over HTTP."""
        return self.search == "c-find"

    @property
    def disable_progress(self) -> bool | None:
        return None if self.show_progress is None else not self.show_progress

    def storage(self) -> TemplateStorage:
        """The storage of --layout in --output, or a usage error.

        With --deidentify (or a profile's ``deid`` table) it de-identifies each
        instance (:mod:`dicomtrolley.deid`); an output folder that holds other
        data (another key or profile, identified files) is a usage error.
        """
        try:
            storage = storage_for(self.layout, self.output)
        except StorageError as error:
            raise click.BadParameter(error.message, param_hint="'--layout'") from error
        deidentifier = self.deidentifier()
        if deidentifier is not None:
            from dicomtrolley.deid import DeidFolderError

            try:
                deidentifier.check_existing(self.output)
            except DeidFolderError as error:
                raise click.UsageError(error.message) from error
            storage.transform = deidentifier
        return storage

    def deid_requested(self) -> bool:
        """Whether --deidentify or the profile's ``deid`` table asks for it
        (without building the de-identifier)."""
        from dicomtrolley.cli.connection import current_profile

        profile = current_profile()
        return self.deidentify is not None or (
            profile is not None and profile.deid is not None
        )

    def layout_option(self) -> str:
        """The layout as given (``--layout``, and whether files are
        de-identified), for the rows of a batch an earlier run completed."""
        return f"{self.layout}|deid" if self.deid_requested() else self.layout

    def deidentifier(self) -> Deidentifier | None:
        """The de-identification asked for (options first, then the profile's)."""
        from dicomtrolley.cli.connection import current_profile

        profile = current_profile()
        config = profile.deid if profile is not None else None
        if self.deidentify is None and config is None:
            return None
        from dicomtrolley.deid import Deidentifier

        key = config.secret_key() if config is not None else None
        return Deidentifier(
            key,
            self.deidentify or (config.profile if config else "basic"),
            retain_dates=self.deid_retain_dates or bool(config and config.retain_dates),
            retain_device=self.deid_retain_device
            or bool(config and config.retain_device),
            retain_uids=bool(config and config.retain_uids),
        )

    def checked(self) -> TransferOptions:
        """These options with the URLs each protocol needs, or a usage error."""
        if self.show_progress and quiet():
            raise click.UsageError("--quiet and --progress exclude each other")
        url, wado_uri_url, search = self.url, self.wado_uri_url, self.search
        if search == "qido-rs":
            require_url(self.qido_url or url, self.protocol)
        if search == "mint" and not self.mint_url:
            raise click.UsageError("searching with MINT needs --mint-url")
        if "wado-rs" in self.protocols:
            url = require_url(url, "wado-rs")
        if "wado-uri" in self.protocols and not wado_uri_url:
            wado_uri_url = default_wado_uri_url(url) if url else None
            if wado_uri_url is None:
                raise click.UsageError(
                    f"cannot derive the WADO-URI endpoint from --url {url} (it does "
                    "not end in /dicom-web); give --wado-uri-url"
                    if url
                    else "--protocol wado-uri needs --wado-uri-url (or --url)"
                )
        if "rad69" in self.protocols and not self.rad69_url:
            raise click.UsageError("--protocol rad69 needs --rad69-url")
        for protocol in (*self.protocols, search):
            if protocol in DIMSE_PROTOCOLS:
                self.dimse.require_address(protocol)
        return dataclasses.replace(
            self, url=url, wado_uri_url=wado_uri_url, search_protocol=search
        )

    def searcher(
        self, session: requests.Session, connection: ConnectionSettings
    ) -> Searcher:
        if self.dimse_search:
            return self.dimse.searcher(connection)
        if self.search == "mint":
            from dicomtrolley.mint import Mint

            return Mint(
                session,
                str(self.mint_url),
                timeout=connection.timeout,
                retry=connection.retry,
            )
        from dicomtrolley.cli.search import qido_searcher

        return qido_searcher(session, self.qido_url or str(self.url), connection)

    def downloader_for(
        self,
        protocol: str,
        session: requests.Session,
        connection: ConnectionSettings,
    ) -> Downloader:
        if protocol in DIMSE_PROTOCOLS:
            return self.dimse.downloader(protocol, connection, self.workers)
        if protocol == "rad69":
            from dicomtrolley.rad69 import Rad69

            return Rad69(
                session,
                str(self.rad69_url),
                max_workers=self.workers,
                transfer_syntax_list=(
                    connection.profile.rad69_transfer_syntaxes
                    if connection.profile is not None
                    else RAD69_TRANSFER_SYNTAXES
                ),
                timeout=connection.timeout,
                retry=connection.retry,
            )
        if protocol == "wado-uri":
            from dicomtrolley.wado_uri import WadoURI

            return WadoURI(
                session,
                str(self.wado_uri_url),
                timeout=connection.timeout,
                retry=connection.retry,
            )
        from dicomtrolley.wado_rs import WadoRS

        return WadoRS(
            session, str(self.url), timeout=connection.timeout, retry=connection.retry
        )

    def open(
        self, session: requests.Session, connection: ConnectionSettings
    ) -> tuple[Searcher, Downloader]:
        """The searcher, and the downloader (a FallbackDownloader for several)."""
        searcher = self.searcher(session, connection)
        downloaders = [
            (protocol, self.downloader_for(protocol, session, connection))
            for protocol in self.protocols
        ]
        if len(downloaders) == 1:
            return searcher, downloaders[0][1]
        from dicomtrolley.fallback import FallbackDownloader

        return searcher, FallbackDownloader(downloaders, searcher=searcher)

    def describe(self) -> str:
        """``WADO-RS`` or ``WADO-RS, then C-GET``."""
        return ", then ".join(protocol_label(p) for p in self.protocols)


_LABELS = {"rad69": "RAD-69"}


def protocol_label(protocol: str) -> str:
    """``WADO-RS``, ``RAD-69``: a --protocol value as the manifest names it."""
    return _LABELS.get(protocol.lower(), protocol.upper())


def summary(saved: int, skipped: int, nbytes: int, elapsed: float, output: Path) -> str:
    """One line: files saved and skipped, bytes, time, rate and folder."""
    rate = nbytes / elapsed if elapsed > 0 else 0.0
    files = f"{saved} file{'s' if saved != 1 else ''}"
    return (
        f"Saved {files} ({decimal(nbytes)}) and skipped {skipped} already present "
        f"in {elapsed:.1f} s ({decimal(int(rate))}/s): {output}"
    )


def print_fallbacks(downloader: Downloader | None) -> None:
    """On stderr: which studies came over which protocol, when not all over the
    first (for a FallbackDownloader; nothing for another downloader or None)."""
    if downloader is None:
        return
    from dicomtrolley.fallback import FallbackDownloader

    if not isinstance(downloader, FallbackDownloader):
        return
    first = downloader.downloaders[0][0]
    for uid, protocol in downloader.delivered_by.items():
        if protocol != first:
            click.echo(f"Study {uid} came over {protocol_label(protocol)}", err=True)


def _protocols(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(v.lower() for v in value)) or ("wado-rs",)
    return chosen


_OPTIONS = (
    optional_url_option,
    click.option(
        "--qido-url", metavar="URL", help="QIDO-RS root, when it is not --url."
    ),
    click.option(
        "-o",
        "--output",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder to save to (created if needed).",
    ),
    click.option(
        "--layout",
        default=DEFAULT_LAYOUT,
        show_default=True,
        metavar="TEMPLATE|study|flat",
        help="Where files go below --output: a template of DICOM keywords that "
        "contains {SOPInstanceUID}, or 'study' (study/series/instance) or 'flat'.",
    ),
    click.option(
        "--protocol",
        "protocols",
        type=click.Choice(DOWNLOAD_PROTOCOLS, case_sensitive=False),
        multiple=True,
        callback=_protocols,
        help="WADO-RS fetches a series per request, WADO-URI one instance, RAD-69 "
        "(Vitrea, --rad69-url) a series; C-GET "
        "and C-MOVE use DICOM networking (--host, --port) and search with C-FIND. "
        "Repeat for an order of preference: a study that the first refuses for "
        "good (404, not supported) comes with the next.  [default: wado-rs]",
    ),
    click.option(
        "--search-protocol",
        type=click.Choice(SEARCH_PROTOCOLS, case_sensitive=False),
        default=None,
        help="How to search: QIDO-RS (--url or --qido-url), MINT (--mint-url, "
        "Vitrea) or C-FIND.  [default: C-FIND for a DIMSE --protocol, MINT with "
        "--mint-url and no --url, else QIDO-RS]",
    ),
    click.option(
        "--mint-url",
        metavar="URL",
        help="MINT root (Vitrea), e.g. https://vitrea/rest/api/vault/mint.",
    ),
    click.option(
        "--rad69-url",
        metavar="URL",
        help="RAD-69 endpoint (Vitrea), e.g. https://vitrea/rad69.",
    ),
    dimse_options(store=True),
    click.option(
        "--wado-uri-url",
        metavar="URL",
        help="WADO-URI endpoint. Default: --url with its final /dicom-web replaced "
        "by /wado.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(1, 64),
        default=4,
        show_default=True,
        help="Transfers at the same time.",
    ),
    click.option(
        "--progress/--no-progress",
        "show_progress",
        default=None,
        help="Show a progress bar.  [default: on a terminal]",
    ),
    click.option(
        "--manifest-csv",
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
        help="At the end, also write the folder's manifest (every outcome of every "
        "run, OUTPUT/manifest.jsonl) as CSV to FILE.",
    ),
    click.option(
        "--deidentify",
        metavar="basic|RECIPE",
        default=None,
        help="De-identify each instance before it is written: 'basic' (DICOM "
        "PS3.15 Basic Profile) or a deid recipe file. Pseudonyms and UIDs are "
        "keyed by the secret in $DICOMTROLLEY_DEID_KEY (the same key always "
        "gives the same ones); the mapping is kept in OUTPUT/.dicomtrolley "
        "(mode 0600). Needs the deid extra: pip install 'dicomtrolley[deid]'.",
    ),
    click.option(
        "--deid-retain-dates",
        is_flag=True,
        default=False,
        help="With --deidentify: shift dates by a per-patient offset derived "
        "from the key instead of removing them (PS3.15 Retain Longitudinal "
        "Temporal Information with Modified Dates).",
    ),
    click.option(
        "--deid-retain-device",
        is_flag=True,
        default=False,
        help="With --deidentify: keep device identity (serial numbers, station "
        "names: PS3.15 Retain Device Identity).",
    ),
)


def transfer_options(func: Callable[..., R]) -> Callable[..., R]:
    """Add the transfer options; the command gets ``transfer=`` (TransferOptions)."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        url: str | None,
        qido_url: str | None,
        output: Path,
        layout: str,
        protocols: tuple[str, ...],
        dimse: DIMSESettings,
        wado_uri_url: str | None,
        workers: int,
        show_progress: bool | None,
        search_protocol: str | None = None,
        mint_url: str | None = None,
        rad69_url: str | None = None,
        manifest_csv: Path | None = None,
        deidentify: str | None = None,
        deid_retain_dates: bool = False,
        deid_retain_device: bool = False,
        **kwargs: Any,
    ) -> R:
        if (deid_retain_dates or deid_retain_device) and deidentify is None:
            from dicomtrolley.cli.connection import current_profile

            profile = current_profile()
            if profile is None or profile.deid is None:
                raise click.UsageError(
                    "--deid-retain-dates and --deid-retain-device need --deidentify"
                )
        transfer = TransferOptions(
            url,
            qido_url,
            output,
            layout,
            protocols,
            dimse,
            wado_uri_url,
            workers,
            show_progress,
            mint_url=mint_url,
            rad69_url=rad69_url,
            search_protocol=search_protocol.lower() if search_protocol else None,
            manifest_csv=manifest_csv,
            deidentify=deidentify,
            deid_retain_dates=deid_retain_dates,
            deid_retain_device=deid_retain_device,
        )
        return func(*args, transfer=transfer, **kwargs)

    decorated: Callable[..., R] = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated


# -- checks before work ---------------------------------------------------------------


def check_output(
    output: Path, expected_bytes: int | None = None, warn: Callable[[str], None] = print
) -> int:
    """Make sure output can be written and has room; returns the free bytes.

    The folder is created if needed and a file is written to it and removed.
    With expected_bytes known, less free space than that is refused; with it
    unknown, less than 1 GB is warned about.

    Raises
    ------
    click.UsageError
        When the folder cannot be created or written, or is too small (exit 2).
    """
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".dicomtrolley-check-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise click.UsageError(
            f"cannot write to the output folder {output}: {reason}"
        ) from error
    free = shutil.disk_usage(output).free
    if expected_bytes is not None and expected_bytes > free:
        raise click.UsageError(
            f"not enough space in {output}: {decimal(expected_bytes)} to download, "
            f"{decimal(free)} free"
        )
    if expected_bytes is None and free < LOW_SPACE:
        warn(f"only {decimal(free)} free in {output}")
    return free


def interrupted(
    counts: TransferCounts, output: Path, elapsed: float, lines: Sequence[str] = ()
) -> str:
    """The one-screen summary after Ctrl-C: what was saved and where."""
    head = (
        f"Interrupted after {elapsed:.1f} s: {counts.downloaded} file"
        f"{'s' if counts.downloaded != 1 else ''} saved "
        f"({decimal(counts.bytes_saved)}), {counts.skipped} already present, in "
        f"{output.resolve()}."
    )
    tail = (
        "Files are written under a temporary name and renamed when complete: "
        "every file there is whole. Run the same command again to fetch the rest."
    )
    return "\n".join([head, *lines[:15], tail])
