"""The ``dicomtrolley`` command group, the options its commands share, and errors.

Commands are registered by name in :data:`COMMANDS` (``"name": "module:attribute"``)
and imported only when used, so a new command is one module plus one line here.
Options that several commands take are decorators here:

- :func:`connection_options`: ``--user``, ``--password``, ``--token``,
  ``--insecure``, ``--timeout``, ``--retries``, ``-v/--verbose``; the command
  receives ``connection=`` (:class:`~dicomtrolley.cli.connection.ConnectionSettings`).
- :func:`query_options`: what to search for; the command receives ``query=``
  (:class:`QueryOptions`).

Every :class:`~dicomtrolley.exceptions.DICOMTrolleyError` that a command lets
through becomes a short red message on stderr and exit code 1; usage errors exit
with 2 (click's convention). Tracebacks are shown only with ``-vv``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import logging
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from dicomtrolley.cli.connection import (
    LOGIN_OPTIONS,
    PASSWORD_ENV,
    PROFILE_OPTIONS,
    TOKEN_ENV,
    current_profile,
    resolve_settings,
)
from dicomtrolley.credentials import ConfigError
from dicomtrolley.exceptions import (
    DICOMTrolleyAuthError,
    DICOMTrolleyConnectionError,
    DICOMTrolleyError,
    DICOMTrolleyTimeoutError,
)
from dicomtrolley.levels import QueryLevels
from dicomtrolley.logs import ROOT_LOGGER_NAME
from dicomtrolley.transport import DEFAULT_RETRY, DEFAULT_TIMEOUT, Timeout
from dicomtrolley.uids import is_valid_uid

if TYPE_CHECKING:
    from dicomtrolley.query import Query

R = TypeVar("R")

#: Command name -> "module:attribute" of its click command, loaded when used.
COMMANDS: dict[str, str] = {
    "batch": "dicomtrolley.cli.batch:batch",
    "demo": "dicomtrolley.cli.demo:demo",
    "demo-data": "dicomtrolley.cli.demo_data:demo_data",
    "download": "dicomtrolley.cli.download:download",
    "profiles": "dicomtrolley.cli.profiles:profiles",
    "report": "dicomtrolley.cli.report:report",
    "search": "dicomtrolley.cli.search:search",
    "serve": "dicomtrolley.cli.serve:serve",
}
#: Command name -> the first line of its help, for ``dicomtrolley --help`` without
#: importing every command (a test checks them against the commands).
SUMMARIES: dict[str, str] = {
    "batch": "Download the studies listed in FILE: one query per row.",
    "demo": "Find and download studies from the built-in emulator PACS, end to end.",
    "demo-data": "Write synthetic demo studies to DIR (created if needed).",
    "download": "Search a DICOMweb server (QIDO-RS) and download every match.",
    "profiles": "List the server profiles of the config file, or check one.",
    "report": "Summarise an output folder: studies, instances, bytes, failures.",
    "search": "Search a DICOMweb server (QIDO-RS) or a PACS (C-FIND) and list what "
    "it holds.",
    "serve": "Serve a folder of DICOM files as a PACS: MINT, WADO-URI, DICOMweb "
    "(and DIMSE with --dimse-port).",
}

#: What ``search`` and ``batch --dry-run`` write: a table, or JSON or CSV for scripts.
FORMATS = ("table", "json", "csv")

VERBOSITY_KEY = "dicomtrolley.verbosity"
_HINTS: tuple[tuple[type[DICOMTrolleyError], str], ...] = (
    (DICOMTrolleyTimeoutError, "the server is slow or unreachable; try --timeout"),
    (DICOMTrolleyConnectionError, "is the server running, and is --url right?"),
    (DICOMTrolleyAuthError, "check --user and the password, or --token"),
)


# -- output helpers -----------------------------------------------------------------


def stderr_console() -> Console:
    """A rich console on stderr (whatever sys.stderr is when it writes)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def quiet() -> bool:
    """True inside a command run with ``--quiet``."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and int(ctx.meta.get(VERBOSITY_KEY, 0)) < 0


def warn(message: str) -> None:
    """A yellow warning line on stderr (none with ``--quiet``)."""
    if quiet():
        return
    stderr_console().print(Text(f"Warning: {message}", style="yellow"))


def report_error(error: DICOMTrolleyError, verbosity: int = 0) -> None:
    """Describe error on stderr in a few red lines (with a traceback at -vv)."""
    console = stderr_console()
    if verbosity >= 2:
        console.print(Text("".join(traceback.format_exception(error)), style="dim"))
    console.print(Text(f"Error: {error}", style="red"))
    for kind, hint in _HINTS:
        if isinstance(error, kind):
            console.print(Text(f"Hint: {hint}", style="dim"))
            break


_TRANSFERS_LOGGER = f"{ROOT_LOGGER_NAME}.download"


def _not_transfer_failures(record: logging.LogRecord) -> bool:
    return record.name != _TRANSFERS_LOGGER


def configure_logging(verbosity: int) -> Callable[[], None]:
    """Send the ``trolley`` loggers to stderr: warnings, INFO at -v, DEBUG at -vv,
    only errors at -1 (``--quiet``).

    Returns a function that puts the logger back as it was, so that a command run
    inside another program (or a test) leaves no handler behind.
    """
    logger = logging.getLogger(ROOT_LOGGER_NAME)
    previous_level = logger.level
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        verbosity, logging.DEBUG
    )
    handler = RichHandler(
        console=stderr_console(),
        level=level,
        show_time=verbosity >= 2,
        show_path=False,
        markup=False,
        rich_tracebacks=False,
    )
    if verbosity <= 0:  # failed transfers are listed at the end anyway
        handler.addFilter(_not_transfer_failures)
    logger.addHandler(handler)
    logger.setLevel(level)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)

    return restore


# -- option values ------------------------------------------------------------------


def parse_date(text: str) -> datetime:
    """A calendar date given as ``YYYY-MM-DD`` or ``YYYYMMDD`` (DICOM's DA).

    Raises ValueError for anything else, including dates that do not exist.
    """
    value = text.strip()
    for pattern, form in ((r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"), (r"\d{8}", "%Y%m%d")):
        if re.fullmatch(pattern, value):
            try:
                return datetime.strptime(value, form)
            except ValueError:
                raise ValueError(f"{text!r} is not a valid date") from None
    raise ValueError(f"{text!r} is not a date as YYYY-MM-DD or YYYYMMDD")


def parse_timeout(text: str) -> Timeout:
    """Seconds as one number for connect and read, or as ``CONNECT,READ``.

    Raises ValueError for anything but one or two positive numbers.
    """
    parts = text.split(",")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(0 < n < float("inf") for n in numbers):
        raise ValueError(
            f"{text!r} is not a positive number of seconds (or CONNECT,READ)"
        )
    return Timeout(connect=numbers[0], read=numbers[-1])


def with_total(timeout: Timeout, total: float | None) -> Timeout:
    """timeout with the overall deadline of ``--timeout-total`` (0: none)."""
    if total is None:
        return timeout
    return dataclasses.replace(timeout, total=total or None)


def _date_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_date(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


def _timeout_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> Timeout | None:
    if value is None:
        return None
    try:
        return parse_timeout(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


# -- shared options ----------------------------------------------------------------


def _apply(
    options: Sequence[Callable[[Callable[..., Any]], Callable[..., Any]]],
    func: Callable[..., R],
) -> Callable[..., R]:
    """Decorate func with click options so they show in this order in --help."""
    for option in reversed(options):
        func = option(func)
    return func


_CONNECTION_OPTIONS = (
    *PROFILE_OPTIONS,
    click.option(
        "--user",
        metavar="NAME",
        help="User name for HTTP basic auth (or the Vitrea login with "
        "--login-url). Without a profile: DICOMTROLLEY_USER.",
    ),
    click.option(
        "--password",
        envvar=PASSWORD_ENV,
        show_envvar=True,
        metavar="TEXT",
        help="Password for --user. Prompted for (hidden) when not set. Avoid "
        "giving it on the command line: other users may see it.",
    ),
    click.option(
        "--token",
        envvar=TOKEN_ENV,
        show_envvar=True,
        metavar="TEXT",
        help="Bearer token (OAuth2 access token) instead of --user.",
    ),
    *LOGIN_OPTIONS,
    click.option(
        "--insecure",
        is_flag=True,
        help="Do not verify the server's TLS certificate (unsafe).",
    ),
    click.option(
        "--timeout",
        callback=_timeout_option,
        metavar="SECONDS",
        help="Seconds to wait for a connection and for each answer, or "
        f"CONNECT,READ.  [default: {DEFAULT_TIMEOUT.connect:g},"
        f"{DEFAULT_TIMEOUT.read:g}]",
    ),
    click.option(
        "--timeout-total",
        type=click.FloatRange(min=0),
        default=None,
        metavar="SECONDS",
        help="Overall deadline: over HTTP, each answer must arrive within "
        "SECONDS plus one second per "
        f"{(DEFAULT_TIMEOUT.min_rate or 0) / 1000:g} kB of its size, so a "
        "server trickling bytes is given up on; over DIMSE, each C-FIND, C-GET "
        "or C-MOVE must end within SECONDS. 0 for none.  "
        f"[default: {DEFAULT_TIMEOUT.total:g} over HTTP, none over DIMSE]",
    ),
    click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=None,
        help="Tries again after network errors and busy answers.  "
        f"[default: {DEFAULT_RETRY.total}]",
    ),
    click.option(
        "-v",
        "--verbose",
        count=True,
        help="Log progress to stderr; twice for debug logs and tracebacks.",
    ),
    click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="Only errors on stderr: no progress bar, notes or warnings.",
    ),
)


def connection_options(func: Callable[..., R]) -> Callable[..., R]:
    """Add the connection options; the command gets ``connection=`` settings."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        user: str | None,
        password: str | None,
        token: str | None,
        insecure: bool,
        timeout: Timeout | None,
        timeout_total: float | None,
        retries: int | None,
        verbose: int,
        quiet: bool = False,
        login_url: str | None = None,
        realm: str | None = None,
        **kwargs: Any,
    ) -> R:
        ctx = click.get_current_context()
        if quiet and verbose:
            raise click.UsageError("--quiet and --verbose exclude each other", ctx)
        verbose = -1 if quiet else verbose
        ctx.meta[VERBOSITY_KEY] = verbose
        ctx.call_on_close(configure_logging(verbose))
        settings = resolve_settings(
            user=user,
            password=password,
            password_source=ctx.get_parameter_source("password"),
            token=token,
            token_source=ctx.get_parameter_source("token"),
            insecure=insecure,
            timeout=with_total(timeout or DEFAULT_TIMEOUT, timeout_total),
            timeout_total=timeout_total,
            retries=retries,
            warn=warn,
            ask_password=_ask_password,
            login_url=login_url,
            realm=realm,
            profile=current_profile(),
            timeout_given=timeout is not None,
        )
        return func(*args, connection=settings, **kwargs)

    return _apply(_CONNECTION_OPTIONS, wrapper)


