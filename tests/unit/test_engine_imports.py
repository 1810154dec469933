"""The run core, the pipeline model and the plugin interfaces import nothing of the product.

They find steps through the registry and services through providers (entry points), so no
module of ``certwright.engine.run``, ``.model`` or ``.plugins`` may import ``certwright.ca`` or
``certwright.steps``: not at the top, not inside a function, not by a module name given to
``importlib`` as a string.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import certwright.engine

ENGINE = Path(certwright.engine.__file__).resolve().parent
CORE = ("run", "model", "plugins")
FORBIDDEN = ("certwright.ca", "certwright.steps")
# a module path written as a string ("certwright.steps.ca:Sign"), not the group's bare name
MODULE_STRING = re.compile(r"certwright\.(ca|steps)((\.\w+)+(:\w+)?|:\w+)")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for sub in CORE:
        for path in sorted((ENGINE / sub).rglob("*.py")):
            parts = path.relative_to(ENGINE).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append((".".join(("certwright", "engine", *parts)), path))
    return out


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (relative ones made absolute), with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out += [(node.lineno, m.group(0)) for m in MODULE_STRING.finditer(node.value)]
    return out


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith((f + ".", f + ":")) for f in FORBIDDEN)


def test_the_scan_sees_the_core_modules():
    names = [m for m, _ in _modules()]
    assert "certwright.engine.run.runner" in names
    assert "certwright.engine.model.loader" in names
    assert "certwright.engine.plugins.registry" in names


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_no_core_module_imports_the_ca_or_the_steps(module: str, path: Path):
    bad = [f"{path.name}:{line}: {name}" for line, name in _imports(module, path)
           if _forbidden(name)]
    assert bad == [], f"{module} imports above its layer"


def test_the_scan_catches_imports_inside_functions_and_by_string(tmp_path):
    """The scan itself: a lazy import, a relative one and an importlib string all count."""
    path = tmp_path / "lazy.py"
    path.write_text("def f():\n    from certwright.ca.embedded import start\n"
                    "from ...steps import ca\n"
                    "TARGET = 'certwright.steps.ca:Sign'\n"
                    "GROUP = 'certwright.steps'\n")
    found = sorted(n for _, n in _imports("certwright.engine.run.lazy", path) if _forbidden(n))
    assert found == ["certwright.ca.embedded", "certwright.ca.embedded.start",
                     "certwright.steps", "certwright.steps.ca", "certwright.steps.ca:Sign"]
