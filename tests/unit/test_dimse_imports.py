"""pynetdicom stays where it is the right tool: the emulator's SCP (and the CLI's
``serve``, which runs it). The DIMSE client, the storage SCP and the C-FIND
searcher run on our own codec, so importing them loads no pynetdicom, and no
module touches a private attribute of a pynetdicom object.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "dicomtrolley"
#: Where importing pynetdicom is allowed (the emulator's SCP; the CLI's serve).
ALLOWED = ("emulator", "cli")


def _imports_pynetdicom(tree: ast.AST) -> bool:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return any(name.split(".")[0] == "pynetdicom" for name in names)


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize(
    "module",
    [m for m in _modules() if m.relative_to(SRC).parts[0] not in ALLOWED],
    ids=lambda m: str(m.relative_to(SRC)),
)
def test_no_pynetdicom_import_outside_the_emulator(module: Path) -> None:
    assert not _imports_pynetdicom(ast.parse(module.read_text(encoding="utf-8")))


def test_no_private_attribute_of_pynetdicom_objects() -> None:
    """In modules that use pynetdicom, no ``x._name`` but on self or cls."""
    found = []
    for module in _modules():
        tree = ast.parse(module.read_text(encoding="utf-8"))
        if not _imports_pynetdicom(tree):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if private and not own:
                found.append(f"{module.relative_to(SRC)}:{node.lineno} .{node.attr}")
    assert found == []


@pytest.mark.parametrize(
    "module", ["dicomtrolley.dicom_qr", "dicomtrolley.dimse.storage_scp"]
)
def test_importing_the_dimse_client_loads_no_pynetdicom(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pynetdicom'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
