"""A run's life, one thing at a time: what the engine does with each item of a pump.

The :class:`Dispatcher` holds no state of its own: it reads and changes the engine's book
of runs, records through its journal writer, and is called only by the core loop, inside
the pump's transaction. Read it in a run's life order: ``advance`` (start the next step,
or leave the state), ``on_result`` (a step came back: done, waiting, failed), ``on_event``
(re-check a waiting step), ``on_timer`` (timeout, retry, wake), ``on_cancel``,
``transition`` and ``enter`` (the machine picks the next state; the entry is journaled;
the state left is cleaned up after the commit, before the new state's steps start).

Every dispatch to a run is first claimed (``Interceptor.claim``): a run another process
drives is left alone. A host-bound step of a run of another host is not started
(``hosts.HostRule``): the run is journaled as waiting for its host and let go. A step's
result that took a message someone took first is not recorded: the step is called again
(``_again``) and sees it taken.

Hazard: a step that is executing when its state times out (or its run is cancelled)
finishes into a run that has moved on; its result is stale and dropped (logged as
``step_result_stale``).
"""
from __future__ import annotations

import structlog

from certwright.clock import Clock
from certwright.engine.model.spec import StepSpec
from certwright.engine.model.template import UnresolvedReference
from certwright.engine.plugins.step import Done, Wait
from certwright.engine.run.book import RunBook
from certwright.engine.run.cleanup import Cleanups
from certwright.engine.run.context import Contexts
from certwright.engine.run.hosts import HostRule
from certwright.engine.run.interceptor import Interceptors
from certwright.engine.run.jobs import CleanupJob, Job
from certwright.engine.run.journal import Cancelled, Entered, HostAwaited, Moved, StepStarted
from certwright.engine.run.launcher import (
    CancelAsked,
    CleanedUp,
    EventArrived,
    Item,
    Launcher,
    MoveAsked,
    StepReturned,
)
from certwright.engine.run.machine import NoTransition
from certwright.engine.run.outcomes import Outcomes, state_deadline
from certwright.engine.run.specs import Specs
from certwright.engine.run.timers import Due, TimerHeap
from certwright.engine.run.writer import JournalWriter
from certwright.errors import CertwrightError, PermanentError, StoreError
from certwright.events import Event
from certwright.state.base import Store
from certwright.state.records import BACKOFF, FINISHED, RUNNING, WAITING, RunRecord

__all__ = ["Dispatcher"]

log = structlog.get_logger("certwright.engine")

CLAIM_RETRY = 1.0  # seconds until a timer of a run that could not be claimed is tried again


