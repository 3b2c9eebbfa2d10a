"""Batch files: the list of studies to fetch, one row each. Sans-I/O.

A batch file is what a researcher exports from a spreadsheet: CSV (``,`` or
Excel's ``;``), TSV, or plain text with one value a line. One column says which
studies: AccessionNumber, StudyInstanceUID or PatientID. Optional columns
narrow each row: a date range (``StudyDate`` as one date or a DICOM range
``20200101-20201231``, or ``MinDate``/``MaxDate``) and ``Modality``.

Header names are matched case-insensitively, ignoring spaces, underscores and
punctuation, with the common spellings (``Accession``, ``AccNo``, ``Study UID``,
``MRN`` ...; see :data:`HEADER_NAMES`). A file without a header row must have
one column: ``column=`` says what it holds, else values that mostly look like UIDs
are Study Instance UIDs, and anything else is refused as ambiguous (accession
numbers and patient IDs look alike).

:func:`parse_batch` takes the file's bytes (or text) and returns a
:class:`BatchFile`: the rows, and a :class:`LineProblem` for every line that
cannot be used, each naming its line. Nothing here opens files::

    batch = parse_batch(Path("cohort.csv").read_bytes())
    batch.raise_for_problems()          # BatchFileError naming the lines
    for row in batch.rows:
        query = row.query()

Bytes may start with a UTF-8 or UTF-16 byte order mark; without one they are
read as UTF-8, else as Windows-1252 (what Excel writes on Windows). Line ends
may be LF, CRLF or CR; empty lines, lines of empty fields and lines starting
with ``#`` are skipped.
"""

from __future__ import annotations

import codecs
import csv
import enum
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from dicomtrolley.exceptions import PermanentError
from dicomtrolley.uids import is_valid_uid

if TYPE_CHECKING:
    from dicomtrolley.query import Query

__all__ = [
    "HEADER_NAMES",
    "BatchFile",
    "BatchFileError",
    "BatchKey",
    "BatchRow",
    "LineProblem",
    "key_for_name",
    "parse_batch",
]


class BatchKey(enum.Enum):
    """What the main column of a batch file holds (the DICOM keyword)."""

    ACCESSION_NUMBER = "AccessionNumber"
    STUDY_UID = "StudyInstanceUID"
    PATIENT_ID = "PatientID"

    @property
    def label(self) -> str:
        return {
            BatchKey.ACCESSION_NUMBER: "accession number",
            BatchKey.STUDY_UID: "study UID",
            BatchKey.PATIENT_ID: "patient ID",
        }[self]


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.strip().lower())


_KEY_NAMES: dict[BatchKey, tuple[str, ...]] = {
    BatchKey.ACCESSION_NUMBER: (
        "AccessionNumber",
        "Accession",
        "Accession No",
        "Accession Nr",
        "AccNo",
        "AccNr",
        "Acc",
        "ACC#",
        "Accession #",
    ),
    BatchKey.STUDY_UID: (
        "StudyInstanceUID",
        "Study UID",
        "StudyIUID",
        "Study Instance",
        "SUID",
        "0020000D",
        "(0020,000D)",
    ),
    BatchKey.PATIENT_ID: (
        "PatientID",
        "Patient",
        "Patient No",
        "PID",
        "MRN",
        "Medical Record Number",
        "0010,0020",
    ),
}
_DATE_NAMES = ("StudyDate", "Date", "Study Date")
_MIN_DATE_NAMES = ("MinDate", "FromDate", "DateFrom", "StartDate", "From", "After")
_MAX_DATE_NAMES = ("MaxDate", "ToDate", "DateTo", "EndDate", "To", "Until", "Before")
_MODALITY_NAMES = ("Modality", "Modalities", "ModalitiesInStudy", "Mod")

#: Column name (normalised: lower case, letters and digits only) -> meaning.
HEADER_NAMES: dict[str, str] = {
    **{_normal(n): key.value for key, names in _KEY_NAMES.items() for n in names},
    **{_normal(n): "date" for n in _DATE_NAMES},
    **{_normal(n): "min_date" for n in _MIN_DATE_NAMES},
    **{_normal(n): "max_date" for n in _MAX_DATE_NAMES},
    **{_normal(n): "modality" for n in _MODALITY_NAMES},
}
_DELIMITERS = ("\t", ";", ",")
_MODALITY_RE = re.compile(r"[A-Z0-9_]{1,16}")
_MAX_LENGTH = {BatchKey.ACCESSION_NUMBER: 16, BatchKey.PATIENT_ID: 64}


def key_for_name(name: str) -> BatchKey | None:
    """The key a column name (or ``--column`` value) stands for, or None."""
    meaning = HEADER_NAMES.get(_normal(name))
    for key in BatchKey:
        if key.value == meaning:
            return key
    return None


