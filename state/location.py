"""Where the state lives and how to open it."""
from __future__ import annotations

import os
from pathlib import Path

from certwright.state import names as N
from certwright.state.sqlite import SQLiteStore


def default_state_dir() -> Path:
    """``$CERTWRIGHT_STATE_DIR``, else ``$XDG_STATE_HOME/certwright`` (~/.local/state)."""
    env = os.environ.get("CERTWRIGHT_STATE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return Path(base) / "certwright"


def open_store(state_dir: Path, synchronous: str = "full", *,
               background_checkpoint: bool = False) -> SQLiteStore:
    """The store in ``state_dir``; long-lived processes (daemon, many runs at once) pass
    ``background_checkpoint`` to keep WAL checkpoints off their commits."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SQLiteStore(state_dir / N.DB_FILE, synchronous=synchronous,
                       background_checkpoint=background_checkpoint)
