"""``dicomtrolley batch FILE --dask ADDRESS``: the downloads of a batch on Dask.

The rows are searched on this machine, exactly as without ``--dask`` (same
row statuses, same completed rows skipped, a study two rows find downloaded
once): searching is one request per row, downloading hundreds per study, so
it is the downloads that are spread. Each study found becomes one task of a
:class:`~dicomtrolley.distributed.BatchPlan` (each series of a study larger
than :data:`~dicomtrolley.distributed.DEFAULT_SPLIT_ABOVE` instances); the
workers rebuild the searcher and downloader from the command's settings
(:class:`CommandConnector`) and write into ``--output``, which every worker
must see at that same path.

Secrets never go into a task: a worker reads the password or token from its
own environment (``DICOMTROLLEY_PASSWORD``, ``DICOMTROLLEY_TOKEN``, or the
profile's ``password_env`` ...), and with ``--deidentify`` (or a profile's
``[deid]`` table) the de-identification key from ``DICOMTROLLEY_DEID_KEY`` (or
the profile's ``key_env``). With ``--dask local:N`` the workers are started
with the secrets this command resolved in their environment.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
from rich.console import Console

from dicomtrolley.batchstate import CompletedRows
from dicomtrolley.cli.connection import PASSWORD_ENV, TOKEN_ENV, ConnectionSettings
from dicomtrolley.cli.main import quiet
from dicomtrolley.cli.progress import RichProgress
from dicomtrolley.cli.transfer import TransferOptions
from dicomtrolley.config_model import BasicAuthConfig
from dicomtrolley.credentials import MissingSecretError, Secrets
from dicomtrolley.distributed import BatchOutcome, BatchPlan, TaskResult
from dicomtrolley.distributed.cluster import (
    LOCAL_PREFIX,
    dashboard_link,
    open_client,
    run_batch,
    threads_for,
)
from dicomtrolley.distributed.plan import without_deid
from dicomtrolley.manifest import MANIFEST_NAME, Manifest

if TYPE_CHECKING:
    import requests

    from dicomtrolley.cli.batch import RowResult
    from dicomtrolley.core import Downloader, Searcher
    from dicomtrolley.storage import DICOMDiskStorage

#: Seconds between progress lines when no progress bar is drawn.
LINE_EVERY_S = 10.0


@dataclass(frozen=True)
class CommandConnector:
    """A worker connects with the command's options (no secret inside).

    ``password_env`` / ``token_env``: the variables a worker reads the
    password or token from, when the command had one.
    """

    transfer: TransferOptions
    connection: ConnectionSettings
    server: str
    limit: int
    password_env: str | None = None
    token_env: str | None = None

    @classmethod
    def of(
        cls, transfer: TransferOptions, connection: ConnectionSettings, server: str
    ) -> CommandConnector:
        """The connector of a command's settings, their secrets left out."""
        password_env = token_env = None
        if connection.user is not None and connection.password is not None:
            password_env = _password_env(connection)
        if connection.token:
            token_env = TOKEN_ENV
        profile = connection.profile
        return cls(
            # one transfer at a time per task: the semaphore counts transfers
            transfer=dataclasses.replace(transfer, workers=1, show_progress=False),
            connection=dataclasses.replace(
                connection,
                password=None,
                token=None,
                auth_override=None,
                profile=None if profile is None else without_deid(profile),
            ),
            server=f"{server}:{'+'.join(transfer.protocols)}",
            limit=transfer.workers,
            password_env=password_env,
            token_env=token_env,
        )

    def open(self, pool_size: int) -> tuple[Searcher, Downloader, requests.Session]:
        connection = self.connection
        secrets = Secrets(is_terminal=lambda: False)  # a worker never prompts
        if self.password_env:
            password = secrets.get(
                f"password for {connection.user}", env=self.password_env
            )
            connection = dataclasses.replace(connection, password=password)
        elif self.token_env:
            token = os.environ.get(self.token_env)
            if not token:
                raise MissingSecretError(
                    f"no bearer token on this worker: set {self.token_env}"
                )
            connection = dataclasses.replace(connection, token=token)
        elif connection.profile is not None and connection.user is None:
            connection = dataclasses.replace(
                connection, auth_override=connection.profile.build_auth(secrets)
            )
        session = connection.session(pool_size=pool_size)
        searcher, downloader = self.transfer.open(session, connection)
        return searcher, downloader, session


def _password_env(connection: ConnectionSettings) -> str:
    profile = connection.profile
    if profile is not None and isinstance(profile.auth, BasicAuthConfig):
        return profile.auth.password_env
    return PASSWORD_ENV


def worker_secrets(
    connector: CommandConnector, connection: ConnectionSettings
) -> dict[str, str]:
    """The environment of local workers: the secrets this command resolved."""
    found: dict[str, str] = {}
    if connector.password_env and connection.password:
        found[connector.password_env] = connection.password
    if connector.token_env and connection.token:
        found[connector.token_env] = connection.token
    return found


def deid_key_env(
    storage: DICOMDiskStorage, connection: ConnectionSettings
) -> dict[str, str]:
    """{variable: key} of the storage's de-identifier ({} without one).

    The variable is the profile's ``[deid] key_env`` when the key came from
    the profile's table, else ``DICOMTROLLEY_DEID_KEY``; the de-identifier is
    told, so that the workers read the key from that variable.
    """
    hook = storage.transform
    if hook is None:
        return {}
    from dicomtrolley.deid import KEY_ENV, Deidentifier

    if not isinstance(hook, Deidentifier):
        return {}
    profile = connection.profile
    config = profile.deid if profile is not None else None
    key = config.secret_key() if config is not None else None
    if key is not None and config is not None:
        hook.key_env = config.key_env
    else:
        hook.key_env, key = KEY_ENV, os.environ.get(KEY_ENV)
    return {hook.key_env: key} if key else {}


