"""``dicomtrolley download``: search with QIDO-RS, fetch every match to a folder.

The same as, in a script::

    trolley = Trolley(WadoRS(session, url), QidoRS(session, url),
                      storage=TemplateStorage(output, template))
    studies = trolley.find_studies(Query(PatientID="123"))
    trolley.download(studies, output, use_async=True, max_workers=4)

Files are written to ``--output`` in the ``--layout``: a path template of DICOM
keywords (default ``{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``),
``study`` (``<study>/<series>/<instance>``, dicomtrolley's classic layout) or
``flat`` (all files in one folder). Files are written under a temporary name and
renamed when complete and verified. With ``--protocol wado-uri`` and a layout of
UIDs only (``study``, ``flat``), files already there and intact are skipped; the
library cannot know the path of a file before it arrives when the layout uses
other attributes (``{PatientID}``), nor which instances a WADO-RS series holds,
so those download again.

``--protocol wado-uri`` fetches one instance per request from the WADO-URI
endpoint: ``--wado-uri-url``, or by default ``--url`` with its final
``/dicom-web`` replaced by ``/wado`` (Orthanc's layout). When ``--url`` does not
end in ``/dicom-web`` the endpoint cannot be guessed and must be given.

``--protocol c-get`` and ``--protocol c-move`` search with C-FIND and download
with DICOM networking instead (``--host``, ``--port``, ``--aet``, ``--aec``; no
``--url``). C-MOVE needs a move destination registered on the PACS: AE title
``--store-aet`` (default ``--aet``) at this machine and ``--store-port``, where
dicomtrolley listens while it downloads.

Without any query option every study on the server would be downloaded; that
takes ``--all``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import click
from rich.filesize import decimal

from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.cli.dimse import (
    DIMSE_PROTOCOLS,
    DIMSESettings,
    dimse_options,
    optional_url_option,
    require_url,
)
from dicomtrolley.cli.main import (
    VERBOSITY_KEY,
    QueryOptions,
    connection_options,
    query_options,
    report_error,
    stderr_console,
)
from dicomtrolley.cli.progress import RichProgress, TransferCounts
from dicomtrolley.cli.search import (
    count,
    dimse_queries,
    find_studies,
    noun,
    qido_queries,
    qido_searcher,
)
from dicomtrolley.core import (
    DICOMDownloadable,
    Downloader,
    Query,
    QueryLevels,
    Searcher,
    Study,
)
from dicomtrolley.download import DownloadReport
from dicomtrolley.exceptions import (
    DownloadIncompleteError,
    NoQueryResultsError,
    StorageError,
)
from dicomtrolley.storage import (
    FlatStorageDir,
    StorageDir,
    TemplateStorage,
)
from dicomtrolley.trolley import Trolley
from dicomtrolley.wado_rs import WadoRS
from dicomtrolley.wado_uri import WadoURI

DEFAULT_LAYOUT = (
    "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
)
DICOMWEB_SUFFIX = "/dicom-web"
#: Asked for in C-FIND before C-GET: the storage contexts to propose
DIMSE_INCLUDE_FIELDS = ("SOPClassesInStudy", "SOPClassUID")


def storage_for(layout: str, output: Path) -> TemplateStorage:
    """The storage for a --layout: a path template, ``study`` or ``flat``.

    Raises StorageError for a template that is not a safe relative file path.
    """
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


def downloadables(
    studies: Sequence[Study], level: QueryLevels
) -> list[DICOMDownloadable]:
    """What to download: the studies, or just the series or instances found."""
    if level == QueryLevels.STUDY:
        return list(studies)
    series = [item for study in studies for item in study.series]
    if level == QueryLevels.SERIES:
        return list(series)
    return [instance for item in series for instance in item.instances]


def summary(saved: int, skipped: int, nbytes: int, elapsed: float, output: Path) -> str:
    """One line: files saved and skipped, bytes, time, rate and folder."""
    rate = nbytes / elapsed if elapsed > 0 else 0.0
    files = f"{saved} file{'s' if saved != 1 else ''}"
    return (
        f"Saved {files} ({decimal(nbytes)}) and skipped {skipped} already present "
        f"in {elapsed:.1f} s ({decimal(int(rate))}/s): {output}"
    )


@click.command("download")
@optional_url_option
@click.option("--qido-url", metavar="URL", help="QIDO-RS root, when it is not --url.")
@query_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to save to (created if needed).",
)
@click.option(
    "--layout",
    default=DEFAULT_LAYOUT,
    show_default=True,
    metavar="TEMPLATE|study|flat",
    help="Where files go below --output: a template of DICOM keywords that "
    "contains {SOPInstanceUID}, or 'study' (study/series/instance) or 'flat'.",
)
@click.option(
    "--protocol",
    type=click.Choice(["wado-rs", "wado-uri", "c-get", "c-move"], case_sensitive=False),
    default="wado-rs",
    show_default=True,
    help="WADO-RS fetches a series per request, WADO-URI one instance; C-GET and "
    "C-MOVE use DICOM networking (--host, --port) and search with C-FIND.",
)
@dimse_options(store=True)
@click.option(
    "--wado-uri-url",
    metavar="URL",
    help="WADO-URI endpoint. Default: --url with its final /dicom-web replaced "
    "by /wado.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Transfers at the same time.",
)
@click.option(
    "--all",
    "download_all",
    is_flag=True,
    help="Allow downloading without any query option: everything on the server.",
)
@click.option(
    "--progress/--no-progress",
    "show_progress",
    default=None,
    help="Show a progress bar.  [default: on a terminal]",
)
@connection_options
def download(
    url: str | None,
    qido_url: str | None,
    query: QueryOptions,
    output: Path,
    layout: str,
    protocol: str,
    dimse: DIMSESettings,
    wado_uri_url: str | None,
    workers: int,
    download_all: bool,
    show_progress: bool | None,
    connection: ConnectionSettings,
) -> None:
    """Search a DICOMweb server (QIDO-RS) and download every match.

    \b
    Examples:
      dicomtrolley download --url http://pacs/dicom-web --study-uid 1.2.3 -o out
      dicomtrolley download --url ... --patient-id DTR001 --modalities MR -o out \\
          --layout '{PatientID}/{StudyDate}/{SOPInstanceUID}.dcm'
      dicomtrolley download --url ... --all -o everything --protocol wado-uri
      dicomtrolley download --protocol c-get --host pacs --port 104 --aec PACS \\
          --study-uid 1.2.3 -o out
    """
    ctx = click.get_current_context()
    try:
        storage = storage_for(layout, output)
    except StorageError as error:
        raise click.BadParameter(error.message, ctx, param_hint="'--layout'") from error
    if not query.has_filters and not download_all:
        raise click.UsageError(
            "no query option given: this would download every study on the server. "
            "Narrow the search (--patient-id, --study-uid, --min-date ...) or pass "
            "--all to download everything on purpose.",
            ctx,
        )
    if protocol not in DIMSE_PROTOCOLS:
        url = require_url(url, protocol)
    if protocol == "wado-uri" and url:
        wado_uri_url = wado_uri_url or default_wado_uri_url(url)
        if wado_uri_url is None:
            raise click.UsageError(
                f"cannot derive the WADO-URI endpoint from --url {url} (it does not "
                "end in /dicom-web); give --wado-uri-url",
                ctx,
            )
    dimse_protocol = protocol in DIMSE_PROTOCOLS
    queries: Sequence[Query] = (
        dimse_queries(query, DIMSE_INCLUDE_FIELDS)
        if dimse_protocol
        else qido_queries(query)
    )
    console = stderr_console()
    with connection.session(pool_size=workers) as session:
        searcher: Searcher
        downloader: Downloader
        if dimse_protocol:
            searcher = dimse.searcher(connection)
            downloader = dimse.downloader(protocol, connection, workers)
        elif protocol == "wado-uri" and wado_uri_url:
            searcher = qido_searcher(session, qido_url or str(url), connection)
            downloader = WadoURI(
                session,
                wado_uri_url,
                timeout=connection.timeout,
                retry=connection.retry,
            )
        else:
            searcher = qido_searcher(session, qido_url or str(url), connection)
            downloader = WadoRS(
                session, str(url), timeout=connection.timeout, retry=connection.retry
            )
        studies = find_studies(searcher, queries)
        objects = downloadables(studies, query.level)
        if not objects:
            raise NoQueryResultsError(
                f"no {noun(query.level)} match the query; nothing to download",
                url=None if dimse_protocol else qido_url or url,
            )
        console.print(
            f"Found {count(len(objects), query.level)}; downloading with "
            f"{protocol.upper()} ({workers} worker{'s' if workers != 1 else ''}) "
            f"to {output}",
            markup=False,
        )
        trolley = Trolley(downloader, searcher, storage=storage)
        report: DownloadReport | None = None
        failure: DownloadIncompleteError | None = None
        started = time.monotonic()
        with RichProgress(console=console, disable=_disable(show_progress)) as progress:
            try:
                report = trolley.download(
                    objects,
                    output,
                    use_async=workers > 1,
                    max_workers=workers,
                    progress=progress,
                )
            except DownloadIncompleteError as error:
                failure = error
        elapsed = time.monotonic() - started
    click.echo(_summary_line(report, progress.counts, elapsed, output))
    if failure is not None:
        report_error(failure, int(ctx.meta.get(VERBOSITY_KEY, 0)))
        ctx.exit(1)


def _disable(show_progress: bool | None) -> bool | None:
    return None if show_progress is None else not show_progress


def _summary_line(
    report: DownloadReport | None,
    counts: TransferCounts,
    elapsed: float,
    output: Path,
) -> str:
    folder = output.resolve()
    if report is not None:
        return summary(
            len(report.saved),
            len(report.skipped),
            report.bytes_written,
            elapsed,
            folder,
        )
    return summary(
        counts.downloaded, counts.skipped, counts.bytes_saved, elapsed, folder
    )
