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

Read the run core top to bottom: this module (open, submit, start, pump), then
``dispatch`` (a run's life: advance, on_result, on_event, on_timer, transition, enter).
The engine is composed of small objects, each in a module of its own: the book of runs
(``book``: active, ready, executing), the timer heap (``timers``), the launcher
(``launcher``: worker pool, inbox, jobs held until commit), the journal writer
(``writer``), the spec cache (``specs``), the builder of step contexts (``context``), the
recorder of step outcomes (``outcomes``) and the cleanups of states left (``cleanup``).
Hooks (run locks, crash points, watchers, observers) are :class:`Interceptor` objects
given at construction (``interceptor``).

Hazard: only :meth:`Engine.submit`, :meth:`Engine.wake` and :meth:`Engine.cancel` may be
called from other threads (or signal handlers); everything else belongs to the core loop.
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from certwright.clock import Clock, SystemClock
from certwright.engine.model.spec import PipelineSpec
from certwright.engine.plugins.registry import Registry
from certwright.engine.run import secrets as secret_store
from certwright.engine.run.book import RunBook
from certwright.engine.run.cleanup import Cleanups
from certwright.engine.run.context import Contexts
from certwright.engine.run.dispatch import Dispatcher
from certwright.engine.run.hosts import HostRule, check_host
from certwright.engine.run.interceptor import Interceptor, Interceptors
from certwright.engine.run.journal import Created
from certwright.engine.run.launcher import CancelAsked, EventArrived, Launcher, MoveAsked
from certwright.engine.run.naming import new_runs
from certwright.engine.run.options import EngineOptions
from certwright.engine.run.outcomes import Outcomes
from certwright.engine.run.specs import SpecLoader, Specs
from certwright.engine.run.timers import TimerHeap
from certwright.engine.run.writer import JournalWriter
from certwright.errors import CertwrightError
from certwright.events import Event
from certwright.state.base import Store
from certwright.state.records import BACKOFF, RUNNING, WAITING

__all__ = ["Engine", "EngineOptions", "SpecLoader"]

log = structlog.get_logger("certwright.engine")


class Engine:
    """Drives the runs of one store. Not thread-safe except :meth:`submit`/`wake`/`cancel`."""

    def __init__(self, store: Store, state_dir: Path | str, *, registry: Registry | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 services: Mapping[str, Any] | None = None,
                 spec_loader: SpecLoader | None = None, options: EngineOptions | None = None,
                 interceptors: Sequence[Interceptor] = ()) -> None:
        """``spec_loader(text, source)`` loads a pinned pipeline (default: validated
        against ``registry``); ``interceptors`` hook into the run's life (see
        :mod:`certwright.engine.run.interceptor`)."""
        opts = options or EngineOptions()
        self.store = store
        self.state_dir = Path(os.path.abspath(state_dir))
        self.registry = registry or Registry()
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.services = dict(services or {})
        self.scope = set(opts.scope) if opts.scope is not None else None
        self.host = opts.host
        self._max_batch = opts.max_batch
        self._hooks = Interceptors(interceptors)
        self._book = RunBook()
        self._timers = TimerHeap()
        self._launcher = Launcher(self.registry, workers=opts.workers, inline=opts.inline)
        self._specs = Specs(store, self.registry, spec_loader)
        contexts = Contexts(store, self.state_dir, self.registry, self.clock, self.services,
                            self._book)
        self._writer = JournalWriter(store, self._book, self.clock, self._hooks)
        self._dispatch = Dispatcher(
            store=store, scope=self.scope, clock=self.clock, hooks=self._hooks,
            book=self._book, timers=self._timers, launcher=self._launcher, specs=self._specs,
            contexts=contexts, writer=self._writer,
            outcomes=Outcomes(self._writer, self._timers, contexts, self.registry,
                              self._hooks, self.clock, self.rng),
            cleanups=Cleanups(store, self._specs, contexts),
            hosts=HostRule(self.host, self.registry))
        self._hooks.bind(self)

    # -- life cycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Load timers and the runs that need work (after a crash: those with a step in
        flight). Parked runs stay in the store."""
        self._timers.load(self.store.timers(), self.scope)
        for rid, _ in self.store.run_ids([RUNNING], host=self.host):
            if self.scope is None or rid in self.scope:
                self._recovered(rid)

    def load_specs(self) -> int:
        """Load now the pipeline versions the store's unfinished runs follow (a daemon at
        start), so the first event of a parked run does not pay for parsing and checking
        its pipeline; how many. One that does not load is logged and left to its runs,
        which fail on it as before."""
        hashes = {h for _, h in self.store.run_ids([RUNNING, WAITING, BACKOFF])}
        loaded = 0
        for spec_hash in sorted(hashes):
            try:
                self._specs.by_hash(spec_hash)
                loaded += 1
            except CertwrightError as exc:
                log.warning("pipeline_version_unloadable", version=spec_hash[:12],
                            error=str(exc))
        return loaded

    def sync(self, adopt: Callable[[str], bool] | None = None) -> int:
        """Adopt what other processes added to the store since ``open``/the last sync:
        their timers, and running runs nobody drives here (``adopt(run_id)`` may refuse
        one, e.g. because another process holds its lock). Returns how many were adopted.
        """
        n = self._timers.load(self.store.timers_after(self._timers.max_id), self.scope)
        queued = {rid for rid, _ in self._book.ready}
        for rid, _ in self.store.run_ids([RUNNING], host=self.host):
            if (rid in self._book.active or rid in self._book.executing
                    or rid in queued or (self.scope is not None and rid not in self.scope)):
                continue
            if adopt is None or adopt(rid):
                self._recovered(rid)
                n += 1
        return n

    def _recovered(self, rid: str) -> None:
        self._book.make_ready(rid)
        self._book.recovered.add(rid)

    def close(self) -> None:
        self._launcher.close()

    # -- the outside world (thread-safe) ------------------------------------------------
    def submit(self, event: Event, run_id: str | None = None) -> None:
        """Route an event to the run(s) waiting for its key (or to ``run_id``)."""
        self._launcher.put(EventArrived(event, run_id))

    def wake(self, run_id: str) -> None:
        """Ask a waiting run to re-check what it waits for."""
        self._launcher.put(EventArrived(Event(kind="wake"), run_id))

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        self._launcher.put(CancelAsked(run_id, reason))

    def move(self, run_id: str, host: str, by: str = "") -> None:
        """Give the run the host ``host`` (journaled as ``moved`` by ``by``; see
        ``engine.run.hosts``); the caller holds the run (its lock or lease)."""
        self._launcher.put(MoveAsked(run_id, host, by))

    # -- starting runs -----------------------------------------------------------------
    def start_run(self, spec: PipelineSpec, inputs: Mapping[str, Any],
                  run_id: str | None = None, secret_inputs: Iterable[str] = (), *,
                  host: str | None = None) -> str:
        """Create a run of ``spec`` with coerced ``inputs``; it starts on the next pump."""
        return self.start_runs(spec, [inputs], [run_id], secret_inputs, host=host)[0]

    def start_runs(self, spec: PipelineSpec, inputs: Iterable[Mapping[str, Any]],
                   run_ids: Iterable[str | None] | None = None,
                   secret_inputs: Iterable[str] = (), *, host: str | None = None) -> list[str]:
        """Create several runs of ``spec`` in one transaction (one commit for all).

        Their host (``engine.run.hosts``): a pipeline's own ``host`` input, else ``host``,
        else this engine's host (none: the runs may run anywhere); InputError for a bad
        host name."""
        values = list(inputs)
        ids = new_runs(spec.name, len(values), run_ids, self.state_dir,
                       lambda rid: self.store.find_run(rid) is not None)
        if self.scope is not None:
            self.scope.update(ids)
        self._specs.add(spec)
        secret_names = list(secret_inputs)
        with self._writer.transaction() as tx:
            tx.put_spec(spec.hash, spec.name, spec.source, spec.text)
            for rid, given in zip(ids, values, strict=True):
                public, secrets = secret_store.split_inputs(given, secret_names)
                if secrets is not None:
                    tx.put_secrets(rid, secrets)
                    self._book.set_secrets(rid, secrets)
                created = Created(pipeline=spec.name, spec_hash=spec.hash, inputs=public)
                where = given.get("host") or host or self.host
                if where:
                    created["host"] = check_host(where, "input host")
                run = self._writer.record(None, rid, "created", created)
                self._dispatch.enter(run, spec.initial, "start")
                log.info("run_created", run_id=rid, pipeline=spec.name, version=spec.hash[:12])
        self._after_commit()
        return ids

    # -- the loop -----------------------------------------------------------------------
    def pump(self, timeout: float = 0.0) -> bool:
        """Apply what arrived and what is due, advance ready runs, commit, launch steps.

        Blocks up to ``timeout`` seconds for something to arrive when nothing is ready.
        Returns True when it did anything.
        """
        book = self._book
        wait = 0.0
        if timeout > 0 and not book.ready:
            wait = min(timeout, self._timers.until_next(self.clock.now().timestamp()))
        items = self._launcher.take(self._max_batch, wait)
        due = self._timers.pop_due(self.clock.now().timestamp())
        if not items and not due and not book.ready:
            return False
        with self._writer.transaction():
            for item in items:
                self._dispatch.handle(item)
            for t in due:
                self._dispatch.on_timer(t)
            budget = self._max_batch
            self._hooks.claim_ahead(lambda: book.peek_ready(budget))
            while book.ready and budget > 0:
                rid, retry = book.pop_ready()
                self._dispatch.advance(rid, retry)
                budget -= 1
        self._after_commit()
        return True

    def _after_commit(self) -> None:
        self._hooks.deliver()
        self._launcher.flush()

    def run_until_idle(self, max_pumps: int = 1_000_000) -> None:
        """Pump until no run is ready, executing or due (parked runs stay parked)."""
        for _ in range(max_pumps):
            did = self.pump(timeout=5.0 if self._book.executing else 0.0)
            if not did and self._book.idle():
                return
        raise CertwrightError("run_until_idle: the engine did not settle")

    def idle(self) -> bool:
        return self._book.idle() and self._launcher.empty()

    def next_due(self) -> datetime | None:
        at = self._timers.next_at()
        return datetime.fromtimestamp(at, tz=self.clock.now().tzinfo) if at is not None else None

    def is_active(self, rid: str) -> bool:
        """Whether the run is in this engine's hands now (executing, ready or in memory)."""
        return self._book.is_active(rid)

    def forget(self, rid: str) -> None:
        """Drop a cached record, so the next read of the run comes from the store."""
        self._book.forget(rid)
