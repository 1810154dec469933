"""Expected failures of a command, each to its message on stderr and its exit code.

:func:`exit_code_for` is what ``main`` calls with an exception a command raised: an invalid
pipeline or input is a usage error (2), a lock another process holds is 4, the state folder
failing is a store error (5) whatever layer noticed it, anything else of ours is a failed
command (1). An exception that is none of these is a bug and is raised again, so that it
keeps its traceback.

Hazard: imported only once a command failed, so it may import what it likes.
"""
from __future__ import annotations

import errno
import sqlite3
import sys
from pathlib import Path

from certwright.errors import CertwrightError, InputError, RunLocked, SpecError
from certwright.state import names as N
from certwright.state.faults import StoreFault, store_fault

EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_STORE = 1, 2, 4, 5
# errors of sockets, not of files: never the state folder's
_NETWORK = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.ECONNREFUSED,
                      errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH,
                      errno.ETIMEDOUT})


def _say(text: str) -> None:
    print(f"certwright: {text}", file=sys.stderr)


def exit_code_for(exc: Exception, state_dir: Path) -> int:
    """Report ``exc`` on stderr and return its exit code; raises it again when it is not
    an expected failure."""
    if isinstance(exc, SpecError):
        print(f"certwright: invalid pipeline:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, InputError):
        _say(str(exc))
        return EXIT_USAGE
    if isinstance(exc, RunLocked):
        _say(str(exc))
        return EXIT_LOCKED
    if isinstance(exc, StoreFault):
        _say(str(exc))
        return EXIT_STORE
    if isinstance(exc, CertwrightError):
        _say(str(exc))
        return EXIT_FAILED
    if isinstance(exc, OSError) and exc.errno in _NETWORK and not exc.filename:
        _say(f"network error: {exc.strerror or exc}")
        return EXIT_FAILED
    if isinstance(exc, (OSError, sqlite3.Error)):
        # the state folder failing outside the store's own edges (a run folder, a reader
        # of its own): a store error all the same; any other file, a plain failure
        where = str(getattr(exc, "filename", None) or state_dir / N.DB_FILE)
        fault = store_fault(exc, where, "using") if where.startswith(str(state_dir)) \
            else None
        _say(str(fault or exc))
        return EXIT_STORE if fault else EXIT_FAILED
    raise exc
