"""Opening the SQLite file: for writing (checked for damage first) or only for reading.

Hazards: a reader must write nothing, not even a ``chmod`` or a ``-shm`` file, so that
``status`` and ``history`` work on a read-only or full file system. SQLite needs the
``-shm`` file to read a WAL database; when it cannot create it and no WAL is left to
read (the last process closed cleanly, or none wrote since), the file is opened
``immutable``, which reads the database file alone: exact then, since every commit is in
it. A writer first runs ``PRAGMA quick_check`` (it reads every page once; no writes) and
refuses a damaged file, so new runs are never written into one.
"""
from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from certwright.state.faults import StoreFault, kind_of

Connect = Callable[..., sqlite3.Connection]  # sqlite3.connect, or a wrapper around it


def open_writer(path: str, connect: Connect) -> sqlite3.Connection:
    """A read-write connection (creating the file 0600); raises sqlite3.Error/OSError."""
    db = connect(path, isolation_level=None, check_same_thread=False)
    if path != ":memory:":
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) != 0o600:  # chmod only when needed: no write to read
            os.chmod(path, 0o600)
    return db


def open_reader(path: str, connect: Connect) -> sqlite3.Connection:
    """A read-only connection that writes nothing (see the module's hazards)."""
    uri = "file:" + quote(path)
    try:
        db = connect(uri + "?mode=ro", uri=True, isolation_level=None,
                     check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.Error as exc:
        kind = kind_of(exc, path)
        if kind not in ("read-only", "full", "io", "unavailable") or _wal_left(path):
            raise
    db = connect(uri + "?immutable=1", uri=True, isolation_level=None,
                 check_same_thread=False)
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return db


def _wal_left(path: str) -> bool:
    try:
        return os.path.getsize(path + "-wal") > 0
    except OSError:
        return False


def check_integrity(db: sqlite3.Connection, path: str | Path) -> None:
    """StoreFault ("damaged") unless ``PRAGMA quick_check`` finds the file sound."""
    rows = [str(r[0]) for r in db.execute("PRAGMA quick_check(3)").fetchall()]
    if rows != ["ok"]:
        raise StoreFault("damaged", path, "checking", "; ".join(rows)[:300])
