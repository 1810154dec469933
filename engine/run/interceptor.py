"""Hooks into the engine, as objects: :class:`Interceptor` and the chain the engine calls.

An interceptor (Temporal's worker interceptor is the model) overrides the methods it needs;
the defaults do nothing. The engine takes a sequence of them at construction and calls:

* ``bind(engine)`` once, from the engine's constructor: the thread-safe ways in
  (``submit``, ``wake``) and the questions an interceptor may ask (:class:`EngineView`).
* ``claim(run_id) -> bool`` before anything is dispatched to a run (advancing it, an event,
  a timer): False leaves the run alone (its timer is tried again a second later). Every
  interceptor must agree; the first False wins. An event so left is told to
  ``event_refused(run_id, event)`` (e.g. to ask the run's driver to re-check it).
  Before a pump advances its ready runs, ``claim_ahead(run_ids)`` names the runs it is
  about to claim, so an interceptor may do those claims' work at once (take their leases
  in one statement); ``claim`` is asked for each all the same. Hazard: what it takes
  ahead is taken even for a run an interceptor before it would refuse, so an interceptor
  that claims ahead comes first.
* ``filter_wait(wait) -> Wait`` before a step's wait is recorded (each in turn).
* ``committed(count)`` right after each commit of the engine (``count``: transactions so
  far), before anything else happens: crash points for tests.
* After that commit, in the order they happened inside it: ``waiting(run_id, paths)`` (a
  run started waiting on paths: watch them, then wake the run), and the observers
  ``transitioned``, ``step_started``, ``step_finished`` (outcome done|waiting|failed) and
  ``run_finished``. Observers see only what is durable.

Every hook runs in the engine's core loop (``claim``/``filter_wait`` inside its
transaction): it must be quick and must not raise (an exception there rolls the pump back
and leaves the engine). Records handed to observers are never changed afterwards.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

from certwright.engine.plugins.step import Wait
from certwright.events import Event
from certwright.state.records import RunRecord

__all__ = ["EngineView", "Interceptor", "Interceptors", "StepOutcome"]

StepOutcome = Literal["done", "waiting", "failed"]


class EngineView(Protocol):
    """What an interceptor may use of the engine it is bound to."""

    def submit(self, event: Event, run_id: str | None = None) -> None: ...

    def wake(self, run_id: str) -> None: ...

    def is_active(self, rid: str) -> bool: ...

    def forget(self, rid: str) -> None: ...


class Interceptor:
    """Do-nothing defaults; subclass and override what you need (see the module)."""

    def bind(self, engine: EngineView) -> None:
        """Called once, when the engine that uses this interceptor is built."""

    def claim(self, run_id: str) -> bool:
        """Whether the engine may dispatch to ``run_id`` now."""
        return True

    def claim_ahead(self, run_ids: list[str]) -> None:
        """The engine is about to ask ``claim`` for each of ``run_ids`` (see the module)."""

    def event_refused(self, run_id: str, event: Event) -> None:
        """``event`` for ``run_id`` was not dispatched: ``claim`` refused the run."""

    def filter_wait(self, wait: Wait) -> Wait:
        """The wait to record instead of ``wait`` (e.g. without a poll)."""
        return wait

    def committed(self, count: int) -> None:
        """The engine's ``count``-th transaction has just committed."""

    def waiting(self, run_id: str, paths: list[str]) -> None:
        """A run started waiting on ``paths`` (committed): watch them, then wake it."""

    def transitioned(self, run: RunRecord, from_state: str | None, to_state: str,
                     trigger: str) -> None:
        """A run entered ``to_state`` (``from_state`` None: its start)."""

    def step_started(self, run: RunRecord, step_id: str, attempt: int) -> None:
        """A step's attempt began (its intent is in the journal)."""

    def step_finished(self, run: RunRecord, step_id: str, outcome: StepOutcome) -> None:
        """A step's attempt ended: done, waiting (it parked the run, or changed what it
        waits for; a re-check that finds nothing new is no outcome), or failed."""

    def run_finished(self, run: RunRecord) -> None:
        """A run reached succeeded, failed or cancelled."""


def _overriding(items: tuple[Interceptor, ...], name: str) -> tuple[Callable[..., Any], ...]:
    """The bound ``name`` methods of the interceptors that override the default."""
    default = getattr(Interceptor, name)
    return tuple(getattr(i, name) for i in items if getattr(type(i), name) is not default)


Note = tuple[tuple[Callable[..., None], ...], tuple[Any, ...]]


class Interceptors:
    """The chain the engine calls: asks every interceptor, and holds the after-commit
    notes of the open transaction until :meth:`deliver` (or :meth:`discard`).

    Only interceptors that override a hook are called for it, so an engine without
    interceptors pays one empty loop per hook.
    """

    def __init__(self, items: Iterable[Interceptor] = ()) -> None:
        self.items = tuple(items)
        self._claim = _overriding(self.items, "claim")
        self._ahead = _overriding(self.items, "claim_ahead")
        self._refused = _overriding(self.items, "event_refused")
        self._filter = _overriding(self.items, "filter_wait")
        self._committed = _overriding(self.items, "committed")
        self._waiting = _overriding(self.items, "waiting")
        self._transitioned = _overriding(self.items, "transitioned")
        self._started = _overriding(self.items, "step_started")
        self._finished = _overriding(self.items, "step_finished")
        self._run_finished = _overriding(self.items, "run_finished")
        self._notes: list[Note] = []

    def bind(self, engine: EngineView) -> None:
        for i in self.items:
            i.bind(engine)

    # -- asked now, inside the transaction ------------------------------------------------
    def claim(self, run_id: str) -> bool:
        return all(claim(run_id) for claim in self._claim)

    def claim_ahead(self, run_ids: Callable[[], list[str]]) -> None:
        """Tell the interceptors that claim ahead the runs ``run_ids()`` lists (made only
        when one does)."""
        if self._ahead:
            ids = run_ids()
            for ahead in self._ahead:
                ahead(ids)

    def event_refused(self, run_id: str, event: Event) -> None:
        for r in self._refused:
            r(run_id, event)

    def filter_wait(self, wait: Wait) -> Wait:
        for f in self._filter:
            wait = f(wait)
        return wait

    # -- told after the commit ------------------------------------------------------------
    def committed(self, count: int) -> None:
        for c in self._committed:
            c(count)

    def waiting(self, run_id: str, paths: list[str]) -> None:
        if self._waiting:
            self._notes.append((self._waiting, (run_id, paths)))

    def transitioned(self, run: RunRecord, from_state: str | None, to_state: str,
                     trigger: str) -> None:
        if self._transitioned:
            self._notes.append((self._transitioned, (run, from_state, to_state, trigger)))

    def step_started(self, run: RunRecord, step_id: str, attempt: int) -> None:
        if self._started:
            self._notes.append((self._started, (run, step_id, attempt)))

    def step_finished(self, run: RunRecord, step_id: str, outcome: StepOutcome) -> None:
        if self._finished:
            self._notes.append((self._finished, (run, step_id, outcome)))

    def run_finished(self, run: RunRecord) -> None:
        if self._run_finished:
            self._notes.append((self._run_finished, (run,)))

    def deliver(self) -> None:
        """Call the hooks noted during the transaction that just committed."""
        notes, self._notes = self._notes, []
        for hooks, args in notes:
            for hook in hooks:
                hook(*args)

    def discard(self) -> None:
        """Drop the notes of a transaction that rolled back."""
        self._notes.clear()
