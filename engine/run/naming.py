"""Names of runs and their folders."""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from certwright.errors import CertwrightError, InputError
from certwright.state import names as N

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def new_run_id(pipeline: str) -> str:
    """``<pipeline>-<yyyymmdd>-<6 random chars>``: sortable, readable, unique enough."""
    day = datetime.now(UTC).strftime("%Y%m%d")
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


def new_runs(pipeline: str, count: int, run_ids: Iterable[str | None] | None,
             state_dir: Path, exists: Callable[[str], bool]) -> list[str]:
    """Ids for ``count`` new runs (given ones, else new), each with its folder made (0700).

    Raises CertwrightError when the ids are not one per run and distinct, or one is taken
    (``exists``); nothing is made then.
    """
    given = list(run_ids) if run_ids is not None else [None] * count
    ids = [rid or new_run_id(pipeline) for rid in given]
    if len(ids) != count or len(set(ids)) != len(ids):
        raise CertwrightError("start_runs: one distinct run id per input mapping")
    for rid in ids:
        if exists(rid):
            raise CertwrightError(f"a run with id {rid!r} exists already")
    for rid in ids:
        run_dir_for(state_dir, rid).mkdir(parents=True, exist_ok=True, mode=0o700)
    return ids
