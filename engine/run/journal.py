"""The journal's meaning: a typed record per entry kind, and how each changes a run (a fold).

The runner never changes a :class:`RunRecord` any other way than through :func:`apply`,
and writes the entry and the result in one transaction; so ``fold(journal) == stored run``
always holds, and ``history`` can show a run's whole story from the journal alone.

Each kind's data is a TypedDict below (:data:`Kind` names them all). The stored form is the
plain JSON object of those fields: a ``JournalEntry`` keeps ``kind: str`` and
``data: dict``, and this module reads them through the TypedDicts. Fields marked
``NotRequired`` are missing from entries written by older versions: read them with
``.get`` (their absence means None, or empty), never by index.

Hazard: a new kind or field must still read every old store (the stored form never
changes); an unknown kind raises StoreError, so an older certwright refuses a newer journal
instead of folding it wrongly.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Literal, NotRequired, TypedDict, cast, get_args

from certwright.errors import StoreError
from certwright.state.records import (
    BACKOFF,
    CANCELLED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    WAITING,
    JournalEntry,
    RunRecord,
)

Kind = Literal["created", "entered", "step_started", "step_done", "step_waiting",
               "step_failed", "run_failed", "cancelled", "alarm", "host_awaited", "moved"]
KINDS: frozenset[str] = frozenset(get_args(Kind))


class Created(TypedDict):
    """The run exists: its pipeline version and inputs (secret ones redacted)."""

    pipeline: str
    spec_hash: str
    inputs: dict[str, Any]
    host: NotRequired[str]  # where its host-bound steps run (missing: any host)


# The run entered a state (a transition). The functional form: ``from`` is a keyword.
Entered = TypedDict("Entered", {
    "from": str | None,                  # the state left (None: the run's start)
    "to": str,
    "trigger": str,                      # start | next | error | timeout | loop
    "entry": int,                        # how many states the run has entered, this one too
    "final": NotRequired[str | None],    # None | "success" | "failure"
    "deadline": NotRequired[str | None],  # the state's timeout instant
    "error": NotRequired[str | None],    # a final failure state's reason
})


class StepStarted(TypedDict):
    """Intent: a step is about to execute (journal first, then the side effect)."""

    index: int
    step: str        # the step's id
    key: str         # idempotency key, ``run:entry:index``
    attempt: int
    recovering: bool  # found in flight after a crash: run again with the same key
    host: NotRequired[str]  # the host of the engine that started it (missing: none)


class StepDone(TypedDict):
    """A step finished (or was skipped by its ``when``: outputs ``{"skipped": True}``)."""

    index: int
    step: str
    key: str
    outputs: dict[str, Any]  # secret outputs redacted


class StepWaiting(TypedDict):
    """A step parked the run until an event, a file change or an instant."""

    index: int
    step: str
    key: str
    waiting: str
    memo: NotRequired[dict[str, Any]]
    wake_at: NotRequired[str | None]
    watch: NotRequired[list[str]]


class StepFailed(TypedDict):
    """A step's attempt failed; ``retry_at`` None: no retry left."""

    index: int
    step: str
    key: str
    attempt: int
    error: str
    retry_at: NotRequired[str | None]


class RunFailed(TypedDict):
    """The run failed for good without a state to go to."""

    error: str


class Cancelled(TypedDict):
    """A user cancelled the run."""

    reason: NotRequired[str]


class Alarm(TypedDict):
    """A step raised an alarm for a person (shown by ``status``)."""

    message: str


class HostAwaited(TypedDict):
    """A host-bound step is due but this engine is not on the run's host: the run waits
    for an engine of ``host`` (``engine.run.hosts``); it stays running."""

    index: int
    step: str
    host: str
    seen_on: str  # the host of the engine that could not start it


class Moved(TypedDict):
    """An operator gave the run another host (``certwright move``)."""

    host: str
    previous: str
    by: str  # who moved it (user@host of the command)


Data = (Created | Entered | StepStarted | StepDone | StepWaiting | StepFailed | RunFailed
        | Cancelled | Alarm | HostAwaited | Moved)


def apply(run: RunRecord | None, e: JournalEntry) -> RunRecord:
    """Return the run after entry ``e`` (a new object; ``run`` is not changed)."""
    k = e.kind
    if k == "created":
        c = cast(Created, e.data)
        r = RunRecord(id=e.run_id, pipeline=c["pipeline"], spec_hash=c["spec_hash"],
                      inputs=dict(c["inputs"]), created=e.at, host=c.get("host") or "")
    elif run is None:
        raise StoreError(f"journal of run {e.run_id} does not start with 'created'")
    else:
        # A shallow copy: every container a kind changes is replaced, never mutated, so the
        # old record stays valid (and copying stays cheap: no deepcopy per entry).
        r = copy.copy(run)
    if k == "entered":
        d = cast(Entered, e.data)
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
        r.wants_host = None
    elif k == "step_started":
        s = cast(StepStarted, e.data)
        r.inflight = s["key"]
        r.attempt = s["attempt"]
        r.status = RUNNING
        r.waiting = None
        r.wake_at = None
        r.wants_host = None
    elif k == "step_done":
        done = cast(StepDone, e.data)
        r.vars = {**r.vars, done["step"]: done["outputs"]}
        r.step_index = done["index"] + 1
        r.inflight = None
        r.attempt = 0
        r.memo = {}
        r.waiting = None
        r.watch = []
        r.wake_at = None
        r.error = None
        r.status = RUNNING
    elif k == "step_waiting":
        w = cast(StepWaiting, e.data)
        r.status = WAITING
        r.waiting = w["waiting"]
        r.watch = list(w.get("watch") or [])
        r.memo = dict(w.get("memo") or {})
        r.wake_at = w.get("wake_at")
    elif k == "step_failed":
        f = cast(StepFailed, e.data)
        r.inflight = None
        r.error = f["error"]
        r.wake_at = f.get("retry_at")
        r.status = BACKOFF if f.get("retry_at") else RUNNING
    elif k == "run_failed":
        r.status = FAILED
        r.error = cast(RunFailed, e.data)["error"]
        r.inflight = None
        r.waiting = None
        r.wake_at = None
        r.wants_host = None
    elif k == "cancelled":
        r.status = CANCELLED
        r.error = cast(Cancelled, e.data).get("reason") or "cancelled"
        r.inflight = None
        r.waiting = None
        r.wake_at = None
        r.wants_host = None
    elif k == "alarm":
        r.alarms = [*r.alarms, cast(Alarm, e.data)["message"]]
    elif k == "host_awaited":  # the step is due (a retry too): running, for that host
        r.wants_host = cast(HostAwaited, e.data)["host"]
        r.waiting = f"host {r.wants_host}"
        r.status = RUNNING
        r.wake_at = None
    elif k == "moved":
        r.host = cast(Moved, e.data)["host"]
        if r.wants_host is not None:  # it waited for the old host: now for the new one
            r.wants_host = r.host
            r.waiting = f"host {r.host}"
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


def before_entry(entries: list[JournalEntry], entry: int) -> RunRecord | None:
    """The run as it was just before it entered its ``entry``-th state (None if it never
    did): what it had done in the state it left."""
    for i in range(len(entries) - 1, -1, -1):
        e = entries[i]
        if e.kind == "entered" and cast(Entered, e.data)["entry"] == entry:
            return fold(entries[:i]) if i else None
    return None
