"""Which steps undo their work, and when: the cleanups of a state a run leaves.

When a run leaves a state (or is cancelled in one), each step of that state that ran in
this entry and whose step object has ``cleanup`` (:class:`certwright.engine.plugins.step.
Cleanup`) is cleaned up, in a worker, after the transition is committed (journal first)
and before the new state's steps start. A step is *handed over* instead when the state
entered runs a step of the same name: that one carries on its work (the ACME pipeline
presents its answers in ``registered`` and validates them in ``probed``) and is cleaned up
when its own state is left. A failing cleanup is logged and never fails the run.

Cleanups must be idempotent: after a crash between the transition's commit and the end of
its cleanups, a run whose new state has not begun a step does them again
(:meth:`Cleanups.again`, which reads the run's journal to see the state it left).

Hazards: a cleanup may run while the step it undoes is still executing (its state timed
out, its run was cancelled): it undoes what is there, and the step's late result is
dropped. A crash right after a run entered a final state or was cancelled loses that
cleanup (nothing re-reads a finished run).
"""
from __future__ import annotations

from collections.abc import Iterable

import structlog

from certwright.engine.model.spec import StateSpec
from certwright.engine.run.context import Contexts
from certwright.engine.run.jobs import CleanupJob
from certwright.engine.run.journal import before_entry
from certwright.engine.run.specs import Specs
from certwright.state.base import Store
from certwright.state.records import RunRecord

__all__ = ["Cleanups", "steps_that_ran"]

log = structlog.get_logger("certwright.engine")

SKIPPED = {"skipped": True}  # the outputs journaled for a step whose ``when`` did not hold


def steps_that_ran(run: RunRecord, st: StateSpec, candidates: Iterable[int]) -> list[int]:
    """Which of ``candidates`` (step indices of the run's current state) ran in this entry:
    those before the current step that were not skipped, and the current one once it
    started (in flight, waiting, failed)."""
    out = []
    for i in candidates:
        if i < run.step_index:
            if run.vars.get(st.steps[i].id) != SKIPPED:
                out.append(i)
        elif i == run.step_index and run.attempt > 0:
            out.append(i)
    return out


class Cleanups:
    """Builds the :class:`CleanupJob` of a state left; the engine launches it."""

    def __init__(self, store: Store, specs: Specs, contexts: Contexts) -> None:
        self._store = store
        self._specs = specs
        self._ctx = contexts

    def job(self, left: RunRecord, entry: int,
            entered: StateSpec | None = None) -> CleanupJob | None:
        """The cleanups of the steps that ran in ``left``'s state (None: nothing to undo),
        but those handed over to a step of the same name in the state ``entered``; the
        run continues in ``entry`` once they are done."""
        if not left.state:
            return None
        spec, _ = self._specs.of(left)
        capable = self._specs.cleaners(spec, left.state)
        if not capable:
            return None
        st = spec.states[left.state]
        taken_over = {s.name for s in entered.steps} if entered is not None else set()
        tasks = []
        for i in steps_that_ran(left, st, capable):
            step = st.steps[i]
            if step.name in taken_over:
                continue
            try:
                tasks.append((step, self._ctx.context(left, spec, step, i)))
            except Exception as exc:  # noqa: BLE001 - a cleanup never fails the run
                log.warning("step_cleanup_failed", run_id=left.id, state=left.state,
                            step=step.id, error=f"{type(exc).__name__}: {exc}")
        if not tasks:
            return None
        return CleanupJob(left.id, entry, tasks, self._ctx.secret_values(left.id))

    def again(self, run: RunRecord) -> CleanupJob | None:
        """For a run found running after a crash: the cleanups of the state it left, if no
        step of its current state has begun (they may have been cut short)."""
        if run.entry < 2 or run.step_index or run.attempt or run.inflight:
            return None
        spec, _ = self._specs.of(run)
        if not self._specs.any_cleaners(spec):
            return None
        left = before_entry(self._store.journal(run.id), run.entry)
        if left is None:
            return None
        return self.job(left, run.entry, spec.states[run.state])