class BatchFileError(PermanentError):
    """A batch file that cannot be used; ``problems`` name the lines."""

    def __init__(self, message: str, problems: Sequence[LineProblem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


@dataclass(frozen=True)
class LineProblem:
    """Why line ``line`` (1-based) of a batch file cannot be used."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class BatchRow:
    """One row of a batch file: one query.

    ``line`` is the row's first line in the file (1-based, counting the header
    and empty lines), so a person can find it; ``number`` counts data rows only.
    ``extra`` holds the values of other key columns of the row (filters too).
    """

    line: int
    number: int
    key: BatchKey
    value: str
    min_date: date | None = None
    max_date: date | None = None
    modalities: tuple[str, ...] = ()
    extra: tuple[tuple[BatchKey, str], ...] = ()

    def query(self, **kwargs: object) -> Query:
        """The library Query for this row (kwargs: query_level, include_fields...)."""
        from dicomtrolley.query import Query  # pydantic: only when a query is made

        values: dict[str, object] = {self.key.value: self.value}
        for key, value in self.extra:
            values.setdefault(key.value, value)
        if self.min_date is not None:
            values["min_study_date"] = datetime.combine(
                self.min_date, datetime.min.time()
            )
        if self.max_date is not None:
            values["max_study_date"] = datetime.combine(
                self.max_date, datetime.min.time()
            )
        if self.modalities:
            values["ModalitiesInStudy"] = "\\".join(self.modalities)
        return Query(**values, **kwargs)

    def describe(self) -> str:
        """``row 3 (line 4): accession number A123``, for messages."""
        return f"row {self.number} (line {self.line}): {self.key.label} {self.value}"


@dataclass(frozen=True)
class BatchFile:
    """What a batch file holds: rows, the lines that cannot be used, and its form."""

    rows: tuple[BatchRow, ...]
    problems: tuple[LineProblem, ...]
    key: BatchKey | None
    delimiter: str | None
    header: tuple[str, ...] = ()
    encoding: str = "utf-8"
    skipped_lines: tuple[int, ...] = field(default=(), repr=False)

    def raise_for_problems(self) -> None:
        """Raise BatchFileError listing every problem line (the first 20)."""
        if not self.problems:
            return
        shown = "\n".join(f"  {problem}" for problem in self.problems[:20])
        more = len(self.problems) - 20
        if more > 0:
            shown += f"\n  ... and {more} more"
        count = len(self.problems)
        raise BatchFileError(
            f"the batch file has {count} unusable line{'s' if count != 1 else ''}:"
            f"\n{shown}",
            self.problems,
        )


# -- decoding -----------------------------------------------------------------------


def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a batch file's bytes: BOM, else UTF-8, else cp1252."""
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), "cp1252"


# -- splitting into fields ----------------------------------------------------------


def _count_outside_quotes(line: str, delimiter: str) -> int:
    count, quoted = 0, False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == delimiter and not quoted:
            count += 1
    return count


def sniff_delimiter(lines: Sequence[str]) -> str | None:
    """The delimiter of a batch file: tab, ``;`` or ``,``; None for one column.

    The one found most often (outside quotes) in the first non-empty line, the
    header or first row; ties go to tab, then ``;`` (Excel's CSV where the comma
    is the decimal mark), then ``,``. Only the first line counts, since later
    ones may continue a quoted field.
    """
    first = next(
        (line for line in lines if line.strip() and not line.startswith("#")), ""
    )
    best: str | None = None
    best_count = 0
    for delimiter in _DELIMITERS:
        count = _count_outside_quotes(first, delimiter)
        if count > best_count:
            best, best_count = delimiter, count
    return best


@dataclass(frozen=True)
class _Record:
    line: int
    cells: list[str]


_LINE_END = re.compile(r"\r\n|\r|\n")


