"""The journal's meaning: how each entry changes a run (a pure fold).

The runner never changes a :class:`RunRecord` any other way than through :func:`apply`,
and writes the entry and the result in one transaction; so ``fold(journal) == stored run``
always holds, and ``history`` can show a run's whole story from the journal alone.

Entry kinds and their data:

* ``created``: pipeline, spec_hash, inputs (secrets redacted)
* ``entered``: from, to, trigger, entry, final (None|success|failure), deadline, error
* ``step_started``: index, step, key, attempt, recovering
* ``step_done``: index, step, key, outputs (secret outputs redacted)
* ``step_waiting``: index, step, key, waiting, memo, wake_at
* ``step_failed``: index, step, key, attempt, error, retry_at (None: no retry left)
* ``run_failed``: error    ``cancelled``: reason    ``alarm``: message
"""
from __future__ import annotations

import copy
from typing import Iterable

from certwright.errors import StoreError
from certwright.state.records import (BACKOFF, CANCELLED, FAILED, RUNNING, SUCCEEDED, WAITING,
                           JournalEntry, RunRecord)


def apply(run: RunRecord | None, e: JournalEntry) -> RunRecord:
    """Return the run after entry ``e`` (a new object; ``run`` is not changed)."""
    d = e.data
    if e.kind == "created":
        r = RunRecord(id=e.run_id, pipeline=d["pipeline"], spec_hash=d["spec_hash"],
                      inputs=dict(d["inputs"]), created=e.at)
    elif run is None:
        raise StoreError(f"journal of run {e.run_id} does not start with 'created'")
    else:
        # A shallow copy: every container a kind changes is replaced, never mutated, so the
        # old record stays valid (and copying stays cheap: no deepcopy per entry).
        r = copy.copy(run)
    k = e.kind
    if k == "entered":
        r.state = d["to"]
        r.entry = d["entry"]
        r.step_index = 0
        r.attempt = 0
        r.inflight = None
        r.memo = {}
        r.waiting = None
        r.watch = []
        r.wake_at = None
        r.deadline = d.get("deadline")
        r.counters = {**r.counters, d["to"]: r.counters.get(d["to"], 0) + 1}
        final = d.get("final")
        r.status = SUCCEEDED if final == "success" else FAILED if final == "failure" else RUNNING
        r.error = d.get("error") if final == "failure" else None
    elif k == "step_started":
        r.inflight = d["key"]
        r.attempt = d["attempt"]
        r.status = RUNNING
        r.waiting = None
        r.wake_at = None
    elif k == "step_done":
        r.vars = {**r.vars, d["step"]: d["outputs"]}
        r.step_index = d["index"] + 1
        r.inflight = None
        r.attempt = 0
        r.memo = {}
        r.waiting = None
        r.watch = []
        r.wake_at = None
        r.error = None
        r.status = RUNNING
    elif k == "step_waiting":
        r.status = WAITING
        r.waiting = d["waiting"]
        r.watch = list(d.get("watch") or [])
        r.memo = dict(d.get("memo") or {})
        r.wake_at = d.get("wake_at")
    elif k == "step_failed":
        r.inflight = None
        r.error = d["error"]
        r.wake_at = d.get("retry_at")
        r.status = BACKOFF if d.get("retry_at") else RUNNING
    elif k == "run_failed":
        r.status = FAILED
        r.error = d["error"]
        r.inflight = None
        r.waiting = None
        r.wake_at = None
    elif k == "cancelled":
        r.status = CANCELLED
        r.error = d.get("reason") or "cancelled"
        r.inflight = None
        r.waiting = None
        r.wake_at = None
    elif k == "alarm":
        r.alarms = [*r.alarms, d["message"]]
    elif k != "created":
        raise StoreError(f"unknown journal entry kind {k!r} (seq {e.seq})")
    r.updated = e.at
    r.seq = e.seq
    return r


def fold(entries: Iterable[JournalEntry]) -> RunRecord:
    """Replay a run's whole journal into its current record."""
    run: RunRecord | None = None
    for e in entries:
        run = apply(run, e)
    if run is None:
        raise StoreError("an empty journal describes no run")
    return run
