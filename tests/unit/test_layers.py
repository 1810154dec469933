"""The package's layers hold: no module imports one above its own layer, and no two modules
import each other (directly or round a loop) when they are imported.

Layers, lowest first; a module may import its own layer and those below it:

1. the modules of ``certwright`` itself (``core/``: errors, clock, events, logs, ...);
2. ``certwright.mail``;
3. ``certwright.state``;
4. ``certwright.engine`` with ``model``, ``plugins``, ``run`` and ``testing``, and
   ``certwright.pipelines``;
5. ``certwright.steps``, ``certwright.ca``;
6. ``certwright.engine.daemon``, ``certwright.engine.cli``, ``certwright.engine.api`` and
   ``certwright.__main__``, which wire everything together.

Every import counts for the layers, also those inside functions and ``if TYPE_CHECKING:``
(a lazy import is still a dependency); only those that run on import count for cycles.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.package import Import, Module, cycles, scan

ROOT = Path(__file__).resolve().parents[2]

# Package prefix -> layer; the longest prefix wins. Modules of the bottom package
# (files directly in core/) are layer 1; a module no entry covers fails the test.
LAYERS = {
    "certwright.mail": 2,
    "certwright.state": 3,
    "certwright.engine": 4,
    "certwright.engine.model": 4,
    "certwright.engine.plugins": 4,
    "certwright.engine.run": 4,
    "certwright.engine.testing": 4,
    "certwright.pipelines": 4,
    "certwright.steps": 5,
    "certwright.ca": 5,
    "certwright.engine.daemon": 6,
    "certwright.engine.cli": 6,
    "certwright.engine.api": 6,
    "certwright.__main__": 6,
}

# Upward imports that exist today and are being removed. Each entry must still exist:
# when the fix lands this test fails until the entry is deleted, so the set only shrinks.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

# Import cycles (modules that import each other when imported) that exist today, as sets
# of modules, with the same rule. CAService and its issuing half refer to each other only
# inside functions and under TYPE_CHECKING, which is no cycle at import time: none today.
KNOWN_CYCLES: set[frozenset[str]] = set()


def layer_of(module: Module) -> int | None:
    """The module's layer (see the module docstring), or None if LAYERS does not cover it."""
    if module.path.parts[0] == "core" and module.name != "certwright.__main__":
        return 1
    parts = module.name.split(".")
    for n in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return None


def upward(modules: dict[str, Module], imports: list[Import]) -> set[tuple[str, str]]:
    """(importer, imported) for every import of a module in a higher layer."""
    out = set()
    for imp in imports:
        mine, theirs = layer_of(modules[imp.importer]), layer_of(modules[imp.target])
        if mine is not None and theirs is not None and theirs > mine:
            out.add((imp.importer, imp.target))
    return out


def runtime_cycles(imports: list[Import]) -> set[frozenset[str]]:
    return cycles({(imp.importer, imp.target) for imp in imports if imp.runtime})


@pytest.fixture(scope="module")
def package() -> tuple[dict[str, Module], list[Import]]:
    return scan(ROOT)


def test_every_module_has_a_layer(package: tuple[dict[str, Module], list[Import]]) -> None:
    """Each module of the package folders falls in one of the layers; a new subpackage
    gets its line in LAYERS rather than a silent place."""
    modules, _ = package
    assert len(modules) > 50  # the scan found the package (pyproject's package-dir)
    assert [name for name, m in sorted(modules.items()) if layer_of(m) is None] == []


def test_no_module_imports_a_higher_layer(
        package: tuple[dict[str, Module], list[Import]]) -> None:
    """Every import, lazy ones included, goes to the importer's layer or one below, apart
    from the known violations being removed."""
    modules, imports = package
    found = upward(modules, imports)
    where = {f"{i.importer} -> {i.target} (line {i.line})" for i in imports
             if (i.importer, i.target) in found - KNOWN_VIOLATIONS}
    assert found - KNOWN_VIOLATIONS == set(), sorted(where)


