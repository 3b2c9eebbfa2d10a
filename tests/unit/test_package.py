"""The package's top-level names: importable as before, imported only when used."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import dicomtrolley


def _modules_after(code: str) -> set[str]:
    """The modules loaded by a fresh interpreter after running code."""
    script = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


@pytest.mark.parametrize("name", [n for n in dicomtrolley.__all__ if n[0] != "_"])
def test_every_exported_name_resolves_to_its_module_object(name: str) -> None:
    value = getattr(dicomtrolley, name)
    module = importlib.import_module(value.__module__)
    assert getattr(module, name) is value
    assert name in dir(dicomtrolley)


def test_star_import_gives_every_exported_name() -> None:
    namespace: dict[str, object] = {}
    exec("from dicomtrolley import *", namespace)
    assert set(dicomtrolley.__all__) <= set(namespace)


def test_version_is_a_string() -> None:
    assert isinstance(dicomtrolley.__version__, str)
    assert dicomtrolley.__version__


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        dicomtrolley.no_such_name  # noqa: B018


def test_importing_the_package_or_a_light_module_loads_no_pydicom() -> None:
    loaded = _modules_after("import dicomtrolley, dicomtrolley.exceptions")
    assert "pydicom" not in loaded
    assert "numpy" not in loaded
    assert "dicomtrolley.core" not in loaded


def test_using_a_name_imports_its_module() -> None:
    loaded = _modules_after("from dicomtrolley import Trolley")
    assert {"dicomtrolley.trolley", "pydicom"} <= loaded


def test_the_cli_entry_point_loads_no_pydicom_for_help() -> None:
    loaded = _modules_after("import dicomtrolley.cli.main")
    assert "pydicom" not in loaded


def test_the_command_summaries_are_the_commands_own() -> None:
    import click

    from dicomtrolley.cli.main import COMMANDS, SUMMARIES, main

    ctx = click.Context(main)
    assert set(SUMMARIES) == set(COMMANDS)
    for name, summary in SUMMARIES.items():
        command = main.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(1000) == summary, name


def test_top_level_help_imports_no_command() -> None:
    script = (
        "from dicomtrolley.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    loaded = _modules_after(script)
    assert not {name for name in loaded if name.startswith("dicomtrolley.cli.")} - {
        "dicomtrolley.cli.main",
        "dicomtrolley.cli.connection",
    }
    assert "pydicom" not in loaded
