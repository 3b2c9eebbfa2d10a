"""4.1.0 storage subclasses are honoured by every downloader, not only WADO.

A ``StorageDir`` subclass that overrides ``save()`` (to change each dataset)
and a ``FlatStorageDir`` subclass that overrides ``generate_path()`` (its own
layout) get every instance of a RAD-69 and a C-GET download, as 4.1.0's
downloaders called ``storage.save(dataset, path)`` for each instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from dicomtrolley.auth import create_session
from dicomtrolley.core import Query, QueryLevels
from dicomtrolley.dicom_qr import DICOMQR, DICOMQRGet
from dicomtrolley.emulator import DimseService, Emulator, default_services
from dicomtrolley.mint import Mint
from dicomtrolley.rad69 import Rad69
from dicomtrolley.storage import DICOMDiskStorage, FlatStorageDir, StorageDir
from dicomtrolley.trolley import Trolley
from tests.emulator.conftest import PASSWORD, USER, DemoData
from tests.fakes import tree

HOST = "127.0.0.1"
SYNTAXES = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.5",
]


class Stamping(StorageDir):
    """Changes each dataset, then saves it the usual way."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.saved: list[str] = []

    def save(self, dataset: Dataset, path: str | Path | None = None) -> Path:
        self.saved.append(str(dataset.SOPInstanceUID))
        dataset.InstitutionName = "Stamped"
        return super().save(dataset, path)


class ByModality(FlatStorageDir):
    def generate_path(self, dataset: Dataset) -> Path:
        return Path(str(dataset.Modality)) / f"{dataset.SOPInstanceUID}.dcm"


@pytest.fixture(scope="module")
def emulator(demo: DemoData) -> Iterator[Emulator]:
    services = [*default_services(), DimseService()]
    with Emulator(demo.root, services=services, rescan_interval=None) as running:
        yield running


@pytest.fixture
def session(emulator: Emulator) -> Iterator[requests.Session]:
    with create_session(emulator.login_url, USER, PASSWORD) as logged_in:
        yield logged_in


def files(folder: Path) -> list[Path]:
    return sorted(p for p in tree(folder) if p.is_file())


def check(storage: DICOMDiskStorage, out: Path, demo: DemoData, study: str) -> None:
    expected = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in demo.paths
        if str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) == study
    }
    saved = files(out)
    assert not [p for p in files(out.parent) if p.name.endswith((".part", ".tmp"))]
    datasets = [pydicom.dcmread(p) for p in saved]
    assert {str(ds.SOPInstanceUID) for ds in datasets} == expected
    if isinstance(storage, Stamping):
        assert sorted(storage.saved) == sorted(expected)
        assert {str(ds.InstitutionName) for ds in datasets} == {"Stamped"}
    else:
        for path, ds in zip(saved, datasets, strict=True):
            assert path == out / str(ds.Modality) / f"{ds.SOPInstanceUID}.dcm"


@pytest.mark.parametrize("kind", ["save", "generate_path"])
def test_rad69_download_honours_storage_overrides(
    emulator: Emulator, session: requests.Session, demo: DemoData, tmp_path: Path,
    kind: str,
) -> None:  # fmt: skip
    out = tmp_path / "out"
    storage = Stamping(str(out)) if kind == "save" else ByModality(out)
    mint = Mint(session, emulator.mint_url)
    (study, *_) = mint.find_studies(Query(query_level=QueryLevels.INSTANCE))
    trolley = Trolley(
        searcher=mint,
        downloader=Rad69(
            session, emulator.base_url + "/rad69", transfer_syntax_list=SYNTAXES
        ),
        storage=storage,
    )
    trolley.download(study, out)
    check(storage, out, demo, study.uid)


@pytest.mark.parametrize("kind", ["save", "generate_path"])
def test_c_get_download_honours_storage_overrides(
    emulator: Emulator, demo: DemoData, tmp_path: Path, kind: str
) -> None:
    service = emulator.dimse
    assert isinstance(service, DimseService)
    out = tmp_path / "out"
    storage = Stamping(str(out)) if kind == "save" else ByModality(out)
    searcher = DICOMQR(HOST, service.port, "TROLLEY", service.ae_title)
    (study, *_) = searcher.find_studies(Query())
    trolley = Trolley(
        searcher=searcher,
        downloader=DICOMQRGet(HOST, service.port, "TROLLEY", service.ae_title),
        storage=storage,
    )
    trolley.download(study, out)
    check(storage, out, demo, study.uid)
