"""A step execution as the engine hands it to a worker."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.spec import StepSpec
from steps.base import StepContext


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
    # The run's secrets when the job was made; a worker whose step returns secret outputs
    # saves them into the run's secrets file before handing the result over (None: the
    # engine saves them itself).
    secret_data: dict[str, Any] | None = None
    secrets_saved: bool = False
