"""The layout's rules, checked on the source tree (static: files are parsed, never imported).

- no import cycle between modules (function-level imports count: a lazy import is still a dependency);
- layers point one way: ``errors`` <- ``io`` <- ``data`` <- ``engine``/``report`` <- ``sct``/``xray``, and
  the X-ray task never imports the sCT task (nor the reverse);
- no module over 400 lines; one definition of each shared concept.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "transforms", "networks", "scripts")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules imported anywhere in ``path`` (``from a.b import c`` counts ``a.b.c`` when that is a
    module, else ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    # importing a.b.c runs a/__init__ and a/b/__init__ too, but those are empty here: edges go to the module
    return {name: _imports(path, names) - {name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


# Which pipeline layers each layer may import (besides itself); top-level transforms/networks are below
# the tasks, and transforms may read geometry from pipeline.io.
ALLOWED = {
    "pipeline.errors": set(),
    "pipeline.io": {"pipeline.errors"},
    "pipeline.data": {"pipeline.errors", "pipeline.io", "pipeline.report"},
    "pipeline.report": {"pipeline.errors", "pipeline.io"},
    "pipeline.engine": {"pipeline.errors", "pipeline.io", "pipeline.data"},
    "pipeline.sct": {"pipeline.errors", "pipeline.io", "pipeline.data", "pipeline.engine", "pipeline.report"},
    "pipeline.xray": {"pipeline.errors", "pipeline.io", "pipeline.data", "pipeline.engine", "pipeline.report"},
    # dose evaluation recomputes plans on the sCTs and baselines of the sCT task
    "pipeline.dose": {"pipeline.errors", "pipeline.io", "pipeline.data", "pipeline.report", "pipeline.sct"},
    "transforms": {"pipeline.errors", "pipeline.io"},
    "networks": set(),
}


def _layer(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def test_layers_point_one_way():
    wrong = []
    for module, imported in _graph().items():
        layer = _layer(module)
        if layer is None:
            continue
        for target in imported:
            target_layer = _layer(target)
            if target.startswith("pipeline") and target_layer != layer and target_layer not in ALLOWED[layer]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_is_at_most_400_lines(module):
    lines = len(_modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by concept"


@pytest.mark.parametrize("pattern", [r"^def read_geometry\b", r"^def assign_splits\b", r"^LPS_TO_RAS\s*=",
                                     r"^class InputError\b", r"^VOLUME_SUFFIXES\s*=", r"^def atomic_path\b"])
def test_one_definition_of_each_shared_concept(pattern):
    hits = [f"{name} ({path.name})" for name, path in _modules().items()
            if re.search(pattern, path.read_text(), flags=re.M)]
    assert len(hits) == 1, f"{pattern}: {hits}"


def test_every_pipeline_module_has_a_test_file():
    """Each test file mirrors its module: pipeline/<pkg>/<module>.py -> tests/test_<pkg>_<module>.py."""
    missing = []
    for name, path in _modules().items():
        parts = name.split(".")
        if parts[0] != "pipeline" or path.name == "__init__.py" or len(parts) < 3:
            continue
        if not (REPO / "tests" / f"test_{'_'.join(parts[1:])}.py").exists():
            missing.append(name)
    assert not missing, f"modules without tests/test_<pkg>_<module>.py: {missing}"


def test_architecture_doc_lists_every_module():
    """docs/architecture.md has one line per module: a module added without its line fails here."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    missing = [str(path.relative_to(REPO)) for name, path in _modules().items()
               if path.name != "__init__.py" and name.split(".")[0] in ("pipeline", "transforms", "networks")
               and f"`{path.relative_to(REPO).as_posix()}`" not in doc]
    assert not missing, f"add these to docs/architecture.md: {missing}"
