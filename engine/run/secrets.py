"""A run's secrets: secret inputs and secret step outputs, kept out of the journal.

They live in the store beside the journal (the ``secrets`` table, one row per run), never
in it: ``history`` and the journal show ``<secret>`` in their place. A step's secret outputs
are written in the same transaction as the ``step_done`` entry that refers to them, so they
are exactly as durable as the journal, with no fsync of their own. Runs from before that
kept them in ``<run dir>/secrets.json`` (mode 0600); :func:`load` still reads that file.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from certwright.engine.run.naming import run_dir_for

REDACTED = "<secret>"
FILE = "secrets.json"


def split_inputs(given: Mapping[str, Any], secret: Iterable[str]
                 ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(public, secrets) of a new run's inputs: the inputs with the ``secret`` ones shown
    as ``<secret>`` (for the journal), and the run's secrets (None when no input is
    secret)."""
    names = set(secret)
    public = {k: (REDACTED if k in names else v) for k, v in given.items()}
    if not names:
        return public, None
    return public, {"inputs": {k: given[k] for k in names if k in given}, "outputs": {}}


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


class _SecretStore(Protocol):
    def load_secrets(self, run_id: str) -> dict[str, Any] | None: ...


def load(store: _SecretStore, state_dir: Path, run_id: str) -> dict[str, Any]:
    """The run's secrets ({"inputs": {...}, "outputs": {step_id: {...}}}), empty if none."""
    found = store.load_secrets(run_id)
    if found is None:
        found = _load_legacy(run_dir_for(state_dir, run_id))
    found.setdefault("inputs", {})
    found.setdefault("outputs", {})
    return found


def _load_legacy(run_dir: Path) -> dict[str, Any]:
    try:
        with open(run_dir / FILE, encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except FileNotFoundError:
        return {}
