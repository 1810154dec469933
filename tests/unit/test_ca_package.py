"""The built-in CA's package: its public names, a cheap import, no import cycle inside it."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import certwright.ca

CA_DIR = Path(certwright.ca.__file__).resolve().parent


def test_all_is_sorted_and_every_name_resolves() -> None:
    """__all__ is sorted, and each name in it loads from the module that defines it."""
    assert certwright.ca.__all__ == sorted(certwright.ca.__all__)
    for name in certwright.ca.__all__:
        value = getattr(certwright.ca, name)
        assert value.__name__ == name
        assert value.__module__.startswith("certwright.ca.")


def test_importing_the_package_loads_no_web_or_crypto_stack() -> None:
    """``import certwright.ca`` imports none of FastAPI, uvicorn, httpx or cryptography."""
    code = ("import sys, certwright.ca; print(' '.join(m for m in ('fastapi', 'uvicorn', "
            "'httpx', 'cryptography', 'aiosmtpd') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == ""


def _imports_of(path: Path) -> set[str]:
    """The certwright.ca modules ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "certwright.ca":
                found.update(f"certwright.ca.{a.name}" for a in node.names)
            elif node.module.startswith("certwright.ca."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("certwright.ca."))
    return found


def test_no_import_cycle_among_the_ca_modules() -> None:
    """No module of certwright.ca imports, directly or not, one that imports it back
    (the package's own __init__ imports nothing at run time and is left out)."""
    graph = {f"certwright.ca.{p.stem}": _imports_of(p)
             for p in CA_DIR.glob("*.py") if p.stem != "__init__"}

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph.get(todo.pop(), set()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(m for m in graph if m in reach(m))
    assert cycles == []
