"""Batch files on bytes: encodings, separators, headers, broken lines."""

from __future__ import annotations

import codecs
from datetime import date, datetime

import pytest

from dicomtrolley.batchfile import (
    BatchFileError,
    BatchKey,
    key_for_name,
    parse_batch,
    sniff_delimiter,
)

UID_A = "1.2.826.0.1.3680043.8.498.1"
UID_B = "1.2.826.0.1.3680043.8.498.2"


def test_csv_with_header_bom_and_crlf() -> None:
    data = (
        codecs.BOM_UTF8
        + b"AccessionNumber,StudyDate,Modality\r\nA1,20240229,CT\r\nA2,,\r\n"
    )
    batch = parse_batch(data)
    assert batch.problems == ()
    assert batch.key == BatchKey.ACCESSION_NUMBER
    assert batch.delimiter == ","
    assert [(r.line, r.number, r.value) for r in batch.rows] == [
        (2, 1, "A1"),
        (3, 2, "A2"),
    ]
    first = batch.rows[0]
    assert first.min_date == first.max_date == date(2024, 2, 29)
    assert first.modalities == ("CT",)
    assert batch.rows[1].min_date is None and batch.rows[1].modalities == ()


def test_query_of_a_row() -> None:
    batch = parse_batch(
        b"accession;from;to;modality\nA1;2020-01-01;2020-12-31;CT\\MR\n"
    )
    query = batch.rows[0].query(query_level="SERIES")
    assert query.AccessionNumber == "A1"
    assert query.min_study_date == datetime(2020, 1, 1)
    assert query.max_study_date == datetime(2020, 12, 31)
    assert query.ModalitiesInStudy == "CT\\MR"
    assert query.query_level.value == "SERIES"


@pytest.mark.parametrize(
    "name, key",
    [
        ("AccessionNumber", BatchKey.ACCESSION_NUMBER),
        ("accession_number", BatchKey.ACCESSION_NUMBER),
        ("Accession No.", BatchKey.ACCESSION_NUMBER),
        ("ACC#", BatchKey.ACCESSION_NUMBER),
        ("Study Instance UID", BatchKey.STUDY_UID),
        ("study_uid", BatchKey.STUDY_UID),
        ("patient id", BatchKey.PATIENT_ID),
        ("MRN", BatchKey.PATIENT_ID),
        ("Description", None),
    ],
)
def test_header_names(name: str, key: BatchKey | None) -> None:
    assert key_for_name(name) == key


def test_excel_semicolons_with_quoted_fields_and_cp1252() -> None:
    # Excel on Windows: ';' separator, cp1252 (an 'é' that is not UTF-8), quotes
    data = 'Note;"Patient ID"\r\n"Müller; é";"P 1"\r\n'.encode("cp1252")
    batch = parse_batch(data)
    assert batch.problems == ()
    assert batch.encoding == "cp1252"
    assert batch.delimiter == ";"
    assert batch.key == BatchKey.PATIENT_ID
    assert batch.rows[0].value == "P 1"


