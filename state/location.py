"""Where the state lives and how to open it."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from certwright.state import names as N
from certwright.state.base import Store
from certwright.state.faults import StoreFault, kind_of
from certwright.state.opening import Connect
from certwright.state.sealing import Sealer
from certwright.state.sqlite import SQLiteStore
from certwright.state.urls import POSTGRESQL, StoreURL


def default_state_dir() -> Path:
    """``$CERTWRIGHT_STATE_DIR``, else ``$XDG_STATE_HOME/certwright`` (~/.local/state)."""
    env = os.environ.get("CERTWRIGHT_STATE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return Path(base) / "certwright"


def default_live_dir() -> Path:
    """The certificates root: where each certificate gets its folder ``<root>/<name>/``.

    ``$CERTWRIGHT_LIVE_DIR`` when set, else ``/etc/certwright/live`` when run as root, else
    ``$XDG_DATA_HOME/certwright/live`` (``~/.local/share/certwright/live``). Always
    absolute (a relative setting is taken from the current folder once, here), so a run
    recorded today installs into the same folder when the daemon renews it elsewhere.
    This is the one place that decides the root: a configuration file's value belongs here.
    """
    env = os.environ.get("CERTWRIGHT_LIVE_DIR")
    if env:
        return Path(os.path.abspath(os.path.expanduser(env)))
    if os.geteuid() == 0:
        return Path("/etc/certwright/live")
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return Path(os.path.abspath(base)) / "certwright" / "live"


def open_store(state_dir: Path, synchronous: str = "full", *,
               background_checkpoint: bool = False, readonly: bool = False,
               connect: Connect = sqlite3.connect, url: StoreURL | None = None,
               sealer: Sealer | None = None, warm: int = 0) -> Store:
    """The store in ``state_dir``, or the one ``url`` names (a SQLite file elsewhere, or a
    PostgreSQL database: its driver imported only then); long-lived processes (daemon,
    many runs at once) pass ``background_checkpoint`` to keep WAL checkpoints off their
    commits. A PostgreSQL store is always opened for writing (its server, not a local
    file system, decides what can be written).

    ``readonly`` (``status``, ``history``): open without writing anything, so that a
    read-only or full file system can still be read; a store that does not exist yet, or
    has an older schema, is opened for writing instead (created, or migrated). Raises
    StoreFault when the store cannot be opened, saying why and what to do. ``sealer``:
    the store key (``state.sealing``), sealing secrets and artefacts. ``warm``: on
    PostgreSQL, connections kept open while idle (a daemon's), not set up at its next use."""
    if url is not None and url.kind == POSTGRESQL:
        from certwright.state.postgres import PostgresStore
        return PostgresStore(url.target, synchronous=synchronous, readonly=False,
                             sealer=sealer, warm=warm)
    path = url.path if url is not None else state_dir / N.DB_FILE
    if readonly and path.exists():
        store = SQLiteStore(path, readonly=True, connect=connect, sealer=sealer)
        if not store.outdated:
            return store
        store.close()
    _make_dir(path.parent)
    return SQLiteStore(path, synchronous=synchronous,
                       background_checkpoint=background_checkpoint, connect=connect,
                       sealer=sealer)


def _make_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StoreFault(kind_of(exc, state_dir) or "unavailable", state_dir,
                         "creating the state folder", str(exc)) from exc
