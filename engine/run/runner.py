"""The engine: drives runs through their pipelines, durably.

One core loop (the thread that calls :meth:`Engine.pump`) owns all run state and is the
only writer to the store. Steps execute in a worker pool and report back through a queue.
Each pump is one transaction (group commit): results, events and due timers are applied,
ready runs advance, and only after the commit do the steps it started begin executing.
So the journal always holds a step's intent before its side effect (journal first), and a
step found in flight after a crash runs again with the same idempotency key.

Parked runs (waiting for mail, a file or an instant; backing off) are not kept in memory:
they live in the store, its timers and its correlation index, and are loaded only when an
event or a timer for them arrives.

Hazards: a step that is executing when its state times out finishes into a run that has
moved on; its result is stale and dropped (logged as ``step_result_stale``).
"""
from __future__ import annotations

import os
import queue
import random
import signal
import traceback
from collections import deque
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import structlog

from certwright.engine.run import secrets as secret_store
from certwright.clock import Clock, SystemClock, format_instant
from certwright.errors import CertwrightError, PermanentError, StepError
from certwright.events import Event
from certwright.engine.run.outcomes import HeapEntry, Outcomes
from certwright.engine.run.jobs import Job
from certwright.engine.run.journal import apply
from certwright.logs import SECRET_VALUES
from certwright.engine.run.machine import PipelineMachine
from certwright.engine.run.naming import new_run_id, run_dir_for
from certwright.engine.model.params import check_params
from certwright.engine.model.spec import PipelineSpec, StepSpec
from certwright.engine.model.template import UnresolvedReference, render
from certwright.engine.run.workers import InlinePool, WorkerPool
from certwright.state.records import BACKOFF, FINISHED, RUNNING, WAITING, JournalEntry, RunRecord
from certwright.engine.plugins.step import StepContext, Wait
from certwright.engine.plugins.registry import Registry

log = structlog.get_logger("certwright.engine")

SpecLoader = Callable[[str, str], PipelineSpec]  # (text, source) -> spec