def test_utf16_with_bom_and_tabs() -> None:
    text = "StudyInstanceUID\tModality\n" + f"{UID_A}\tMR\n"
    batch = parse_batch(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    assert batch.problems == ()
    assert batch.delimiter == "\t"
    assert batch.rows[0].value == UID_A and batch.rows[0].modalities == ("MR",)


def test_one_value_a_line_of_uids_is_guessed() -> None:
    data = f"{UID_A}\n\n# a comment\n{UID_B}\r\n".encode()
    batch = parse_batch(data)
    assert batch.problems == ()
    assert batch.key == BatchKey.STUDY_UID
    assert [(row.line, row.value) for row in batch.rows] == [(1, UID_A), (4, UID_B)]
    assert batch.skipped_lines == (2, 3)


def test_one_value_a_line_needs_column_unless_uids() -> None:
    batch = parse_batch(b"A1\nA2\n")
    assert batch.rows == ()
    assert "--column" in str(batch.problems[0])
    named = parse_batch(b"A1\nA2\n", column="accession")
    assert named.key == BatchKey.ACCESSION_NUMBER
    assert [row.value for row in named.rows] == ["A1", "A2"]


def test_column_chooses_among_key_columns() -> None:
    data = b"PatientID,AccessionNumber\nP1,A1\nP2,\n"
    default = parse_batch(data)
    assert default.key == BatchKey.ACCESSION_NUMBER  # the more specific one
    assert default.rows[0].extra == ((BatchKey.PATIENT_ID, "P1"),)
    query = default.rows[0].query()
    assert (query.AccessionNumber, query.PatientID) == ("A1", "P1")
    assert [str(p) for p in default.problems] == ["line 3: no AccessionNumber"]
    by_patient = parse_batch(data, column=BatchKey.PATIENT_ID)
    assert [row.value for row in by_patient.rows] == ["P1", "P2"]


def test_unknown_column_option() -> None:
    with pytest.raises(BatchFileError, match="--column 'SeriesUID'"):
        parse_batch(b"A1\n", column="SeriesUID")


def test_broken_lines_are_named() -> None:
    data = (
        b"StudyInstanceUID,StudyDate\n"  # line 1
        + f"{UID_A},2024-02-30\n".encode()  # 2: no such day
        + b"1.2.3.x,\n"  # 3: not a UID
        + f"{UID_B},20200101-20191231\n".encode()  # 4: reversed range
        + f'{UID_A},"20200101" junk\n'.encode()  # 5: broken quoting
        + f"{UID_B},20200101,extra\n".encode()  # 6: a third field
        + f"{UID_B},20200101-\n".encode()  # 7: fine: open range
    )
    batch = parse_batch(data)
    lines = [problem.line for problem in batch.problems]
    assert lines == [2, 3, 4, 5, 6]
    assert "not a valid date" in batch.problems[0].message
    assert "not a valid DICOM UID" in batch.problems[1].message
    assert "CSV" in batch.problems[3].message
    assert [row.line for row in batch.rows] == [7]
    assert batch.rows[0].min_date == date(2020, 1, 1) and batch.rows[0].max_date is None
    with pytest.raises(BatchFileError) as raised:
        batch.raise_for_problems()
    assert "line 2:" in str(raised.value) and "line 6:" in str(raised.value)
    assert [p.line for p in raised.value.problems] == lines


def test_unterminated_quote_names_its_first_line() -> None:
    data = b'AccessionNumber\nA1\n"A2\nA3\n'
    batch = parse_batch(data)
    assert [row.value for row in batch.rows] == ["A1", "A3"]
    assert [problem.line for problem in batch.problems] == [3]
    in_csv = parse_batch(b'AccessionNumber,Note\nA1,x\nA2,"open\nA3,y\n')
    assert [row.value for row in in_csv.rows] == ["A1"]
    assert [problem.line for problem in in_csv.problems] == [3]


def test_quoted_field_over_two_lines_keeps_line_numbers() -> None:
    data = b'AccessionNumber,Note\nA1,"two\nlines"\nA2,x\n'
    batch = parse_batch(data)
    assert batch.problems == ()
    assert [(row.line, row.value) for row in batch.rows] == [(2, "A1"), (4, "A2")]


def test_header_without_key_column() -> None:
    batch = parse_batch(b"Modality,StudyDate\nCT,20200101\n")
    assert "no column of AccessionNumber" in batch.problems[0].message
    assert batch.problems[0].line == 1


def test_several_unnamed_columns() -> None:
    batch = parse_batch(b"A1,20200101\nA2,20200102\n")
    assert "no header row" in batch.problems[0].message


def test_empty_files() -> None:
    assert "no rows" in parse_batch(b"").problems[0].message
    assert "no rows" in parse_batch(b"\r\n ,, \n").problems[0].message
    assert "header but no rows" in parse_batch(b"AccessionNumber\n").problems[0].message


def test_values_are_checked() -> None:
    data = b"AccessionNumber\nA1\nTOO-LONG-ACCESSION-NUMBER\nA\\B\n"
    batch = parse_batch(data)
    assert [row.value for row in batch.rows] == ["A1"]
    assert [p.line for p in batch.problems] == [3, 4]


def test_modalities_and_bad_modality() -> None:
    batch = parse_batch(b"AccessionNumber\tModality\nA1\tct, mr\nA2\tC?T\n")
    assert batch.rows[0].modalities == ("CT", "MR")
    assert batch.problems[0].line == 3


@pytest.mark.parametrize(
    "lines, expected",
    [
        (["a,b", "c,d"], ","),
        (["a;b;c,d", "d;e"], ";"),  # a comma inside a field of a ';' file
        (['"a,b";c', "d;e"], ";"),
        (["a\tb;c", "d\te"], "\t"),
        (["", "# note, here", "a", "b,c"], None),
    ],
)
def test_sniff_delimiter(lines: list[str], expected: str | None) -> None:
    assert sniff_delimiter(lines) == expected


def test_text_input_and_mac_line_ends() -> None:
    batch = parse_batch(f"\ufeff{UID_A}\r{UID_B}\r")
    assert [(row.line, row.value) for row in batch.rows] == [(1, UID_A), (2, UID_B)]
