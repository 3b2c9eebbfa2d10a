"""``dicomtrolley batch FILE``: one query per row of a file, then every match.

The file is CSV (``,`` or ``;``), TSV, or one value a line, with a column of
AccessionNumber, StudyInstanceUID or PatientID and optional date and modality
columns (:mod:`dicomtrolley.batchfile`). A file with unusable lines is refused
before anything is sent, naming each line (exit 2).

Every row is searched for first (``--workers`` at a time). A row that matches
nothing, or more than one study where one is expected (accession numbers and
study UIDs, unless ``--allow-many``), is reported by its row and line and not
downloaded. Then every study found is downloaded, ``--workers`` studies at a
time, with the same options as ``download`` (``--protocol`` repeatable for a
fallback order). A study that two rows find is downloaded once, for the first.
Each instance's outcome goes to ``manifest.jsonl`` in the output folder with
its row number.

``--dry-run`` only searches, and lists each row with what it found (studies,
instances) as a table, or as JSON or CSV (``--format``) on stdout.

``--dask tcp://scheduler:8786`` (or ``--dask local:N``, N worker processes
here) downloads the studies on a Dask cluster instead, one task per study,
into ``--output`` as every worker sees it; ``--workers`` is then the most
transfers the server sees at once from the whole cluster, ``--rate`` the most
HTTP requests a second (see :mod:`dicomtrolley.cli.batch_dask`).

Exit status: 0 every row found and downloaded; 1 some row matched nothing or
too much, or some download failed (all listed); 2 usage error or unusable
file; 130 interrupted (Ctrl-C), after a summary of what was saved.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from dicomtrolley.batchfile import BatchFileError, BatchKey, BatchRow, parse_batch
from dicomtrolley.batchstate import CompletedRows
from dicomtrolley.catalog import PRESENT, Catalog
from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.cli.main import (
    EARLIEST,
    FORMATS,
    LATEST,
    connection_options,
    quiet,
    stderr_console,
    warn,
)
from dicomtrolley.cli.progress import RichProgress, TransferCounts
from dicomtrolley.cli.transfer import (
    EXIT_INTERRUPTED,
    TransferOptions,
    check_output,
    interrupted,
    print_fallbacks,
    summary,
    transfer_options,
)
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyError,
    DownloadIncompleteError,
    HTTPStatusError,
    StorageError,
)
from dicomtrolley.manifest import Manifest, Outcomes

if TYPE_CHECKING:  # the download machinery is imported when there is work
    from dicomtrolley.core import Downloader, Query, Searcher, Study
    from dicomtrolley.storage import DICOMDiskStorage
    from dicomtrolley.trolley import Trolley

#: Row statuses of a search.
FOUND, NOT_FOUND, TOO_MANY, SEARCH_FAILED, REPEATED, COMPLETE = (
    "found",
    "not found",
    "too many",
    "search failed",
    "repeated",
    "complete",
)


@dataclass
class RowResult:
    """What one row's search found, and what became of its studies."""

    row: BatchRow
    studies: list[Study] = field(default_factory=list)
    status: str = FOUND
    error: str = ""
    also_in: int | None = None  # the earlier row that found the same studies
    #: for a row an earlier run completed: study UID -> instance UIDs
    done: dict[str, list[str]] = field(default_factory=dict)

    @property
    def study_uids(self) -> list[str]:
        if self.done:
            return list(self.done)
        return [study.uid for study in self.studies]

    @property
    def instances(self) -> int | None:
        """Instances of the studies found, when the server said."""
        if self.done:
            return sum(len(uids) for uids in self.done.values())
        from dicomtrolley.core import instance_count

        counts = [instance_count(study.data) for study in self.studies]
        return None if None in counts else sum(n for n in counts if n is not None)

    def as_dict(self) -> dict[str, Any]:
        row = self.row
        return {
            "row": row.number,
            "line": row.line,
            "key": row.key.value,
            "value": row.value,
            "status": self.status,
            "studies": len(self.study_uids),
            "instances": self.instances,
            "bytes": None,  # QIDO-RS and C-FIND do not tell sizes
            "study_uids": self.study_uids,
            "patient_ids": sorted(
                {str(s.data.get("PatientID", "")) for s in self.studies} - {""}
            ),
            "also_row": self.also_in,
            "error": self.error or None,
        }


