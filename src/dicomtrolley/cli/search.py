"""``dicomtrolley search``: a QIDO-RS search shown as a table, JSON or CSV.

The same as, in a script::

    searcher = QidoRS(session, url)
    studies = searcher.find_studies(Query(PatientID="123", query_level="SERIES"))

Results are listed one row per study, series or instance (``--level``). Each row
holds the attributes of its own level and of the levels above it: a series row
also names its patient and study.

``--format json`` (or ``--json``) prints a list with one object per row, DICOM keyword -> value. Every
object has the level's standard columns and the ``--include-field`` attributes
(``null`` when the server did not send them), followed by whatever else the
server sent. Attributes that may hold several values (``ModalitiesInStudy``) are
always lists; numbers are numbers; names and dates are DICOM strings
(``Doe^John``, ``20240229``). ``--csv`` prints the standard columns and the
included fields, several values joined by ``\\`` (``--format csv``). Only
the results go to stdout; notes, warnings and errors go to stderr. Columns that a server does
not return by default are asked for with ``includefield``.

``--protocol mint`` searches a Vitrea server over MINT (``--mint-url``, or
``--url`` as the MINT root), usually behind its login: ``--login-url`` and
``--user`` (``--realm``): ``Mint(create_session(login_url, user, password), url)``.
MINT returns its own set of attributes per level.

``--protocol c-find`` searches with DICOM C-FIND instead (``--host``, ``--port``,
``--aet``, ``--aec``; no ``--url``): ``DICOMQR(host, port, aet, aec)``. C-FIND
returns only the attributes asked for, so every listed column is asked for.

``--modalities CT,MR`` selects studies that hold any of them: it is sent as
``ModalitiesInStudy=CT,MR`` (QIDO-RS lists several values with commas, PS3.18
8.3.4.1). The library's Query has no series-level ``Modality``, so with
``--level series`` it still selects by study (and Orthanc then finds nothing).
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import click
import requests
from pydantic import ValidationError
from pydicom.datadict import dictionary_VM, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import PersonName
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.cli.dimse import (
    DIMSESettings,
    dimse_options,
    optional_url_option,
    require_url,
)
from dicomtrolley.cli.main import (
    FORMATS,
    QueryOptions,
    connection_options,
    query_options,
)
from dicomtrolley.core import Query, QueryLevels, Searcher, Study
from dicomtrolley.mint import Mint, get_valid_fields
from dicomtrolley.qido_rs import (
    HierarchicalQuery,
    QidoRS,
    QidoRSQueryBase,
    RelationalQuery,
)

R = TypeVar("R")


@dataclass(frozen=True)
class Column:
    """One column of the result listing: a DICOM keyword and its table heading.

    ``wrap``: long text that may take several lines in a table; other columns
    keep their width. ``uid``: a UID, folded when it does not fit.
    """

    keyword: str
    heading: str
    wrap: bool = False
    uid: bool = False


_PATIENT_ID = Column("PatientID", "Patient ID")
_PATIENT_NAME = Column("PatientName", "Name", wrap=True)
_DATE = Column("StudyDate", "Date")
_STUDY_UID = Column("StudyInstanceUID", "Study UID", uid=True)
_SERIES_UID = Column("SeriesInstanceUID", "Series UID", uid=True)

#: The standard columns of each level, in display order.
COLUMNS: dict[QueryLevels, tuple[Column, ...]] = {
    QueryLevels.STUDY: (
        _PATIENT_ID,
        _PATIENT_NAME,
        _DATE,
        Column("ModalitiesInStudy", "Mod"),
        Column("StudyDescription", "Description", wrap=True),
        Column("AccessionNumber", "Accession"),
        Column("NumberOfStudyRelatedSeries", "Ser"),
        Column("NumberOfStudyRelatedInstances", "Inst"),
        _STUDY_UID,
    ),
    QueryLevels.SERIES: (
        _PATIENT_ID,
        _PATIENT_NAME,
        _DATE,
        Column("Modality", "Mod"),
        Column("SeriesNumber", "No"),
        Column("SeriesDescription", "Description", wrap=True),
        Column("NumberOfSeriesRelatedInstances", "Inst"),
        _STUDY_UID,
        _SERIES_UID,
    ),
    QueryLevels.INSTANCE: (
        _PATIENT_ID,
        _DATE,
        Column("Modality", "Mod"),
        Column("SeriesNumber", "Ser"),
        Column("InstanceNumber", "No"),
        _STUDY_UID,
        _SERIES_UID,
        Column("SOPInstanceUID", "SOP Instance UID", uid=True),
    ),
}

#: What a QIDO-RS server returns without being asked (PS3.18 tables 10.6.3-3..5).
#: Columns beyond these are asked for with ``includefield``.
RETURNED_BY_DEFAULT: dict[QueryLevels, frozenset[str]] = {
    QueryLevels.STUDY: frozenset(
        {
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "ModalitiesInStudy",
            "ReferringPhysicianName",
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyInstanceUID",
            "StudyID",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        }
    ),
    QueryLevels.SERIES: frozenset(
        {
            "StudyInstanceUID",
            "Modality",
            "SeriesDescription",
            "SeriesInstanceUID",
            "SeriesNumber",
            "NumberOfSeriesRelatedInstances",
        }
    ),
    QueryLevels.INSTANCE: frozenset(
        {
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPClassUID",
            "SOPInstanceUID",
            "InstanceNumber",
            "Rows",
            "Columns",
            "NumberOfFrames",
        }
    ),
}

_NOUNS = {
    QueryLevels.STUDY: ("study", "studies"),
    QueryLevels.SERIES: ("series", "series"),
    QueryLevels.INSTANCE: ("instance", "instances"),
}
_NOT_LISTED = {"SpecificCharacterSet"}  # values are decoded already


def noun(level: QueryLevels, number: int = 2) -> str:
    """``study`` or ``studies`` (``series`` either way) for number of them."""
    singular, plural = _NOUNS[level]
    return singular if number == 1 else plural


def count(number: int, level: QueryLevels) -> str:
    """``1 study``, ``2 studies``, ``3 series``."""
    return f"{number} {noun(level, number)}"


# -- from options to results --------------------------------------------------------


def qido_queries(
    options: QueryOptions, include_fields: Sequence[str] = ()
) -> list[QidoRSQueryBase]:
    """The QIDO-RS queries for options: hierarchical where possible, else relational.

    Raises click.UsageError for a combination QIDO-RS cannot express, before any
    request is sent.
    """
    try:
        queries = options.queries(include_fields)
    except ValidationError as error:
        raise click.UsageError(_validation_message(error)) from error
    return [_qido_query(query, options.limit) for query in queries]


def _qido_query(query: Query, limit: int) -> QidoRSQueryBase:
    fields = {**query.filled_fields(), "query_level": query.query_level}
    if "ModalitiesInStudy" in fields:  # QIDO-RS lists values with commas
        fields["ModalitiesInStudy"] = fields["ModalitiesInStudy"].replace("\\", ",")
    try:
        return HierarchicalQuery(**fields, limit=limit)
    except ValidationError as hierarchical_error:
        try:
            return RelationalQuery(**fields, limit=limit)
        except ValidationError:
            raise click.UsageError(
                _validation_message(hierarchical_error)
            ) from hierarchical_error


def _validation_message(error: ValidationError) -> str:
    messages = []
    for detail in error.errors():
        message = str(detail.get("msg", ""))
        messages.append(message.removeprefix("Value error, "))
    return "; ".join(messages) or str(error)


def qido_searcher(
    session: requests.Session, url: str, connection: ConnectionSettings
) -> QidoRS:
    """A QidoRS searcher with the connection's timeout and retries."""
    return QidoRS(session, url, timeout=connection.timeout, retry=connection.retry)


