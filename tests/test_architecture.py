"""The house rules of the layout (docs/architecture.md), checked on the source: one folder per concern, each saying
what lives there; no import circles but the model registry's; no module too long to read; pickle opened in one place."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "affectfuse"
MAX_LINES = 600
# One file per method, readable top to bottom like the paper (design §3.2): a method file may run longer.
LONG_ALLOWED = {"models"}
# The registry imports the methods' package to fill itself, and every method registers through it.
REGISTRY_CYCLE = {"affectfuse.config.registry", "affectfuse.models"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules `name` imports when it runs (top level or inside functions; not under TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names if alias.name in modules)

    Visitor().visit(ast.parse(path.read_text()))
    return found - {name}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return components


def test_no_import_cycle_but_the_model_registrys():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    for component in _cycles(graph):
        methods = {m for m in component if m.startswith("affectfuse.models.")}
        assert component - methods == REGISTRY_CYCLE, f"import cycle: {sorted(component)}"
        for method in methods:  # a method file is in the cycle only through the registry
            assert "affectfuse.config.registry" in graph[method]


def test_every_folder_says_what_lives_there():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(PACKAGE.parent)} has no docstring"


def test_no_module_too_long_to_read():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name in LONG_ALLOWED:
            continue
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines (> {MAX_LINES})"


def test_the_cli_only_parses_and_dispatches():
    """The command modules call library functions: none defines a model, a metric or a training loop."""
    for path in (PACKAGE / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert node.name.endswith("Args"), f"{path.name} defines {node.name}: CLI classes are argument specs"


@pytest.mark.parametrize("command", ["--help"])
def test_help_does_not_import_torch(command):
    code = f"import sys; from affectfuse.cli import main; main([{command!r}]); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_pickles_are_opened_in_one_place():
    """Only `data/formats/pickles.py` unpickles (with its restricted unpickler); everything else reads npz/JSON."""
    readers = ("pickle.load", "pickle.loads", "pickle.Unpickler", "allow_pickle=True", "weights_only=False")
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() == "data/formats/pickles.py":
            continue
        text = path.read_text()
        for reader in readers:
            assert reader not in text, f"{path.relative_to(PACKAGE.parent)} uses {reader}"
