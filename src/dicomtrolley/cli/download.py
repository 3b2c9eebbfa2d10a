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
renamed when complete and verified. A re-run fetches only what is missing or
damaged, whatever the layout and protocol: the folder's index
(``.dicomtrolley/index.sqlite``) knows what is there, and each outcome is
appended to ``manifest.jsonl`` (``--manifest-csv FILE``: a CSV copy at the end;
``dicomtrolley report DIR`` summarises).

``--protocol wado-uri`` fetches one instance per request from the WADO-URI
endpoint: ``--wado-uri-url``, or by default ``--url`` with its final
``/dicom-web`` replaced by ``/wado`` (Orthanc's layout). When ``--url`` does not
end in ``/dicom-web`` the endpoint cannot be guessed and must be given.

``--protocol c-get`` and ``--protocol c-move`` search with C-FIND and download
with DICOM networking instead (``--host``, ``--port``, ``--aet``, ``--aec``; no
``--url``). C-MOVE needs a move destination registered on the PACS: AE title
``--store-aet`` (default ``--aet``) at this machine and ``--store-port``, where
dicomtrolley listens while it downloads.

``--protocol`` given several times is an order of preference: per study, when
one protocol fails for good (refused, 404, not supported), the next is tried
(:class:`~dicomtrolley.fallback.FallbackDownloader`).

A query option given several times means any of its values; values that match
nothing are named, and the exit status is then 1. Before any search, the output
folder must be writable (else exit 2). Ctrl-C stops the download, prints what
was saved and exits with 130.

Without any query option every study on the server would be downloaded; that
takes ``--all``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import click

from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.cli.main import (
    VERBOSITY_KEY,
    QueryOptions,
    connection_options,
    query_options,
    quiet,
    report_error,
    stderr_console,
    warn,
)
from dicomtrolley.cli.progress import RichProgress, TransferCounts
from dicomtrolley.cli.search import (
    count,
    describe_query,
    dimse_queries,
    find_per_query,
    noun,
    qido_queries,
    report_unmatched,
)
from dicomtrolley.cli.transfer import (
    DEFAULT_LAYOUT,
    EXIT_INTERRUPTED,
    TransferOptions,
    check_output,
    default_wado_uri_url,
    interrupted,
    print_fallbacks,
    storage_for,
    summary,
    transfer_options,
)
from dicomtrolley.core import (
    DICOMDownloadable,
    Query,
    QueryLevels,
    Study,
)
from dicomtrolley.download import DownloadReport
from dicomtrolley.exceptions import (
    DownloadIncompleteError,
    NoQueryResultsError,
)
from dicomtrolley.manifest import Manifest
from dicomtrolley.trolley import Trolley

__all__ = [
    "DEFAULT_LAYOUT",
    "default_wado_uri_url",
    "download",
    "downloadables",
    "find_per_query",
    "storage_for",
    "summary",
]

#: Asked for in C-FIND before C-GET: the storage contexts to propose
DIMSE_INCLUDE_FIELDS = ("SOPClassesInStudy", "SOPClassUID")


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


_NOT_FILTERS = frozenset({"query_level", "include_fields"})


def query_text(query: Query) -> str:
    """``PatientID=DTR001 min_study_date=2023-01-01``: a query's filters, for the
    manifest's ``query`` field (as batch writes ``AccessionNumber=A1``)."""
    parts = []
    for key, value in query.filled_fields().items():
        if key in _NOT_FILTERS:
            continue
        shown = value.strftime("%Y-%m-%d") if hasattr(value, "strftime") else value
        parts.append(f"{key}={shown}")
    return " ".join(parts)


@click.command("download")
@query_options
@transfer_options
@click.option(
    "--all",
    "download_all",
    is_flag=True,
    help="Allow downloading without any query option: everything on the server.",
)
@connection_options
def download(
    query: QueryOptions,
    transfer: TransferOptions,
    download_all: bool,
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
      dicomtrolley download --url ... --protocol wado-rs --protocol c-get \\
          --host pacs --port 104 --accession-number A1 --accession-number A2 -o out

    \b
    Exit status: 0 all downloaded; 1 something failed or a value matched
    nothing (each named); 2 usage error; 130 interrupted (Ctrl-C).
    """
    ctx = click.get_current_context()
    output = transfer.output
    storage = transfer.storage()
    if not query.has_filters and not download_all:
        raise click.UsageError(
            "no query option given: this would download every study on the server. "
            "Narrow the search (--patient-id, --study-uid, --min-date ...) or pass "
            "--all to download everything on purpose.",
            ctx,
        )
    if query.has_filters and download_all:
        raise click.UsageError("--all and query options exclude each other", ctx)
    transfer = transfer.checked()
    check_output(output, warn=warn)
    queries: Sequence[Query] = (
        dimse_queries(query, DIMSE_INCLUDE_FIELDS)
        if transfer.dimse_search
        else dimse_queries(query, ())  # MINT: plain queries
        if transfer.search == "mint"
        else qido_queries(query)
    )
    console = stderr_console()
    with connection.session(pool_size=transfer.workers) as session:
        searcher, downloader = transfer.open(session, connection)
        studies, unmatched = find_per_query(searcher, queries)
        if not query.repeated:
            unmatched = []
        objects = downloadables(studies, query.level)
        if not objects:
            named = "; ".join(describe_query(q) for q in unmatched)
            raise NoQueryResultsError(
                f"no {noun(query.level)} match the query"
                + (f" (nothing for {named})" if named else "")
                + "; nothing to download",
                url=None
                if transfer.dimse_search
                else transfer.mint_url
                if transfer.search == "mint"
                else transfer.qido_url or transfer.url,
            )
        if not quiet():
            console.print(
                f"Found {count(len(objects), query.level)}; downloading with "
                f"{transfer.describe()} ({transfer.workers} worker"
                f"{'s' if transfer.workers != 1 else ''}) to {output}",
                markup=False,
            )
        trolley = Trolley(downloader, searcher, storage=storage)
        manifest = Manifest.in_folder(output)  # every outcome, appended
        report: DownloadReport | None = None
        failure: DownloadIncompleteError | None = None
        stopped = False
        started = time.monotonic()
        with RichProgress(
            console=console,
            disable=True if quiet() else transfer.disable_progress,
        ) as progress:
            try:
                report = trolley.download(
                    objects,
                    output,
                    use_async=transfer.workers > 1,
                    max_workers=transfer.workers,
                    progress=progress,
                    manifest=manifest,
                    query="; ".join(query_text(q) for q in queries) or None,
                )
            except DownloadIncompleteError as error:
                failure = error
            except KeyboardInterrupt:
                stopped = True
        elapsed = time.monotonic() - started
    manifest.close()
    if transfer.manifest_csv is not None:
        manifest.write_csv(transfer.manifest_csv)
    if stopped:
        click.echo(interrupted(progress.counts, output, elapsed), err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if not quiet():
        click.echo(_summary_line(report, progress.counts, elapsed, output))
        print_fallbacks(downloader)
    verbosity = int(ctx.meta.get(VERBOSITY_KEY, 0))
    if failure is not None:
        report_error(failure, verbosity)
    if unmatched:
        report_unmatched(unmatched, len(queries))
    if failure is not None or unmatched:
        ctx.exit(1)


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
