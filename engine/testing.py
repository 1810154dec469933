"""Test helpers that ship with the code (as ``structlog.testing`` does).

* :class:`RecordingStep` — a step that records every call (key, attempt, recovering) and can
  fail a given number of times, retryably or permanently.
* :class:`CleaningStep` — a recording step with ``cleanup``, which records its cleanups
  (and can fail them).
* :class:`CrashAfterCommits` — an interceptor that kills the process (SIGKILL) right after
  its N-th commit, or calls what a test gives instead: crash points for kill-and-resume.
* :class:`FailingIO` — SQLite connections failing with "disk I/O error" on demand.
* :func:`make_engine` — an engine on a real SQLite file in a temp folder, with a fake clock
  and inline execution, so a test is deterministic and never sleeps.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

from certwright.clock import FakeClock
from certwright.engine.model.spec import PipelineSpec
from certwright.engine.plugins.registry import Registry
from certwright.engine.plugins.step import BaseStep, Done, StepContext
from certwright.engine.run.interceptor import Interceptor
from certwright.engine.run.options import EngineOptions
from certwright.engine.run.runner import Engine
from certwright.errors import PermanentError, StepError
from certwright.state.base import Store
from certwright.state.sqlite import SQLiteStore


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


class CleaningStep(RecordingStep):
    """``test.clean``: as ``test.record``, with a ``cleanup`` that records its calls in
    ``cleanups`` (and raises when ``cleanup_fails`` is set)."""

    name: ClassVar[str] = "test.clean"
    description: ClassVar[str] = "Record the call and its cleanup; optionally fail"
    params_schema: ClassVar[Mapping[str, Any]] = {
        **RecordingStep.params_schema,
        "properties": {**RecordingStep.params_schema["properties"],
                       "cleanup_fails": {"type": "boolean"}}}
    cleanups: ClassVar[list[Call]] = []

    def cleanup(self, ctx: StepContext) -> None:
        with self._lock:
            self.cleanups.append(Call(ctx.run_id, ctx.step_id, ctx.idempotency_key,
                                      ctx.attempt, ctx.recovering, dict(ctx.params)))
        if ctx.params.get("cleanup_fails"):
            raise OSError(f"cleanup of {ctx.step_id} failed (as asked)")

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.cleanups.clear()
        RecordingStep.reset()


class Crashed(Exception):
    """What :class:`CrashAfterCommits` raises when a test asks for an exception."""


def kill_self() -> None:
    """End this process at once, as a power cut would end the engine (SIGKILL)."""
    os.kill(os.getpid(), signal.SIGKILL)


class CrashAfterCommits(Interceptor):
    """Crash right after the engine's ``after``-th commit, before anything else happens
    (the steps it started have not begun, the hooks have not heard of it).

    ``crash`` is what crashing means: by default :func:`kill_self`; a test in-process
    passes e.g. a function raising :class:`Crashed` (the pump then leaves, and the engine
    is to be thrown away, as after a real crash).
    """

    def __init__(self, after: int, crash: Callable[[], None] = kill_self) -> None:
        self.after = after
        self._crash = crash

    def committed(self, count: int) -> None:
        if count == self.after:
            self._crash()


class FailingIO:
    """SQLite connections whose every statement fails with "disk I/O error" while
    ``flag`` exists: I/O errors on demand, for the store's fault tests (the standard
    sqlite3 module has no VFS to fail at). ``ROLLBACK`` still goes through, as SQLite
    rolls back a failed transaction itself; so does ``close``.

    Pass :meth:`connect` where a store takes ``connect``.
    """

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def connect(self, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        return cast(sqlite3.Connection, _FailingConnection(sqlite3.connect(*args, **kwargs),
                                                           self.flag))


class _FailingConnection:
    """The part of ``sqlite3.Connection`` the store uses, failing while a flag exists."""

    def __init__(self, db: sqlite3.Connection, flag: Path) -> None:
        self._db, self._flag = db, flag

    def _check(self, sql: str) -> None:
        if self._flag.exists() and sql.strip().upper() != "ROLLBACK":
            raise sqlite3.OperationalError("disk I/O error")

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.execute(sql, params)

    def executemany(self, sql: str, params: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.executemany(sql, params)

    def close(self) -> None:
        self._db.close()


def test_registry() -> Registry:
    reg = Registry(plugins=False)
    reg.register(RecordingStep)
    reg.register(CleaningStep)
    return reg


def load_text(text: str, registry: Registry | None = None) -> PipelineSpec:
    from certwright.engine.model.loader import load_pipeline_text
    return load_pipeline_text(text, "<test>", registry or test_registry())


def make_engine(state_dir: Path, clock: FakeClock | None = None, *, inline: bool = True,
                registry: Registry | None = None, options: EngineOptions | None = None,
                interceptors: Sequence[Interceptor] = ()) -> Engine:
    """An opened engine on ``state_dir``'s SQLite store (``inline`` unless ``options``
    say otherwise)."""
    reg = registry or test_registry()
    store: Store = SQLiteStore(Path(state_dir) / "certwright.sqlite", synchronous="normal")
    from certwright.engine.model.loader import load_pipeline_text
    engine = Engine(store, state_dir, registry=reg, clock=clock or FakeClock(),
                    spec_loader=lambda t, s: load_pipeline_text(t, s, reg),
                    options=options or EngineOptions(inline=inline), interceptors=interceptors)
    engine.open()
    return engine
