"""The public Python API: every documented name imports from the top level, is what it says (never a module), is
documented and typed; the version is one number everywhere."""

from __future__ import annotations

import importlib
import inspect
import re
import types
from pathlib import Path

import pytest
import tomllib

import affectfuse
from affectfuse.cli import main

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"


def test_documented_names_are_the_exported_ones() -> None:
    """docs/api.md has one table row per public name, and `__all__` holds exactly those."""
    documented = re.findall(r"^\| `(\w+)` \|", API_DOC.read_text(), flags=re.MULTILINE)
    assert sorted(documented) == sorted(n for n in affectfuse.__all__ if n != "__version__")
    assert affectfuse.__all__ == ["__version__", *affectfuse._API]
    assert len(set(documented)) == len(documented)


@pytest.mark.parametrize("name", [n for n in affectfuse.__all__ if n != "__version__"])
def test_every_name_imports_from_the_top_level_documented_and_typed(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from affectfuse import {name}", namespace)
    value = namespace[name]
    assert not isinstance(value, types.ModuleType), f"affectfuse.{name} is a module, not the documented object"
    assert callable(value)
    assert (value.__doc__ or "").strip(), f"affectfuse.{name} has no docstring"
    if inspect.isfunction(value):
        signature = inspect.signature(value)
        assert signature.return_annotation is not inspect.Signature.empty, f"{name} has no return type"
        untyped = [p.name for p in signature.parameters.values() if p.annotation is inspect.Parameter.empty]
        assert not untyped, f"{name}: parameters without a type: {untyped}"


def test_a_submodule_of_the_same_name_never_shadows_the_function() -> None:
    importlib.import_module("affectfuse.engine.evaluate")
    from affectfuse import evaluate, predict

    assert inspect.isfunction(evaluate) and evaluate.__name__ == "evaluate"
    assert inspect.isfunction(predict)
    with pytest.raises(AttributeError, match="no attribute 'evaluat'"):
        affectfuse.evaluat  # noqa: B018
    assert "evaluate" in dir(affectfuse)


def test_version_is_the_package_version_and_the_cli_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert affectfuse.__version__ == declared
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"affectfuse {declared}"
