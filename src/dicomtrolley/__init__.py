"""dicomtrolley: find DICOM studies on any PACS and bring them home.

Search over QIDO-RS (and MINT, C-FIND), download over WADO-RS and WADO-URI (and
RAD-69, C-GET, C-MOVE), to disk or to memory. The modules keep the dicomtrolley
4.1.0 paths (``dicomtrolley.core``, ``dicomtrolley.trolley``, ``dicomtrolley.qido_rs``
...); the most used names are also importable from here.

Those names are imported when first used (PEP 562), not with the package: every
``import dicomtrolley.x`` runs this file first, and importing the models here
would bring pydicom, numpy and pydantic into commands that need none of them
(``dicomtrolley report``, a batch re-run with nothing to fetch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicomtrolley.core import (
        ExtendedQuery,
        Instance,
        InstanceReference,
        Query,
        QueryLevels,
        Series,
        SeriesReference,
        Study,
        StudyReference,
    )
    from dicomtrolley.exceptions import (
        DICOMTrolleyError,
        PermanentError,
        TransientError,
    )
    from dicomtrolley.storage import FlatStorageDir, StorageDir, TemplateStorage
    from dicomtrolley.transport import Retry, Timeout
    from dicomtrolley.trolley import Trolley

    __version__: str

#: Name -> the module it comes from, imported on first use.
_LAZY: dict[str, str] = {
    "ExtendedQuery": "dicomtrolley.core",
    "Instance": "dicomtrolley.core",
    "InstanceReference": "dicomtrolley.core",
    "Query": "dicomtrolley.core",
    "QueryLevels": "dicomtrolley.core",
    "Series": "dicomtrolley.core",
    "SeriesReference": "dicomtrolley.core",
    "Study": "dicomtrolley.core",
    "StudyReference": "dicomtrolley.core",
    "DICOMTrolleyError": "dicomtrolley.exceptions",
    "PermanentError": "dicomtrolley.exceptions",
    "TransientError": "dicomtrolley.exceptions",
    "FlatStorageDir": "dicomtrolley.storage",
    "StorageDir": "dicomtrolley.storage",
    "TemplateStorage": "dicomtrolley.storage",
    "Retry": "dicomtrolley.transport",
    "Timeout": "dicomtrolley.transport",
    "Trolley": "dicomtrolley.trolley",
}

__all__ = [
    "DICOMTrolleyError",
    "ExtendedQuery",
    "FlatStorageDir",
    "Instance",
    "InstanceReference",
    "PermanentError",
    "Query",
    "QueryLevels",
    "Retry",
    "Series",
    "SeriesReference",
    "StorageDir",
    "Study",
    "StudyReference",
    "TemplateStorage",
    "Timeout",
    "TransientError",
    "Trolley",
    "__version__",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dicomtrolley")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dicomtrolley' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})
