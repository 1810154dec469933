"""The store a command works on: the one of ``--state-dir``.

Kept apart from the commands that drive runs so that the ones that only read (``status``,
``history``, ``certificates``) import no more than the store itself.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path

from certwright.state.location import open_store
from certwright.state.opening import Connect
from certwright.state.sqlite import SQLiteStore


def open_store_of(args: argparse.Namespace, *, readonly: bool = False) -> SQLiteStore:
    """The store of ``--state-dir``; ``readonly`` for commands that only read (they then
    work on a read-only or full file system). StoreFault when it cannot be opened."""
    connect: Connect = sqlite3.connect
    flag = os.environ.get("CERTWRIGHT_IO_ERROR_WHILE")  # fault-injection hook (tests)
    if flag:
        from certwright.engine.testing import FailingIO
        connect = FailingIO(Path(flag)).connect
    return open_store(args.state_dir, readonly=readonly, connect=connect)
