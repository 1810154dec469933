"""What the engine hands to a worker: a step to execute or re-check."""
from __future__ import annotations

from dataclasses import dataclass
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
