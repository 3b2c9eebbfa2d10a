"""``dicomtrolley batch`` and the scripting options against the emulator (issue 11)."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dicomtrolley.cli.main import main
from dicomtrolley.emulator import Emulator, default_services
from dicomtrolley.emulator.dicomweb import DicomWebService
from dicomtrolley.manifest import read_manifest
from dicomtrolley.synthetic import cohort_studies, write_studies
from tests.emulator.conftest import PASSWORD, USER, DemoData
from tests.emulator.transfer_helpers import (
    ENV,
    RequestLog,
    assert_complete,
    cli_command,
    counting_emulator,
    dicom_files,
    on_disk,
    run_cli,
    stop_at_retrieve,
    temp_files,
    wait_for_lines,
)


def run(emulator: Emulator, *args: str) -> Result:
    """The CLI in-process against emulator (--url and --user added)."""
    return CliRunner().invoke(
        main,
        [*args, "--url", emulator.dicomweb_url, "--user", USER],
        env=ENV,
    )


def expected(demo: DemoData, *accessions: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for study in demo.studies:
        if study.accession_number in accessions:
            files.update(demo.files_of(study.study_uid))
    return files


@pytest.fixture
def write(tmp_path: Path) -> Callable[[bytes, str], Path]:
    def make(data: bytes, name: str = "batch.csv") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


# -- batch files of each kind ----------------------------------------------------------


def test_excel_csv_with_bom_crlf_and_semicolons(
    emulator: Emulator,
    demo: DemoData,
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    data = codecs.BOM_UTF8 + b"Accession No;Modality\r\nACC0001;CT\r\n\r\nACC0003;\r\n"
    out = tmp_path / "out"
    table = tmp_path / "manifest.csv"
    result = run(
        emulator,
        "batch",
        str(write(data)),
        "-o",
        str(out),
        "--manifest-csv",
        str(table),
    )
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(table.open()))) == 55
    assert dicom_files(out) == expected(demo, "ACC0001", "ACC0003")
    records = list(read_manifest(out / "manifest.jsonl"))
    rows = Counter(record["row"] for record in records if record["status"] == "saved")
    assert rows == {1: 23, 2: 32}
    assert {record["query"] for record in records} == {
        "AccessionNumber=ACC0001",
        "AccessionNumber=ACC0003",
    }


def test_one_uid_a_line_without_header(
    emulator: Emulator, demo: DemoData, write: Callable[..., Path], tmp_path: Path
) -> None:
    study = demo.study("DTR004")
    out = tmp_path / "out"
    path = write(f"{study.study_uid}\n".encode(), "uids.txt")
    result = run(emulator, "batch", str(path), "-o", str(out), "--layout", "flat")
    assert result.exit_code == 0, result.output
    assert dicom_files(out) == demo.files_of(study.study_uid)


def test_tsv_of_patient_ids_with_dates_allows_many(
    emulator: Emulator, demo: DemoData, write: Callable[..., Path], tmp_path: Path
) -> None:
    data = b"PatientID\tMinDate\nDTR001\t2023-01-01\nDTR002\t\n"
    out = tmp_path / "out"
    result = run(emulator, "batch", str(write(data, "p.tsv")), "-o", str(out))
    assert result.exit_code == 0, result.output
    # DTR001's CT study is from 2021: only the MR of 2023 comes
    assert dicom_files(out) == expected(demo, "ACC0002", "ACC0003")


def test_one_value_a_line_with_column(
    emulator: Emulator, demo: DemoData, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write(b"ACC0005\n", "acc.txt")
    out = tmp_path / "out"
    refused = run(emulator, "batch", str(path), "-o", str(out))
    assert refused.exit_code == 2
    assert "--column" in refused.stderr
    result = run(
        emulator, "batch", str(path), "--column", "AccessionNumber", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    assert dicom_files(out) == expected(demo, "ACC0005")


def test_broken_file_names_the_lines_and_sends_nothing(
    emulator: Emulator, write: Callable[..., Path], tmp_path: Path
) -> None:
    data = b'StudyInstanceUID,StudyDate\n1.2.3.x,\n1.2.840.1,2024-13-01\n"1.2,"3\n'
    out = tmp_path / "out"
    result = run(emulator, "batch", str(write(data)), "-o", str(out))
    assert result.exit_code == 2, result.output
    for line in ("line 2:", "line 3:", "line 4:"):
        assert line in result.stderr
    assert not out.exists()


def test_rows_not_found_or_ambiguous_exit_1_and_the_rest_comes(
    emulator: Emulator, demo: DemoData, write: Callable[..., Path], tmp_path: Path
) -> None:
    data = b"AccessionNumber,PatientID\nACC0005,\nNOPE,\nACC*,DTR001\n"
    out = tmp_path / "out"
    result = run(emulator, "batch", str(write(data)), "-o", str(out))
    assert result.exit_code == 1, result.output
    assert "row 2 (line 3): accession number NOPE: no study found" in result.stderr
    assert "row 3 (line 4)" in result.stderr and "2 studies found" in result.stderr
    assert dicom_files(out) == expected(demo, "ACC0005")
    many = run(emulator, "batch", str(write(data)), "-o", str(out), "--allow-many")
    assert many.exit_code == 1  # NOPE is still not found
    assert dicom_files(out) == expected(demo, "ACC0005", "ACC0001", "ACC0002")


def test_dry_run_json_and_csv_on_stdout(
    emulator: Emulator, demo: DemoData, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write(b"AccessionNumber\nACC0001\nNOPE\nACC0001\n")
    out = tmp_path / "out"
    as_json = run(
        emulator, "batch", str(path), "-o", str(out), "--dry-run", "--format", "json"
    )
    assert as_json.exit_code == 1  # NOPE
    rows = json.loads(as_json.stdout)
    assert [(r["row"], r["line"], r["status"]) for r in rows] == [
        (1, 2, "found"),
        (2, 3, "not found"),
        (3, 4, "repeated"),
    ]
    assert rows[0]["study_uids"] == [demo.study("DTR001", "CT").study_uid]
    assert rows[0]["instances"] == 23 and rows[2]["also_row"] == 1
    assert "no study found" in as_json.stderr
    assert not out.exists()  # nothing written by a dry run
    as_csv = run(
        emulator, "batch", str(path), "-o", str(out), "--dry-run", "--format", "csv"
    )
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [row["status"] for row in table] == ["found", "not found", "repeated"]
    assert table[0]["instances"] == "23"
    table_run = run(emulator, "batch", str(path), "-o", str(out), "--dry-run")
    assert "23" in table_run.stdout and "not found" in table_run.stdout


def test_format_without_dry_run_is_a_usage_error(
    emulator: Emulator, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write(b"AccessionNumber\nACC0001\n")
    result = run(emulator, "batch", str(path), "-o", str(tmp_path), "--format", "json")
    assert result.exit_code == 2 and "--dry-run" in result.stderr


def test_batch_falls_back_to_wado_uri_for_a_refused_study(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    refused = demo.study("DTR001", "CT").study_uid
    services = [s for s in default_services() if s.name != "dicomweb"]
    emulator = make_emulator(
        demo.root, services=[*services, DicomWebService(refused_studies=[refused])]
    )
    path = write(b"AccessionNumber\nACC0001\nACC0004\n")
    out = tmp_path / "out"
    only_rs = run(emulator, "batch", str(path), "-o", str(tmp_path / "rs"))
    assert only_rs.exit_code == 1
    assert "row 1 (line 2)" in only_rs.stderr and "404" in only_rs.stderr
    result = run(
        emulator,
        "batch",
        str(path),
        "-o",
        str(out),
        "--protocol",
        "wado-rs",
        "--protocol",
        "wado-uri",
    )
    assert result.exit_code == 0, result.output
    assert dicom_files(out) == expected(demo, "ACC0001", "ACC0004")
    saved = [r for r in read_manifest(out / "manifest.jsonl") if r["status"] == "saved"]
    by_protocol = Counter((r["row"], r["protocol"]) for r in saved)
    assert by_protocol == {(1, "WADO-URI"): 23, (2, "WADO-RS"): 22}
    assert f"Study {refused} came over WADO-URI" in result.stderr


# -- download and search: scripting --------------------------------------------------


def test_download_names_every_unknown_study_uid(
    emulator: Emulator, demo: DemoData, tmp_path: Path
) -> None:
    known = demo.study("DTR004").study_uid
    unknown = [f"1.2.3.{n}" for n in range(1, 4)]
    args = [a for uid in [known, *unknown] for a in ("--study-uid", uid)]
    result = run(emulator, "download", *args, "-o", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "3 of 4 values matched nothing" in result.stderr
    for uid in unknown:
        assert result.stderr.count(uid) == 1
    assert dicom_files(tmp_path) == demo.files_of(known)


def test_repeated_accession_numbers_mean_any(
    emulator: Emulator, demo: DemoData, tmp_path: Path
) -> None:
    result = run(
        emulator,
        "search",
        "--accession-number",
        "ACC0002",
        "--accession-number",
        "ACC0004",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert sorted(row["AccessionNumber"] for row in json.loads(result.stdout)) == [
        "ACC0002",
        "ACC0004",
    ]
    download = run(
        emulator,
        "download",
        "--accession-number",
        "ACC0002",
        "--accession-number",
        "ACC0004",
        "-o",
        str(tmp_path),
    )
    assert download.exit_code == 0, download.output
    assert dicom_files(tmp_path) == expected(demo, "ACC0002", "ACC0004")


def test_min_date_alone_means_from(emulator: Emulator, demo: DemoData) -> None:
    result = run(emulator, "search", "--min-date", "2023-01-01", "--format", "csv")
    assert result.exit_code == 0, result.output
    dates = [row["StudyDate"] for row in csv.DictReader(io.StringIO(result.stdout))]
    assert sorted(dates) == ["20230120", "20231105", "20240229"]
    until = run(emulator, "search", "--max-date", "2021-12-31", "--json")
    assert [row["StudyDate"] for row in json.loads(until.stdout)] == ["20210315"]


def test_two_formats_and_quiet_verbose_are_refused(emulator: Emulator) -> None:
    both = run(emulator, "search", "--json", "--csv")
    assert both.exit_code == 2 and "one output format" in both.stderr
    mixed = run(emulator, "search", "--format", "csv", "--json")
    assert mixed.exit_code == 2
    loud = run(emulator, "search", "--quiet", "-v")
    assert loud.exit_code == 2 and "exclude each other" in loud.stderr
    shown = run(emulator, "download", "--quiet", "--progress", "--all", "-o", "x")
    assert shown.exit_code == 2 and "--progress" in shown.stderr
    both = run(emulator, "download", "--all", "--patient-id", "P", "-o", "x")
    assert both.exit_code == 2 and "exclude each other" in both.stderr


def test_quiet_download_prints_only_errors(
    emulator: Emulator, demo: DemoData, tmp_path: Path
) -> None:
    result = run(
        emulator,
        "download",
        "--quiet",
        "--study-uid",
        demo.study("DTR004").study_uid,
        "--study-uid",
        "1.2.3.4",
        "-o",
        str(tmp_path),
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: 1 of 2 values matched nothing")


def test_output_folder_that_cannot_be_written_exits_2(
    emulator: Emulator, demo: DemoData, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run(
        emulator,
        "download",
        "--study-uid",
        demo.study("DTR004").study_uid,
        "-o",
        str(blocker / "out"),
    )
    assert result.exit_code == 2, result.output
    assert "cannot write to the output folder" in result.stderr


# -- Ctrl-C ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, Path]]:
    """An emulator over 300 one-instance studies, and a CSV of their accessions."""
    root = tmp_path_factory.mktemp("cohort")
    studies = cohort_studies(300, key="sigint")
    write_studies(root / "data", studies)
    batch = root / "cohort.csv"
    batch.write_text(
        "AccessionNumber\n" + "".join(f"{s.accession_number}\n" for s in studies)
    )
    with Emulator(root / "data", rescan_interval=None) as emulator:
        yield emulator, batch


def test_sigint_then_rerun_completes(
    cohort: tuple[Emulator, Path], tmp_path: Path
) -> None:
    emulator, batch = cohort
    out = tmp_path / "out"
    command = cli_command(
        "batch", str(batch), "--url", emulator.dicomweb_url, "--user", USER,
        "-o", str(out), "--workers", "1",
    )  # fmt: skip
    env = {**os.environ, **ENV}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    manifest = out / "manifest.jsonl"
    wait_for_lines(manifest, 20, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Interrupted after" in stderr and "Run the same command again" in stderr
    first = list(read_manifest(manifest))
    assert 20 <= len(first) < 300
    assert not temp_files(out)

    rerun = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    records = list(read_manifest(manifest))
    saved = Counter(r["instance_uid"] for r in records if r["status"] == "saved")
    assert len(saved) == 300 and set(saved.values()) == {1}  # none fetched twice
    assert len(dicom_files(out)) == 300


def test_rerun_of_a_complete_batch_asks_the_server_nothing(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    emulator = make_emulator(demo.root)
    path = write(b"AccessionNumber\nACC0002\nACC0005\n")
    out = tmp_path / "out"
    first = run(emulator, "batch", str(path), "-o", str(out))
    assert first.exit_code == 0, first.output
    url = emulator.dicomweb_url
    emulator.stop()  # from now on every request would fail

    def again(*extra: str) -> Result:
        return CliRunner().invoke(
            main,
            ["batch", str(path), "-o", str(out), "--url", url, "--user", USER, *extra],
            env=ENV,
        )

    rerun = again()
    assert rerun.exit_code == 0, rerun.output
    assert "2 of 2 rows complete from an earlier run" in rerun.stderr
    assert "skipped 28 already present" in rerun.stdout
    skipped = [
        r for r in read_manifest(out / "manifest.jsonl") if r["status"] == "skipped"
    ]
    assert Counter(r["row"] for r in skipped) == {1: 16, 2: 12}
    assert again("--refresh").exit_code == 1  # searches: the server is gone
    victim = next(
        p for p in out.rglob("*.dcm") if demo.study("DTR004").study_uid in str(p)
    )
    victim.unlink()
    assert again().exit_code == 1  # ACC0005 is incomplete: searched for again
    assert "row 2 (line 3)" in again().stderr


def test_sigint_of_download_exits_130_with_a_summary(
    cohort: tuple[Emulator, Path], tmp_path: Path
) -> None:
    emulator, _ = cohort
    out = tmp_path / "out"
    command = cli_command(
        "download", "--patient-id", "COH*", "--url", emulator.dicomweb_url,
        "--user", USER, "-o", str(out), "--workers", "1",
    )  # fmt: skip
    process = subprocess.Popen(
        command,
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    manifest = out / "manifest.jsonl"
    wait_for_lines(manifest, 10, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    saved = sum(1 for r in read_manifest(manifest) if r["status"] == "saved")
    assert 10 <= saved < 300
    summary = re.search(r"Interrupted after [\d.]+ s: (\d+) files? saved", stderr)
    assert summary is not None, stderr
    # Ctrl-C may land between an instance's manifest line and its count
    assert saved - 1 <= int(summary.group(1)) <= saved


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV)


def test_batch_over_the_vitrea_stack(
    emulator: Emulator, demo: DemoData, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write(b"AccessionNumber\nACC0004\nACC0005\n")
    out = tmp_path / "out"
    result = _invoke(
        "batch", str(path), "-o", str(out), "--protocol", "rad69",
        "--rad69-url", emulator.rad69_url, "--mint-url", emulator.mint_url,
        "--login-url", emulator.login_url, "--user", USER,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert dicom_files(out) == expected(demo, "ACC0004", "ACC0005")


def test_batch_over_c_find_and_c_get(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    from dicomtrolley.emulator.dimse import DimseService

    emulator = make_emulator(demo.root, services=[DimseService()])
    study = demo.study("DTR002")
    path = write(
        f"StudyInstanceUID\tStudyDate\n{study.study_uid}\t-20221231\n".encode()
    )
    out = tmp_path / "out"
    result = _invoke(
        "batch", str(path), "-o", str(out), "--protocol", "c-get",
        "--host", "127.0.0.1", "--port", str(emulator.dimse.port),
        "--aec", emulator.dimse.ae_title,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # C-STORE sends datasets, not files: the same instances, not the same bytes
    assert set(dicom_files(out)) == set(demo.files_of(study.study_uid))


def test_the_profiles_download_order_is_the_fallback_order(
    demo: DemoData,
    make_emulator: Callable[..., Emulator],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    refused = demo.study("DTR004").study_uid
    services = [s for s in default_services() if s.name != "dicomweb"]
    emulator = make_emulator(
        demo.root, services=[*services, DicomWebService(refused_studies=[refused])]
    )
    config = tmp_path / "config.toml"
    config.write_text(
        "[profiles.pacs]\n"
        f'url = "{emulator.dicomweb_url}"\n'
        'download = ["wado-rs", "wado-uri"]\n'
        f'auth = {{ type = "basic", user = "{USER}", password_env = "PACS_PW" }}\n'
    )
    config.chmod(0o600)
    path = write(b"AccessionNumber\nACC0005\nACC0003\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["batch", str(path), "-o", str(out), "--profile", "pacs"],
        env={"DICOMTROLLEY_CONFIG": str(config), "PACS_PW": PASSWORD},
    )
    assert result.exit_code == 0, result.output
    saved = [r for r in read_manifest(out / "manifest.jsonl") if r["status"] == "saved"]
    assert Counter((r["row"], r["protocol"]) for r in saved) == {
        (1, "WADO-URI"): 12,
        (2, "WADO-RS"): 32,
    }


# -- SIGINT and SIGKILL at random points of a batch, then a re-run ---------------------


@pytest.fixture(scope="module")
def counted(demo: DemoData) -> Iterator[tuple[Emulator, RequestLog]]:
    with counting_emulator(demo.root) as running:
        yield running


@pytest.mark.parametrize(
    ("sig", "seed"),
    [
        (signal.SIGKILL, 11),
        (signal.SIGKILL, 12),
        (signal.SIGKILL, 13),
        (signal.SIGINT, 14),
        (signal.SIGINT, 15),
        (signal.SIGINT, 16),
    ],
)
def test_batch_stopped_at_a_random_point_then_rerun(
    counted: tuple[Emulator, RequestLog],
    demo: DemoData,
    tmp_path: Path,
    sig: signal.Signals,
    seed: int,
) -> None:
    """A batch of every demo study stopped at a seeded random retrieve, then run
    again: every instance present and intact, none that was saved before the
    stop fetched again (counted at the server), none fetched twice by the
    re-run, no temporary file, the manifest saying each was saved once."""
    emulator, log = counted
    log.clear()
    rng = random.Random(seed)
    protocol = rng.choice(["wado-rs", "wado-uri"])
    # WADO-RS asks per series (11 here), WADO-URI per instance (105)
    stop_after = rng.randint(1, 9 if protocol == "wado-rs" else 90)
    accessions = [study.accession_number for study in demo.studies]
    rng.shuffle(accessions)
    path = tmp_path / "cohort.csv"
    path.write_text("Accession Number\n" + "\n".join(accessions) + "\n")
    out = tmp_path / "out"
    args = cli_command(
        "batch", str(path), "--url", emulator.dicomweb_url, "--user", USER,
        "-o", str(out), "--protocol", protocol, "--workers", "2", "--no-progress",
    )  # fmt: skip
    process, fired = stop_at_retrieve(
        args, log, sig, stop_after, rng.uniform(0.0, 0.05)
    )
    assert fired
    assert process.returncode in (0, 130 if sig == signal.SIGINT else -sig)
    before = on_disk(out)
    everything = expected(demo, *accessions)
    for uid, file in before.items():
        assert file.read_bytes() == everything[uid]  # what is there is whole
    log.clear()
    again = run_cli(args)
    assert again.returncode == 0, again.stderr
    fetched = log.retrieved(demo)
    assert not set(fetched) & set(before), "an instance saved before was fetched again"
    assert len(fetched) == len(set(fetched))
    assert sorted(fetched) == sorted(set(everything) - set(before))
    assert_complete(out, everything)
    saved = Counter(
        r["instance_uid"] for r in read_manifest(out / "manifest.jsonl")
        if r["status"] == "saved"
    )  # fmt: skip
    # a SIGKILL may come between a file's rename and its manifest line
    assert set(saved.values()) == {1}
    assert set(saved) <= set(everything)
    assert set(everything) - set(before) <= set(saved)


def test_report_counts_runs_not_studies(
    emulator: Emulator, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write(b"AccessionNumber\nACC0004\nACC0005\n")
    out = tmp_path / "out"
    for _ in range(2):
        assert run(emulator, "batch", str(path), "-o", str(out)).exit_code == 0
    report = CliRunner().invoke(main, ["report", str(out), "--json"])
    summary = json.loads(report.stdout)
    assert summary["runs"] == 2  # two commands, one per study inside each
    assert summary["saved"] == summary["skipped"] == 34


def test_search_names_the_repeated_values_that_matched_nothing(
    emulator: Emulator,
) -> None:
    result = run(
        emulator, "search", "--format", "csv",
        "--accession-number", "ACC0004", "--accession-number", "NOPE",
        "--accession-number", "ACC0004",
    )  # fmt: skip
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["AccessionNumber"] for row in rows] == ["ACC0004"]  # once
    assert "1 of 2 values matched nothing" in result.stderr  # ACC0004 once
    assert result.stderr.count("NOPE") == 1
    single = run(emulator, "search", "--accession-number", "NOPE", "--json")
    assert single.exit_code == 0 and json.loads(single.stdout) == []


def test_download_records_its_query_in_the_manifest(
    emulator: Emulator, tmp_path: Path
) -> None:
    result = run(
        emulator, "download", "--patient-id", "DTR004",
        "--min-date", "2020-01-01", "-o", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    queries = {r["query"] for r in read_manifest(tmp_path / "manifest.jsonl")}
    assert len(queries) == 1
    (query,) = queries
    assert "PatientID=DTR004" in query and "min_study_date=2020-01-01" in query


def test_a_refused_login_stops_the_batch_with_one_error(
    emulator: Emulator, write: Callable[..., Path], tmp_path: Path
) -> None:
    rows = "".join(f"ACC{n:04d}\n" for n in range(1, 41))
    path = write(f"AccessionNumber\n{rows}".encode())
    result = CliRunner().invoke(
        main,
        ["batch", str(path), "--url", emulator.dicomweb_url, "-o", str(tmp_path)],
        env={"DICOMTROLLEY_PASSWORD": None, "DICOMTROLLEY_USER": None},
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "401" in errors[0]  # not once per row
    assert "Hint: check --user" in result.stderr


def test_a_layout_that_cannot_work_is_refused_before_any_search(
    demo: DemoData, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write(b"AccessionNumber\nACC0002\n")
    with counting_emulator(demo.root) as (emulator, log):
        result = run(
            emulator, "batch", str(path), "-o", str(tmp_path / "o"), "--layout", "../x"
        )
        assert result.exit_code == 2, result.output
        assert "--layout" in result.stderr
        assert log.lines == []


def test_a_rerun_with_another_layout_searches_and_saves_its_own_copy(
    demo: DemoData, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write(b"AccessionNumber\nACC0002\n")
    out = tmp_path / "out"
    with counting_emulator(demo.root) as (emulator, log):
        assert run(emulator, "batch", str(path), "-o", str(out)).exit_code == 0
        log.clear()
        flat = run(emulator, "batch", str(path), "-o", str(out), "--layout", "flat")
        assert flat.exit_code == 0, flat.output
        assert "rows complete from an earlier run" not in flat.stderr
        assert any("/studies" in line for line in log.lines)  # searched again
        assert "Saved 16 files" in flat.stdout
        log.clear()
        again = run(emulator, "batch", str(path), "-o", str(out), "--layout", "flat")
        assert again.exit_code == 0, again.output
        assert "1 of 1 rows complete from an earlier run" in again.stderr
        assert log.lines == []


def test_a_complete_rerun_sends_nothing_and_loads_no_dicom_stack(
    demo: DemoData, write: Callable[..., Path], tmp_path: Path
) -> None:
    """What makes a re-run with nothing to fetch cheap: no request, and none of
    pydicom, the storage or the adapters imported (the benchmark's target)."""
    path = write(b"AccessionNumber\nACC0002\nACC0005\n")
    out = tmp_path / "out"
    with counting_emulator(demo.root) as (emulator, log):
        args = ["batch", str(path), "-o", str(out), "--url", emulator.dicomweb_url]
        args += ["--user", USER, "--quiet"]
        assert run_cli(cli_command(*args)).returncode == 0
        log.clear()
        loaded = ("pydicom", "dicomtrolley.storage", "dicomtrolley.wado_rs")
        script = (
            "import sys\nfrom dicomtrolley.cli.main import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit as end:\n"
            "    print('exit', end.code)\n"
            f"print([name for name in {loaded!r} if name in sys.modules])"
        )
        again = run_cli([sys.executable, "-c", script])
        assert again.stdout.split("\n")[:2] == ["exit 0", "[]"], again.stderr
        assert log.lines == []
    skipped = [
        r for r in read_manifest(out / "manifest.jsonl") if r["status"] == "skipped"
    ]
    assert len(skipped) == 28 and all(r["checksum"] for r in skipped)
