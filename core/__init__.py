"""certwright: declarative, durable pipelines that take a domain to an installed certificate.

This package's own modules are the bottom layer (errors, clock, events, logs): they import
nothing else of certwright, and everything may use them. The subpackages, lowest first:
``mail``, ``state``, ``engine`` (``model``, ``plugins``, ``run``), ``steps`` and ``ca``, then
``engine.daemon`` and ``engine.cli``, which wire everything together.
"""
from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