class Dispatcher:
    """Applies inbox items, due timers and ready runs to the runs (see the module)."""

    def __init__(self, *, store: Store, scope: set[str] | None, clock: Clock,
                 hooks: Interceptors, book: RunBook, timers: TimerHeap, launcher: Launcher,
                 specs: Specs, contexts: Contexts, writer: JournalWriter,
                 outcomes: Outcomes, cleanups: Cleanups, hosts: HostRule) -> None:
        """The parts of one engine; ``scope`` is the engine's own set (it grows)."""
        self._store = store
        self._scope = scope
        self._clock = clock
        self._hooks = hooks
        self._book = book
        self._timers = timers
        self._launcher = launcher
        self._specs = specs
        self._ctx = contexts
        self._writer = writer
        self._outcomes = outcomes
        self._cleanups = cleanups
        self._hosts = hosts

    def _get(self, rid: str) -> RunRecord | None:
        return self._book.cached(rid) or self._store.find_run(rid)

    def handle(self, item: Item) -> None:
        """One inbox item: a step's outcome, an event, a cancel, cleanups done."""
        if isinstance(item, StepReturned):
            self._on_result(item.job, item.result)
        elif isinstance(item, EventArrived):
            self._on_event(item.event, item.run_id)
        elif isinstance(item, CancelAsked):
            self._on_cancel(item.run_id, item.reason)
        elif isinstance(item, CleanedUp):
            self._on_cleaned(item.job)
        elif isinstance(item, MoveAsked):
            self._on_move(item)

    def advance(self, rid: str, retry: bool = False) -> None:
        """Start the run's next step (journal the intent; it executes after the commit),
        or leave the state when its steps are done."""
        book = self._book
        if not self._hooks.claim(rid):
            book.drop(rid)
            return
        run = self._get(rid)
        if run is None or rid in book.executing:
            return
        if run.status != RUNNING and not (retry and run.status == BACKOFF):
            return
        if rid in book.recovered:  # after a crash: finish the cleanups of the state left
            book.recovered.discard(rid)
            again = self._cleanups.again(run)
            if again is not None:
                self._launch_cleanup(again)
                return
        spec, _ = self._specs.of(run)
        st = spec.states[run.state]
        if st.loop:
            self._transition(run, "loop")
            return
        if run.step_index >= len(st.steps):
            self._transition(run, "next")
            return
        step_spec = st.steps[run.step_index]
        key = f"{rid}:{run.entry}:{run.step_index}"
        try:
            skip = not self._ctx.holds(run, spec, step_spec)
        except StoreError:
            raise  # the store failing is no fault of the step: the command ends, run kept
        except (UnresolvedReference, CertwrightError, ValueError) as exc:
            self._step_failed(run, step_spec, PermanentError(f"`when` of {step_spec.id!r}: {exc}"))
            return
        if skip:
            self._outcomes.skipped(run, step_spec)
            book.make_ready(rid)
            return
        wanted = self._hosts.wanted(run, step_spec)
        if wanted is not None:
            self._await_host(run, step_spec, wanted)
            return
        recovering = run.inflight == key
        attempt = run.attempt if recovering else run.attempt + 1
        started = StepStarted(index=run.step_index, step=step_spec.id, key=key,
                              attempt=attempt, recovering=recovering)
        if self._hosts.host is not None:
            started["host"] = self._hosts.host
        run = self._writer.record(run, rid, "step_started", started)
        try:
            job = self._ctx.job(run, spec, step_spec, "step", None)
        except StoreError:
            raise
        except (UnresolvedReference, CertwrightError) as exc:
            self._step_failed(run, step_spec, PermanentError(str(exc)))
            return
        job.ctx.recovering = recovering
        book.begin(job)
        self._launcher.launch(job)
        self._hooks.step_started(run, step_spec.id, attempt)
        log.info("step_started", run_id=rid, state=run.state, step=step_spec.id,
                 name=step_spec.name, attempt=attempt, recovering=recovering)

    def _await_host(self, run: RunRecord, step_spec: StepSpec, host: str) -> None:
        """The step must start on ``host``: journal that the run waits for it (once), and
        let the run go, so a daemon of that host takes it (its lease or lock released)."""
        if run.wants_host != host:
            here = self._hosts.host or ""
            self._writer.record(run, run.id, "host_awaited", HostAwaited(
                index=run.step_index, step=step_spec.id, host=host, seen_on=here))
            log.info("host_awaited", run_id=run.id, state=run.state, step=step_spec.id,
                     host=host, here=here)
        self._book.drop(run.id)

    def _on_result(self, job: Job, result: object) -> None:
        """A step's job came back: record its outcome (unless the run moved on)."""
        self._book.end(job)
        run = self._get(job.run_id)
        if (run is None or run.entry != job.entry or run.step_index != job.index
                or run.status in FINISHED):
            log.warning("step_result_stale", run_id=job.run_id, step=job.spec.id)
            return
        if isinstance(result, Done | Wait):
            recorded = (self._outcomes.done(run, job, result) if isinstance(result, Done)
                        else self._outcomes.waiting(run, job, result))
            if recorded is None:  # a message it took was taken first: it looks again
                self._again(run, job)
                return
            if isinstance(result, Done):
                self._book.make_ready(run.id)
        else:
            self._step_failed(run, job.spec, result)
        if job.run_id in self._book.recheck:  # an event came while the step executed
            pending = self._book.recheck.pop(job.run_id)
            self._on_event(pending or Event(kind="wake"), job.run_id)

    def _again(self, run: RunRecord, job: Job) -> None:
        """Call the step again at once with the same key (after the commit): a re-check
        with the event it had, or the step (journaled as started again, recovering)."""
        if job.kind == "check":
            self._on_event(job.ctx.event or Event(kind="wake"), run.id)
        else:
            self._book.make_ready(run.id)

    def _step_failed(self, run: RunRecord, step_spec: StepSpec, exc: object) -> None:
        """A step's attempt failed: retry later, or leave the state on ``error``, or fail."""
        run = self._outcomes.failed(run, step_spec, exc)
        if run.status == BACKOFF:
            return  # its retry timer is set
        spec, _ = self._specs.of(run)
        if spec.states[run.state].on_error:
            self._transition(run, "error")
        else:
            self._outcomes.run_failed(
                run, f"state {run.state!r}, step {step_spec.id!r} failed: {run.error}")

    def _on_event(self, event: Event, run_id: str | None) -> None:
        """An outside event (or a wake): re-check the waiting step of each run it is for."""
        ids = [run_id] if run_id else (self._store.runs_for(event.key) if event.key else [])
        book = self._book
        for rid in ids:
            if self._scope is not None and rid not in self._scope:
                continue
            if not self._hooks.claim(rid):
                self._hooks.event_refused(rid, event)
                continue
            run = self._get(rid)
            if run is None or run.status != WAITING:
                continue
            if rid in book.executing:
                book.recheck[rid] = event
                continue
            spec, _ = self._specs.of(run)
            step_spec = spec.states[run.state].steps[run.step_index]
            try:
                job = self._ctx.job(run, spec, step_spec, "check", event)
            except StoreError:
                raise
            except (UnresolvedReference, CertwrightError) as exc:
                self._step_failed(run, step_spec, PermanentError(str(exc)))
                continue
            book.begin(job)
            self._launcher.launch(job)

    def on_timer(self, t: Due) -> None:
        """A durable timer is due: a state's timeout, a retry, or a waiting step's wake."""
        rid = t.run_id
        if not self._hooks.claim(rid):
            self._timers.defer(t, CLAIM_RETRY)
            return
        self._writer.tx.delete_timer(t.id)
        run = self._get(rid)
        if run is None or run.entry != t.entry or run.status in FINISHED:
            return
        if t.kind == "timeout":
            log.info("state_timed_out", run_id=rid, state=run.state, deadline=t.due)
            self._book.executing.pop(rid, None)
            self._transition(run, "timeout")
        elif t.kind == "retry" and run.status == BACKOFF:
            self._book.make_ready(rid, retry=True)
        elif t.kind == "wake" and run.status == WAITING and run.wake_at == t.due:
            self._on_event(Event(kind="wake"), rid)

    def _on_cancel(self, rid: str, reason: str) -> None:
        run = self._get(rid)
        if run is None or run.status in FINISHED:
            return
        cleanup = self._cleanups.job(run, run.entry)
        cancelled = self._writer.record(run, rid, "cancelled", Cancelled(reason=reason))
        self._writer.tx.clear_timers(rid)
        self._writer.tx.set_correlations(rid, run.entry, [])
        self._book.executing.pop(rid, None)
        if cleanup is not None:
            self._launch_cleanup(cleanup)
        log.info("run_cancelled", run_id=rid, state=run.state, reason=reason)
        self._hooks.run_finished(cancelled)

    def _on_move(self, item: MoveAsked) -> None:
        """Give the run another host (``certwright move``); a finished run stays as it is.
        Nothing starts here: an engine of the new host takes the run."""
        run = self._get(item.run_id)
        if run is None or run.status in FINISHED:
            return
        self._writer.record(run, run.id, "moved", Moved(host=item.host, previous=run.host,
                                                        by=item.by))
        self._book.drop(run.id)
        log.info("run_moved", run_id=run.id, host=item.host, previous=run.host, by=item.by)

    def _transition(self, run: RunRecord, trigger: str) -> None:
        spec, machine = self._specs.of(run)
        try:
            target = machine.target(run.state, trigger, namespace=self._ctx.namespace(run, spec),
                                    counters=run.counters)
        except (NoTransition, UnresolvedReference) as exc:
            self._outcomes.run_failed(
                run, f"state {run.state!r}: cannot leave on {trigger!r}: {exc}")
            return
        self.enter(run, target, trigger)

    def enter(self, run: RunRecord, to: str, trigger: str) -> None:
        """Enter state ``to``: journal it, set its deadline, then clean up the state left
        (after the commit) before its steps start."""
        spec, _ = self._specs.of(run)
        st = spec.states[to]
        before = run.state or None
        cleanup = self._cleanups.job(run, run.entry + 1, st) if before else None
        deadline, problem = None, None
        if st.timeout:
            ns = self._ctx.namespace(run, spec) if st.timeout.at else {}
            deadline, problem = state_deadline(to, st.timeout, self._clock.now(), ns)
        data: Entered = {"from": before, "to": to, "trigger": trigger, "entry": run.entry + 1,
                         "final": st.final, "deadline": deadline,
                         "error": run.error if st.final == "failure" else None}
        run = self._writer.record(run, run.id, "entered", data)
        self._writer.tx.clear_timers(run.id)
        self._writer.tx.set_correlations(run.id, run.entry, [])
        if deadline:
            self._timers.add(self._writer.tx, run, "timeout", deadline)
        log.info("transitioned", run_id=run.id, **{"from": before}, to=to, trigger=trigger)
        self._hooks.transitioned(run, before, to, trigger)
        self._book.recovered.discard(run.id)
        if cleanup is not None:
            self._launch_cleanup(cleanup)
        if problem:
            self._outcomes.run_failed(run, problem)
            return
        if st.final:
            log.info("run_succeeded" if st.final == "success" else "run_failed",
                     run_id=run.id, state=to, error=run.error)
            self._hooks.run_finished(run)
        elif cleanup is None:
            self._book.make_ready(run.id)  # else once the cleanups are done

    # -- cleanup ----------------------------------------------------------------------------
    def _launch_cleanup(self, job: CleanupJob) -> None:
        """The run's cleanups go to a worker after the commit; the run waits for them."""
        self._book.begin(job)
        self._launcher.launch(job)

    def _on_cleaned(self, job: CleanupJob) -> None:
        """The cleanups are done: the run goes on, if it is still where it was."""
        if not self._book.end(job):
            return
        run = self._get(job.run_id)
        if run is not None and run.entry == job.entry and run.status == RUNNING:
            self._book.make_ready(job.run_id)
