"""A run as ``status --json`` and the Python API show it: one flat dict per run.

Cheap to import (the records only), so that ``status`` need not load the runner.
"""
from __future__ import annotations

from typing import Any

from certwright.state.records import RunRecord


def summary(run: RunRecord) -> dict[str, Any]:
    """A run as shown by ``status --json``: id, pipeline, state, status, what it waits for,
    deadline, wake-up, error, alarms, when created and updated, its spec's version, its
    host ("" for none: any) and the host it waits for (None: none)."""
    return {"run": run.id, "pipeline": run.pipeline, "state": run.state, "status": run.status,
            "waiting_for": run.waiting, "deadline": run.deadline, "wake_at": run.wake_at,
            "error": run.error, "alarms": run.alarms, "created": run.created,
            "updated": run.updated, "version": run.spec_hash[:12], "host": run.host,
            "wants_host": run.wants_host}
