"""The engine as the daemon runs it: one driver per run (run locks), and no per-run polls.

:class:`DaemonEngine` composes two things onto :class:`engine.runner.Engine` without
changing it:

* **One driver per run.** Before the daemon dispatches anything to a run (advances it,
  delivers an event, fires a timer) it takes that run's lock (``state.locks.try_run_lock``,
  an flock) without blocking, and keeps it while the run is active here (a step
  executing, ready, or between steps). It lets it go once the run parks or finishes, so
  ``certwright resume RUN`` / ``run --no-wait`` can drive a parked run; while such a
  process holds the lock the daemon leaves the run alone: events for it are dropped (the
  other process re-checks the wait itself), timers are deferred by a second, running runs
  are not adopted. Lock → reload → re-check: a run not active here is re-read from the
  store after its lock is taken.
* **No per-run poll timers** when the daemon watches what a wait waits on. ``wait.mail``
  asks for a 30 s poll as a fallback for missed file events; with 10,000 parked runs that
  is 333 wake-ups a second. When ``covered(wait)`` says every watched path is a Maildir the
  daemon watches with inotify (and re-routes unclaimed mail itself), the poll is dropped.

Both go through the engine's public hooks (``claim``, ``wait_filter``). Hazard: the lock
file's pid line is written without fsync (it only names the
holder for messages); the flock itself is what excludes.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import structlog

from certwright.engine.run.runner import Engine
from certwright.state.locks import HeldLock, try_run_lock
from certwright.engine.plugins.step import Wait

log = structlog.get_logger("certwright.daemon")

TIMER_DEFER = 1.0  # seconds a timer of a run locked elsewhere waits before trying again


class DaemonEngine(Engine):
    """An :class:`Engine` that holds run locks while it drives runs and can drop polls.

    Extra keyword ``covered``: a callable telling whether a :class:`steps.base.Wait`'s
    watched paths are all watched by the daemon (then its ``poll`` is dropped).
    """

    def __init__(self, *args: Any, covered: Callable[[Wait], bool] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, claim=self.claim, wait_filter=self._drop_covered_poll,
                         **kwargs)
        self._covered = covered
        self._held: dict[str, HeldLock] = {}
        self.refused: dict[str, int] = {}  # run id -> times skipped (locked elsewhere)

    def _drop_covered_poll(self, w: Wait) -> Wait:
        if w.poll and self._covered is not None and self._covered(w):
            return replace(w, poll=None)
        return w

    # -- locks --------------------------------------------------------------------------
    def claim(self, run_id: str) -> bool:
        """Hold ``run_id``'s lock (True), or False if another process holds it.

        Repeat calls while held are free. On taking the lock anew the run is dropped from
        any cache, so the next read comes from the store (lock, then reload).
        """
        if run_id in self._held:
            return True
        held = try_run_lock(self.state_dir, run_id)
        if held is None:
            self.refused[run_id] = self.refused.get(run_id, 0) + 1
            log.info("run_locked_elsewhere", run_id=run_id)
            return False
        self._held[run_id] = held
        self.forget(run_id)
        return True

    def release_idle(self) -> int:
        """Let go of the locks of runs no longer active here; returns how many.

        Call between pumps (never inside one): a run that parked or finished in the last
        committed pump is released, so other processes may take it.
        """
        if not self._held:
            return 0
        n = 0
        for rid in list(self._held):
            if self.is_active(rid):
                continue
            self._held.pop(rid).release()
            n += 1
        return n

    def held(self) -> set[str]:
        """Run ids whose lock this engine holds now."""
        return set(self._held)

    def close(self) -> None:
        super().close()
        for rid in list(self._held):
            self._held.pop(rid).release()
