"""An emulator over a few small instances, for the adapter compatibility tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import pytest

from dicomtrolley.core import InstanceReference
from dicomtrolley.emulator import Emulator
from tests.fakes import dicom_file


@contextlib.contextmanager
def emulator_serving(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    instances: Iterable[InstanceReference],
) -> Iterator[Emulator]:
    """An emulator over one small DICOM file per instance reference."""
    root = tmp_path_factory.mktemp(name)
    for item in instances:
        path = root / f"{item.instance_uid}.dcm"
        path.write_bytes(dicom_file(item.study_uid, item.series_uid, item.instance_uid))
    with Emulator(root) as running:
        yield running