# -- searching -----------------------------------------------------------------------


def row_query(row: BatchRow, search: str) -> Query:
    """The query of a row for search (``qido-rs``, ``mint`` or ``c-find``).

    C-FIND takes open date ranges; QIDO-RS and MINT queries need both ends,
    so an open end is closed with EARLIEST or LATEST.
    """
    if search == "c-find":
        from dicomtrolley.cli.download import DIMSE_INCLUDE_FIELDS

        return row.query(include_fields=list(DIMSE_INCLUDE_FIELDS))
    query = row.query()
    if bool(query.min_study_date) != bool(query.max_study_date):
        query = query.model_copy(
            update={
                "min_study_date": query.min_study_date or EARLIEST,
                "max_study_date": query.max_study_date or LATEST,
            }
        )
    if search == "mint":
        return query
    from dicomtrolley.cli.search import _qido_query

    return _qido_query(query, 0)


def row_key(row: BatchRow) -> str:
    """The row's query as stable text (for the completed rows of earlier runs)."""
    return CompletedRows.key_of(row.query().filled_fields())


def _one_line(error: DICOMTrolleyError) -> str:
    from dicomtrolley.download import one_line  # the download stack: when it fails

    return one_line("", error)


def _login_refused(error: DICOMTrolleyError) -> bool:
    if isinstance(error, DICOMTrolleyAuthError):
        return True
    return isinstance(error, HTTPStatusError) and error.status_code in (401, 403)


def search_rows(
    open_searcher: Callable[[], Searcher],
    rows: Sequence[BatchRow],
    *,
    search: str,
    expect_one: bool | None,
    workers: int,
    completed: Callable[[BatchRow], dict[str, list[str]] | None] = lambda row: None,
) -> list[RowResult]:
    """Every row's search, workers at a time, in row order, with its status.

    A row that completed(row) knows from an earlier run is not searched for;
    open_searcher is called once, only when some row is left to search (a
    re-run of a complete batch opens no connection).
    A refused login (HTTP 401/403, a failed Vitrea or OAuth2 login) stops the
    searches and is raised: it would refuse every row the same way.
    """
    refused: list[DICOMTrolleyError] = []
    results = [RowResult(row) for row in rows]
    pending = []
    for result in results:
        done = completed(result.row)
        if done:
            result.status, result.done = COMPLETE, done
        else:
            pending.append(result)
    if not pending:
        return _checked(results, expect_one)
    searcher = open_searcher()

    def one(result: RowResult) -> None:
        row = result.row
        if refused:
            result.status, result.error = SEARCH_FAILED, "not searched: login refused"
            return
        try:
            result.studies = list(searcher.find_studies(row_query(row, search)))
        except DICOMTrolleyError as error:
            if _login_refused(error):
                refused.append(error)
            result.status, result.error = SEARCH_FAILED, _one_line(error)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, pending))
    if refused:
        raise refused[0]
    return _checked(results, expect_one)


def _checked(results: list[RowResult], expect_one: bool | None) -> list[RowResult]:
    """results with the statuses of rows that found nothing, too much, or only
    studies an earlier row found."""
    first_row: dict[str, int] = {}
    for result in results:
        if result.status in (SEARCH_FAILED, COMPLETE):
            continue
        one_expected = (
            expect_one
            if expect_one is not None
            else result.row.key != BatchKey.PATIENT_ID
        )
        if not result.studies:
            result.status = NOT_FOUND
        elif one_expected and len(result.studies) > 1:
            result.status = TOO_MANY
        earlier = {first_row.get(study.uid) for study in result.studies} - {None}
        if result.status == FOUND and earlier and len(earlier) == 1:
            new = [s for s in result.studies if s.uid not in first_row]
            if not new:
                result.status, result.also_in = REPEATED, earlier.pop()
        for study in result.studies:
            first_row.setdefault(study.uid, result.row.number)
    return results


# -- output of a dry run -------------------------------------------------------------

_COLUMNS = ("row", "line", "key", "value", "status", "studies", "instances")


