"""What the store's I/O failing means, said once: :class:`StoreFault` and how to tell kinds.

The store's edges (opening, each read, each transaction, the lock files) turn the
``sqlite3.Error`` or ``OSError`` they meet into a :class:`StoreFault` through
:func:`store_fault`, which names the file, what was being done, the cause, and what to do.
The CLI maps it to its own exit code (5), distinct from "the run failed" (1).

Kinds, from SQLite's extended error name or the errno, and when SQLite only says "disk
I/O error" (it does for a ``-shm`` it cannot grow), from the file system itself:

* ``full``: SQLITE_FULL, ENOSPC, EDQUOT, or an I/O error on a file system with no space.
* ``read-only``: SQLITE_READONLY*, SQLITE_CANTOPEN or EACCES/EPERM on a read-only file
  system, EROFS.
* ``damaged``: SQLITE_CORRUPT*, SQLITE_NOTADB, a failed ``PRAGMA quick_check``.
* ``io``: any other SQLITE_IOERR*, EIO.
* ``unavailable``: anything else (a missing folder, a permission).

Hazard: a fault never means the data is gone. A transaction that failed was rolled back
(SQLite guarantees it, also on a full disk), so the store holds what it held before the
failed command; the advice says so, and that ``resume`` goes on once the cause is fixed.
"""
from __future__ import annotations

import errno
import functools
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from certwright.errors import StoreError

ADVICE = {
    "full": "the file system holding it is full: free space there (or point --state-dir "
            "elsewhere), then run the command again; nothing committed was lost",
    "read-only": "it cannot be written (a read-only file system or files): `status` and "
                 "`history` still read it; make it writable, then run the command again; "
                 "nothing committed was lost",
    "damaged": "the database is damaged; certwright will not write into it: stop every "
               "certwright process using it, keep a copy of the file, then restore it "
               "from a backup or rebuild it with `sqlite3 FILE .recover`",
    "io": "the disk reported an I/O error: check the device (dmesg, smartctl), then run "
          "the command again; nothing committed was lost",
    "unavailable": "check that the state folder exists and this user may read and write "
                   "it, then run the command again",
}
SAID = {"full": "the disk is full", "read-only": "the store is read-only",
        "damaged": "the store is damaged", "io": "an I/O error",
        "unavailable": "the store is unavailable"}


class StoreFault(StoreError):
    """The store's files could not be read or written; ``kind`` says why (see module).

    ``path``: the file (the database or a lock file); ``doing``: what was attempted;
    ``cause``: the underlying error's words.
    """

    def __init__(self, kind: str, path: str | Path, doing: str, cause: str) -> None:
        self.kind, self.path, self.doing, self.cause = kind, str(path), doing, cause
        super().__init__(f"{SAID[kind]}: {doing} {self.path} failed ({cause}); "
                         f"{ADVICE[kind]}")


_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}


def _filesystem(path: Path) -> tuple[bool, bool]:
    """(no space left, mounted read-only) for the file system holding ``path``."""
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        return st.f_bavail == 0, bool(st.f_flag & os.ST_RDONLY)
    return False, False


def kind_of(exc: BaseException, path: str | Path) -> str | None:
    """The fault kind of ``exc`` met on ``path``; None when it is no storage failure
    (a bug such as an SQL syntax error, or an exception of another type)."""
    full, read_only = _filesystem(Path(path))
    if isinstance(exc, sqlite3.Error):
        name = str(getattr(exc, "sqlite_errorname", "") or "")
        text = str(exc).lower()
        if name.startswith("SQLITE_FULL") or "disk is full" in text:
            return "full"
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text \
                or "not a database" in text:
            return "damaged"
        if name.startswith("SQLITE_READONLY") or "readonly database" in text:
            return "read-only"
        if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
            return "full" if full else "read-only" if read_only else "io"
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM")):
            return "read-only" if read_only else "full" if full else "unavailable"
        if isinstance(exc, sqlite3.OperationalError) and not name:
            return "io" if "i/o" in text else None
        return None
    if isinstance(exc, OSError):
        if exc.errno in _FULL:
            return "full"
        if exc.errno in _READ_ONLY or (exc.errno in _DENIED and read_only):
            return "read-only"
        if exc.errno == errno.EIO:
            return "io"
        return "unavailable"
    return None


def store_fault(exc: BaseException, path: str | Path, doing: str) -> StoreFault | None:
    """The :class:`StoreFault` for ``exc`` (met ``doing`` something to ``path``), or None
    when ``exc`` is no storage failure and should propagate as it is."""
    kind = kind_of(exc, path)
    if kind is None:
        return None
    return StoreFault(kind, path, doing, str(exc) or type(exc).__name__)


P = ParamSpec("P")
R = TypeVar("R")


def guarded(doing: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a store method (whose ``self`` has ``path``) so that a storage failure
    it meets leaves as a :class:`StoreFault` saying ``doing`` ("reading runs from")."""
    def wrap(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(*args, **kwargs)
            except (sqlite3.Error, OSError) as exc:
                fault = store_fault(exc, getattr(args[0], "path", ""), doing)
                if fault is None:
                    raise
                raise fault from exc
        return inner
    return wrap
