"""The dicomtrolley 4.1.0 public names stay importable from their 4.1.0 modules,
and every exception sits in exactly one branch of the hierarchy."""

from __future__ import annotations

import importlib
import inspect
import logging

import pytest

from dicomtrolley.dimse.errors import DIMSEError
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    HTTPStatusError,
    IncompleteResponseError,
    PermanentError,
    TransientError,
)

EXPORTS_4_1_0: dict[str, list[str]] = {
    "dicomtrolley.core": [
        "DICOMDownloadable",
        "DICOMObject",
        "DICOMObjectLevels",
        "DICOMObjectReference",
        "Downloader",
        "ExtendedQuery",
        "Instance",
        "InstanceReference",
        "NonInstanceParameterError",
        "NonSeriesParameterError",
        "Query",
        "QueryLevels",
        "QuerySubType",
        "Searcher",
        "Series",
        "SeriesReference",
        "Study",
        "StudyReference",
        "to_instance_refs",
        "to_references",
        "to_series_level_refs",
    ],
    "dicomtrolley.trolley": ["Trolley"],
    "dicomtrolley.storage": ["DICOMDiskStorage", "FlatStorageDir", "StorageDir"],
    "dicomtrolley.caching": [
        "CachedSearcher",
        "DICOMObjectCache",
        "NodeNotFound",
        "QueryCache",
    ],
    "dicomtrolley.parsing": [
        "DICOMObjectNotFound",
        "DICOMObjectTree",
        "DICOMParseTree",
        "flatten",
    ],
    "dicomtrolley.exceptions": [
        "DICOMTrolleyAuthError",
        "DICOMTrolleyError",
        "MultipartContentError",
        "NoQueryResultsError",
        "NoReferencesFoundError",
        "Rad69ServerError",
        "StorageError",
        "UnSupportedParameterError",
        "XDSMissingDocumentError",
    ],
    "dicomtrolley.qido_rs": [
        "HierarchicalQuery",
        "NoQueryResults",
        "QidoRS",
        "QidoRSQueryBase",
        "RelationalQuery",
    ],
    "dicomtrolley.wado_rs": ["WadoRS", "WadoRSMetaData"],
    "dicomtrolley.wado_uri": ["WadoURI"],
    "dicomtrolley.logs": ["get_module_logger"],
    "dicomtrolley.mint": [
        "Mint",
        "MintAttribute",
        "MintInstance",
        "MintQuery",
        "MintSeries",
        "MintStudy",
        "parse_attribs",
        "parse_mint_studies_response",
    ],
    "dicomtrolley.fields": [
        "InstanceLevel",
        "SeriesLevel",
        "SeriesLevelPromotable",
        "StudyLevel",
    ],
    "dicomtrolley.auth": ["VitreaAuth", "create_session"],
    "dicomtrolley.servers": ["IMPAXDataCenter", "VitreaConnection"],
    "dicomtrolley.rad69": ["Rad69"],
    "dicomtrolley.dicom_qr": ["DICOMQR", "DICOMQuery"],
}

# modules whose exception classes are checked against the hierarchy
EXCEPTION_MODULES = [
    "dicomtrolley.exceptions",
    "dicomtrolley.core",
    "dicomtrolley.query",
    "dicomtrolley.levels",
    "dicomtrolley.parsing",
    "dicomtrolley.caching",
    "dicomtrolley.storage",
    "dicomtrolley.uids",
    "dicomtrolley.transport",
    "dicomtrolley.download",
    "dicomtrolley.trolley",
    "dicomtrolley.streaming",
    "dicomtrolley.qido_rs",
    "dicomtrolley.wado_rs",
    "dicomtrolley.wado_uri",
    "dicomtrolley.mint",
    "dicomtrolley.formats.mint_xml",
    "dicomtrolley.rad69",
    "dicomtrolley.formats.soap",
    "dicomtrolley.auth",
    "dicomtrolley.servers",
    "dicomtrolley.dicom_qr",
    "dicomtrolley.dimse.errors",
]