def render(results: Sequence[RowResult], output_format: str) -> str:
    """The rows and what they found as JSON or CSV (table: see print_table)."""
    records = [result.as_dict() for result in results]
    if output_format == "json":
        return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = [*_COLUMNS, "study_uids", "patient_ids", "also_row", "error"]
    writer.writerow(columns)
    for record in records:
        writer.writerow(
            [
                ";".join(value)
                if isinstance(value := record[c], list)
                else ("" if value is None else value)
                for c in columns
            ]
        )
    return buffer.getvalue()


def print_table(results: Sequence[RowResult], console: Console) -> None:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for heading in ("Row", "Line", "Value", "Status", "Studies", "Inst", "Study UIDs"):
        table.add_column(heading, overflow="fold")
    for result in results:
        record = result.as_dict()
        status = record["status"]
        if result.also_in:
            status += f" (row {result.also_in})"
        table.add_row(
            str(record["row"]),
            str(record["line"]),
            f"{result.row.key.label} {result.row.value}",
            status,
            str(record["studies"]),
            "" if record["instances"] is None else str(record["instances"]),
            "\n".join(record["study_uids"]),
        )
    found = sum(len(r.studies) for r in results if r.status == FOUND)
    complete = sum(1 for r in results if r.status == COMPLETE)
    known = [r.instances for r in results if r.status == FOUND]
    instances = (
        f", {sum(n for n in known if n)} instances"
        if known and None not in known
        else ""
    )
    table.caption = f"{len(results)} rows: {found} studies to download{instances}"
    if complete:
        table.caption += f"; {complete} rows complete from an earlier run"
    console.print(table)


# -- downloading ---------------------------------------------------------------------


@dataclass
class _Work:
    """One study to download, for the row that found it first."""

    row: BatchRow
    study: Study


@dataclass
class _Downloads:
    """Failures and counts of the downloads, shared by the worker threads."""

    total: int
    done: int = 0
    failures: list[tuple[_Work, str]] = field(default_factory=list)
    succeeded: set[str] = field(default_factory=set)  # study UIDs
    lock: threading.Lock = field(default_factory=threading.Lock)


class _KnownTotals:
    """A Progress over a RichProgress whose instance total is known beforehand
    (from the searches): the downloaders' own totals are not added again."""

    def __init__(self, display: RichProgress, instances: int | None) -> None:
        self.display = display
        self.fixed = instances is not None
        if instances:
            display.add_total(instances=instances)

    def add_total(self, instances: int = 0, nbytes: int = 0) -> None:
        if not self.fixed:
            self.display.add_total(instances, nbytes)

    def advance_bytes(self, nbytes: int) -> None:
        self.display.advance_bytes(nbytes)

    def instance_done(self, nbytes: int = 0, skipped: bool = False) -> None:
        self.display.instance_done(nbytes, skipped)


def _instances_known(results: Sequence[RowResult], work: Sequence[_Work]) -> int | None:
    """Instances of the studies to download and of the complete rows, if all known."""
    total = 0
    for item in work:
        from dicomtrolley.core import instance_count  # pydicom: only with work

        count = instance_count(item.study.data)
        if count is None:
            return None
        total += count
    for result in results:
        if result.status == COMPLETE:
            total += sum(len(uids) for uids in result.done.values())
    return total


def download_studies(
    work: Sequence[_Work],
    trolley: Trolley,
    output: Path,
    manifest: Manifest,
    progress: RichProgress,
    workers: int,
    state: _Downloads,
    known_instances: int | None = None,
) -> None:
    """Download every study of work, workers at a time; record each in manifest.

    state learns each study's outcome as it happens (also when interrupted).
    """
    stop = threading.Event()
    counting = _KnownTotals(progress, known_instances)

    def one(item: _Work) -> None:
        if stop.is_set():
            return
        with state.lock:
            current = state.done + 1
        progress.describe(f"Study {current}/{state.total} {item.row.value}")
        try:
            trolley.download(
                [item.study],
                output,
                progress=counting,
                manifest=manifest,
                row=item.row.number,
                query=f"{item.row.key.value}={item.row.value}",
            )
            with state.lock:
                state.succeeded.add(item.study.uid)
        except DownloadIncompleteError as error:
            lines = [str(f) for f in getattr(error.report, "failures", [])]
            with state.lock:
                state.failures.append((item, "; ".join(lines[:3]) or str(error)))
        except DICOMTrolleyError as error:
            with state.lock:
                state.failures.append((item, _one_line(error)))
        finally:
            with state.lock:
                state.done += 1

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch")
    try:
        list(pool.map(one, work))
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    progress.describe(f"Studies {state.done}/{state.total}")


