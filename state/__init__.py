"""The durable store: the :class:`Store` protocol with its contract, the SQLite and
PostgreSQL stores, run and daemon locks, where the state lives. ``contract`` holds the
suite every back-end passes.

The names below are loaded on first use (PEP 562), so importing this package (which every
import of one of its modules does) stays cheap.
"""
from __future__ import annotations

from certwright._lazy import lazy_exports

# Not typing.TYPE_CHECKING: importing typing costs more than this package's own import.
# Type checkers treat a constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from certwright.state.base import Store, Tx
    from certwright.state.location import default_state_dir, open_store
    from certwright.state.locks import FileLock, HeldLock, daemon_lock, run_lock, try_run_lock
    from certwright.state.postgres import PostgresStore
    from certwright.state.records import JournalEntry, RunRecord, Timer
    from certwright.state.sqlite import SQLiteStore

__all__ = [
    "FileLock",
    "HeldLock",
    "JournalEntry",
    "PostgresStore",
    "RunRecord",
    "SQLiteStore",
    "Store",
    "Timer",
    "Tx",
    "daemon_lock",
    "default_state_dir",
    "open_store",
    "run_lock",
    "try_run_lock",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "FileLock": "certwright.state.locks",
    "HeldLock": "certwright.state.locks",
    "JournalEntry": "certwright.state.records",
    "PostgresStore": "certwright.state.postgres",
    "RunRecord": "certwright.state.records",
    "SQLiteStore": "certwright.state.sqlite",
    "Store": "certwright.state.base",
    "Timer": "certwright.state.records",
    "Tx": "certwright.state.base",
    "daemon_lock": "certwright.state.locks",
    "default_state_dir": "certwright.state.location",
    "open_store": "certwright.state.location",
    "run_lock": "certwright.state.locks",
    "try_run_lock": "certwright.state.locks",
})