def dimse_queries(options: QueryOptions, include_fields: Sequence[str]) -> list[Query]:
    """Plain queries for C-FIND, asking for include_fields; usage errors early."""
    try:
        return options.queries(include_fields)
    except ValidationError as error:
        raise click.UsageError(_validation_message(error)) from error


def find_studies(searcher: Searcher, queries: Iterable[Query]) -> list[Study]:
    """Every study that any of queries finds (each once), in the order found."""
    return find_per_query(searcher, list(queries))[0]


def find_per_query(
    searcher: Searcher, queries: Sequence[Query]
) -> tuple[list[Study], list[Query]]:
    """The studies any of queries found (each once), and the queries that found none."""
    studies: dict[str, Study] = {}
    unmatched: list[Query] = []
    for query in queries:
        found = list(searcher.find_studies(query))
        if not found:
            unmatched.append(query)
        for study in found:
            studies.setdefault(study.uid, study)
    return list(studies.values()), unmatched


_QUERY_KEYS = (
    ("StudyInstanceUID", "--study-uid"),
    ("AccessionNumber", "--accession-number"),
    ("PatientID", "--patient-id"),
)


def describe_query(query: Query) -> str:
    """``--study-uid 1.2.3`` (the repeated options' values of query)."""
    parts = [
        f"{option} {getattr(query, key)}"
        for key, option in _QUERY_KEYS
        if getattr(query, key)
    ]
    return " ".join(parts) or query.to_short_string()


