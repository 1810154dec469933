"""What the engine hands to a worker: a step to execute, or cleanups to do."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from certwright.engine.model.spec import StepSpec
from certwright.engine.plugins.step import StepContext

JobKind = Literal["step", "check"]


@dataclass
class Job:
    """One execution of a step (kind "step") or re-check of a waiting one (kind "check")."""

    run_id: str
    entry: int
    index: int
    key: str
    kind: JobKind
    spec: StepSpec
    ctx: StepContext
    secrets: tuple[str, ...] = ()  # the run's secret values, masked in the step's logs


@dataclass
class CleanupJob:
    """The ``cleanup`` calls of the steps of a state the run left (or was cancelled in).

    ``entry`` is the run's entry once they are done: the engine advances the run only if
    it is still there (a timeout or a cancel may have moved it on meanwhile). Each task's
    context is the one of the step it cleans up (its state, key and rendered params).
    """

    run_id: str
    entry: int
    tasks: list[tuple[StepSpec, StepContext]] = field(default_factory=list)
    secrets: tuple[str, ...] = ()