def _problem_lines(results: Sequence[RowResult]) -> list[str]:
    lines = []
    for result in results:
        where = result.row.describe()
        if result.status == NOT_FOUND:
            lines.append(f"{where}: no study found")
        elif result.status == TOO_MANY:
            uids = ", ".join(study.uid for study in result.studies[:5])
            more = "" if len(result.studies) <= 5 else ", ..."
            lines.append(
                f"{where}: {len(result.studies)} studies found where one was "
                f"expected (--allow-many to take all): {uids}{more}"
            )
        elif result.status == SEARCH_FAILED:
            lines.append(f"{where}: search failed: {result.error}")
    return lines


# -- the command ---------------------------------------------------------------------


@click.command("batch")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--column",
    metavar="NAME",
    help="What a file without header holds (AccessionNumber, StudyInstanceUID or "
    "PatientID), or which of several key columns to use.",
)
@click.option(
    "--expect-one/--allow-many",
    "expect_one",
    default=None,
    help="Refuse rows that match several studies.  [default: expect one for "
    "accession numbers and study UIDs, allow many for patient IDs]",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Search every row again, also those an earlier run into --output "
    "completed (by default they are only checked on disk).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only search: list each row with what it would download.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS, case_sensitive=False),
    default="table",
    show_default=True,
    help="How --dry-run lists the rows on stdout.",
)
@click.option(
    "--dask",
    "dask_address",
    metavar="ADDRESS",
    help="Download on a Dask cluster: its scheduler (tcp://host:8786), or local:N "
    "for N worker processes on this machine. --output must be the same path on "
    "every worker. Needs dicomtrolley[dask].",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="With --dask: at most N HTTP requests a second to the server from the "
    "whole cluster.",
)
@transfer_options
@connection_options
def batch(
    file: Path,
    column: str | None,
    expect_one: bool | None,
    refresh: bool,
    dry_run: bool,
    output_format: str,
    dask_address: str | None,
    rate: float | None,
    transfer: TransferOptions,
    connection: ConnectionSettings,
) -> None:
    """Download the studies listed in FILE: one query per row.

    \b
    FILE: CSV, TSV or one value a line, with a column of AccessionNumber,
    StudyInstanceUID or PatientID (header names as in a spreadsheet: 'Accession
    No', 'Study UID', 'MRN' ...), optionally StudyDate (or MinDate, MaxDate)
    and Modality.

    \b
    Examples:
      dicomtrolley batch cohort.csv --url http://pacs/dicom-web -o cohort
      dicomtrolley batch uids.txt --url ... -o out --protocol wado-rs --protocol c-get \\
          --host pacs --port 104 --aec PACS
      dicomtrolley batch accessions.txt --column AccessionNumber --url ... -o out \\
          --dry-run --format json
      dicomtrolley batch cohort.csv --profile pacs1 -o /shared/cohort \\
          --dask tcp://scheduler:8786 --workers 8 --rate 50

    \b
    Exit status: 0 all rows found and downloaded; 1 rows not found or matching
    too much, or downloads failed (each listed); 2 usage error or unusable
    file; 130 interrupted (Ctrl-C).
    """
    ctx = click.get_current_context()
    if output_format != "table" and not dry_run:
        raise click.UsageError("--format lists the rows of --dry-run; add --dry-run")
    if dask_address and not dry_run:
        _check_dask(transfer)
    elif rate is not None and not dask_address:
        raise click.UsageError("--rate paces the workers of --dask; add --dask")
    try:
        data = file.read_bytes()
        batch_file = parse_batch(data, column)
        batch_file.raise_for_problems()
    except OSError as error:
        raise click.UsageError(f"cannot read {file}: {error.strerror}") from error
    except BatchFileError as error:
        raise click.UsageError(f"{file}: {error}") from error
    transfer = transfer.checked()
    if not dry_run:
        check_output(transfer.output, warn=warn)
    console = stderr_console()
    rows = batch_file.rows
    completed = CompletedRows(
        transfer.output, _source(transfer), transfer.layout_option()
    )
    storage: DICOMDiskStorage | None = None
    if completed.empty or transfer.deid_requested():
        # Now, before any search: a --layout that cannot work, or a
        # de-identified folder of another key, is refused at once. A re-run
        # whose rows an earlier run completed with this layout (so it works)
        # builds it, and imports pydicom, only when there is something to save.
        storage = transfer.storage()
        completed.layout = storage.layout_key()
    catalog = None if refresh else Catalog.existing(transfer.output)

    def done(row: BatchRow) -> dict[str, list[str]] | None:
        return completed.done(row_key(row), catalog)

    with contextlib.ExitStack() as stack:
        opened: list[tuple[Searcher, Downloader]] = []

        def open_searcher() -> Searcher:
            """The session and adapters, opened when a row needs a search."""
            session = stack.enter_context(
                connection.session(pool_size=transfer.workers)
            )
            opened.append(transfer.open(session, connection))
            return opened[0][0]

        if not quiet():
            console.print(
                f"{file}: {len(rows)} rows of {batch_file.key.label if batch_file.key else '?'}s;"
                f" searching ({transfer.workers} at a time)",
                markup=False,
            )
        results = search_rows(
            open_searcher,
            rows,
            search=transfer.search,
            expect_one=expect_one,
            workers=transfer.workers,
            completed=done,
        )
        problems = _problem_lines(results)
        if dry_run:
            if output_format == "table":
                print_table(results, Console(highlight=False))
            else:
                click.echo(render(results, output_format), nl=False)
            _report_problems(problems, len(rows))
            ctx.exit(1 if problems else 0)
        skipped_rows = sum(1 for r in results if r.status == COMPLETE)
        if skipped_rows and not quiet():
            console.print(
                f"{skipped_rows} of {len(rows)} rows complete from an earlier run: "
                "all their files are there (--refresh to search them again)",
                markup=False,
            )
        searcher, downloader = opened[0] if opened else (None, None)
        if storage is None and _work(results):
            storage = transfer.storage()
            completed.layout = storage.layout_key()
        if dask_address and searcher is not None and storage is not None:
            from dicomtrolley.cli.batch_dask import download_on_dask

            download_on_dask(
                ctx,
                dask_address,
                rate,
                results,
                problems,
                searcher,
                storage,
                transfer,
                connection,
                _source(transfer),
                console,
                completed,
            )
            return
        _download(
            ctx,
            results,
            problems,
            rows,
            searcher,
            downloader,
            storage,
            transfer,
            console,
            completed,
        )


