"""What the engine does with outcomes: step results, waits, failures, transitions, outside
events, timers and cancels. A mixin of :class:`engine.runner.Engine` (split off to keep
modules short); every method runs in the core loop, inside the pump's transaction.
"""
from __future__ import annotations

import heapq
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import structlog

from certwright.engine.run import secrets as secret_store
from certwright.clock import Clock, format_instant, parse_instant
from certwright.errors import CertwrightError, PermanentError, StepError
from certwright.events import Event
from certwright.engine.run.jobs import Job
from certwright.engine.run.machine import NoTransition, PipelineMachine
from certwright.engine.model.spec import PipelineSpec, StepSpec, TimeoutSpec
from certwright.engine.model.template import UnresolvedReference, render
from certwright.state.records import BACKOFF, FINISHED, WAITING, RunRecord, Timer
from certwright.engine.plugins.step import Done, Wait
from certwright.engine.plugins.registry import Registry

log = structlog.get_logger("certwright.engine")

HeapEntry = tuple[float, int, str, int, str, str]  # due (epoch), timer id, run, entry, kind, due


class Outcomes:
    """The outcome half of the engine; the state it uses is the engine's."""

    store: Any
    clock: Clock
    rng: random.Random
    registry: Registry
    state_dir: Path
    scope: set[str] | None
    _tx: Any
    _executing: dict[str, Job]
    _recheck: dict[str, Event | None]
    _heap: list[HeapEntry]
    _max_timer_id: int
    _new_waits: list[tuple[str, list[str]]]
    _to_launch: list[Job]
    _claim: Callable[[str], bool] | None
    _wait_filter: Callable[[Wait], Wait] | None

    # provided by the engine
    def _record(self, run: RunRecord | None, rid: str, kind: str,
                data: dict[str, Any]) -> RunRecord:
        raise NotImplementedError

    def _get(self, rid: str) -> RunRecord | None:
        raise NotImplementedError

    def _spec_of(self, run: RunRecord) -> tuple[PipelineSpec, PipelineMachine]:
        raise NotImplementedError

    def _make_ready(self, rid: str, retry: bool = False) -> None:
        raise NotImplementedError

    def _job(self, run: RunRecord, spec: PipelineSpec, step_spec: StepSpec, kind: str,
             event: Event | None) -> Job:
        raise NotImplementedError

    def _namespace(self, run: RunRecord, spec: PipelineSpec) -> dict[str, Any]:
        raise NotImplementedError

    def _secrets_of(self, rid: str) -> dict[str, Any]:
        raise NotImplementedError

    # -- outcomes ---------------------------------------------------------------------
    def _on_result(self, job: Job, result: Any) -> None:
        if self._executing.get(job.run_id) is job:
            del self._executing[job.run_id]
        run = self._get(job.run_id)
        if (run is None or run.entry != job.entry or run.step_index != job.index
                or run.status in FINISHED):
            log.warning("step_result_stale", run_id=job.run_id, step=job.spec.id)
            return
        if isinstance(result, Done):
            self._step_done(run, job, result)
        elif isinstance(result, Wait):
            self._step_wait(run, job, result)
        else:
            self._step_failed(run, job.spec, result)
        if job.run_id in self._recheck:  # an event came while the step executed: re-check
            pending = self._recheck.pop(job.run_id)
            self._on_event(pending or Event(kind="wake"), job.run_id)

    def _step_done(self, run: RunRecord, job: Job, result: Done) -> None:
        step = self.registry.get(job.spec.name)
        hidden = set(getattr(step, "secret_outputs", ()))
        outputs = dict(result.outputs)
        public = {k: (secret_store.REDACTED if k in hidden else v) for k, v in outputs.items()}
        if hidden & outputs.keys():
            secrets = self._secrets_of(run.id)
            secrets.setdefault("outputs", {})[job.spec.id] = {
                k: v for k, v in outputs.items() if k in hidden}
            self._tx.put_secrets(run.id, secrets)  # commits with the entry below
        public = secret_store.mask(public, secret_store.values(self._secrets_of(run.id)))
        had_wake = run.status == WAITING or run.wake_at is not None
        run = self._record(run, run.id, "step_done", {
            "index": job.index, "step": job.spec.id, "key": job.key, "outputs": public})
        if "alarm" in outputs and outputs["alarm"]:
            run = self._record(run, run.id, "alarm", {"message": str(outputs["alarm"])})
        if had_wake:  # else no wake timer can exist (a stale one fires and finds nothing)
            self._tx.clear_timers(run.id, ["wake"])
        log.info("step_succeeded", run_id=run.id, state=run.state, step=job.spec.id)
        self._make_ready(run.id)

    def _step_wait(self, run: RunRecord, job: Job, w: Wait) -> None:
        if self._wait_filter is not None:
            w = self._wait_filter(w)
        now = self.clock.now()
        wakes = [t for t in (w.until, now + timedelta(seconds=w.poll) if w.poll else None) if t]
        wake_at = format_instant(min(wakes)) if wakes else None
        changed = (run.status != WAITING or run.waiting != w.description
                   or run.memo != dict(w.memo) or job.kind == "step")
        if changed:
            run = self._record(run, run.id, "step_waiting", {
                "index": job.index, "step": job.spec.id, "key": job.key,
                "waiting": w.description, "memo": dict(w.memo), "wake_at": wake_at,
                "watch": list(w.watch)})
            self._tx.set_correlations(run.id, run.entry, w.correlations)
            if w.watch:
                self._new_waits.append((run.id, list(w.watch)))
            log.info("step_waiting", run_id=run.id, state=run.state, step=job.spec.id,
                     waiting=w.description)
        elif wake_at:
            run = self._record(run, run.id, "step_waiting", {
                "index": job.index, "step": job.spec.id, "key": job.key,
                "waiting": w.description, "memo": dict(w.memo), "wake_at": wake_at,
                "watch": list(w.watch)})
        self._tx.clear_timers(run.id, ["wake"])
        if wake_at:
            self._add_timer(run, "wake", wake_at)

    def _step_failed(self, run: RunRecord, step_spec: StepSpec, exc: BaseException) -> None:
        retryable = bool(getattr(exc, "retryable", True))
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, StepError):
            message = f"{type(exc).__name__}: {message}"
            log.error("step_crashed", run_id=run.id, step=step_spec.id,
                      traceback=getattr(exc, "__traceback_text__", None))
        message = secret_store.mask(message, secret_store.values(self._secrets_of(run.id)))
        attempt = max(run.attempt, 1)
        retry_at = None
        if retryable and attempt < step_spec.retry.max_attempts:
            delay = step_spec.retry.delay(attempt, self.rng)
            asked = getattr(exc, "retry_after", None)
            if isinstance(asked, (int, float)) and asked > delay:
                delay = float(asked)  # the other side's Retry-After: never sooner
            retry_at = format_instant(self.clock.now() + timedelta(seconds=delay))
        run = self._record(run, run.id, "step_failed", {
            "index": run.step_index, "step": step_spec.id, "key": f"{run.id}:{run.entry}:"
            f"{run.step_index}", "attempt": attempt, "error": message, "retry_at": retry_at})
        log.warning("step_failed", run_id=run.id, state=run.state, step=step_spec.id,
                    attempt=attempt, error=message, retry_at=retry_at)
        if retry_at:
            self._add_timer(run, "retry", retry_at)
            return
        spec, _ = self._spec_of(run)
        if spec.states[run.state].on_error:
            self._transition(run, "error")
        else:
            self._fail(run, f"state {run.state!r}, step {step_spec.id!r} failed: {message}")

    def _fail(self, run: RunRecord, error: str) -> None:
        self._record(run, run.id, "run_failed", {"error": error})
        self._tx.clear_timers(run.id)
        self._tx.set_correlations(run.id, run.entry, [])
        log.error("run_failed", run_id=run.id, state=run.state, error=error)

    def _transition(self, run: RunRecord, trigger: str) -> None:
        spec, machine = self._spec_of(run)
        try:
            target = machine.target(run.state, trigger, namespace=self._namespace(run, spec),
                                    counters=run.counters)
        except (NoTransition, UnresolvedReference) as exc:
            self._fail(run, f"state {run.state!r}: cannot leave on {trigger!r}: {exc}")
            return
        self._enter(run, target, trigger)

    def _enter(self, run: RunRecord, to: str, trigger: str) -> None:
        spec, _ = self._spec_of(run)
        st = spec.states[to]
        before = run.state or None
        deadline, problem = self._deadline(run, spec, to, st.timeout) if st.timeout else (None, None)
        run = self._record(run, run.id, "entered", {
            "from": run.state or None, "to": to, "trigger": trigger, "entry": run.entry + 1,
            "final": st.final, "deadline": deadline,
            "error": run.error if st.final == "failure" else None})
        self._tx.clear_timers(run.id)
        self._tx.set_correlations(run.id, run.entry, [])
        if deadline:
            self._add_timer(run, "timeout", deadline)
        log.info("transitioned", run_id=run.id, **{"from": before}, to=to, trigger=trigger)
        if problem:
            self._fail(run, problem)
            return
        if st.final:
            log.info("run_succeeded" if st.final == "success" else "run_failed",
                     run_id=run.id, state=to, error=run.error)
        else:
            self._make_ready(run.id)

    def _deadline(self, run: RunRecord, spec: PipelineSpec, state: str,
                  t: TimeoutSpec) -> tuple[str | None, str | None]:
        """(deadline, problem) of a state being entered: the earlier of ``after`` from now
        and the instant ``at`` resolves to (an empty value: no ``at``)."""
        now = self.clock.now()
        due = [now + timedelta(seconds=t.after)] if t.after is not None else []
        if t.at:
            try:
                value = render(t.at, self._namespace(run, spec))
                if value not in (None, ""):
                    due.append(value if isinstance(value, datetime)
                               else parse_instant(str(value)))
            except (UnresolvedReference, ValueError, TypeError) as exc:
                return None, f"state {state!r}: timeout.at {t.at!r} is not an instant: {exc}"
        return (format_instant(min(due)) if due else None), None

    # -- events, timers, cancel -------------------------------------------------------
    def _on_event(self, event: Event, run_id: str | None) -> None:
        ids = [run_id] if run_id else (self.store.runs_for(event.key) if event.key else [])
        for rid in ids:
            if self.scope is not None and rid not in self.scope:
                continue
            if self._claim is not None and not self._claim(rid):
                continue
            run = self._get(rid)
            if run is None or run.status != WAITING:
                continue
            if rid in self._executing:
                self._recheck[rid] = event
                continue
            spec, _ = self._spec_of(run)
            try:
                job = self._job(run, spec, spec.states[run.state].steps[run.step_index],
                                "check", event)
            except (UnresolvedReference, CertwrightError) as exc:
                self._step_failed(run, spec.states[run.state].steps[run.step_index],
                                  PermanentError(str(exc)))
                continue
            self._executing[rid] = job
            self._to_launch.append(job)

    def _on_timer(self, t: HeapEntry) -> None:
        _, tid, rid, entry, kind, due = t
        if self._claim is not None and not self._claim(rid):
            heapq.heappush(self._heap, (t[0] + 1.0, *t[1:]))  # try again in a second
            return
        self._tx.delete_timer(tid)
        run = self._get(rid)
        if run is None or run.entry != entry or run.status in FINISHED:
            return
        if kind == "timeout":
            log.info("state_timed_out", run_id=rid, state=run.state, deadline=due)
            self._executing.pop(rid, None)
            self._transition(run, "timeout")
        elif kind == "retry" and run.status == BACKOFF:
            self._make_ready(rid, retry=True)
        elif kind == "wake" and run.status == WAITING and run.wake_at == due:
            self._on_event(Event(kind="wake"), rid)

    def _on_cancel(self, rid: str, reason: str) -> None:
        run = self._get(rid)
        if run is None or run.status in FINISHED:
            return
        self._record(run, rid, "cancelled", {"reason": reason})
        self._tx.clear_timers(rid)
        self._tx.set_correlations(rid, run.entry, [])
        self._executing.pop(rid, None)
        log.info("run_cancelled", run_id=rid, state=run.state, reason=reason)

    # -- timers -----------------------------------------------------------------------
    def _add_timer(self, run: RunRecord, kind: str, due: str) -> None:
        tid = self._tx.add_timer(run.id, run.entry, kind, due)
        self._max_timer_id = max(self._max_timer_id, tid)
        self._push_timer(Timer(due=due, id=tid, run_id=run.id, entry=run.entry, kind=kind))

    def _push_timer(self, t: Timer) -> None:
        heapq.heappush(self._heap, (parse_instant(t.due).timestamp(), t.id, t.run_id, t.entry,
                                    t.kind, t.due))

    def _pop_due(self) -> list[HeapEntry]:
        now = self.clock.now().timestamp()
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap))
        return out

    def _until_next_timer(self) -> float:
        if not self._heap:
            return 3600.0
        return max(0.0, self._heap[0][0] - self.clock.now().timestamp())
