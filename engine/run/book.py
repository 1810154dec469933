"""The book of runs: what the engine keeps in memory about the runs in its hands.

* ``active``: records of runs that need the engine (running, between steps). Parked runs
  (waiting, backing off) and finished ones are dropped: they live in the store only.
* ``dirty``: records changed in the open transaction, written when it commits.
* ``ready``: runs to advance in this or the next pump, in order (``retry``: a backoff
  timer fired, so a run in backoff may start its step again).
* ``executing``: the job each run has in a worker (a step, a re-check, or its cleanups);
  one at a time per run.
* ``recheck``: an event that came while the run's job executed, to re-check after it.
* ``recovered``: runs found running in the store (``open``/``sync``), not yet advanced:
  their first advance checks whether a crash interrupted the cleanup of the state they left.
* the secrets of active runs, loaded once per activation.

Everything here is touched by the core loop only. Hazard: a record here is newer than the
store's until its transaction commits; read through :meth:`RunBook.cached` first.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from certwright.engine.run.jobs import CleanupJob, Job
from certwright.events import Event
from certwright.state.records import BACKOFF, FINISHED, WAITING, RunRecord

__all__ = ["RunBook"]


class RunBook:
    """In-memory bookkeeping of active runs (see the module). Not thread-safe."""

    def __init__(self) -> None:
        self.active: dict[str, RunRecord] = {}
        self.dirty: dict[str, RunRecord] = {}
        self.ready: deque[tuple[str, bool]] = deque()  # read here; changed by the methods
        self._queued: dict[str, int] = {}  # run id -> its entries in ready (is_active's)
        self.executing: dict[str, Job | CleanupJob] = {}
        self.recheck: dict[str, Event | None] = {}
        self.recovered: set[str] = set()
        self._secrets: dict[str, dict[str, Any]] = {}

    # -- records --------------------------------------------------------------------------
    def cached(self, rid: str) -> RunRecord | None:
        """The newest record held here (changed in this transaction, or active), or None."""
        return self.dirty.get(rid) or self.active.get(rid)

    def keep(self, run: RunRecord) -> None:
        """Hold a record just written: dirty until the commit; active only if it needs
        the engine (parked and finished runs live in the store, not in memory)."""
        rid = run.id
        self.dirty[rid] = run
        if run.status in FINISHED or run.status in (WAITING, BACKOFF):
            self.active.pop(rid, None)
            self._secrets.pop(rid, None)
        else:
            self.active[rid] = run

    def take_dirty(self) -> list[RunRecord]:
        """The records to write at the commit (and forget that they were dirty)."""
        runs = list(self.dirty.values())
        self.dirty.clear()
        return runs

    def drop(self, rid: str) -> None:
        """Drop the active record (another process may drive the run now)."""
        self.active.pop(rid, None)

    def forget(self, rid: str) -> None:
        """Drop a cached record unless this transaction changed it, so the next read of
        the run comes from the store."""
        if rid not in self.dirty:
            self.active.pop(rid, None)

    def secrets(self, rid: str, load: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        """The run's secrets, loaded with ``load(rid)`` the first time."""
        found = self._secrets.get(rid)
        if found is None:
            found = self._secrets[rid] = load(rid)
        return found

    def set_secrets(self, rid: str, secrets: dict[str, Any]) -> None:
        self._secrets[rid] = secrets

    # -- work -----------------------------------------------------------------------------
    def make_ready(self, rid: str, retry: bool = False) -> None:
        self.ready.append((rid, retry))
        self._queued[rid] = self._queued.get(rid, 0) + 1

    def pop_ready(self) -> tuple[str, bool]:
        """The first run of ``ready`` (and whether it is a retry), taken out of it."""
        rid, retry = self.ready.popleft()
        left = self._queued[rid] - 1
        if left:
            self._queued[rid] = left
        else:
            del self._queued[rid]
        return rid, retry

    def peek_ready(self, count: int) -> list[str]:
        """The first ``count`` runs of ``ready`` (fewer when it holds fewer), left in it."""
        return [rid for rid, _ in itertools.islice(self.ready, count)]

    def begin(self, job: Job | CleanupJob) -> None:
        """The run's job goes to a worker; the run does nothing else until it is back."""
        self.executing[job.run_id] = job

    def end(self, job: Job | CleanupJob) -> bool:
        """A job came back: True if it is still the run's current one (then removed)."""
        if self.executing.get(job.run_id) is job:
            del self.executing[job.run_id]
            return True
        return False

    def is_active(self, rid: str) -> bool:
        """Whether the run is in this engine's hands now (executing, ready or in memory)."""
        return rid in self.executing or rid in self.active or rid in self._queued

    def idle(self) -> bool:
        return not self.executing and not self.ready