class Engine(Outcomes):
    """Drives the runs of one store. Not thread-safe except :meth:`submit`/`wake`/`cancel`."""

    def __init__(self, store: Any, state_dir: Path | str, *, registry: Registry | None = None,
                 clock: Clock | None = None, workers: int = 8, inline: bool = False,
                 rng: random.Random | None = None, services: Mapping[str, Any] | None = None,
                 scope: Iterable[str] | None = None, spec_loader: SpecLoader | None = None,
                 crash_after_commits: int | None = None, max_batch: int = 2000,
                 claim: Callable[[str], bool] | None = None,
                 wait_filter: Callable[[Wait], Wait] | None = None) -> None:
        """``claim(run_id)`` is asked before anything is dispatched to a run (advancing it,
        an event, a timer): False leaves the run alone (its timer is retried a second
        later), e.g. because another process holds its lock. ``wait_filter`` may change a
        step's :class:`Wait` before it is recorded (the daemon drops polls it does not
        need)."""
        self.store = store
        self.state_dir = Path(os.path.abspath(state_dir))
        self._runs_root = str(run_dir_for(self.state_dir, "x").parent)
        self.registry = registry or Registry()
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.services = dict(services or {})
        self.scope = set(scope) if scope is not None else None
        self._claim = claim
        self._wait_filter = wait_filter
        self._load_spec_text = spec_loader
        self._pool: WorkerPool | InlinePool = InlinePool() if inline else WorkerPool(workers)
        self._queue: "queue.SimpleQueue[tuple[Any, ...]]" = queue.SimpleQueue()
        self._runs: dict[str, RunRecord] = {}       # active runs only
        self._ready: deque[tuple[str, bool]] = deque()
        self._executing: dict[str, Job] = {}
        self._recheck: dict[str, Event | None] = {}
        self._heap: list[HeapEntry] = []
        self._specs: dict[str, tuple[PipelineSpec, PipelineMachine]] = {}
        self._secrets: dict[str, dict[str, Any]] = {}
        self._tx: Any = None
        self._cm: Any = None
        self._dirty: dict[str, RunRecord] = {}
        self._to_launch: list[Job] = []
        self._commits = 0
        self._new_waits: list[tuple[str, list[str]]] = []
        # Called (after the commit) with (run_id, paths) when a run starts waiting on paths,
        # so a watcher can watch them at once (then wake the run: nothing is missed).
        self.on_wait: Callable[[str, list[str]], None] | None = None
        self._max_timer_id = 0
        self._crash_after = crash_after_commits
        self._max_batch = max_batch

    # -- life cycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Load timers and the runs that need work (after a crash: those with a step in
        flight). Parked runs stay in the store."""
        for t in self.store.timers():
            self._max_timer_id = max(self._max_timer_id, t.id)
            if self.scope is None or t.run_id in self.scope:
                self._push_timer(t)
        for rid, _ in self.store.run_ids([RUNNING]):
            if self.scope is None or rid in self.scope:
                self._make_ready(rid)

    def sync(self, adopt: Callable[[str], bool] | None = None) -> int:
        """Adopt what other processes added to the store since ``open``/the last sync:
        their timers, and running runs nobody drives here (``adopt(run_id)`` may refuse
        one, e.g. because another process holds its lock). Returns how many were adopted.
        """
        n = 0
        for t in self.store.timers_after(self._max_timer_id):
            self._max_timer_id = max(self._max_timer_id, t.id)
            if self.scope is None or t.run_id in self.scope:
                self._push_timer(t)
                n += 1
        queued = {rid for rid, _ in self._ready}
        for rid, _ in self.store.run_ids([RUNNING]):
            if (rid in self._runs or rid in self._executing or rid in queued
                    or (self.scope is not None and rid not in self.scope)):
                continue
            if adopt is None or adopt(rid):
                self._make_ready(rid)
                n += 1
        return n

    def close(self) -> None:
        self._pool.shutdown()

    # -- the outside world (thread-safe) ------------------------------------------------
    def submit(self, event: Event, run_id: str | None = None) -> None:
        """Route an event to the run(s) waiting for its key (or to ``run_id``)."""
        self._queue.put(("event", event, run_id))

    def wake(self, run_id: str) -> None:
        """Ask a waiting run to re-check what it waits for."""
        self._queue.put(("event", Event(kind="wake"), run_id))

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        self._queue.put(("cancel", run_id, reason))

    # -- starting runs -----------------------------------------------------------------
    def start_run(self, spec: PipelineSpec, inputs: Mapping[str, Any],
                  run_id: str | None = None, secret_inputs: Iterable[str] = ()) -> str:
        """Create a run of ``spec`` with coerced ``inputs``; it starts on the next pump."""
        return self.start_runs(spec, [inputs], [run_id], secret_inputs)[0]

    def start_runs(self, spec: PipelineSpec, inputs: Iterable[Mapping[str, Any]],
                   run_ids: Iterable[str | None] | None = None,
                   secret_inputs: Iterable[str] = ()) -> list[str]:
        """Create several runs of ``spec`` in one transaction (one commit for all)."""
        values = list(inputs)
        ids = [rid or new_run_id(spec.name) for rid in (list(run_ids) if run_ids is not None
                                                        else [None] * len(values))]
        if len(ids) != len(values) or len(set(ids)) != len(ids):
            raise CertwrightError("start_runs: one distinct run id per input mapping")
        for rid in ids:
            if self.store.find_run(rid) is not None:
                raise CertwrightError(f"a run with id {rid!r} exists already")
        secret_names = set(secret_inputs)
        self._specs.setdefault(spec.hash, (spec, PipelineMachine(spec)))
        for rid, given in zip(ids, values):
            run_dir = run_dir_for(self.state_dir, rid)
            run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.scope is not None:
                self.scope.add(rid)
        with self._transaction():
            self._tx.put_spec(spec.hash, spec.name, spec.source, spec.text)
            for rid, given in zip(ids, values):
                if secret_names:
                    secrets = {"inputs": {k: given[k] for k in secret_names if k in given},
                               "outputs": {}}
                    self._tx.put_secrets(rid, secrets)
                    self._secrets[rid] = secrets
                public = {k: (secret_store.REDACTED if k in secret_names else v)
                          for k, v in given.items()}
                run = self._record(None, rid, "created", {
                    "pipeline": spec.name, "spec_hash": spec.hash, "inputs": public})
                self._enter(run, spec.initial, "start")
                log.info("run_created", run_id=rid, pipeline=spec.name, version=spec.hash[:12])
        self._flush_launches()
        return ids

    # -- the loop -----------------------------------------------------------------------
    def pump(self, timeout: float = 0.0) -> bool:
        """Apply what arrived and what is due, advance ready runs, commit, launch steps.

        Blocks up to ``timeout`` seconds for something to arrive when nothing is ready.
        Returns True when it did anything.
        """
        items: list[tuple[Any, ...]] = []
        try:
            if timeout > 0 and not self._ready:
                items.append(self._queue.get(timeout=min(timeout, self._until_next_timer())))
            while len(items) < self._max_batch:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        due = self._pop_due()
        if not items and not due and not self._ready:
            return False
        with self._transaction():
            for item in items:
                self._handle(item)
            for t in due:
                self._on_timer(t)
            budget = self._max_batch
            while self._ready and budget > 0:
                rid, retry = self._ready.popleft()
                self._advance(rid, retry)
                budget -= 1
        self._flush_launches()
        return True

    def run_until_idle(self, max_pumps: int = 1_000_000) -> None:
        """Pump until no run is ready, executing or due (parked runs stay parked)."""
        for _ in range(max_pumps):
            busy = bool(self._executing)
            did = self.pump(timeout=5.0 if busy else 0.0)
            if not did and not self._executing and not self._ready:
                return
        raise CertwrightError("run_until_idle: the engine did not settle")

    def idle(self) -> bool:
        return not self._executing and not self._ready and self._queue.empty()

    def next_due(self) -> datetime | None:
        return datetime.fromtimestamp(self._heap[0][0], tz=self.clock.now().tzinfo) \
            if self._heap else None

    # -- transactions and records -----------------------------------------------------
    def _transaction(self) -> Any:
        engine = self

        class _Ctx:
            def __enter__(self) -> None:
                engine._cm = engine.store.transaction()
                engine._tx = engine._cm.__enter__()

            def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
                try:
                    if et is None:
                        for run in engine._dirty.values():
                            engine._tx.put_run(run)
                    engine._dirty.clear()
                    return bool(engine._cm.__exit__(et, ev, tb))
                finally:
                    engine._tx = None
                    engine._commits += 1
                    if et is None and engine._crash_after == engine._commits:
                        os.kill(os.getpid(), signal.SIGKILL)  # test hook: crash right here
        return _Ctx()

    def _record(self, run: RunRecord | None, rid: str, kind: str,
                data: dict[str, Any]) -> RunRecord:
        entry = JournalEntry(run_id=rid, kind=kind, data=data,
                             at=format_instant(self.clock.now()))
        seq = self._tx.append(entry)
        new = apply(run, replace(entry, seq=seq))
        self._dirty[rid] = new
        if new.status in FINISHED or new.status in (WAITING, BACKOFF):
            self._runs.pop(rid, None)  # parked runs live in the store, not in memory
            self._secrets.pop(rid, None)
        else:
            self._runs[rid] = new
        return new

    def _get(self, rid: str) -> RunRecord | None:
        return self._dirty.get(rid) or self._runs.get(rid) or self.store.find_run(rid)

    def _spec_of(self, run: RunRecord) -> tuple[PipelineSpec, PipelineMachine]:
        if run.spec_hash not in self._specs:
            name, source, text = self.store.load_spec(run.spec_hash)
            loader = self._load_spec_text
            if loader is None:
                from certwright.engine.model.loader import load_pipeline_text

                def loader(t: str, s: str) -> PipelineSpec:
                    return load_pipeline_text(t, s, self.registry)
            spec = loader(text, source)
            self._specs[run.spec_hash] = (spec, PipelineMachine(spec))
        return self._specs[run.spec_hash]

    def _make_ready(self, rid: str, retry: bool = False) -> None:
        self._ready.append((rid, retry))

    # -- dispatch -----------------------------------------------------------------------
    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "result":
            self._on_result(item[1], item[2])
        elif kind == "event":
            self._on_event(item[1], item[2])
        elif kind == "cancel":
            self._on_cancel(item[1], item[2])

    def is_active(self, rid: str) -> bool:
        """Whether the run is in this engine's hands now (executing, ready or in memory)."""
        return (rid in self._executing or rid in self._runs
                or any(r == rid for r, _ in self._ready))

    def forget(self, rid: str) -> None:
        """Drop a cached record, so the next read of the run comes from the store."""
        if rid not in self._dirty:
            self._runs.pop(rid, None)

    def _advance(self, rid: str, retry: bool = False) -> None:
        if self._claim is not None and not self._claim(rid):
            self._runs.pop(rid, None)
            return
        run = self._get(rid)
        if run is None or rid in self._executing:
            return
        if run.status != RUNNING and not (retry and run.status == BACKOFF):
            return
        spec, _ = self._spec_of(run)
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
            skip = not self._holds(run, spec, step_spec)
        except (UnresolvedReference, CertwrightError, ValueError) as exc:
            self._step_failed(run, step_spec, PermanentError(f"`when` of {step_spec.id!r}: {exc}"))
            return
        if skip:
            self._record(run, rid, "step_done", {"index": run.step_index, "step": step_spec.id,
                                                 "key": key, "outputs": {"skipped": True}})
            log.info("step_skipped", run_id=rid, state=run.state, step=step_spec.id)
            self._make_ready(rid)
            return
        recovering = run.inflight == key
        attempt = run.attempt if recovering else run.attempt + 1
        run = self._record(run, rid, "step_started", {
            "index": run.step_index, "step": step_spec.id, "key": key, "attempt": attempt,
            "recovering": recovering})
        try:
            job = self._job(run, spec, step_spec, "step", None)
        except (UnresolvedReference, CertwrightError) as exc:
            self._step_failed(run, step_spec, PermanentError(str(exc)))
            return
        job.ctx.recovering = recovering
        self._executing[rid] = job
        self._to_launch.append(job)
        log.info("step_started", run_id=rid, state=run.state, step=step_spec.id,
                 name=step_spec.name, attempt=attempt, recovering=recovering)

    def _holds(self, run: RunRecord, spec: PipelineSpec, step_spec: StepSpec) -> bool:
        """Whether a step's ``when`` guard holds (an unresolvable one fails the run)."""
        from certwright.engine.model.conditions import evaluate
        if step_spec.when is None:
            return True
        return evaluate(step_spec.when, self._namespace(run, spec))

    def _job(self, run: RunRecord, spec: PipelineSpec, step_spec: StepSpec, kind: str,
             event: Event | None) -> Job:
        ns = self._namespace(run, spec)
        params = render(dict(step_spec.params), ns)
        step = self.registry.get(step_spec.name)
        check_params(step_spec.name, step.params_schema, params)
        ctx = StepContext(
            run_id=run.id, pipeline=spec.name, state=run.state, step_id=step_spec.id,
            idempotency_key=f"{run.id}:{run.entry}:{run.step_index}", attempt=run.attempt,
            params=params, run_dir=run_dir_for(self.state_dir, run.id),
            state_dir=self.state_dir, clock=self.clock,
            log=structlog.get_logger("certwright.step").bind(
                run_id=run.id, state=run.state, step=step_spec.id),
            memo=dict(run.memo), event=event, timeout=step_spec.timeout,
            services=self.services, inputs=ns["inputs"], vars=ns["steps"])
        return Job(run.id, run.entry, run.step_index, ctx.idempotency_key, kind, step_spec, ctx,
                   tuple(secret_store.values(self._secrets_of(run.id))))

    def _namespace(self, run: RunRecord, spec: PipelineSpec) -> dict[str, Any]:
        secrets = self._secrets_of(run.id)
        inputs = {**run.inputs, **secrets["inputs"]} if secrets["inputs"] else run.inputs
        steps: dict[str, Any] = run.vars
        if secrets["outputs"]:
            steps = {k: dict(v) for k, v in run.vars.items()}
            for sid, outs in secrets["outputs"].items():
                steps.setdefault(sid, {}).update(outs)
        return {"inputs": inputs, "steps": steps, "env": os.environ,
                "run": {"id": run.id, "dir": f"{self._runs_root}/{run.id}",
                        "state_dir": str(self.state_dir), "pipeline": spec.name,
                        "state": run.state}}

    def _secrets_of(self, rid: str) -> dict[str, Any]:
        found = self._secrets.get(rid)
        if found is None:
            found = secret_store.load(self.store, self.state_dir, rid)
            self._secrets[rid] = found
        return found

    def _flush_launches(self) -> None:
        waits, self._new_waits = self._new_waits, []
        if self.on_wait is not None:
            for rid, paths in waits:
                self.on_wait(rid, paths)
        jobs, self._to_launch = self._to_launch, []
        for job in jobs:
            self._pool.submit(self._executor_for(job))

    def _executor_for(self, job: Job) -> Callable[[], None]:
        def run() -> None:
            self._execute(job)
        return run

    def _execute(self, job: Job) -> None:
        """Runs in a worker thread: call the step, send the outcome to the core loop."""
        masked = SECRET_VALUES.set(job.secrets)
        try:
            result: Any = self.registry.get(job.spec.name).run(job.ctx)
        except Exception as exc:  # every failure becomes an event, never a dead thread
            if not isinstance(exc, StepError):
                exc.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            result = exc
        finally:
            SECRET_VALUES.reset(masked)
        self._queue.put(("result", job, result))
