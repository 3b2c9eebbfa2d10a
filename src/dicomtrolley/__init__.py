"""dicomtrolley: find DICOM studies on any PACS and bring them home.

Search over QIDO-RS (and MINT, C-FIND), download over WADO-RS and WADO-URI (and
RAD-69, C-GET, C-MOVE), to disk or to memory. The modules keep the dicomtrolley
4.1.0 paths (``dicomtrolley.core``, ``dicomtrolley.trolley``, ``dicomtrolley.qido_rs``
...); the most used names are also importable from here.
"""

from importlib.metadata import PackageNotFoundError, version

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

try:
    __version__ = version("dicomtrolley")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

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
