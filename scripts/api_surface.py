"""Record the public API of an installed dicomtrolley as JSON.

Run once with the interpreter of a venv holding the reference release::

    /tmp/v410/bin/python scripts/api_surface.py > tests/compat/api_4_1_0.json

Every public module of the package is imported. For each module the output
lists, per public name:

* classes: direct bases, dicomtrolley classes in the MRO, constructor
  parameters, public members (methods, classmethods, staticmethods, properties,
  class attributes; inherited ones included when a dicomtrolley class defines
  them), pydantic fields and the attributes ``__init__`` sets on ``self``;
* functions: their parameters;
* values defined in the module (constants, loggers, type aliases);
* names imported from another dicomtrolley module (re-exports such as
  ``mint.Study``), with the module they come from.

Names imported from outside dicomtrolley (typing, pydicom, requests ...) are
listed under ``external`` for reference only. A parameter is recorded as its
name, kind (``inspect.Parameter`` kind name) and whether it has a default.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import importlib.metadata
import inspect
import json
import pkgutil
import sys
import types
from typing import Any, Generic

PACKAGE = "dicomtrolley"

#: Dunder methods that make a class behave like a container, iterator, callable
#: or context manager: part of what user code relies on.
PROTOCOL_DUNDERS = frozenset(
    {
        "__call__",
        "__contains__",
        "__enter__",
        "__exit__",
        "__getitem__",
        "__iter__",
        "__len__",
        "__next__",
        "__setitem__",
    }
)


def qualified(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def is_ours(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def parameters(func: Any) -> list[dict[str, Any]] | None:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    return [
        {
            "name": p.name,
            "kind": p.kind.name,
            "has_default": p.default is not inspect.Parameter.empty,
        }
        for p in signature.parameters.values()
    ]


def member_entry(raw: Any, owner: type) -> dict[str, Any]:
    """How a class member found in owner.__dict__ is recorded."""
    entry: dict[str, Any] = {"defined_in": qualified(owner)}
    if isinstance(raw, staticmethod):
        entry.update(kind="staticmethod", params=parameters(raw.__func__))
    elif isinstance(raw, classmethod):
        entry.update(kind="classmethod", params=parameters(raw.__func__))
    elif isinstance(raw, property):
        entry.update(kind="property", settable=raw.fset is not None)
    elif callable(raw) and not isinstance(raw, type):
        entry.update(kind="method", params=parameters(raw))
    else:
        entry.update(kind="attribute", type=type(raw).__name__)
    return entry


def init_attributes(cls: type) -> list[str]:
    """Public names that cls.__init__ assigns on self, from its source."""
    init = cls.__dict__.get("__init__")
    if not isinstance(init, types.FunctionType):
        return []
    try:
        tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return []
    names = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
                and not target.attr.startswith("_")
            ):
                names.add(target.attr)
    return sorted(names)


def constructor(cls: type) -> list[dict[str, Any]] | None:
    """Constructor parameters when dicomtrolley (or pydantic/dataclasses) made them.

    A constructor inherited unchanged from a foreign base (Exception, dict,
    Enum ...) is not part of dicomtrolley's own surface: None.
    """
    if issubclass(cls, enum.Enum):
        return None  # Enum's functional API, not dicomtrolley's
    made_here = (
        dataclasses.is_dataclass(cls)
        or hasattr(cls, "model_fields")
        or any(
            "__init__" in klass.__dict__ or "__new__" in klass.__dict__
            for klass in cls.__mro__
            if is_ours(klass)
        )
    )
    if not made_here:
        return None
    return parameters(cls)


def class_entry(cls: type) -> dict[str, Any]:
    members: dict[str, Any] = {}
    attributes: set[str] = set()
    for klass in cls.__mro__:
        if not is_ours(klass):
            continue
        attributes.update(init_attributes(klass))
        for name, raw in klass.__dict__.items():
            public = not name.startswith("_") or name in PROTOCOL_DUNDERS
            if not public or name in members or name == "model_config":
                continue
            members[name] = member_entry(raw, klass)
    fields: dict[str, Any] = {}
    model_fields = getattr(cls, "model_fields", None)
    if isinstance(model_fields, dict):
        for name, info in model_fields.items():
            fields[name] = {"required": bool(info.is_required())}
            members.pop(name, None)
    if dataclasses.is_dataclass(cls):
        attributes.update(f.name for f in dataclasses.fields(cls))
    return {
        "kind": "class",
        "origin": cls.__module__,
        "bases": [qualified(base) for base in cls.__bases__],
        "dicomtrolley_ancestors": [
            qualified(klass) for klass in cls.__mro__[1:] if is_ours(klass)
        ],
        "external_bases": [
            qualified(base)
            for base in cls.__bases__
            if not is_ours(base) and base not in (object, Generic)
        ],
        "init": constructor(cls),
        "members": dict(sorted(members.items())),
        "fields": fields,
        "instance_attributes": sorted(attributes - set(members) - set(fields)),
    }


def top_level_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements at module level, including those inside if/try blocks."""
    found: list[ast.stmt] = []
    for node in body:
        found.append(node)
        if isinstance(node, ast.If):
            found.extend(top_level_statements(node.body + node.orelse))
        elif isinstance(node, ast.Try):
            handlers = [s for h in node.handlers for s in h.body]
            found.extend(
                top_level_statements(
                    node.body + handlers + node.orelse + node.finalbody
                )
            )
    return found


