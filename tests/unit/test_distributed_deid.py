"""De-identification settings for workers, and the records several processes write.

The settings a worker gets hold no key, rebuild the client's de-identifier from
the key in the worker's environment (a recipe from its text, the file gone),
and refuse a missing or other key naming the variable and the worker; a key
written in a profile's [deid] table never pickles with the connector. The
mapping records of several processes (file and shards) are read as one, each
pair once, every file 0600.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import stat
from pathlib import Path

import pytest

from dicomtrolley.catalog import STATE_FOLDER
from dicomtrolley.cli.batch_dask import deid_key_env
from dicomtrolley.cli.connection import ConnectionSettings
from dicomtrolley.config_model import DeidConfig, Profile
from dicomtrolley.deid import KEY_ENV, Deidentifier
from dicomtrolley.deid_records import (
    FLAGS_NAME,
    MAP_NAME,
    append_private,
    read_flags,
    read_mapping,
    record_files,
    record_path,
)
from dicomtrolley.distributed import ProfileConnector
from dicomtrolley.distributed.deid import DeidSettings, DeidWorkerError
from dicomtrolley.distributed.worker import is_fatal
from dicomtrolley.storage import TemplateStorage
from tests.deid_checks import KEY, OTHER_KEY

ENV = "TEST_WORKER_DEID_KEY"


def test_the_settings_carry_no_key_and_rebuild_the_clients_deidentifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tmp_path / "mine.dicom"
    recipe.write_text("FORMAT dicom\n\n%header\n\nREMOVE PatientName\n")
    client = Deidentifier(KEY, recipe, retain_dates=True, key_env=ENV)
    data = pickle.dumps(DeidSettings.of(client))
    assert KEY.encode() not in data
    recipe.unlink()  # the worker need not see the file: its text travels
    monkeypatch.setenv(ENV, KEY)
    worker = pickle.loads(data).open("host-1")
    assert worker.fingerprint == client.fingerprint
    assert worker.records_shard == "host-1"
    uid = "1.2.3.4.5"
    assert worker.map_uid(uid) == client.map_uid(uid)
    assert worker.date_offset_days("P1") == client.date_offset_days("P1")


def test_a_worker_without_the_key_or_with_another_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = DeidSettings.of(Deidentifier(KEY, key_env=ENV))
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(DeidWorkerError, match=f"worker h-2 .*set {ENV}") as missing:
        settings.open("h-2")
    monkeypatch.setenv(ENV, OTHER_KEY)
    with pytest.raises(DeidWorkerError, match=f"h-2: the key in its \\${ENV}"):
        settings.open("h-2")
    assert is_fatal(missing.value)  # the run stops at once
    other = DeidSettings.of(Deidentifier(OTHER_KEY, retain_device=True, key_env=ENV))
    monkeypatch.setenv(ENV, OTHER_KEY)
    older = pickle.loads(pickle.dumps(other).replace(b"2026c", b"2019a"))
    with pytest.raises(DeidWorkerError, match=r"PS3\.15 2026c, the client 2019a"):
        older.open("h-2")


def test_a_key_written_in_the_profile_never_travels_with_the_connector() -> None:
    profile = Profile(
        name="p",
        url="http://127.0.0.1:9/dicom-web",
        deid=DeidConfig(key="written-in-the-config-file"),
    )
    data = pickle.dumps(ProfileConnector(profile, ("wado-rs",), 3))
    assert b"written-in-the-config-file" not in data
    back = pickle.loads(data)
    assert (back.profile.deid, back.chosen, back.limit) == (None, ("wado-rs",), 3)
    assert back.profile.url == profile.url


def _append_many(root: str, shard: str | None, start: int) -> None:
    for n in range(start, start + 200):
        lines = [{"type": "uid", "source": f"1.{n}", "mapped": f"2.25.{n}"}] * 3
        append_private(record_path(Path(root), MAP_NAME, shard), lines)


@pytest.mark.parametrize("shards", [False, True])
def test_records_of_several_processes_are_whole_lines_read_once(
    tmp_path: Path, shards: bool
) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_append_many, args=(str(tmp_path), f"h-{n}" if shards else None, n)
        )
        for n in (0, 100, 1000)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    files = record_files(tmp_path, MAP_NAME)
    assert len(files) == (3 if shards else 1)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for line in path.read_text().splitlines():
            json.loads(line)  # whole lines: none cut by another process
    if shards:
        folder = files[0].parent
        assert folder.name == "deid-map.d" and folder.parent.name == STATE_FOLDER
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    mapping = read_mapping(tmp_path)
    expected = set(range(0, 300)) | set(range(1000, 1200))
    assert sorted(int(r["source"][2:]) for r in mapping) == sorted(expected)


def test_flags_of_the_file_and_the_shards(tmp_path: Path) -> None:
    flag = {"time": "t1", "instance_uid": "2.25.1", "path": "a", "reason": "x"}
    append_private(record_path(tmp_path, FLAGS_NAME), [flag])
    append_private(
        record_path(tmp_path, FLAGS_NAME, "w/1"),
        [{**flag, "time": "t2"}, {**flag, "instance_uid": "2.25.2", "time": "t0"}],
    )
    (tmp_path / STATE_FOLDER / "deid-flags.d" / "w_1.jsonl").open("a").write('{"ti')
    assert [(f["instance_uid"], f["time"]) for f in read_flags(tmp_path)] == [
        ("2.25.2", "t0"),
        ("2.25.1", "t2"),
    ]


def test_local_workers_get_the_key_the_command_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(ENV, OTHER_KEY)
    plain = TemplateStorage(tmp_path, "{SOPInstanceUID}")
    assert deid_key_env(plain, ConnectionSettings()) == {}
    storage = TemplateStorage(tmp_path, "{SOPInstanceUID}", transform=Deidentifier())
    assert deid_key_env(storage, ConnectionSettings()) == {KEY_ENV: KEY}
    profile = Profile(url="http://127.0.0.1:9/dicom-web", deid=DeidConfig(key_env=ENV))
    storage.transform = Deidentifier(OTHER_KEY)
    connection = ConnectionSettings(profile=profile)
    assert deid_key_env(storage, connection) == {ENV: OTHER_KEY}
    assert DeidSettings.of(storage.transform).key_env == ENV
