"""What became of a step's attempt, as the journal records it: done, waiting or failed.

:class:`Outcomes` is the engine's helper that writes those entries (and what goes with
them: secret outputs, correlation keys, wake and retry timers) inside the pump's
transaction. It decides nothing about the run's path: the engine advances the run after
``done``, and after ``failed`` without a retry leaves the state (``error``) or fails it.

The rules themselves are pure functions (no store, no state), tested alone:

* :func:`split_outputs`: a step's outputs: what the journal shows, what stays secret.
* :func:`wake_instant`: when a waiting step is to be called again.
* :func:`failure_message` and :func:`retry_instant`: what a failed attempt records, and
  when (if ever) the step is tried again.
* :func:`state_deadline`: the timeout instant of a state being entered.

Each takes the clock's ``now`` and the engine's random source as arguments, so the same
inputs give the same entry (tests replay them with a fake clock and a seeded ``Random``).
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from certwright.clock import Clock, format_instant, parse_instant
from certwright.engine.model.spec import RetryPolicy, StepSpec, TimeoutSpec
from certwright.engine.model.template import UnresolvedReference, render
from certwright.engine.plugins.registry import Registry
from certwright.engine.plugins.step import Done, Wait
from certwright.engine.run import secrets as secret_store
from certwright.engine.run.context import Contexts
from certwright.engine.run.interceptor import Interceptors
from certwright.engine.run.jobs import Job
from certwright.engine.run.journal import Alarm, RunFailed, StepDone, StepFailed, StepWaiting
from certwright.engine.run.timers import TimerHeap
from certwright.engine.run.writer import JournalWriter
from certwright.errors import StepError
from certwright.state.records import WAITING, RunRecord

__all__ = ["Outcomes", "failure_message", "retry_instant", "split_outputs", "state_deadline",
           "wake_instant"]

log = structlog.get_logger("certwright.engine")

def split_outputs(outputs: Mapping[str, Any],
                  hidden: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(public, secret): the outputs with the ``hidden`` ones redacted, for the journal
    (mask the run's other secrets in them too); and the hidden ones, for the secrets
    table."""
    names = set(hidden)
    public = {k: (secret_store.REDACTED if k in names else v) for k, v in outputs.items()}
    secret = {k: v for k, v in outputs.items() if k in names}
    return public, secret


def wake_instant(w: Wait, now: datetime) -> str | None:
    """The earlier of the wait's ``until`` and ``now + poll`` (ISO), or None for neither."""
    wakes = [t for t in (w.until, now + timedelta(seconds=w.poll) if w.poll else None) if t]
    return format_instant(min(wakes)) if wakes else None


def failure_message(exc: object, secrets: list[str]) -> str:
    """What the journal says of a failed attempt: a StepError's message as it is, anything
    else (another exception: a bug, not a refusal) with its type first; secrets masked."""
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, StepError):
        message = f"{type(exc).__name__}: {message}"
    masked: str = secret_store.mask(message, secrets)
    return masked


def retry_instant(exc: object, attempt: int, policy: RetryPolicy, rng: random.Random,
                  now: datetime) -> str | None:
    """When to try the step again (ISO), or None: not retryable, or no attempt left.

    The delay is the policy's for this attempt, or the other side's ``retry_after`` when
    that is longer (a server's Retry-After: never sooner than it asked).
    """
    if not bool(getattr(exc, "retryable", True)) or attempt >= policy.max_attempts:
        return None
    delay = policy.delay(attempt, rng)
    asked = getattr(exc, "retry_after", None)
    if isinstance(asked, (int, float)) and asked > delay:
        delay = float(asked)
    return format_instant(now + timedelta(seconds=delay))


