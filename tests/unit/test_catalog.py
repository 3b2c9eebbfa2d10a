"""The index of an output folder (catalog.py), the umask, stale temporary files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dicomtrolley.catalog import INDEX_NAME, STATE_FOLDER, Catalog, file_checksum
from dicomtrolley.core import InstanceReference
from dicomtrolley.files import TEMP_SUFFIX, is_stale_temp_file, temp_prefix
from dicomtrolley.storage import StorageDir, TemplateStorage
from tests.fakes import dicom_file

STUDY, SERIES = "1.2.840.1", "1.2.840.1.2"


def ref(n: int) -> InstanceReference:
    return InstanceReference(STUDY, SERIES, f"1.2.840.1.2.{n}")


def save(storage: TemplateStorage, root: Path, n: int, pixel_bytes: int = 512) -> Path:
    writer = storage.open_writer(root, expected=ref(n))
    data = dicom_file(STUDY, SERIES, ref(n).instance_uid, pixel_bytes=pixel_bytes)
    writer.write(data[:7])
    writer.write(data[7:])
    return writer.commit()


def test_a_saved_file_gets_a_row_with_size_and_checksum(tmp_path: Path) -> None:
    path = save(StorageDir(tmp_path), tmp_path, 1)
    entry = Catalog.for_folder(tmp_path).entry(ref(1).instance_uid)
    assert entry is not None
    assert (entry.study_uid, entry.series_uid) == (STUDY, SERIES)
    assert tmp_path.resolve() / entry.path == path
    assert entry.size == path.stat().st_size
    assert entry.checksum == file_checksum(path)  # computed while writing
    assert entry.state == "present"
    assert (tmp_path / STATE_FOLDER / INDEX_NAME).is_file()


def test_truncated_or_deleted_file_is_not_present(tmp_path: Path) -> None:
    catalog = Catalog.for_folder(tmp_path)
    one, two = (save(StorageDir(tmp_path), tmp_path, n) for n in (1, 2))
    assert catalog.present(ref(1).instance_uid) == one
    one.write_bytes(one.read_bytes()[:-3])
    two.unlink()
    assert catalog.present(ref(1).instance_uid) is None
    assert catalog.present(ref(2).instance_uid) is None
    entry = catalog.entry(ref(1).instance_uid)
    assert entry is not None and entry.state == "gone"


def test_deleted_index_is_rebuilt_by_scanning(tmp_path: Path) -> None:
    storage = TemplateStorage(tmp_path, "{PatientID}/{SOPInstanceUID}.dcm")
    paths = [save(storage, tmp_path, n) for n in range(1, 4)]
    paths[2].write_bytes(paths[2].read_bytes()[:-100])  # damaged: not indexed
    (tmp_path / "notes.txt").write_text("not DICOM")
    Catalog.for_folder(tmp_path).close()
    for name in os.listdir(tmp_path / STATE_FOLDER):
        (tmp_path / STATE_FOLDER / name).unlink()
    catalog = Catalog.for_folder(tmp_path)
    found = {e.instance_uid: e for e in catalog.entries()}
    assert set(found) == {ref(1).instance_uid, ref(2).instance_uid}
    assert found[ref(1).instance_uid].checksum is None  # headers only
    # a scanned file counts for a layout that puts it where it is
    assert storage.existing_file(ref(1), tmp_path) == paths[0]
    assert StorageDir(tmp_path).existing_file(ref(2), tmp_path) is None
    assert storage.existing_file(ref(3), tmp_path) is None


def test_rows_from_many_threads(tmp_path: Path) -> None:
    storage = StorageDir(tmp_path)
    errors: list[BaseException] = []

    def work(start: int) -> None:
        try:
            for n in range(start, start + 10):
                save(storage, tmp_path, n)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i * 10,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(Catalog.for_folder(tmp_path).entries()) == 80


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_files_get_the_umask(tmp_path: Path, mask: int) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from dicomtrolley.storage import StorageDir, make_temp_file\n"
        "from tests.fakes import dicom_file\n"
        f"os.umask({mask})\n"
        "root = Path(sys.argv[1])\n"
        "fd, name = make_temp_file(root)\n"
        "os.close(fd)\n"
        "print(name)\n"
        "w = StorageDir(root).open_writer(root)\n"
        "w.write(dicom_file('1.2.3', '1.2.3.4', '1.2.3.4.5'))\n"
        "print(w.commit())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    temp, final = (Path(line) for line in result.stdout.split())
    expected = 0o666 & ~mask
    assert stat.S_IMODE(temp.stat().st_mode) == expected
    assert stat.S_IMODE(final.stat().st_mode) == expected


def test_temp_files_of_dead_processes_are_stale(tmp_path: Path) -> None:
    mine = tmp_path / f"{temp_prefix()}abc{TEMP_SUFFIX}"
    mine.write_bytes(b"")
    assert not is_stale_temp_file(mine)
    pid = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
        ).stdout
    )
    gone = tmp_path / f".dicomtrolley-{pid}-xyz{TEMP_SUFFIX}"
    gone.write_bytes(b"partial")
    assert is_stale_temp_file(gone)
    Catalog.for_folder(tmp_path)  # opening a folder removes them
    assert not gone.exists() and mine.exists()


def test_only_a_few_connections_stay_open(tmp_path: Path) -> None:
    from dicomtrolley.catalog import MAX_OPEN_CATALOGS

    folders = [tmp_path / f"out{n}" for n in range(MAX_OPEN_CATALOGS + 5)]
    paths = [save(StorageDir(folder), folder, 1) for folder in folders]
    opened = [c for c in Catalog._shared.values() if c._db is not None]
    assert len(opened) <= MAX_OPEN_CATALOGS
    first = Catalog.for_folder(folders[0])  # closed meanwhile: opens again
    assert first.present(ref(1).instance_uid) == paths[0]
    for folder in folders:
        Catalog.for_folder(folder).close()


def test_many_uids_are_looked_up_in_chunks_with_the_checks_of_present(
    tmp_path: Path,
) -> None:
    storage = StorageDir(tmp_path)
    paths = {
        ref(n).instance_uid: save(storage, tmp_path, n, 16) for n in range(1, 1203)
    }
    catalog = Catalog.for_folder(tmp_path)
    uids = [*paths, "1.2.3.404"]
    assert set(catalog.entries_of(uids)) == set(paths)  # more than one query's worth
    layout = storage.layout_key()
    assert catalog.present_of(uids, layout) == {
        uid: path.resolve() for uid, path in paths.items()
    }
    gone, cut = ref(7).instance_uid, ref(1100).instance_uid
    paths[gone].unlink()
    paths[cut].write_bytes(b"short")
    present = catalog.present_of(uids, layout)
    assert gone not in present and cut not in present and len(present) == 1200
    assert catalog.present_of(uids, "another layout") == {}
    assert catalog.entry(gone).state == "gone"  # as present() marks it