def report_unmatched(unmatched: Sequence[Query], total: int) -> None:
    """``Error: 2 of 5 values matched nothing:`` and each, on stderr."""
    lines = "\n".join(f"  - {describe_query(q)}" for q in unmatched)
    click.echo(
        f"Error: {len(unmatched)} of {total} values matched nothing:\n{lines}",
        err=True,
    )


def result_rows(studies: Iterable[Study], level: QueryLevels) -> list[Dataset]:
    """One dataset per study, series or instance, holding its parents' attributes."""
    rows: list[Dataset] = []
    for study in studies:
        study_data = _merged(study.data, StudyInstanceUID=study.uid)
        if level == QueryLevels.STUDY:
            rows.append(study_data)
            continue
        for series in study.series:
            series_data = _merged(study_data, series.data, SeriesInstanceUID=series.uid)
            if level == QueryLevels.SERIES:
                rows.append(series_data)
                continue
            for instance in series.instances:
                rows.append(
                    _merged(series_data, instance.data, SOPInstanceUID=instance.uid)
                )
    return rows


def _merged(*datasets: Dataset, **values: str) -> Dataset:
    merged = Dataset()
    for dataset in datasets:
        for element in dataset:
            merged.add(element)
    for keyword, value in values.items():
        if value and not merged.get(keyword):
            setattr(merged, keyword, value)
    return merged


# -- values as text and JSON --------------------------------------------------------


def element_of(dataset: Dataset, keyword: str) -> DataElement | None:
    """The element for keyword, or None when the dataset does not hold it."""
    try:
        return dataset[keyword]
    except KeyError:
        return None


def text_value(element: DataElement | None, separator: str = "\\") -> str:
    """An attribute's value as one line of text ('' when absent or empty)."""
    if element is None or element.value is None:
        return ""
    value = element.value
    if isinstance(value, DicomSequence):
        return f"<{len(value)} item{'s' if len(value) != 1 else ''}>"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, MultiValue | list | tuple):
        return separator.join(str(item) for item in value)
    return str(value)


def _display_value(element: DataElement | None) -> str:
    text = text_value(element, ", ")
    if element is not None and element.VR == "DA" and len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def json_value(element: DataElement | None) -> Any:
    """An attribute's value for JSON: lists for multi-valued attributes (by VM)."""
    if element is None:
        return None
    value = element.value
    if isinstance(value, DicomSequence):
        return [dataset_as_json(item) for item in value]
    if isinstance(value, MultiValue | list | tuple):
        items = [_json_scalar(item) for item in value]
    elif value is None or value == "":
        items = []
    else:
        items = [_json_scalar(value)]
    if _multi_valued(element):
        return items
    return items[0] if items else None


def _multi_valued(element: DataElement) -> bool:
    try:
        vm = dictionary_VM(element.tag)
    except KeyError:
        return element.VM > 1
    return vm != "1"


def _json_scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else str(value)
    return str(value)


def _key(element: DataElement) -> str:
    return keyword_for_tag(element.tag) or f"{element.tag:08X}"


def dataset_as_json(dataset: Dataset, keywords: Sequence[str] = ()) -> dict[str, Any]:
    """keyword -> value: keywords first (None when absent), then the rest by tag."""
    result: dict[str, Any] = {
        keyword: json_value(element_of(dataset, keyword)) for keyword in keywords
    }
    for element in dataset:
        key = _key(element)
        if key not in result and key not in _NOT_LISTED:
            result[key] = json_value(element)
    return result


