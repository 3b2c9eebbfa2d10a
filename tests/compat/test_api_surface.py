"""Every public name of dicomtrolley 4.1.0 still exists here, with a compatible
signature.

``api_4_1_0.json`` was generated once from the 4.1.0 release by
``scripts/api_surface.py``; this test walks it mechanically. A signature is
compatible when every 4.1.0 call still binds the same way: positional
parameters keep their names and positions, a parameter keeps or widens its kind
(keyword-only or positional-only may become positional-or-keyword), one that had
a default keeps one, and anything new has a default. Classes keep their 4.1.0
ancestors among dicomtrolley classes and their foreign bases (pydantic
``BaseModel``, ``IntEnum``, ``defaultdict`` ...).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import json
import textwrap
import types
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from scripts import api_surface

SURFACE = json.loads((Path(__file__).parent / "api_4_1_0.json").read_text())

Param = dict[str, Any]
POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")
VARIADIC = ("VAR_POSITIONAL", "VAR_KEYWORD")


# ---------------------------------------------------------------- the entries


def _entries() -> Iterator[Any]:
    """One pytest param per module, name, class member, field and attribute."""
    for module, spec in SURFACE["modules"].items():
        param = functools.partial(_param, module)
        yield param("module", None, None, module)
        for name, entry in spec["names"].items():
            prefix = f"{module}:{name}"
            yield param("name", name, entry, prefix)
            if entry["kind"] != "class":
                continue
            for member, info in entry["members"].items():
                yield param("member", (name, member), info, f"{prefix}.{member}")
            for field, info in entry["fields"].items():
                yield param("field", (name, field), info, f"{prefix}.{field}")
            for attribute in entry["instance_attributes"]:
                yield param("attribute", (name, attribute), {}, f"{prefix}.{attribute}")


def _param(module: str, what: str, name: Any, entry: Any, id: str) -> Any:
    return pytest.param(what, module, name, entry, id=id)


@pytest.mark.parametrize(("what", "module", "name", "entry"), list(_entries()))
def test_surface_entry(what: str, module: str, name: Any, entry: Any) -> None:
    check: Any = CHECKS[what]
    problems = check(module, name, entry)
    assert not problems, "; ".join(problems)


# --------------------------------------------------------------- the checkers


def _check_module(module: str, _name: None, _entry: None) -> list[str]:
    importlib.import_module(module)
    return []


def _check_name(module: str, name: str, entry: dict[str, Any]) -> list[str]:
    ours = importlib.import_module(module)
    if not hasattr(ours, name):
        return [f"{module}.{name} is missing"]
    obj = getattr(ours, name)
    kind = entry["kind"]
    if kind == "reexport":
        return _check_reexport(module, name, obj, entry)
    if kind == "function":
        if not callable(obj) or isinstance(obj, type):
            return [f"{module}.{name} is no longer a function"]
        return _compatible(entry["params"], _params(obj), f"{module}.{name}")
    if kind == "class":
        return _check_class(module, name, obj, entry)
    return []  # a value: that it exists is all 4.1.0 promised


def _check_reexport(
    module: str, name: str, obj: Any, entry: dict[str, Any]
) -> list[str]:
    origin = importlib.import_module(entry["origin"])
    if entry["of"] == "module":
        if obj is not origin:
            return [f"{module}.{name} should be the module {entry['origin']}"]
        return []
    original = getattr(origin, entry["origin_name"], None)
    if original is None:
        return [f"{entry['origin']}.{entry['origin_name']} (re-exported) is missing"]
    same = obj is original if entry["of"] in ("class", "function") else obj == original
    if not same:
        return [f"{module}.{name} is not {entry['origin']}.{entry['origin_name']}"]
    return []


def _check_class(module: str, name: str, cls: Any, entry: dict[str, Any]) -> list[str]:
    where = f"{module}.{name}"
    if not isinstance(cls, type):
        return [f"{where} is no longer a class"]
    problems = []
    for ancestor in entry["dicomtrolley_ancestors"]:
        base = _resolve(ancestor)
        if base is None:
            problems.append(f"{where}: ancestor {ancestor} is missing")
        elif not issubclass(cls, base):
            problems.append(f"{where} is no longer a subclass of {ancestor}")
    for foreign in entry["external_bases"]:
        base = _resolve(foreign)
        if base is not None and not issubclass(cls, base):
            problems.append(f"{where} is no longer a subclass of {foreign}")
    if entry["init"] is not None:
        problems += _compatible(entry["init"], _params(cls), f"{where}()")
    return problems


def _check_member(
    module: str, names: tuple[str, str], entry: dict[str, Any]
) -> list[str]:
    cls = _our_class(module, names[0])
    if cls is None:
        return [f"{module}.{names[0]} is missing"]
    name = names[1]
    where = f"{module}.{names[0]}.{name}"
    kind = entry["kind"]
    try:
        raw = inspect.getattr_static(cls, name)
    except AttributeError:
        raw = None
    if kind == "attribute":
        if raw is None and name not in _attribute_names(cls):
            return [f"{where} is missing"]
        return []
    if kind == "property":
        if isinstance(raw, property) or name in _attribute_names(cls):
            if entry.get("settable") and isinstance(raw, property) and not raw.fset:
                return [f"{where} can no longer be set"]
            return []
        return [f"{where} is no longer a property or attribute"]
    if raw is None:
        return [f"{where} is missing"]
    our_kind, func = _method_kind(raw)
    if our_kind != kind:
        return [f"{where} is a {our_kind}, was a {kind}"]
    if entry.get("params") is None:
        return []
    old = entry["params"]
    if name.startswith("__"):  # called by syntax (obj[key]): names do not matter
        old = [{**p, "kind": "POSITIONAL_ONLY"} for p in old]
    return _compatible(old, _params(func), where)


def _check_field(
    module: str, names: tuple[str, str], entry: dict[str, Any]
) -> list[str]:
    cls = _our_class(module, names[0])
    where = f"{module}.{names[0]}.{names[1]}"
    fields = getattr(cls, "model_fields", None)
    if not isinstance(fields, dict) or names[1] not in fields:
        return [f"pydantic field {where} is missing"]
    if not entry["required"] and fields[names[1]].is_required():
        return [f"field {where} had a default and is now required"]
    return []


def _check_attribute(module: str, names: tuple[str, str], _entry: Any) -> list[str]:
    cls = _our_class(module, names[0])
    if cls is None:
        return [f"{module}.{names[0]} is missing"]
    if names[1] in _attribute_names(cls):
        return []
    return [f"{module}.{names[0]} instances no longer set .{names[1]}"]


CHECKS = {
    "module": _check_module,
    "name": _check_name,
    "member": _check_member,
    "field": _check_field,
    "attribute": _check_attribute,
}


# ----------------------------------------------------------------- signatures


# what the recorded surface holds, read the same way from the rebuild
_params = api_surface.parameters


def _compatible(old: list[Param], new: list[Param] | None, where: str) -> list[str]:
    """Why a call that binds to old would not bind the same way to new."""
    if new is None:
        return [f"{where}: signature cannot be read"]
    problems: list[str] = []
    used: set[str] = set()
    old_positional = [p for p in old if p["kind"] in POSITIONAL]
    new_positional = [p for p in new if p["kind"] in POSITIONAL]
    for index, before in enumerate(old_positional):
        if index >= len(new_positional):
            problems.append(f"{where}: positional {before['name']!r} is gone")
            continue
        now = new_positional[index]
        used.add(now["name"])
        if before["kind"] == "POSITIONAL_OR_KEYWORD" and (
            now["name"] != before["name"] or now["kind"] != before["kind"]
        ):
            problems.append(
                f"{where}: position {index} was {before['name']!r}, "
                f"is {now['name']!r} ({now['kind']})"
            )
        if before["has_default"] and not now["has_default"]:
            problems.append(f"{where}: {before['name']!r} lost its default")
    by_name = {p["name"]: p for p in new}
    for before in old:
        if before["kind"] == "KEYWORD_ONLY":
            match = by_name.get(before["name"])
            if match is None or match["kind"] not in (
                "KEYWORD_ONLY",
                "POSITIONAL_OR_KEYWORD",
            ):
                problems.append(f"{where}: keyword {before['name']!r} is gone")
                continue
            used.add(match["name"])
            if before["has_default"] and not match["has_default"]:
                problems.append(f"{where}: {before['name']!r} lost its default")
        elif before["kind"] in VARIADIC and not any(
            p["kind"] == before["kind"] for p in new
        ):
            problems.append(f"{where}: no more {before['kind']} parameter")
    for now in new:
        if now["name"] in used or now["kind"] in VARIADIC:
            continue
        if not now["has_default"]:
            problems.append(f"{where}: new parameter {now['name']!r} has no default")
    return problems


def _method_kind(raw: Any) -> tuple[str, Any]:
    if isinstance(raw, staticmethod):
        return "staticmethod", raw.__func__
    if isinstance(raw, classmethod):
        return "classmethod", raw.__func__
    if isinstance(raw, property):
        return "property", raw
    if callable(raw) and not isinstance(raw, type):
        return "method", raw
    return "attribute", raw


# -------------------------------------------------------------------- helpers


def _resolve(qualified: str) -> Any:
    """The object at 'package.module.Name' (None when it does not exist)."""
    module, _, name = qualified.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def _our_class(module: str, name: str) -> type | None:
    obj = getattr(importlib.import_module(module), name, None)
    return obj if isinstance(obj, type) else None


@cache
def _attribute_names(cls: type) -> frozenset[str]:
    """Names an instance of cls has: set on self in any method of a dicomtrolley
    class of its MRO, class attributes, properties, pydantic and dataclass fields."""
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(vars(klass))
        names.update(getattr(klass, "__annotations__", {}))
        names.update(getattr(klass, "__slots__", ()))
        if klass.__module__.split(".")[0] != "dicomtrolley":
            continue
        names.update(_self_assignments(klass))
    names.update(getattr(cls, "model_fields", {}) or {})
    if dataclasses.is_dataclass(cls):
        names.update(f.name for f in dataclasses.fields(cls))
    return frozenset(names)


def _self_assignments(klass: type) -> set[str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError):
        return set()
    names = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if (
                    isinstance(part, ast.Attribute)
                    and isinstance(part.value, ast.Name)
                    and part.value.id == "self"
                ):
                    names.add(part.attr)
    return names


def test_surface_is_the_4_1_0_release() -> None:
    assert SURFACE["version"] == "4.1.0"
    assert len(SURFACE["modules"]) == 20


def test_checker_refuses_incompatible_signatures() -> None:
    """The comparison itself: what breaks 4.1.0 callers, and what does not."""

    def sig(func: Any) -> list[Param]:
        params = _params(func)
        assert params is not None
        return params

    def old(a: int, b: int = 1, *, c: int = 2) -> None: ...

    def renamed(a: int, bb: int = 1, *, c: int = 2) -> None: ...

    def lost_default(a: int, b: int, *, c: int = 2) -> None: ...

    def new_required(a: int, b: int = 1, *, c: int = 2, d: int) -> None: ...

    def widened(a: int, b: int = 1, c: int = 2, d: int = 3) -> None: ...

    def keyword_only_b(a: int, *, b: int = 1, c: int = 2) -> None: ...

    def c_required(a: int, b: int = 1, *, c: int) -> None: ...

    def c_positional(a: int, b: int = 1, c: int = 2) -> None: ...

    assert _compatible(sig(old), sig(renamed), "f")
    assert _compatible(sig(old), sig(lost_default), "f")
    assert _compatible(sig(old), sig(new_required), "f")
    assert _compatible(sig(old), sig(keyword_only_b), "f")
    assert _compatible(sig(old), sig(c_required), "f")
    assert not _compatible(sig(old), sig(widened), "f")
    assert not _compatible(sig(old), sig(c_positional), "f")
    assert isinstance(_method_kind(staticmethod(old))[1], types.FunctionType)
