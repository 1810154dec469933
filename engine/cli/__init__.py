"""The ``certwright`` command line: :func:`main` parses arguments and calls one command."""
from __future__ import annotations

from certwright.engine.cli.main import main

__all__ = ["main"]
