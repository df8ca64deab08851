"""The import structure: no circle, and no import from a lower layer up (ARCHITECTURE.md, "Layers").

Every ``import`` and ``from … import`` statement of every module under ``crfcore/`` and ``app/`` is read with
:mod:`ast` (nothing is imported), those inside functions included. Each module belongs to a unit (its first two
name parts, ``crfcore.refiners``, ``app.widgets``) and each unit has a rank in :data:`RANKS`; a module may import
only units of its own rank or lower. Circles are looked for between modules, over the imports run at import time
(module level): a function-level import is how a module defers a heavy optional dependency, and the rank rule
still applies to it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RANKS: dict[str, int] = {
    # crfcore, bottom up: guards and the method table; data and operators; inference; refiners; the refine path
    "crfcore.registry": 0, "crfcore.checks": 0, "crfcore.labels": 0, "crfcore.errors": 0, "crfcore.layout": 0,
    "crfcore.params": 1, "crfcore.io": 1, "crfcore.files": 1, "crfcore.metrics": 1, "crfcore.features": 1, "crfcore.affinity": 1,
    "crfcore.synthetic": 1, "crfcore.backbones": 1, "crfcore.polygons": 1,
    "crfcore.inference": 2, "crfcore.unary": 2, "crfcore.appearance": 2, "crfcore.stroke_unary": 2,
    "crfcore.refiners": 3,
    "crfcore.image_refiner": 4,
    "crfcore.api": 5,
    "crfcore.presets": 6, "crfcore.unary_io": 6, "crfcore.project": 6, "crfcore.mask_refine": 6,
    "crfcore": 7,  # the package: the public face over all of the above
    "crfcore.export": 8, "crfcore.evaluate": 8, "crfcore.protocols": 8, "crfcore.peers": 8, "crfcore.learn": 8, "crfcore.demo": 8,
    "crfcore.batch": 9,
    "crfcore.benchmarks": 10,
    "crfcore.commands": 11,
    "crfcore.cli": 12,
    # app, bottom up: Qt-free models; state with signals; the worker; widgets; dialogs; the window; entry points
    "app": 20, "app.folder": 20, "app.scribbles": 20, "app.tools": 20, "app.compute": 20, "app.tuning": 20,
    "app.preset_policy": 20, "app.exporting": 20, "app.network": 20, "app.palette": 20, "app.system": 20,
    "app.document": 21,
    "app.autosave": 22, "app.workers": 22, "app.network_jobs": 22, "app.keys": 22,
    "app.widgets": 23,
    "app.dialogs": 24, "app.engine": 24,
    "app.window": 25,
    "app.selftest": 26, "app.main": 27, "app.bench_latency": 27,
}

QT_FREE = ("crfcore", "app.compute", "app.folder", "app.tuning", "app.preset_policy", "app.exporting", "app.network",
           "app.palette")
"""Units that import no Qt at all (crfcore, and the app's models that hold no Qt object)."""

NO_WIDGETS = ("app.document", "app.scribbles", "app.tools", "app.autosave", "app.workers")
"""Units that may use QtCore (signals, threads) but no widget or drawing module."""


def _modules() -> dict[str, Path]:
    out = {}
    for package in ("crfcore", "app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, bool, int]]:
    """``(imported module, at module level, line)`` for every import statement of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        at_top = id(node) in top
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, at_top, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES]
            if len(subs) < len(node.names):
                yield module, at_top, node.lineno
            for sub in subs:
                yield sub, at_top, node.lineno


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _ours(module: str) -> bool:
    return module.split(".")[0] in ("crfcore", "app")


def test_every_unit_has_a_rank():
    missing = sorted({_unit(m) for m in MODULES} - set(RANKS))
    assert not missing, f"give these a rank in RANKS (and a place in ARCHITECTURE.md): {missing}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for name, path in MODULES.items():
        for module, _, line in _imports(name, path):
            if _ours(module) and RANKS.get(_unit(module), 0) > RANKS.get(_unit(name), 0):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not upward, "imports from a lower layer up:\n" + "\n".join(upward)


@pytest.mark.parametrize("lower,higher", [("crfcore", "app"), ("app.widgets", "app.dialogs"),
                                          ("app.widgets", "app.window"), ("app.dialogs", "app.window"),
                                          ("crfcore.refiners", "crfcore.learn"), ("crfcore.params", "crfcore.refiners")])
def test_named_boundaries_hold(lower, higher):
    crossing = [f"{path.relative_to(ROOT)}:{line}" for name, path in MODULES.items() if _unit(name) == lower
                or name.startswith(lower + ".") for module, _, line in _imports(name, path)
                if module == higher or module.startswith(higher + ".")]
    assert not crossing, f"{lower} imports {higher} at {crossing}"


def test_models_import_no_qt_widgets():
    found = []
    for name, path in MODULES.items():
        for module, _, line in _imports(name, path):
            qt = module.split(".")[0] in ("PySide6", "pyqtgraph")
            if qt and any(name == u or name.startswith(u + ".") for u in QT_FREE):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if (module.startswith(("PySide6.QtWidgets", "PySide6.QtGui", "pyqtgraph"))
                    and _unit(name) in NO_WIDGETS):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not found, "Qt where the layer allows none:\n" + "\n".join(found)


def test_no_import_circle_between_modules():
    graph = {name: sorted({m for m, at_top, _ in _imports(name, path) if at_top and m in MODULES and m != name})
             for name, path in MODULES.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in MODULES:
        if start not in state:
            cycle = visit(start)
            assert cycle is None, "import circle: " + " → ".join(cycle)


def test_the_walker_sees_imports_at_module_level_and_in_functions(tmp_path):
    """The checks above are only as good as the walker."""
    (tmp_path / "pkg").mkdir()
    source = tmp_path / "pkg" / "mod.py"
    source.write_text("from . import registry\nfrom ..app import window\nimport numpy\n\n\n"
                      "def f():\n    from .refiners import get\n")
    found = sorted(_imports("crfcore.mod", source))
    assert found == [("app.window", True, 2), ("crfcore.refiners", False, 7), ("crfcore.registry", True, 1),
                     ("numpy", True, 3)]
