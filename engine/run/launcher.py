"""The launcher of jobs: the worker pool, the core loop's inbox, and jobs held until commit.

Everything that reaches the core loop from elsewhere arrives in one queue, the inbox:
outcomes of steps (:class:`StepReturned`), cleanups done (:class:`CleanedUp`), events
(:class:`EventArrived`), cancels (:class:`CancelAsked`) and moves to another host
(:class:`MoveAsked`). Putting into it is thread-safe
(and reentrant, so a signal handler may).

Jobs are launched only after the transaction that recorded their intent has committed
(journal first): :meth:`Launcher.launch` holds them, :meth:`Launcher.flush` hands them to
the pool. In a worker, a step's ``run`` and a state's ``cleanup`` calls execute with the
run's secrets masked in their logs, and every failure becomes an outcome, never a dead
thread. A failing cleanup is logged (``step_cleanup_failed``) and goes no further.

Hazard: with the inline pool (tests, benchmarks), a job executes inside :meth:`flush` and
its outcome waits in the inbox for the next pump.
"""
from __future__ import annotations

import queue
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog

from certwright.engine.plugins.registry import Registry
from certwright.engine.plugins.step import Cleanup
from certwright.engine.run.jobs import CleanupJob, Job
from certwright.engine.run.workers import InlinePool, WorkerPool
from certwright.errors import StepError
from certwright.events import Event
from certwright.logs import SECRET_VALUES

__all__ = ["CancelAsked", "CleanedUp", "EventArrived", "Item", "Launcher", "MoveAsked",
           "StepReturned"]

log = structlog.get_logger("certwright.engine")


@dataclass(frozen=True, slots=True)
class StepReturned:
    """A step's job came back: a Done, a Wait, or the exception it raised."""

    job: Job
    result: object


@dataclass(frozen=True, slots=True)
class CleanedUp:
    """A run's cleanups were done (each failure logged already)."""

    job: CleanupJob


@dataclass(frozen=True, slots=True)
class EventArrived:
    """An outside event, for the runs waiting on its key (or for ``run_id``)."""

    event: Event
    run_id: str | None


@dataclass(frozen=True, slots=True)
class CancelAsked:
    run_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class MoveAsked:
    run_id: str
    host: str
    by: str


Item = StepReturned | CleanedUp | EventArrived | CancelAsked | MoveAsked


class Launcher:
    """Runs jobs in a pool (or inline) after the commit; their outcomes go to the inbox."""

    def __init__(self, registry: Registry, *, workers: int = 8, inline: bool = False) -> None:
        self._registry = registry
        self._pool: WorkerPool | InlinePool = InlinePool() if inline else WorkerPool(workers)
        self._inbox: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._held: list[Job | CleanupJob] = []

    # -- the inbox (thread-safe) ------------------------------------------------------------
    def put(self, item: Item) -> None:
        self._inbox.put(item)

    def take(self, limit: int, wait: float = 0.0) -> list[Item]:
        """Up to ``limit`` items; blocks up to ``wait`` seconds for the first one."""
        items: list[Item] = []
        try:
            if wait > 0:
                items.append(self._inbox.get(timeout=wait))
            while len(items) < limit:
                items.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        return items

    def empty(self) -> bool:
        return self._inbox.empty()

    # -- launching --------------------------------------------------------------------------
    def launch(self, job: Job | CleanupJob) -> None:
        """Hold ``job`` until :meth:`flush` (after the commit of its intent)."""
        self._held.append(job)

    def flush(self) -> None:
        """Hand every held job to the pool."""
        jobs, self._held = self._held, []
        for job in jobs:
            self._pool.submit(self._executor_for(job))

    def discard(self) -> None:
        """Forget the held jobs (their intents never committed, or the process stops)."""
        self._held.clear()

    def close(self) -> None:
        self._pool.shutdown()

    def _executor_for(self, job: Job | CleanupJob) -> Callable[[], None]:
        if isinstance(job, CleanupJob):
            def clean() -> None:
                self._clean(job)
            return clean

        def run() -> None:
            self._execute(job)
        return run

    # -- in a worker thread -----------------------------------------------------------------
    def _execute(self, job: Job) -> None:
        """Call the step, send the outcome to the core loop."""
        masked = SECRET_VALUES.set(job.secrets)
        try:
            result: object = self._registry.get(job.spec.name).run(job.ctx)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an event, never a dead thread
            if not isinstance(exc, StepError):
                exc.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            result = exc
        finally:
            SECRET_VALUES.reset(masked)
        self._inbox.put(StepReturned(job, result))

    def _clean(self, job: CleanupJob) -> None:
        """Call each task's ``cleanup`` in order; a failure is logged, never raised."""
        masked = SECRET_VALUES.set(job.secrets)
        try:
            for spec, ctx in job.tasks:
                try:
                    cast(Cleanup, self._registry.get(spec.name)).cleanup(ctx)
                except Exception as exc:  # noqa: BLE001 - a cleanup never fails the run
                    log.warning("step_cleanup_failed", run_id=job.run_id, state=ctx.state,
                                step=spec.id, key=ctx.idempotency_key,
                                error=f"{type(exc).__name__}: {exc}")
                else:
                    log.info("step_cleaned_up", run_id=job.run_id, state=ctx.state,
                             step=spec.id, key=ctx.idempotency_key)
        finally:
            SECRET_VALUES.reset(masked)
        self._inbox.put(CleanedUp(job))