def lines_of(text: str) -> list[str]:
    """text split at LF, CRLF or CR only (as the csv module counts lines)."""
    lines = _LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _records(text: str, delimiter: str | None) -> Iterator[_Record | LineProblem]:
    """The records of text with the line each starts on; problems for broken ones."""
    if delimiter is None:
        for number, line in enumerate(lines_of(text), start=1):
            stripped = line.strip()
            if stripped.startswith('"'):
                if not stripped.endswith('"') or len(stripped) == 1:
                    yield LineProblem(number, "a quote that is not closed")
                    continue
                stripped = stripped[1:-1].replace('""', '"')
            yield _Record(number, [stripped])
        return
    stream = io.StringIO(text, newline="")
    reader = csv.reader(stream, delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield LineProblem(start, f"cannot be read as CSV ({error})")
            # go on after the broken record: a fresh reader from the next line
            done = reader.line_num
            rest = "\n".join(lines_of(text)[done:])
            for item in _records(rest, delimiter):
                if isinstance(item, LineProblem):
                    yield LineProblem(item.line + done, item.message)
                else:
                    yield _Record(item.line + done, item.cells)
            return
        yield _Record(start, [cell.strip() for cell in cells])
        start = reader.line_num + 1


# -- values -------------------------------------------------------------------------


def parse_cell_date(text: str) -> date:
    """``2024-02-29``, ``20240229`` or ``2024/02/29``; ValueError otherwise."""
    value = text.strip()
    for pattern, form in (
        (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"),
        (r"\d{8}", "%Y%m%d"),
        (r"\d{4}/\d{2}/\d{2}", "%Y/%m/%d"),
    ):
        if re.fullmatch(pattern, value):
            try:
                return datetime.strptime(value, form).date()
            except ValueError:
                raise ValueError(f"{text!r} is not a valid date") from None
    raise ValueError(f"{text!r} is not a date as YYYY-MM-DD or YYYYMMDD")


def _date_range(text: str) -> tuple[date | None, date | None]:
    """One date (that day), or a DICOM range ``A-B``, ``A-`` or ``-B``."""
    value = text.strip()
    if re.fullmatch(r"\d{8}-\d{8}|\d{8}-|-\d{8}", value):
        first, _, last = value.partition("-")
        return (
            parse_cell_date(first) if first else None,
            parse_cell_date(last) if last else None,
        )
    day = parse_cell_date(value)
    return day, day


def _modalities(text: str) -> tuple[str, ...]:
    parts = [part.strip().upper() for part in re.split(r"[,\\/ ]+", text)]
    for part in parts:
        if part and not _MODALITY_RE.fullmatch(part):
            raise ValueError(f"{part!r} is not a DICOM modality code")
    return tuple(dict.fromkeys(part for part in parts if part))


def check_value(key: BatchKey, value: str) -> str | None:
    """Why value cannot be a key value, or None when it can."""
    if key == BatchKey.STUDY_UID:
        if not is_valid_uid(value):
            return f"{value!r} is not a valid DICOM UID"
        return None
    if "\\" in value or any(ord(char) < 32 for char in value):
        return f"{value!r} holds a backslash or control character"
    limit = _MAX_LENGTH[key]
    if len(value) > limit:
        return f"{key.value} {value!r} is longer than {limit} characters"
    return None


def looks_like_uid(value: str) -> bool:
    """A UID with at least three components (``1.2.840...``), not a number."""
    return is_valid_uid(value) and value.count(".") >= 2


# -- the parser ---------------------------------------------------------------------


@dataclass
class _Columns:
    key: BatchKey
    key_index: int
    extra: list[tuple[BatchKey, int]] = field(default_factory=list)
    date: int | None = None
    min_date: int | None = None
    max_date: int | None = None
    modality: int | None = None


def _header_meanings(cells: Sequence[str]) -> list[str | None]:
    return [HEADER_NAMES.get(_normal(cell)) for cell in cells]


_KEY_PRIORITY = (BatchKey.STUDY_UID, BatchKey.ACCESSION_NUMBER, BatchKey.PATIENT_ID)


def _columns_from_header(
    cells: Sequence[str], line: int, column: BatchKey | None
) -> _Columns | LineProblem:
    meanings = _header_meanings(cells)
    seen: dict[str, int] = {}
    for index, meaning in enumerate(meanings):
        if meaning is None:
            continue
        if meaning in seen:
            return LineProblem(
                line,
                f"columns {seen[meaning] + 1} and {index + 1} ({cells[seen[meaning]]!r}"
                f" and {cells[index]!r}) mean the same",
            )
        seen[meaning] = index
    keys = [key for key in _KEY_PRIORITY if key.value in seen]
    if column is not None:
        if column.value not in seen:
            return LineProblem(
                line,
                f"no {column.value} column (--column); the header has: "
                + ", ".join(repr(cell) for cell in cells),
            )
        keys = [column, *(key for key in keys if key != column)]
    if not keys:
        return LineProblem(
            line,
            "no column of AccessionNumber, StudyInstanceUID or PatientID; the "
            "header has: " + ", ".join(repr(cell) for cell in cells),
        )
    return _Columns(
        key=keys[0],
        key_index=seen[keys[0].value],
        extra=[(key, seen[key.value]) for key in keys[1:]],
        date=seen.get("date"),
        min_date=seen.get("min_date"),
        max_date=seen.get("max_date"),
        modality=seen.get("modality"),
    )


def _cell(cells: Sequence[str], index: int | None) -> str:
    if index is None or index >= len(cells):
        return ""
    return cells[index]


def _row(
    record: _Record, columns: _Columns, number: int, width: int
) -> BatchRow | LineProblem:
    cells = record.cells
    surplus = [cell for cell in cells[width:] if cell]
    if surplus:
        return LineProblem(
            record.line, f"{len(cells)} fields where the header names {width}"
        )
    value = _cell(cells, columns.key_index)
    if not value:
        return LineProblem(record.line, f"no {columns.key.value}")
    problem = check_value(columns.key, value)
    if problem:
        return LineProblem(record.line, problem)
    extra = []
    for key, index in columns.extra:
        other = _cell(cells, index)
        if other:
            problem = check_value(key, other)
            if problem:
                return LineProblem(record.line, problem)
            extra.append((key, other))
    try:
        min_date = max_date = None
        if _cell(cells, columns.date):
            min_date, max_date = _date_range(_cell(cells, columns.date))
        if _cell(cells, columns.min_date):
            min_date = parse_cell_date(_cell(cells, columns.min_date))
        if _cell(cells, columns.max_date):
            max_date = parse_cell_date(_cell(cells, columns.max_date))
        modalities = _modalities(_cell(cells, columns.modality))
    except ValueError as error:
        return LineProblem(record.line, str(error))
    if min_date and max_date and min_date > max_date:
        return LineProblem(
            record.line, f"the dates are reversed ({min_date} > {max_date})"
        )
    return BatchRow(
        line=record.line,
        number=number,
        key=columns.key,
        value=value,
        min_date=min_date,
        max_date=max_date,
        modalities=modalities,
        extra=tuple(extra),
    )


def _blank(record: _Record) -> bool:
    return not any(record.cells) or record.cells[0].startswith("#")


def parse_batch(data: bytes | str, column: BatchKey | str | None = None) -> BatchFile:
    """The rows of a batch file, and a problem for each line that cannot be used.

    column: what a file without header holds (a BatchKey or a column name such
    as ``AccessionNumber``), or which key column of a header to use.

    Raises
    ------
    BatchFileError
        For a column name that is not one of the keys.
    """
    if isinstance(column, str):
        key = key_for_name(column)
        if key is None:
            raise BatchFileError(
                f"--column {column!r} is not AccessionNumber, StudyInstanceUID or "
                "PatientID"
            )
        column = key
    if isinstance(data, bytes):
        text, encoding = decode(data)
    else:
        text, encoding = data.removeprefix("\ufeff"), "text"
    delimiter = sniff_delimiter(lines_of(text))
    records: list[_Record] = []
    problems: list[LineProblem] = []
    skipped: list[int] = []
    for item in _records(text, delimiter):
        if isinstance(item, LineProblem):
            problems.append(item)
        elif _blank(item):
            skipped.append(item.line)
        else:
            records.append(item)
    if not records:
        problems.append(LineProblem(1, "the file holds no rows"))
        return BatchFile((), tuple(problems), column, delimiter, (), encoding)
    first = records[0]
    header: tuple[str, ...] = ()
    columns: _Columns | LineProblem
    if any(meaning is not None for meaning in _header_meanings(first.cells)):
        header = tuple(first.cells)
        columns = _columns_from_header(first.cells, first.line, column)
        data_records = records[1:]
    else:
        data_records = records
        columns = _columns_without_header(data_records, column)
    if isinstance(columns, LineProblem):
        problems.append(columns)
        return BatchFile((), tuple(problems), column, delimiter, header, encoding)
    width = len(header) if header else 1
    rows: list[BatchRow] = []
    for number, record in enumerate(data_records, start=1):
        row = _row(record, columns, number, width)
        if isinstance(row, LineProblem):
            problems.append(row)
        else:
            rows.append(row)
    if not rows and not problems:
        problems.append(LineProblem(first.line, "a header but no rows"))
    problems.sort(key=lambda problem: problem.line)
    return BatchFile(
        tuple(rows),
        tuple(problems),
        columns.key,
        delimiter,
        header,
        encoding,
        tuple(skipped),
    )


def _columns_without_header(
    records: Sequence[_Record], column: BatchKey | None
) -> _Columns | LineProblem:
    widest = max(records, key=lambda record: len(record.cells))
    if len([cell for cell in widest.cells if cell]) > 1:
        return LineProblem(
            records[0].line,
            "several columns but no header row: name them in a first line "
            "(e.g. AccessionNumber,StudyDate,Modality)",
        )
    if column is not None:
        return _Columns(key=column, key_index=0)
    values = [record.cells[0] for record in records]
    if sum(looks_like_uid(value) for value in values) * 2 > len(values):
        return _Columns(key=BatchKey.STUDY_UID, key_index=0)
    return LineProblem(
        records[0].line,
        "one column without header: are these accession numbers or patient IDs? "
        "Add a header line (AccessionNumber or PatientID) or give --column",
    )
