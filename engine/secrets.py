"""A run's secrets: secret inputs and secret step outputs, kept out of the journal.

They live in ``<run dir>/secrets.json``, mode 0600, replaced atomically (temp file, fsync,
rename, fsync of the folder) *before* the journal entry that refers to them commits, so a
crash never leaves the journal pointing at a secret that was not saved.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REDACTED = "<secret>"
FILE = "secrets.json"


def values(data: dict[str, Any]) -> list[str]:
    """Every secret string of a run (4 characters or more), longest first, for masking."""
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str) and len(v) >= 4:
            found.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
    walk(data.get("inputs", {}))
    walk(data.get("outputs", {}))
    return sorted(set(found), key=len, reverse=True)


def mask(value: Any, secrets: list[str]) -> Any:
    """``value`` with every occurrence of a secret replaced by ``<secret>`` (recursively)."""
    if not secrets:
        return value
    if isinstance(value, str):
        for s in secrets:
            if s in value:
                value = value.replace(s, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: mask(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask(v, secrets) for v in value]
    return value


def load(run_dir: Path) -> dict[str, Any]:
    """The run's secrets ({"inputs": {...}, "outputs": {step_id: {...}}}); empty if none."""
    try:
        with open(run_dir / FILE, encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except FileNotFoundError:
        return {"inputs": {}, "outputs": {}}


def save(run_dir: Path, data: dict[str, Any]) -> None:
    """Write the secrets atomically with mode 0600."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = run_dir / f".{FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, run_dir / FILE)
    dfd = os.open(run_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
