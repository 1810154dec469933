"""certwright: declarative, durable pipelines that take a domain to an installed certificate.

This package's own modules are the bottom layer (errors, clock, events, logs): they import
nothing else of certwright, and everything may use them. The subpackages, lowest first:
``mail``, ``state``, ``engine`` (``model``, ``plugins``, ``run``), ``steps`` and ``ca``, then
``engine.daemon`` and ``engine.cli``, which wire everything together.
"""
from __future__ import annotations

import sys as _sys
from typing import Any as _Any

__all__ = ["__version__"]

__version__ = "0.1.0"


class _NoRichForStructlog:
    """An import finder that refuses one import: ``rich`` from structlog's own modules.

    structlog's ``dev`` and ``tracebacks`` modules (imported by ``import structlog``) import
    rich, when it is installed, only to offer rich tracebacks and locals, which certwright
    never renders; rich takes
    about 0.08 s to import, which every command would pay at start. Refused, structlog falls
    back to plain tracebacks. Every other import of rich (the live progress display) is
    left to the usual finders, and once rich is imported nothing here is asked again.
    """

    def find_spec(self, name: str, path: _Any = None, target: _Any = None) -> None:
        if name != "rich":
            return
        frame = _sys._getframe(1)  # noqa: SLF001 - the importer's frame, no inspect import
        while frame is not None and frame.f_globals.get("__name__", "").startswith(
                ("importlib", "_frozen_importlib")):
            frame = frame.f_back  # type: ignore[assignment]
        if frame is not None and frame.f_globals.get("__name__", "").startswith("structlog"):
            raise ModuleNotFoundError("rich is not used for structlog's tracebacks",
                                      name="rich")


if not any(isinstance(f, _NoRichForStructlog) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _NoRichForStructlog())
