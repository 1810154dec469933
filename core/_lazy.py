"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package names its public API in ``__all__`` and maps each name to the module that defines
it; the module is imported when the name is first read, not when the package is. Every
import of a submodule imports its package first, so an eager re-export would make, say,
``certwright.engine.run.naming`` pay for the whole run core.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, resolving ``names`` (name -> module).

    A resolved name is stored on the package, so later reads are plain attribute reads.
    Raises AttributeError for a name not in ``names``, as a module does.
    """
    def __getattr__(name: str) -> object:  # noqa: N807 - the module hook's own name
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the module hook's own name
        return sorted({*names, *vars(sys.modules[package])})

    return __getattr__, __dir__