# -- output -------------------------------------------------------------------------


def listed_keywords(level: QueryLevels, include_fields: Sequence[str]) -> list[str]:
    """The standard columns of level, then the included fields not among them."""
    keywords = [column.keyword for column in COLUMNS[level]]
    return list(dict.fromkeys([*keywords, *include_fields]))


def render_json(rows: Sequence[Dataset], keywords: Sequence[str]) -> str:
    return json.dumps(
        [dataset_as_json(row, keywords) for row in rows], indent=2, ensure_ascii=False
    )


def render_csv(rows: Sequence[Dataset], keywords: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keywords)
    for row in rows:
        writer.writerow([text_value(element_of(row, k)) for k in keywords])
    return buffer.getvalue()


def render_tables(
    rows: Sequence[Dataset],
    level: QueryLevels,
    include_fields: Sequence[str],
    console: Console,
) -> list[Table]:
    """The rows as one table, or as two when the UIDs do not fit beside the rest.

    The two tables of a narrow console share a row number: the first holds the
    attributes, the second the UIDs (never shortened: they are what a download
    needs).
    """
    columns = list(COLUMNS[level])
    known = {column.keyword for column in columns}
    columns += [Column(k, k, wrap=True) for k in include_fields if k not in known]
    caption = f"{count(len(rows), level)} found"
    table = _table(rows, columns, caption=caption)
    unlimited = console.options.update_width(1_000_000)
    if console.measure(table, options=unlimited).maximum <= console.width:
        return [table]
    numbered = [Column("", "#"), *columns]
    attributes = [column for column in numbered if not column.uid]
    uids = [Column("", "#"), *(column for column in columns if column.uid)]
    return [
        _table(rows, attributes, caption=caption),
        _table(rows, uids, caption=None),
    ]


def _table(
    rows: Sequence[Dataset], columns: Sequence[Column], caption: str | None
) -> Table:
    table = Table(box=box.SIMPLE_HEAD, caption=caption, pad_edge=False)
    for column in columns:
        numeric = column.keyword.startswith("NumberOf") or not column.keyword
        table.add_column(
            column.heading,
            overflow="fold",
            no_wrap=not (column.wrap or column.uid),
            style="cyan" if column.uid else None,
            justify="right" if numeric else "left",
        )
    for number, row in enumerate(rows, start=1):
        table.add_row(
            *(
                Text(_display_value(element_of(row, c.keyword)))
                if c.keyword
                else Text(f"{number}")
                for c in columns
            )
        )
    return table


# -- the command --------------------------------------------------------------------