def _ask_password(prompt: str) -> str:
    text: str = click.prompt(prompt, hide_input=True, err=True)
    return text


#: The ends of an open date range (``--min-date`` or ``--max-date`` alone).
EARLIEST = datetime(1800, 1, 1)
LATEST = datetime(9999, 12, 31)


@dataclass(frozen=True)
class QueryOptions:
    """What the query options asked for, ready to become library queries.

    A query option given several times means any of its values: one query per
    value (per combination, when several such options are repeated).
    """

    patient_ids: tuple[str, ...] = ()
    patient_name: str = ""
    accession_numbers: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    series_uid: str = ""
    modalities: tuple[str, ...] = ()
    min_date: datetime | None = None
    max_date: datetime | None = None
    level: QueryLevels = QueryLevels.STUDY
    include_fields: tuple[str, ...] = ()
    limit: int = 0

    @property
    def has_filters(self) -> bool:
        """True when at least one option narrows the search."""
        return bool(
            self.patient_ids
            or self.patient_name
            or self.accession_numbers
            or self.study_uids
            or self.series_uid
            or self.modalities
            or self.min_date
            or self.max_date
        )

    @property
    def repeated(self) -> bool:
        """True when a query option was given more than one value."""
        return any(
            len(values) > 1
            for values in (self.patient_ids, self.accession_numbers, self.study_uids)
        )

    def queries(self, include_fields: Sequence[str] = ()) -> list[Query]:
        """One Query per value (combination) of the repeated options.

        One date alone is an open range (``--min-date``: from that day on);
        since QIDO-RS and MINT queries take both ends, the other end is filled
        with :data:`EARLIEST` or :data:`LATEST`.
        """
        from dicomtrolley.query import Query  # pydicom and pydantic: when needed

        fields = list(dict.fromkeys([*self.include_fields, *include_fields]))
        min_date, max_date = self.min_date, self.max_date
        if min_date or max_date:
            min_date, max_date = min_date or EARLIEST, max_date or LATEST
        return [
            Query(
                StudyInstanceUID=study_uid,
                PatientID=patient_id,
                PatientName=self.patient_name,
                AccessionNumber=accession_number,
                SeriesInstanceUID=self.series_uid,
                ModalitiesInStudy="\\".join(self.modalities),
                min_study_date=min_date,
                max_study_date=max_date,
                query_level=self.level,
                include_fields=fields,
            )
            for study_uid, patient_id, accession_number in itertools.product(
                self.study_uids or ("",),
                self.patient_ids or ("",),
                self.accession_numbers or ("",),
            )
        ]


