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


def _say(text: str, *, json_lines: bool = False, code: int = 1) -> None:
    if json_lines:  # under --log-json the last line is a JSON line like every other
        import json
        print(json.dumps({"event": "command_failed", "level": "error", "error": text,
                          "exit_code": code}), file=sys.stderr)
    else:
        print(f"certwright: {text}", file=sys.stderr)


def exit_code_for(exc: Exception, state_dir: Path, *, json_lines: bool = False) -> int:
    """Report ``exc`` on stderr (a JSON line with ``json_lines``) and return its exit
    code; raises it again when it is not an expected failure."""
    said = _classify(exc, state_dir)
    if said is None:
        raise exc
    text, code = said
    _say(text, json_lines=json_lines, code=code)
    return code


def _classify(exc: Exception, state_dir: Path) -> tuple[str, int] | None:
    """What to say of ``exc`` and its exit code, or None for an unexpected exception."""
    if isinstance(exc, SpecError):
        return f"invalid pipeline:\n{exc}", EXIT_USAGE
    if isinstance(exc, InputError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, RunLocked):
        return str(exc), EXIT_LOCKED
    if isinstance(exc, StoreFault):
        return str(exc), EXIT_STORE
    if isinstance(exc, CertwrightError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, OSError) and exc.errno in _NETWORK and not exc.filename:
        return f"network error: {exc.strerror or exc}", EXIT_FAILED
    if isinstance(exc, (OSError, sqlite3.Error)):
        # the state folder failing outside the store's own edges (a run folder, a reader
        # of its own): a store error all the same; any other file, a plain failure
        where = str(getattr(exc, "filename", None) or state_dir / N.DB_FILE)
        fault = store_fault(exc, where, "using") if where.startswith(str(state_dir)) \
            else None
        return str(fault or exc), EXIT_STORE if fault else EXIT_FAILED
    return None