def test_known_violations_still_exist(package: tuple[dict[str, Module], list[Import]]) -> None:
    """A known violation that was fixed is taken off KNOWN_VIOLATIONS (so it cannot return)."""
    modules, imports = package
    assert KNOWN_VIOLATIONS - upward(modules, imports) == set()


def test_no_import_cycles(package: tuple[dict[str, Module], list[Import]]) -> None:
    """No modules import each other, directly or round a loop, when they are imported
    (imports in functions and under TYPE_CHECKING run later, or never)."""
    _, imports = package
    assert runtime_cycles(imports) - KNOWN_CYCLES == set()


def test_known_cycles_still_exist(package: tuple[dict[str, Module], list[Import]]) -> None:
    """A known cycle that was broken is taken off KNOWN_CYCLES."""
    _, imports = package
    assert KNOWN_CYCLES - runtime_cycles(imports) == set()


# --- the checker itself, on a small made-up package -------------------------------------

FAKE_PYPROJECT = """
[tool.setuptools.package-dir]
"certwright" = "core"
"certwright.state" = "state"
"certwright.engine" = "engine"
"""


def _fake_tree(root: Path, files: dict[str, str]) -> None:
    (root / "pyproject.toml").write_text(FAKE_PYPROJECT)
    for name in ("core/__init__.py", "state/__init__.py", "engine/__init__.py",
                 "engine/run/__init__.py", *files):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files.get(name, '"""x"""\n'))


def test_checker_reports_exactly_an_upward_import(tmp_path: Path) -> None:
    """A state module importing the run core is reported as that one edge; downward
    imports, imports of other packages and an import of the module itself are not."""
    _fake_tree(tmp_path, {
        "core/errors.py": "import os\n",
        "state/base.py": "from certwright.engine.run import runner\nfrom certwright import errors\n"
                         "import json\nfrom . import base\n",
        "engine/run/runner.py": "from certwright.state.base import Store\n"
                                "import certwright.errors\n",
    })
    modules, imports = scan(tmp_path)
    assert set(modules) == {"certwright", "certwright.errors", "certwright.state",
                            "certwright.state.base", "certwright.engine",
                            "certwright.engine.run", "certwright.engine.run.runner"}
    assert upward(modules, imports) == {("certwright.state.base",
                                         "certwright.engine.run.runner")}


def test_checker_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    """Imports inside functions, under ``if TYPE_CHECKING:`` and relative ones (resolved
    against the importer's package) all count for the layers."""
    _fake_tree(tmp_path, {
        "state/lazy.py": "def f():\n    import certwright.engine.run.runner\n",
        "state/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                          "    from certwright.engine import run\n",
        "state/rel.py": "from ..engine.run.runner import Engine\n",
        "state/sub/__init__.py": "from ...engine.run import runner as r\n",
        "engine/run/runner.py": "from .. import run\n",
    })
    modules, imports = scan(tmp_path)
    assert upward(modules, imports) == {
        ("certwright.state.lazy", "certwright.engine.run.runner"),
        ("certwright.state.typed", "certwright.engine.run"),
        ("certwright.state.rel", "certwright.engine.run.runner"),
        ("certwright.state.sub", "certwright.engine.run.runner"),
    }
    runtime = {(i.importer, i.target) for i in imports if i.runtime}
    assert ("certwright.state.lazy", "certwright.engine.run.runner") not in runtime
    assert ("certwright.state.typed", "certwright.engine.run") not in runtime
    assert ("certwright.engine.run.runner", "certwright.engine.run") in runtime


def test_checker_finds_a_cycle_and_ignores_a_lazy_back_edge(tmp_path: Path) -> None:
    """a -> b -> c -> a at import time is one cycle; b <-> d, with d's import of b inside a
    function, is none."""
    _fake_tree(tmp_path, {
        "state/a.py": "from certwright.state import b\n",
        "state/b.py": "import certwright.state.c\nfrom certwright.state.d import x\n",
        "state/c.py": "from certwright.state.a import y\n",
        "state/d.py": "def f():\n    from certwright.state import b\n",
    })
    _, imports = scan(tmp_path)
    assert runtime_cycles(imports) == {frozenset({"certwright.state.a", "certwright.state.b",
                                                  "certwright.state.c"})}