def _modalities(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...]:
    """``CT,MR`` (or DICOM's ``CT\\MR``) as ("CT", "MR")."""
    parts = [part.strip().upper() for part in re.split(r"[,\\]", value or "")]
    for part in parts:
        if part and not re.fullmatch(r"[A-Z0-9_]{1,16}", part):
            raise click.BadParameter(f"{part!r} is not a DICOM modality code")
    return tuple(dict.fromkeys(part for part in parts if part))


def _values(values: Sequence[str]) -> tuple[str, ...]:
    """Stripped, non-empty, each once, in the order given."""
    return tuple(dict.fromkeys(v.strip() for v in values if v.strip()))


def _uids(
    ctx: click.Context, param: click.Parameter, value: str | tuple[str, ...]
) -> str | tuple[str, ...]:
    """Each value must be a DICOM UID (digits and dots, at most 64 characters)."""
    values = (value,) if isinstance(value, str) else value
    bad = [v.strip() for v in values if v.strip() and not is_valid_uid(v.strip())]
    if bad:
        raise click.BadParameter(
            f"not a DICOM UID (digits and dots, at most 64 characters): "
            f"{', '.join(repr(v) for v in bad)}"
        )
    return value


def _keywords(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """Each value must be a DICOM keyword (``StudyDescription``); commas split."""
    from pydicom.datadict import tag_for_keyword  # pydicom: only when needed

    keywords = [k.strip() for item in value for k in item.split(",") if k.strip()]
    unknown = [keyword for keyword in keywords if not tag_for_keyword(keyword)]
    if unknown:
        raise click.BadParameter(
            f"not a DICOM keyword: {', '.join(unknown)} (e.g. StudyDescription)"
        )
    return tuple(dict.fromkeys(keywords))


_QUERY_OPTIONS = (
    click.option(
        "--patient-id",
        "patient_ids",
        multiple=True,
        help="PatientID (wildcards * ?); repeat for any of several.",
    ),
    click.option("--patient-name", default="", help="PatientName, e.g. 'Doe^J*'."),
    click.option(
        "--accession-number",
        "accession_numbers",
        multiple=True,
        help="AccessionNumber; repeat for any of several.",
    ),
    click.option(
        "--study-uid",
        "study_uids",
        multiple=True,
        callback=_uids,
        metavar="UID",
        help="StudyInstanceUID; repeat for several studies.",
    ),
    click.option(
        "--series-uid",
        default="",
        callback=_uids,
        metavar="UID",
        help="SeriesInstanceUID.",
    ),
    click.option(
        "--modalities",
        callback=_modalities,
        metavar="CT,MR",
        help="Studies holding any of these modalities (ModalitiesInStudy), "
        "comma separated.",
    ),
    click.option(
        "--min-date",
        callback=_date_option,
        metavar="DATE",
        help="Earliest StudyDate (alone: from this day on).",
    ),
    click.option(
        "--max-date",
        callback=_date_option,
        metavar="DATE",
        help="Latest StudyDate (alone: up to this day).",
    ),
    click.option(
        "--level",
        type=click.Choice(["study", "series", "instance"], case_sensitive=False),
        default="study",
        show_default=True,
        help="Search (and download) whole studies, or single series or instances.",
    ),
    click.option(
        "--include-field",
        "include_fields",
        multiple=True,
        callback=_keywords,
        metavar="KEYWORD",
        help="Also ask for this DICOM attribute; repeatable.",
    ),
    click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=0,
        help="At most this many results (0: all).",
    ),
)