def _check_dask(transfer: TransferOptions) -> None:
    """Dask is installed and the protocols can run on workers, or an error now
    (before any search is sent)."""
    from dicomtrolley.distributed.cluster import require_dask

    require_dask()
    if "c-move" in transfer.protocols:
        raise click.UsageError(
            "--dask cannot use C-MOVE: the PACS sends to one storage address, "
            "and each worker would need its own; use C-GET or WADO"
        )


def _source(transfer: TransferOptions) -> str:
    """The server that answers the searches, for the completed rows."""
    if transfer.dimse_search:
        dimse = transfer.dimse
        return f"dimse://{dimse.host}:{dimse.port}/{dimse.aec}"
    if transfer.search == "mint":
        return f"mint:{transfer.mint_url}"
    return str(transfer.qido_url or transfer.url)


def _note_complete_rows(
    results: Sequence[RowResult],
    manifest: Manifest,
    output: Path,
    progress: RichProgress,
) -> None:
    """The instances of rows complete from an earlier run: skipped, in the
    manifest (with their row) and in the counts."""
    catalog = Catalog.existing(output)
    if catalog is None:
        return
    for result in results:
        if result.status != COMPLETE:
            continue
        outcomes = Outcomes(
            manifest,
            output,
            row=result.row.number,
            query=f"{result.row.key.value}={result.row.value}",
        )
        uids = [uid for instances in result.done.values() for uid in instances]
        entries = catalog.entries_of(uids)
        for uid in uids:
            entry = entries.get(uid)
            if entry is not None:
                outcomes.skipped_entry(entry)
                progress.instance_done(skipped=True)