def build_plan(
    results: Sequence[RowResult],
    connector: CommandConnector,
    transfer: TransferOptions,
    storage: DICOMDiskStorage,
    searcher: Searcher,
    rate: float | None,
) -> BatchPlan:
    """One task per study found (per series of a very large one), in row order."""
    from dicomtrolley.cli.batch import FOUND, REPEATED

    plan = BatchPlan(connector, transfer.output, storage, rate=rate)
    seen: set[str] = set()
    for result in results:
        if result.status not in (FOUND, REPEATED):
            continue
        row = result.row
        for study in result.studies:
            if study.uid in seen:
                continue
            seen.add(study.uid)
            plan.add_study(
                study,
                row=row.number,
                query=f"{row.key.value}={row.value}",
                searcher=searcher,
            )
    return plan


class _Shown:
    """Tasks' results onto the progress display (and lines when it is hidden)."""

    def __init__(self, progress: RichProgress, console: Console, show_lines: bool):
        self.progress = progress
        self.console = console
        self.show_lines = show_lines
        self.started = time.monotonic()
        self.last_line = self.started
        self.bytes = 0

    def __call__(self, result: TaskResult, done: int, total: int) -> None:
        progress = self.progress
        progress.advance_bytes(result.bytes_saved)
        for n in range(result.saved):
            progress.instance_done(result.bytes_saved if n == 0 else 0)
        for _ in range(result.skipped):
            progress.instance_done(skipped=True)
        progress.describe(f"Study {done}/{total}")
        self.bytes += result.bytes_saved
        now = time.monotonic()
        if self.show_lines and (now - self.last_line >= LINE_EVERY_S or done == total):
            self.last_line = now
            rate = self.bytes / max(now - self.started, 1e-9)
            self.console.print(
                f"Studies {done}/{total} done, {_mb(self.bytes)} saved, {_mb(rate)}/s",
                markup=False,
            )


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def download_on_dask(
    ctx: click.Context,
    address: str,
    rate: float | None,
    results: Sequence[RowResult],
    problems: list[str],
    searcher: Searcher,
    storage: DICOMDiskStorage,
    transfer: TransferOptions,
    connection: ConnectionSettings,
    server: str,
    console: Console,
    completed: CompletedRows,
) -> None:
    """Download what the rows found on the cluster at address; exit like batch."""
    from dicomtrolley.cli.batch import (
        _note_complete_rows,
        _record_completed,
        conclude,
    )

    output = transfer.output
    connector = CommandConnector.of(transfer, connection, server)
    plan = build_plan(results, connector, transfer, storage, searcher, rate)
    manifest = Manifest(
        output / MANIFEST_NAME,
        run=plan.run,
        run_started=plan.run_started,
        folder=output,
    )
    deid_env = deid_key_env(storage, connection)  # before the plan's settings
    local = address.startswith(LOCAL_PREFIX)
    count = address[len(LOCAL_PREFIX) :]
    workers = int(count) if local and count.isdigit() else 1
    by_row = {result.row.number: result.row for result in results}
    started = time.monotonic()
    outcome = BatchOutcome()
    stopped = False
    with open_client(
        address,
        threads_per_worker=threads_for(connector.limit, workers),
        env={**worker_secrets(connector, connection), **deid_env} if local else None,
    ) as client:
        if not quiet():
            link = dashboard_link(client)
            console.print(
                f"Dask: {len(plan.tasks)} tasks on {address}, at most "
                f"{connector.limit} transfers at once"
                + (f", {rate:g} requests/s" if rate else "")
                + (f"; dashboard: {link}" if link else "; no dashboard (needs bokeh)"),
                markup=False,
            )
        try:
            with RichProgress(
                console=console,
                description=f"Study 0/{len(plan.tasks)}",
                disable=True if quiet() else transfer.disable_progress,
            ) as progress:
                if plan.instances is not None:
                    progress.add_total(instances=plan.instances)
                _note_complete_rows(results, manifest, output, progress)
                shown = _Shown(
                    progress, console, not quiet() and not console.is_terminal
                )
                try:
                    outcome = run_batch(plan, client, on_result=shown)
                except KeyboardInterrupt:
                    stopped = True
        finally:
            manifest.close()
            succeeded = _studies_done(plan, outcome)
            _record_completed(results, succeeded, completed, output)
    if transfer.manifest_csv is not None:
        manifest.write_csv(transfer.manifest_csv)
    if outcome.stopped is not None and not stopped:
        raise click.ClickException(f"stopped: {outcome.stopped}")
    for result in outcome.failed:
        where = by_row[result.row].describe() if result.row in by_row else "?"
        error = result.error or "; ".join(result.failures[:3])
        problems.append(f"{where}: study {result.key}: {error}")
    conclude(
        ctx,
        progress.counts,
        time.monotonic() - started,
        output,
        problems,
        len(by_row),
        stopped=stopped,
    )


def _studies_done(plan: BatchPlan, outcome: BatchOutcome) -> set[str]:
    """Study UIDs every task of which (one, or one per series) ended without
    a failure."""
    ok = {result.key for result in outcome.results if result.ok}
    studies: dict[str, bool] = {}
    for task in plan.tasks:
        studies[task.study_uid] = studies.get(task.study_uid, True) and task.key in ok
    return {uid for uid, done in studies.items() if done}
