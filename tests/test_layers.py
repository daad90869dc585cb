"""The package layering the README promises: core → models → runtime → data → evaluation →
{export, training, benchmarks}. No package imports one above it (or a sibling stage), and no module
imports another in a circle. Every import statement counts, function-level and TYPE_CHECKING ones
included, because a circle that only a late import breaks is still a circle to a reader."""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "models", "runtime", "data", "evaluation", "stages")
STAGES = ("export", "training", "benchmarks")


def _packages() -> dict[str, Path]:
    """dbd.X -> folder, as pyproject.toml maps them."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in _packages().items():
        for path in folder.glob("*.py"):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the dbd modules it imports (a `from package import name` counts as the submodule)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets.update(c for c in candidates if c in modules and c != name)
        edges[name] = targets
    return edges


def _layer(module: str) -> int:
    top = module.split(".")[1]
    return LAYERS.index("stages" if top in STAGES else top)


def test_no_package_imports_a_layer_above_it_or_a_sibling_stage():
    edges = _imports(_modules())
    upward = sorted(
        f"{a} imports {b}"
        for a, targets in edges.items()
        for b in targets
        if _layer(b) > _layer(a) or (_layer(a) == _layer(b) and a.split(".")[1] != b.split(".")[1])
    )
    assert not upward, upward


def test_no_module_imports_another_in_a_circle():
    edges = _imports(_modules())
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not circles, [" -> ".join(c) for c in circles]


def test_the_layering_test_sees_every_package_and_real_imports():
    """Guards the two tests above against passing vacuously (a renamed folder, a broken parser)."""
    modules = _modules()
    assert {m.split(".")[1] for m in modules} == {*LAYERS[:-1], *STAGES}
    edges = _imports(modules)
    assert "dbd.runtime.spec" in edges["dbd.runtime.runners"]
    assert "dbd.evaluation.metrics" in edges["dbd.evaluation.scoring"]  # a relative import
    assert sum(len(t) for t in edges.values()) > 200
