"""The exception tree: drawn in dicomtrolley.exceptions, and true of every class.

Every error is transient or permanent, never both: a caller that retries
TransientErrors and gives up on PermanentErrors (or a FallbackDownloader that
switches protocol on PermanentErrors) must get one answer for each class.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import dicomtrolley
from dicomtrolley import exceptions
from dicomtrolley.exceptions import (
    DICOMTrolleyError,
    IncompleteResponseError,
    MultipartContentError,
    PermanentError,
    TransientError,
)


def package_exception_classes() -> list[type[BaseException]]:
    """Every exception class defined anywhere in the package, modules all imported."""
    for info in pkgutil.walk_packages(dicomtrolley.__path__, "dicomtrolley."):
        importlib.import_module(info.name)
    found: dict[str, type[BaseException]] = {}
    pending: list[type[BaseException]] = [BaseException]
    while pending:  # subclasses also catches classes defined inside functions
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("dicomtrolley"):
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


def test_the_walk_finds_exceptions_of_every_layer() -> None:
    names = {cls.__name__ for cls in package_exception_classes()}
    # exceptions.py, the DIMSE errors, and classes defined in other modules
    assert {"IncompleteResponseError", "DIMSEError", "ConfigError"} <= names


def in_both_branches(classes: list[type[BaseException]]) -> list[str]:
    return [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if issubclass(cls, TransientError) and issubclass(cls, PermanentError)
    ]


def test_no_exception_class_is_both_transient_and_permanent() -> None:
    assert in_both_branches(package_exception_classes()) == []


def test_the_check_would_catch_a_class_in_both_branches() -> None:
    class Ambiguous(TransientError, PermanentError):
        pass

    assert in_both_branches([MultipartContentError, Ambiguous]) == [
        f"{__name__}.{Ambiguous.__qualname__}"
    ]


def drawn_tree() -> dict[str, str]:
    """Child name -> parent name, as the docstring of exceptions.py draws them."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (exceptions.__doc__ or "").splitlines():
        match = re.match(r"^\s*((?:[│ ]   )*)(?:[├└]── )?([A-Za-z]\w*Error)\b", line)
        if match is None:
            continue
        if "──" not in line and match.group(2) != "DICOMTrolleyError":
            continue  # prose that goes on below a drawn class
        depth = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        name = match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_the_drawn_tree_is_the_class_tree() -> None:
    parents = drawn_tree()
    assert parents["TransientError"] == "DICOMTrolleyError"
    assert parents["IncompleteResponseError"] == "TransientError"
    assert parents["UnsafePathError"] == "StorageError"
    for child, parent in parents.items():
        assert getattr(exceptions, parent) in getattr(exceptions, child).__mro__, (
            f"{child} is drawn under {parent}"
        )
    defined = {
        name
        for name, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, DICOMTrolleyError)
        and cls.__module__ == exceptions.__name__
        and cls is not DICOMTrolleyError
    }
    assert defined == set(parents), "every class of exceptions.py is drawn"


def test_a_cut_answer_is_transient_only() -> None:
    error = IncompleteResponseError("answer ended after 10 of 20 bytes")
    assert isinstance(error, TransientError)
    assert not isinstance(error, PermanentError)
    assert not isinstance(error, MultipartContentError)
