"""The daemon's hold on runs: one driver per run (run locks), and no per-run polls.

:class:`RunLocks` is an interceptor the daemon gives its :class:`Engine`:

* **One driver per run.** Before the engine dispatches anything to a run (advances it,
  delivers an event, fires a timer) it asks ``claim``, which takes that run's lock
  (``state.locks.try_run_lock``, an flock) without blocking and keeps it while the run is
  active here (a step executing, ready, or between steps). :meth:`RunLocks.release_idle`,
  called between pumps, lets it go once the run parks or finishes, so
  ``certwright resume RUN`` / ``run --no-wait`` can drive a parked run; while such a
  process holds the lock the daemon leaves the run alone: events for it are dropped (the
  other process re-checks the wait itself), timers are deferred by a second, running runs
  are not adopted (``engine.sync(adopt=locks.claim)``). Lock → reload → re-check: a run
  newly claimed is dropped from the engine's memory, so it is re-read from the store.
* **No per-run poll timers** when the daemon watches what a wait waits on. ``wait.mail``
  asks for a 30 s poll as a fallback for missed file events; with 10,000 parked runs that
  is 333 wake-ups a second. When ``covered(wait)`` says every watched path is a Maildir the
  daemon watches with inotify (and re-routes unclaimed mail itself), the poll is dropped.

Hazards: the lock file's pid line is written without fsync (it only names the holder for
messages; the flock itself is what excludes). ``release_idle`` must run between pumps,
never inside one, and :meth:`RunLocks.close` after the engine's ``close``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog

from certwright.engine.plugins.step import Wait
from certwright.engine.run.interceptor import EngineView, Interceptor
from certwright.state.locks import HeldLock, try_run_lock

__all__ = ["RunLocks"]

log = structlog.get_logger("certwright.daemon")


class RunLocks(Interceptor):
    """Holds run locks while the engine drives runs, and drops polls ``covered`` says
    the daemon does not need (a callable telling whether a :class:`Wait`'s watched paths
    are all watched by the daemon)."""

    def __init__(self, state_dir: Path, *, covered: Callable[[Wait], bool] | None = None
                 ) -> None:
        self.state_dir = Path(state_dir)
        self._covered = covered
        self._engine: EngineView | None = None
        self._held: dict[str, HeldLock] = {}
        self.refused: dict[str, int] = {}  # run id -> times skipped (locked elsewhere)

    def bind(self, engine: EngineView) -> None:
        self._engine = engine

    def filter_wait(self, wait: Wait) -> Wait:
        if wait.poll and self._covered is not None and self._covered(wait):
            return replace(wait, poll=None)
        return wait

    def claim(self, run_id: str) -> bool:
        """Hold ``run_id``'s lock (True), or False if another process holds it.

        Repeat calls while held are free. On taking the lock anew the run is dropped from
        the engine's cache, so the next read comes from the store (lock, then reload).
        """
        if run_id in self._held:
            return True
        held = try_run_lock(self.state_dir, run_id)
        if held is None:
            self.refused[run_id] = self.refused.get(run_id, 0) + 1
            log.info("run_locked_elsewhere", run_id=run_id)
            return False
        self._held[run_id] = held
        if self._engine is not None:
            self._engine.forget(run_id)
        return True

    def release_idle(self) -> int:
        """Let go of the locks of runs no longer active in the engine; returns how many.

        Call between pumps (never inside one): a run that parked or finished in the last
        committed pump is released, so other processes may take it.
        """
        if not self._held or self._engine is None:
            return 0
        n = 0
        for rid in list(self._held):
            if self._engine.is_active(rid):
                continue
            self._held.pop(rid).release()
            n += 1
        return n

    def held(self) -> set[str]:
        """Run ids whose lock is held now."""
        return set(self._held)

    def close(self) -> None:
        """Let go of every lock (after the engine has stopped)."""
        for rid in list(self._held):
            self._held.pop(rid).release()