def _record_completed(
    results: Sequence[RowResult],
    succeeded: set[str],
    completed: CompletedRows,
    output: Path,
) -> None:
    """Note each row whose studies all arrived, with their instances."""
    catalog = Catalog.existing(output)
    if catalog is None:
        return
    for result in results:
        if result.status not in (FOUND, REPEATED) or not result.studies:
            continue
        uids = [study.uid for study in result.studies]
        if not all(uid in succeeded for uid in uids):
            continue
        studies = {
            uid: [
                entry.instance_uid
                for entry in catalog.entries(uid)
                if entry.state == PRESENT and entry.layout == completed.layout
            ]
            for uid in uids
        }
        if all(studies.values()):
            try:
                completed.record(row_key(result.row), studies)
            except StorageError as error:
                warn(str(error))
                return


def _work(results: Sequence[RowResult]) -> list[_Work]:
    seen: set[str] = set()
    work = []
    for result in results:
        if result.status not in (FOUND, REPEATED):
            continue
        for study in result.studies:
            if study.uid not in seen:
                seen.add(study.uid)
                work.append(_Work(result.row, study))
    return work


def _download(
    ctx: click.Context,
    results: Sequence[RowResult],
    problems: list[str],
    rows: Sequence[BatchRow],
    searcher: Searcher | None,
    downloader: Downloader | None,
    storage: DICOMDiskStorage | None,
    transfer: TransferOptions,
    console: Console,
    completed: CompletedRows,
) -> None:
    """Download the studies of results; searcher, downloader and storage are
    None when every row was complete from an earlier run (nothing to fetch)."""
    output = transfer.output
    work = _work(results)
    trolley = None
    if work and searcher is not None and downloader is not None and storage is not None:
        from dicomtrolley.trolley import Trolley

        trolley = Trolley(downloader, searcher, storage=storage)
    if not quiet():
        console.print(
            f"Downloading {len(work)} studies with {transfer.describe()} "
            f"({transfer.workers} at a time) to {output}",
            markup=False,
        )
    manifest = Manifest.in_folder(output)
    started = time.monotonic()
    stopped = False
    state = _Downloads(total=len(work))
    try:
        with RichProgress(
            console=console,
            description=f"Study 0/{len(work)}",
            disable=True if quiet() else transfer.disable_progress,
        ) as progress:
            known = _instances_known(results, work)
            _note_complete_rows(results, manifest, output, progress)
            try:
                if trolley is not None:
                    download_studies(
                        work,
                        trolley,
                        output,
                        manifest,
                        progress,
                        transfer.workers,
                        state,
                        known,
                    )
            except KeyboardInterrupt:
                stopped = True
    finally:
        manifest.close()
        _record_completed(results, state.succeeded, completed, output)
    if transfer.manifest_csv is not None:
        manifest.write_csv(transfer.manifest_csv)
    for item, error in state.failures:
        problems.append(f"{item.row.describe()}: study {item.study.uid}: {error}")
    conclude(
        ctx,
        progress.counts,
        time.monotonic() - started,
        output,
        problems,
        len(rows),
        stopped=stopped,
        after_summary=lambda: print_fallbacks(downloader),
    )


def conclude(
    ctx: click.Context,
    counts: TransferCounts,
    elapsed: float,
    output: Path,
    problems: Sequence[str],
    rows: int,
    *,
    stopped: bool = False,
    after_summary: Callable[[], None] = lambda: None,
) -> None:
    """The end of a batch that downloaded: the summary after Ctrl-C (exit
    130), else the summary line and the problems (exit 1 if any)."""
    if stopped:
        click.echo(interrupted(counts, output, elapsed, problems), err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if not quiet():
        click.echo(
            summary(
                counts.downloaded,
                counts.skipped,
                counts.bytes_saved,
                elapsed,
                output.resolve(),
            )
        )
        after_summary()
    _report_problems(problems, rows)
    if problems:
        ctx.exit(1)


def _report_problems(problems: Sequence[str], rows: int) -> None:
    if not problems:
        return
    shown = "\n".join(f"  - {line}" for line in problems[:200])
    more = len(problems) - 200
    if more > 0:
        shown += f"\n  ... and {more} more"
    click.echo(f"Error: {len(problems)} problem(s) in {rows} rows:\n{shown}", err=True)