def query_options(func: Callable[..., R]) -> Callable[..., R]:
    """Add the query options; the command gets ``query=`` (QueryOptions)."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        patient_ids: tuple[str, ...],
        patient_name: str,
        accession_numbers: tuple[str, ...],
        study_uids: tuple[str, ...],
        series_uid: str,
        modalities: tuple[str, ...],
        min_date: datetime | None,
        max_date: datetime | None,
        level: str,
        include_fields: tuple[str, ...],
        limit: int,
        **kwargs: Any,
    ) -> R:
        if min_date and max_date and min_date > max_date:
            raise click.UsageError("--min-date is after --max-date")
        query = QueryOptions(
            patient_ids=_values(patient_ids),
            patient_name=patient_name.strip(),
            accession_numbers=_values(accession_numbers),
            study_uids=_values(study_uids),
            series_uid=series_uid.strip(),
            modalities=modalities,
            min_date=min_date,
            max_date=max_date,
            level=QueryLevels(level.upper()),
            include_fields=include_fields,
            limit=limit,
        )
        return func(*args, query=query, **kwargs)

    return _apply(_QUERY_OPTIONS, wrapper)


def url_option(func: Callable[..., R]) -> Callable[..., R]:
    """``--url``: the DICOMweb root of the server."""
    return click.option(
        "--url",
        required=True,
        metavar="URL",
        help="DICOMweb root of the server, e.g. http://127.0.0.1:8042/dicom-web",
    )(func)


# -- the group ---------------------------------------------------------------------


class TrolleyGroup(click.Group):
    """A group that imports its commands when used and reports library errors."""

    def __init__(
        self, *args: Any, lazy_commands: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def format_commands(
        self, ctx: click.Context, formatter: click.HelpFormatter
    ) -> None:
        """The command list of ``--help``, from :data:`SUMMARIES` for commands
        not imported yet (importing them all would take most of a second)."""
        limit = formatter.width - 6 - max(len(name) for name in self.list_commands(ctx))
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands or name not in SUMMARIES:
                command = self.get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                summary = click.Command(name, help=SUMMARIES[name])
                rows.append((name, summary.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy_commands:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = self.lazy_commands[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as error:  # a usage error: exit 2, without a hint
            stderr_console().print(Text(f"Error: {error}", style="red"))
            ctx.exit(2)
        except DICOMTrolleyError as error:
            report_error(error, int(ctx.meta.get(VERBOSITY_KEY, 0)))
            ctx.exit(1)


@click.group(
    cls=TrolleyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="dicomtrolley", prog_name="dicomtrolley")
def main() -> None:
    """Find DICOM studies on a PACS and bring them home.

    \b
    Examples:
      dicomtrolley search --url http://pacs/dicom-web --patient-id 123
      dicomtrolley download --url http://pacs/dicom-web --study-uid 1.2.3 -o out
    """


if __name__ == "__main__":  # python -m dicomtrolley.cli.main
    main()