def imported_from(module: types.ModuleType) -> dict[str, tuple[str, str]]:
    """name -> (module, name there), for the module's import statements."""
    source = inspect.getsource(module)
    origins: dict[str, tuple[str, str]] = {}
    for node in top_level_statements(ast.parse(source).body):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.__name__.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                origins[alias.asname or alias.name] = (base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                origins[name] = (alias.name, "")
    return origins


def module_entry(module: types.ModuleType) -> dict[str, Any]:
    imports = imported_from(module)
    names: dict[str, Any] = {}
    external: dict[str, str] = {}
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_"):
            continue
        if name in imports:
            source_module, source_name = imports[name]
            if source_module == PACKAGE or source_module.startswith(PACKAGE + "."):
                kind = (
                    "class"
                    if isinstance(obj, type)
                    else "module"
                    if isinstance(obj, types.ModuleType)
                    else "function"
                    if isinstance(obj, types.FunctionType)
                    else "value"
                )
                origin, origin_name = source_module, source_name
                if kind in ("class", "function") and is_ours(obj):
                    origin, origin_name = obj.__module__, obj.__name__
                elif kind == "module":
                    origin, origin_name = obj.__name__, ""
                names[name] = {
                    "kind": "reexport",
                    "of": kind,
                    "origin": origin,
                    "origin_name": origin_name,
                }
            else:
                external[name] = source_module
            continue
        if isinstance(obj, type) and is_ours(obj):
            names[name] = class_entry(obj)
        elif isinstance(obj, types.FunctionType) and is_ours(obj):
            names[name] = {
                "kind": "function",
                "origin": obj.__module__,
                "params": parameters(obj),
            }
        elif isinstance(obj, types.ModuleType):
            external[name] = obj.__name__
        else:
            names[name] = {"kind": "value", "type": type(obj).__name__}
    return {"names": names, "external": dict(sorted(external.items()))}


def main() -> int:
    package = importlib.import_module(PACKAGE)
    version = importlib.metadata.version(PACKAGE)
    modules: dict[str, Any] = {PACKAGE: module_entry(package)}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        name = f"{PACKAGE}.{info.name}"
        modules[name] = module_entry(importlib.import_module(name))
    surface = {
        "package": PACKAGE,
        "version": version,
        "generated_by": "scripts/api_surface.py",
        "python": ".".join(str(v) for v in sys.version_info[:3]),
        "modules": modules,
    }
    json.dump(surface, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