# the roots of the hierarchy: by design in no branch, or (the root) above both
CATEGORIES = {
    DICOMTrolleyError,
    TransientError,
    PermanentError,
    HTTPStatusError,
    DIMSEError,
}


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in EXPORTS_4_1_0.items() for name in names],
)
def test_4_1_0_name_is_importable(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_core_reexports_are_the_same_objects() -> None:
    core = importlib.import_module("dicomtrolley.core")
    exceptions = importlib.import_module("dicomtrolley.exceptions")
    levels = importlib.import_module("dicomtrolley.levels")
    query = importlib.import_module("dicomtrolley.query")
    assert core.NonInstanceParameterError is exceptions.NonInstanceParameterError
    assert core.NonSeriesParameterError is exceptions.NonSeriesParameterError
    assert core.QueryLevels is levels.QueryLevels
    assert core.Query is query.Query
    assert sorted(core.__all__) == core.__all__
    for name in core.__all__:
        assert hasattr(core, name)


def test_legacy_alias() -> None:
    exceptions = importlib.import_module("dicomtrolley.exceptions")
    assert exceptions.DICOMTrolleyException is DICOMTrolleyError


def test_loggers_live_under_trolley() -> None:
    logs = importlib.import_module("dicomtrolley.logs")
    logger = logs.get_module_logger("core")
    assert isinstance(logger, logging.Logger)
    assert logger.name == "trolley.core"
    assert logger.parent is not None
    assert logging.getLogger("trolley") in (logger.parent, logger.parent.parent)


def exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_name in EXCEPTION_MODULES:
        module = importlib.import_module(module_name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith(
                "dicomtrolley"
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[key] for key in sorted(found)]


@pytest.mark.parametrize("cls", exception_classes(), ids=lambda c: c.__qualname__)
def test_exception_sits_in_one_branch(cls: type[BaseException]) -> None:
    assert issubclass(cls, DICOMTrolleyError), f"{cls} is not a DICOMTrolleyError"
    if cls in CATEGORIES:
        return
    transient = issubclass(cls, TransientError)
    permanent = issubclass(cls, PermanentError)
    assert transient != permanent, f"{cls.__name__}: {transient=} {permanent=}"


def test_the_hierarchy_matches_the_tree() -> None:
    exceptions = importlib.import_module("dicomtrolley.exceptions")
    expected_parents = {
        "DICOMTrolleyConnectionError": "TransientError",
        "DICOMTrolleyTimeoutError": "DICOMTrolleyConnectionError",
        "ServerHTTPError": "TransientError",
        "ClientHTTPError": "PermanentError",
        "DICOMTrolleyAuthError": "PermanentError",
        "ResponseFormatError": "PermanentError",
        "MultipartContentError": "ResponseFormatError",
        "DICOMParseError": "PermanentError",
        "UnSupportedParameterError": "PermanentError",
        "NoReferencesFoundError": "PermanentError",
        "NoQueryResultsError": "PermanentError",
        "NonSeriesParameterError": "PermanentError",
        "NonInstanceParameterError": "PermanentError",
        "StorageError": "PermanentError",
        "UnsafePathError": "StorageError",
        "InvalidUIDError": "PermanentError",
        "DownloadIncompleteError": "PermanentError",
        "Rad69ServerError": "PermanentError",
        "XDSMissingDocumentError": "Rad69ServerError",
    }
    for name, parent in expected_parents.items():
        assert issubclass(getattr(exceptions, name), getattr(exceptions, parent)), name
    for name in ("ServerHTTPError", "ClientHTTPError"):
        assert issubclass(getattr(exceptions, name), HTTPStatusError)
    assert issubclass(IncompleteResponseError, TransientError)
    assert not issubclass(IncompleteResponseError, PermanentError)
    for name in expected_parents:
        assert name in (exceptions.__doc__ or ""), f"{name} missing from the tree"


def test_errors_carry_context_without_credentials() -> None:
    error = DICOMTrolleyError(
        "download failed",
        url="https://user:pw@pacs/wado?x=1#f",
        status_code=503,
        uids=["1.2", "1.2.3"],
    )
    assert error.url == "https://pacs/wado?x=1"
    assert error.uids == ("1.2", "1.2.3")
    assert str(error) == "download failed (HTTP 503) [https://pacs/wado?x=1]"
    assert "pw" not in str(error)
    assert str(DICOMTrolleyError()) == "DICOMTrolleyError"
    assert (
        str(
            DICOMTrolleyError(
                "HTTP 404 at https://h/x", url="https://h/x", status_code=404
            )
        )
        == "HTTP 404 at https://h/x"
    )
