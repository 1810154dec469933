"""Test helpers that ship with the code (as ``structlog.testing`` does).

* :class:`RecordingStep` — a step that records every call (key, attempt, recovering) and can
  fail a given number of times, retryably or permanently.
* :func:`make_engine` — an engine on a real SQLite file in a temp folder, with a fake clock
  and inline execution, so a test is deterministic and never sleeps.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from certwright.clock import FakeClock
from certwright.errors import PermanentError, StepError
from certwright.engine.run.runner import Engine
from certwright.engine.model.spec import PipelineSpec
from certwright.state.sqlite import SQLiteStore
from certwright.engine.plugins.step import BaseStep, Done, StepContext
from certwright.engine.plugins.registry import Registry


@dataclass(frozen=True)
class Call:
    run_id: str
    step_id: str
    key: str
    attempt: int
    recovering: bool
    params: Mapping[str, Any]


class RecordingStep(BaseStep):
    """``test.record``: records calls; ``fail`` first N attempts (``permanent`` to stop;
    ``retry_after`` seconds asked for, as a server's Retry-After would)."""

    name: ClassVar[str] = "test.record"
    description: ClassVar[str] = "Record the call; optionally fail"
    idempotent: ClassVar[bool] = True
    secret_outputs: ClassVar[frozenset[str]] = frozenset({"token"})
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"fail": {"type": "integer"}, "permanent": {"type": "boolean"},
                       "retry_after": {"type": "number"}, "outputs": {"type": "object"}}}
    calls: ClassVar[list[Call]] = []
    _lock = threading.Lock()

    def run(self, ctx: StepContext) -> Done:
        with self._lock:
            self.calls.append(Call(ctx.run_id, ctx.step_id, ctx.idempotency_key, ctx.attempt,
                                   ctx.recovering, dict(ctx.params)))
        if ctx.attempt <= int(ctx.params.get("fail", 0)):
            cls = PermanentError if ctx.params.get("permanent") else StepError
            raise cls(f"{ctx.step_id} failed on attempt {ctx.attempt} (as asked)",
                      retry_after=ctx.params.get("retry_after"))
        return Done(dict(ctx.params.get("outputs") or {"attempt": ctx.attempt}))

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.calls.clear()


def test_registry() -> Registry:
    reg = Registry(plugins=False)
    reg.register(RecordingStep)
    return reg


def load_text(text: str, registry: Registry | None = None) -> PipelineSpec:
    from certwright.engine.model.loader import load_pipeline_text
    return load_pipeline_text(text, "<test>", registry or test_registry())


def make_engine(state_dir: Path, clock: FakeClock | None = None, *, inline: bool = True,
                registry: Registry | None = None, **kw: Any) -> Engine:
    reg = registry or test_registry()
    store = SQLiteStore(Path(state_dir) / "certwright.sqlite", synchronous="normal")
    from certwright.engine.model.loader import load_pipeline_text
    engine = Engine(store, state_dir, registry=reg, clock=clock or FakeClock(), inline=inline,
                    spec_loader=lambda t, s: load_pipeline_text(t, s, reg), **kw)
    engine.open()
    return engine