def format_options(func: Callable[..., R]) -> Callable[..., R]:
    """``--format table|json|csv`` (and the short ``--json``, ``--csv``,
    ``--table``); the command receives ``output_format=``. Two different
    formats are a usage error."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        output_format: str | None,
        json_flag: bool,
        csv_flag: bool,
        table_flag: bool,
        **kwargs: Any,
    ) -> R:
        chosen = {
            name
            for name, given in (
                (output_format, output_format is not None),
                ("json", json_flag),
                ("csv", csv_flag),
                ("table", table_flag),
            )
            if given and name
        }
        if len(chosen) > 1:
            raise click.UsageError(
                "choose one output format: " + " and ".join(sorted(chosen)) + " given"
            )
        return func(*args, output_format=chosen.pop() if chosen else "table", **kwargs)

    options = (
        click.option(
            "--format",
            "output_format",
            type=click.Choice(FORMATS, case_sensitive=False),
            default=None,
            help="Print a table (default), JSON (a list of objects) or CSV to "
            "stdout; notes and errors go to stderr.",
        ),
        click.option(
            "--json", "json_flag", is_flag=True, help="Same as --format json."
        ),
        click.option("--csv", "csv_flag", is_flag=True, help="Same as --format csv."),
        click.option(
            "--table", "table_flag", is_flag=True, help="Same as --format table."
        ),
    )
    decorated: Callable[..., R] = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


@click.command("search")
@optional_url_option
@click.option(
    "--qido-url",
    metavar="URL",
    help="QIDO-RS root, when it is not the --url.",
)
@click.option(
    "--mint-url",
    metavar="URL",
    help="MINT root (Vitrea), e.g. https://vitrea/rest/api/vault/mint; "
    "--protocol mint takes --url when not given.",
)
@click.option(
    "--protocol",
    type=click.Choice(["qido-rs", "mint", "c-find"], case_sensitive=False),
    default="qido-rs",
    show_default=True,
    help="QIDO-RS over HTTP (--url), MINT (Vitrea, --mint-url, with --login-url "
    "and --user), or DICOM C-FIND (--host, --port).",
)
@dimse_options()
@query_options
@format_options
@connection_options
def search(
    url: str | None,
    qido_url: str | None,
    mint_url: str | None,
    protocol: str,
    dimse: DIMSESettings,
    query: QueryOptions,
    output_format: str,
    connection: ConnectionSettings,
) -> None:
    """Search a DICOMweb server (QIDO-RS) or a PACS (C-FIND) and list what it holds.

    \b
    Examples:
      dicomtrolley search --url http://pacs/dicom-web --patient-id 'DTR*'
      dicomtrolley search --url ... --min-date 2024-01-01 --max-date 2024-12-31 --json
      dicomtrolley search --url ... --study-uid 1.2.3 --level series --csv
      dicomtrolley search --protocol c-find --host pacs --port 104 --aec PACS \\
          --patient-id 'DTR*'
      dicomtrolley search --protocol mint --mint-url https://vitrea/rest/api/vault/mint \\
          --login-url https://vitrea/login --user me --patient-id 'DTR*'
      dicomtrolley search --profile vitrea --patient-id 'DTR*'
    """
    level = query.level
    listed = listed_keywords(level, query.include_fields)
    if protocol == "c-find":
        c_find = dimse.searcher(connection)
        queries = dimse_queries(query, listed)
        found, unmatched = find_per_query(c_find, queries)
        rows = result_rows(found, level)
        if query.limit:
            rows = rows[: query.limit]
        _print_rows(rows, level, listed, query.include_fields, output_format)
        _unmatched(query, unmatched, len(queries))
        return
    if protocol == "mint":
        mint_root = require_url(mint_url or url, protocol)
        with connection.session() as session:
            mint = Mint(
                session, mint_root, timeout=connection.timeout, retry=connection.retry
            )
            returned = get_valid_fields(level.value)
            refused = [k for k in query.include_fields if k not in returned]
            if refused:
                raise click.UsageError(
                    f"MINT does not return {', '.join(refused)} at "
                    f"--level {level.value.lower()}"
                )
            fields = [k for k in listed if k in returned]
            queries = dimse_queries(query, fields)
            found, unmatched = find_per_query(mint, queries)
        rows = result_rows(found, level)
        if query.limit:
            rows = rows[: query.limit]
        _print_rows(rows, level, listed, query.include_fields, output_format)
        _unmatched(query, unmatched, len(queries))
        return
    url = require_url(url, protocol)
    extra = [k for k in listed if k not in RETURNED_BY_DEFAULT[level]]
    qido = qido_queries(query, include_fields=extra)
    with connection.session() as session:
        searcher = qido_searcher(session, qido_url or url, connection)
        found, unmatched = find_per_query(searcher, qido)
        rows = result_rows(found, level)
    _print_rows(rows, level, listed, query.include_fields, output_format)
    _unmatched(query, unmatched, len(qido))


def _unmatched(query: QueryOptions, unmatched: Sequence[Query], total: int) -> None:
    """With a repeated query option, name the values that found nothing (exit 1)."""
    if query.repeated and unmatched:
        report_unmatched(unmatched, total)
        click.get_current_context().exit(1)


def _print_rows(
    rows: Sequence[Dataset],
    level: QueryLevels,
    listed: Sequence[str],
    include_fields: Sequence[str],
    output_format: str,
) -> None:
    if output_format == "json":
        click.echo(render_json(rows, listed))
    elif output_format == "csv":
        click.echo(render_csv(rows, listed), nl=False)
    else:
        console = Console(highlight=False)
        for table in render_tables(rows, level, include_fields, console):
            console.print(table)
