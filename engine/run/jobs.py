"""A step execution as the engine hands it to a worker."""
from __future__ import annotations

from dataclasses import dataclass

from certwright.engine.model.spec import StepSpec
from certwright.engine.plugins.step import StepContext


@dataclass
class Job:
    """One execution of a step (kind "step") or re-check of a waiting one (kind "check")."""

    run_id: str
    entry: int
    index: int
    key: str
    kind: str
    spec: StepSpec
    ctx: StepContext
    secrets: tuple[str, ...] = ()  # the run's secret values, masked in the step's logs
