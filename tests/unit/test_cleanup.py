"""Cleanup: a state's steps undo their work when the run leaves the state or is cancelled."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import structlog

from certwright.clock import FakeClock
from certwright.engine import testing
from certwright.engine.plugins.step import StepContext
from certwright.engine.run.interceptor import Interceptor
from certwright.engine.testing import CleaningStep, Crashed, RecordingStep, load_text, make_engine
from certwright.state.records import RunRecord
from certwright.state.sqlite import SQLiteStore

PIPELINE = """
pipeline: tidy
version: 1
initial: a
states:
  a:
    run:
      - step: test.clean
        id: one
        with: {outputs: {n: 1}}
      - step: test.record
        id: plain
      - step: test.clean
        id: skipped
        when: {equals: ["x", "y"]}
    next: b
  b:
    run: [{step: test.record, id: two}]
    next: done
  done: {final: true}
"""

FAILING = """
pipeline: broken
version: 1
initial: a
states:
  a:
    run:
      - step: test.clean
        id: first
      - step: test.clean
        id: second
        with: {fail: 1, permanent: true}
      - step: test.clean
        id: never
    on_error: failed
    next: done
  done: {final: true}
  failed: {final: failure}
"""

PARKED = """
pipeline: parked
version: 1
initial: a
states:
  a:
    run:
      - step: test.clean
        id: one
        with: {cleanup_fails: %s}
      - step: wait.until
        id: later
        with: {at: "2099-01-01T00:00:00Z"}
    next: done
  done: {final: true}
"""


@pytest.fixture(autouse=True)
def _reset() -> None:
    CleaningStep.reset()


def _cleaned() -> list[tuple[str, str]]:
    return [(c.step_id, c.key) for c in CleaningStep.cleanups]


def test_leaving_a_state_cleans_up_each_step_of_it_that_ran(tmp_path: Path) -> None:
    """Steps with cleanup that ran are cleaned up once, with their own key and params;
    a skipped one is not, nor a step without cleanup."""
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(PIPELINE), {}, run_id="r1")
    engine.run_until_idle()
    assert engine.store.load_run(rid).status == "succeeded"
    assert _cleaned() == [("one", "r1:1:0")]
    assert CleaningStep.cleanups[0].params == {"outputs": {"n": 1}}


class _SeesTheStore(CleaningStep):
    """Records, at cleanup, where the store says the run is and what ran so far."""

    name: ClassVar[str] = "test.clean"
    seen: ClassVar[list[tuple[str, list[str]]]] = []

    def cleanup(self, ctx: StepContext) -> None:
        store = SQLiteStore(ctx.state_dir / "certwright.sqlite")
        try:
            run = store.load_run(ctx.run_id)
            self.seen.append((run.state, [c.step_id for c in RecordingStep.calls]))
        finally:
            store.close()
        super().cleanup(ctx)


def test_cleanup_runs_after_the_transition_commits_and_before_the_next_states_steps(
        tmp_path: Path) -> None:
    """Journal first: the store shows the new state when cleanup runs; the new state's
    first step starts only once the cleanups are done."""
    reg = testing.test_registry()
    reg.register(_SeesTheStore)
    _SeesTheStore.seen.clear()
    engine = make_engine(tmp_path, registry=reg)
    engine.start_run(load_text(PIPELINE, reg), {}, run_id="r1")
    engine.run_until_idle()
    assert _SeesTheStore.seen == [("b", ["one", "plain"])]
    assert [c.step_id for c in RecordingStep.calls] == ["one", "plain", "two"]


def test_a_state_left_on_error_cleans_up_the_failed_step_but_not_the_later_ones(
        tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(FAILING), {}, run_id="r2")
    engine.run_until_idle()
    assert engine.store.load_run(rid).state == "failed"
    assert _cleaned() == [("first", "r2:1:0"), ("second", "r2:1:1")]


def test_cancelling_a_run_cleans_up_the_steps_of_its_state_that_ran(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(PARKED % "false"), {}, run_id="r3")
    engine.run_until_idle()
    assert engine.store.load_run(rid).status == "waiting"
    assert _cleaned() == []
    engine.cancel(rid)
    engine.run_until_idle()
    assert engine.store.load_run(rid).status == "cancelled"
    assert _cleaned() == [("one", "r3:1:0")]


def test_a_failing_cleanup_is_logged_and_never_fails_the_run(tmp_path: Path) -> None:
    clock = FakeClock()
    engine = make_engine(tmp_path, clock)
    rid = engine.start_run(load_text(PARKED % "true"), {}, run_id="r4")
    engine.run_until_idle()
    with structlog.testing.capture_logs() as logs:
        engine.cancel(rid)
        engine.run_until_idle()
    failed = [e for e in logs if e["event"] == "step_cleanup_failed"]
    assert [(e["run_id"], e["step"]) for e in failed] == [("r4", "one")]
    assert "cleanup of one failed (as asked)" in failed[0]["error"]
    assert engine.store.load_run(rid).status == "cancelled"


class _CrashOnEntering(Interceptor):
    """Raises right after the commit that entered ``state`` (its cleanups not begun)."""

    def __init__(self, state: str) -> None:
        self.state = state

    def transitioned(self, run: RunRecord, from_state: str | None, to_state: str,
                     trigger: str) -> None:
        if to_state == self.state:
            raise Crashed


def test_after_a_crash_between_the_transition_and_its_cleanup_the_cleanup_runs_first(
        tmp_path: Path) -> None:
    engine = make_engine(tmp_path, interceptors=[_CrashOnEntering("b")])
    rid = engine.start_run(load_text(PIPELINE), {}, run_id="r5")
    with pytest.raises(Crashed):
        engine.run_until_idle()
    assert engine.store.load_run(rid).state == "b"
    assert _cleaned() == []
    engine.close()
    engine.store.close()
    RecordingStep.reset()
    again = make_engine(tmp_path)
    again.run_until_idle()
    assert again.store.load_run(rid).status == "succeeded"
    assert _cleaned() == [("one", "r5:1:0")]
    assert [c.step_id for c in RecordingStep.calls] == ["two"]
