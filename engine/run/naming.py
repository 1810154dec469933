"""Names of runs and their folders."""
from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone
from pathlib import Path

from certwright.errors import InputError
from certwright.state import names as N

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def new_run_id(pipeline: str) -> str:
    """``<pipeline>-<yyyymmdd>-<6 random chars>``: sortable, readable, unique enough."""
    day = datetime.now(timezone.utc).strftime("%Y%m%d")
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    return f"{pipeline}-{day}-{tail}"


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe file-name component; raise InputError otherwise."""
    if not _RUN_ID.match(run_id):
        raise InputError(
            f"run id {run_id!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return run_id


def run_dir_for(state_dir: Path, run_id: str) -> Path:
    """The run's private folder (keys, CSRs, secrets): ``<state_dir>/runs/<run_id>``."""
    return Path(state_dir) / N.RUNS_DIR / run_id
