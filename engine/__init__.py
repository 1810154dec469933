"""The engine: the pipeline model (``model``), the step and provider interfaces
(``plugins``), the run core (``run``), the daemon (``daemon``), the command line (``cli``),
the Python API (``api``) and test helpers (``testing``). Each subpackage names its own API;
this package re-exports none, so importing one part never loads another.
"""
from __future__ import annotations

__all__: list[str] = []