def state_deadline(state: str, t: TimeoutSpec, now: datetime,
                   namespace: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(deadline, problem) of a state being entered: the earlier of ``after`` from now
    and the instant ``at`` resolves to (an empty value: no ``at``)."""
    due = [now + timedelta(seconds=t.after)] if t.after is not None else []
    if t.at:
        try:
            value = render(t.at, namespace)
            if value not in (None, ""):
                due.append(value if isinstance(value, datetime)
                           else parse_instant(str(value)))
        except (UnresolvedReference, ValueError, TypeError) as exc:
            return None, f"state {state!r}: timeout.at {t.at!r} is not an instant: {exc}"
    return (format_instant(min(due)) if due else None), None


class Outcomes:
    """Records outcomes in the open transaction; each method returns the run after them."""

    def __init__(self, writer: JournalWriter, timers: TimerHeap, contexts: Contexts,
                 registry: Registry, hooks: Interceptors, clock: Clock,
                 rng: random.Random) -> None:
        self._writer = writer
        self._timers = timers
        self._ctx = contexts
        self._registry = registry
        self._hooks = hooks
        self._clock = clock
        self._rng = rng

    def skipped(self, run: RunRecord, step_spec: StepSpec) -> RunRecord:
        """The current step's ``when`` did not hold: done, without running."""
        run = self._writer.record(run, run.id, "step_done", StepDone(
            index=run.step_index, step=step_spec.id,
            key=f"{run.id}:{run.entry}:{run.step_index}", outputs={"skipped": True}))
        log.info("step_skipped", run_id=run.id, state=run.state, step=step_spec.id)
        return run

    def _taken(self, run: RunRecord, job: Job, result: Done | Wait) -> bool:
        """Write the messages the step took (``result.marks``) and keep its ``after`` for
        the commit; False, writing nothing, when one was taken first by someone else."""
        if result.marks and not self._writer.take(result.marks, run.id):
            log.info("step_result_refused", run_id=run.id, state=run.state, step=job.spec.id,
                     reason="a message it took was taken first elsewhere")
            return False
        if result.after is not None:
            self._writer.after_commit(result.after)
        return True

    def done(self, run: RunRecord, job: Job, result: Done) -> RunRecord | None:
        """The step finished: its outputs (secret ones kept apart), the messages it took,
        the files it made that the store keeps, an alarm if it raised one, and no wake
        timer left. None, with nothing recorded, when a message it took was another's
        first: the engine calls the step again."""
        if not self._taken(run, job, result):
            return None
        tx = self._writer.tx
        step = self._registry.get(job.spec.name)
        outputs = dict(result.outputs)
        public, hidden = split_outputs(outputs, getattr(step, "secret_outputs", ()))
        if hidden:
            secrets = self._ctx.secrets_of(run.id)
            secrets.setdefault("outputs", {})[job.spec.id] = hidden
            tx.put_secrets(run.id, secrets)  # commits with the entry below
        for art in result.kept:  # what it made, kept in the store with the entry below
            tx.put_artefact(replace(art, run_id=run.id) if art.run_id else art)
        public = secret_store.mask(public, secret_store.values(self._ctx.secrets_of(run.id)))
        had_wake = run.status == WAITING or run.wake_at is not None
        run = self._writer.record(run, run.id, "step_done", StepDone(
            index=job.index, step=job.spec.id, key=job.key, outputs=public))
        if outputs.get("alarm"):
            run = self._writer.record(run, run.id, "alarm", Alarm(message=str(outputs["alarm"])))
        if had_wake:  # else no wake timer can exist (a stale one fires and finds nothing)
            tx.clear_timers(run.id, ["wake"])
        log.info("step_succeeded", run_id=run.id, state=run.state, step=job.spec.id)
        self._hooks.step_finished(run, job.spec.id, "done")
        return run

    def waiting(self, run: RunRecord, job: Job, w: Wait) -> RunRecord | None:
        """The step parks the run (again): what it waits for, under which keys, until
        when. A re-check that finds nothing new records nothing but a moved wake-up.
        None as :meth:`done` has it, when a message it took was another's first."""
        if not self._taken(run, job, w):
            return None
        w = self._hooks.filter_wait(w)
        wake_at = wake_instant(w, self._clock.now())
        changed = (run.status != WAITING or run.waiting != w.description
                   or run.memo != dict(w.memo) or job.kind == "step")
        data = StepWaiting(index=job.index, step=job.spec.id, key=job.key,
                           waiting=w.description, memo=dict(w.memo), wake_at=wake_at,
                           watch=list(w.watch))
        tx = self._writer.tx
        if changed:
            run = self._writer.record(run, run.id, "step_waiting", data)
            tx.set_correlations(run.id, run.entry, w.correlations)
            if w.watch:
                self._hooks.waiting(run.id, list(w.watch))
            log.info("step_waiting", run_id=run.id, state=run.state, step=job.spec.id,
                     waiting=w.description)
            self._hooks.step_finished(run, job.spec.id, "waiting")
        elif wake_at:
            run = self._writer.record(run, run.id, "step_waiting", data)
        tx.clear_timers(run.id, ["wake"])
        if wake_at:
            self._timers.add(tx, run, "wake", wake_at)
        return run

    def failed(self, run: RunRecord, step_spec: StepSpec, exc: object) -> RunRecord:
        """The step's attempt failed (``exc``: what it raised, or whatever else it
        returned). With a retry left the run backs off (status backoff, a retry timer);
        else it stays running, and the engine leaves the state or fails the run."""
        if not isinstance(exc, StepError):
            log.error("step_crashed", run_id=run.id, step=step_spec.id,
                      traceback=getattr(exc, "__traceback_text__", None))
        message = failure_message(exc, secret_store.values(self._ctx.secrets_of(run.id)))
        attempt = max(run.attempt, 1)
        retry_at = retry_instant(exc, attempt, step_spec.retry, self._rng, self._clock.now())
        run = self._writer.record(run, run.id, "step_failed", StepFailed(
            index=run.step_index, step=step_spec.id, key=f"{run.id}:{run.entry}:"
            f"{run.step_index}", attempt=attempt, error=message, retry_at=retry_at))
        log.warning("step_failed", run_id=run.id, state=run.state, step=step_spec.id,
                    attempt=attempt, error=message, retry_at=retry_at)
        self._hooks.step_finished(run, step_spec.id, "failed")
        if retry_at:
            self._timers.add(self._writer.tx, run, "retry", retry_at)
        return run

    def run_failed(self, run: RunRecord, error: str) -> RunRecord:
        """The run fails for good where it is: no timers, no correlations left."""
        run = self._writer.record(run, run.id, "run_failed", RunFailed(error=error))
        self._writer.tx.clear_timers(run.id)
        self._writer.tx.set_correlations(run.id, run.entry, [])
        log.error("run_failed", run_id=run.id, state=run.state, error=error)
        self._hooks.run_finished(run)
        return run
