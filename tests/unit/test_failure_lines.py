"""Failure lines: one line, each UID once (issue 11)."""

from __future__ import annotations

from dicomtrolley.download import Failure, one_line
from dicomtrolley.exceptions import ClientHTTPError, DICOMTrolleyTimeoutError

STUDY = "1.2.826.0.1.3680043.8.498.13096922846825805966901751903708954063"
SERIES = "1.2.826.0.1.3680043.8.498.10421557265761261079843909844396415028"


def test_a_wado_rs_404_names_each_uid_once() -> None:
    what = f"SeriesReference {STUDY} -> {SERIES}"
    page = f"Error 404 WADO-RS is not offered for study {STUDY}"
    error = ClientHTTPError(
        f"WADO-RS {what}: Calling http://127.0.0.1:1/dicom-web/studies/{STUDY}/"
        f"series/{SERIES} failed (404 - Not Found): {page}: {page}\n"
        f"HTTP ERROR 404 Problem accessing /dicom-web/studies/{STUDY[:30]}...",
        status_code=404,
        uids=(STUDY, SERIES),
    )
    line = str(Failure(what=what, uids=error.uids, error=error))
    assert "\n" not in line
    assert line.count(STUDY) == 1 and line.count(SERIES) == 1
    assert line.count("is not offered") == 1
    assert "(404 - Not Found)" in line
    assert "Problem accessing" not in line


def test_uids_not_named_are_added_once() -> None:
    error = DICOMTrolleyTimeoutError("read timed out after 120 s")
    line = one_line("C-GET of 2 instances", error, (STUDY, SERIES, STUDY))
    assert line == (
        f"C-GET of 2 instances: read timed out after 120 s (UIDs: {STUDY}, {SERIES})"
    )


def test_long_texts_are_cut() -> None:
    error = ClientHTTPError("x" * 5000)
    assert len(one_line("instance 1.2.3", error)) <= 401
