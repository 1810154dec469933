"""Build a ``transitions.Machine`` from a spec. No I/O, no clock.

One machine per pipeline version. Runs are not kept as models (a model costs about 6 KB and
``add_model`` checks membership in a list, which grows quadratically with many parked
runs): the machine has one model of its own, set to a run's state while a trigger is
dispatched for that run (attaching a model per dispatch cost more than the dispatch).
Timeouts and retry counters live in the store, not in transitions' ``Timeout``/``Retry``
states (those use ``threading.Timer``).

Triggers: ``next`` (the state's steps all succeeded; guarded edges tried in order),
``error`` (a step failed for good), ``timeout`` (the state's deadline passed), ``loop``
(a bounded-loop state: on to ``to`` while the entry count is within ``max``, else ``else``).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from transitions import EventData, Machine, MachineError

from certwright.engine.model.conditions import evaluate
from certwright.engine.model.spec import Condition, PipelineSpec
from certwright.errors import CertwrightError


class NoTransition(CertwrightError):
    """No edge for this trigger leaves the state (or none of its guards held)."""


class _Model:
    __slots__ = ("__dict__", "state")

    def __init__(self) -> None:
        self.state = ""


def _guard(cond: Condition) -> Callable[[EventData], bool]:
    def check(event: EventData) -> bool:
        ns: Mapping[str, Any] = event.kwargs["namespace"]
        return evaluate(cond, ns)
    return check


def _loop_guard(state: str, limit: int) -> Callable[[EventData], bool]:
    def check(event: EventData) -> bool:
        counters: Mapping[str, int] = event.kwargs["counters"]
        return counters.get(state, 0) <= limit
    return check


class PipelineMachine:
    """The state machine of one pipeline version."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self._machine = Machine(model=None, states=list(spec.states), initial=spec.initial,
                                auto_transitions=False, send_event=True,
                                ignore_invalid_triggers=False)
        for st in spec.states.values():
            for edge in st.next:
                conditions: list[Any] = [_guard(edge.when)] if edge.when else []
                self._machine.add_transition("next", st.name, edge.to, conditions=conditions)
            if st.on_error:
                self._machine.add_transition("error", st.name, st.on_error)
            if st.timeout:
                self._machine.add_transition("timeout", st.name, st.timeout.to)
            if st.loop:
                self._machine.add_transition("loop", st.name, st.loop.to,
                                             conditions=[_loop_guard(st.name, st.loop.max)])
                self._machine.add_transition("loop", st.name, st.loop.else_)
        self._model = _Model()
        self._machine.add_model(self._model, initial=spec.initial)
        self._lock = threading.Lock()

    def target(self, state: str, trigger: str, *, namespace: Mapping[str, Any] | None = None,
               counters: Mapping[str, int] | None = None) -> str:
        """The state that ``trigger`` leads to from ``state``; raises NoTransition."""
        with self._lock:  # one model, attached once, set to ``state`` for each dispatch
            model = self._model
            model.state = state
            try:
                fired = model.trigger(trigger, namespace=namespace or {},  # type: ignore[attr-defined]
                                      counters=counters or {})
            except MachineError as exc:
                raise NoTransition(f"state {state!r} has no {trigger!r} transition") from exc
            if not fired:
                raise NoTransition(f"state {state!r}: no {trigger!r} edge's condition held")
            return str(model.state)
