"""Properties of the journal and the runner, searched by hypothesis.

* Replaying any run's journal yields exactly its stored record.
* Interleaving starts, events, clock jumps, cancels and crashes never loses a run and never
  runs a step again once its completion was committed (a step whose result was lost in a
  crash may run again, with the same key).
"""
from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from certwright.clock import FakeClock
from certwright.engine.run.journal import fold
from certwright.engine.testing import RecordingStep, load_text, make_engine

PIPELINE = """
pipeline: prop
version: 1
initial: start
states:
  start:
    run:
      - step: test.record
        id: a
        with: {fail: %(fail_a)d}
        retry: {max_attempts: 3, initial_delay: 30s, jitter: 0}
      - step: test.record
        id: b
    next: asking
    on_error: broken
  asking:
    run:
      - step: wait.file
        id: answer
        with: {path: "${run.dir}/answer"}
      - step: test.record
        id: c
        with: {fail: %(fail_c)d}
        retry: {max_attempts: 2, initial_delay: 1m, jitter: 0}
    timeout: {after: 1d, to: expired}
    next: done
    on_error: broken
  expired:
    retry: {max: 2, to: asking, else: broken}
  done: {final: true}
  broken: {final: failure}
"""


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fail_a=st.integers(0, 4), fail_c=st.integers(0, 3),
       jumps=st.lists(st.integers(0, 3 * 86400), max_size=6), answer=st.booleans())
def test_replaying_the_journal_yields_the_stored_run(fail_a, fail_c, jumps, answer):
    RecordingStep.reset()
    folder = Path(tempfile.mkdtemp())
    try:
        clock = FakeClock()
        engine = make_engine(folder, clock)
        rid = engine.start_run(load_text(PIPELINE % {"fail_a": fail_a, "fail_c": fail_c}), {})
        engine.run_until_idle()
        for i, jump in enumerate(jumps):
            if answer and i == 1:
                (folder / "runs" / rid / "answer").write_text("ok")
                engine.wake(rid)
            clock.advance(jump)
            engine.run_until_idle()
            assert fold(engine.store.journal(rid)) == engine.store.load_run(rid)
        assert fold(engine.store.journal(rid)) == engine.store.load_run(rid)
        engine.close()
        engine.store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class RunsUnderChaos(RuleBasedStateMachine):
    """Many runs, events, clock jumps, cancels and crashes, in any order."""

    def __init__(self) -> None:
        super().__init__()
        RecordingStep.reset()
        self.folder = Path(tempfile.mkdtemp())
        self.clock = FakeClock()
        self.engine = make_engine(self.folder, self.clock)
        self.runs: list[str] = []
        self.completed_calls: dict[str, int] = {}  # key -> calls when its step_done committed
        self.spec = load_text(PIPELINE % {"fail_a": 1, "fail_c": 1})

    @rule()
    def start(self) -> None:
        self.runs.append(self.engine.start_run(self.spec, {}))

    @rule(seconds=st.sampled_from([0, 29, 31, 61, 3600, 86401, 2 * 86400]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.engine.run_until_idle()

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(self.runs))
        (self.folder / "runs" / rid / "answer").write_text("ok")
        self.engine.wake(rid)

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self.engine.cancel(data.draw(st.sampled_from(self.runs)))

    @rule(pumps=st.integers(0, 3))
    def crash(self, pumps: int) -> None:
        """Pump a little, then lose everything not committed: queued results, memory."""
        for _ in range(pumps):
            self.engine.pump()
        self.engine.close()
        self.engine.store.close()
        self.engine = make_engine(self.folder, self.clock)

    @invariant()
    def no_run_lost_and_journal_replays(self) -> None:
        stored = {r.id: r for r in self.engine.store.list_runs()}
        assert set(self.runs) <= set(stored)
        for rid in self.runs:
            assert fold(self.engine.store.journal(rid)) == stored[rid]

    @invariant()
    def completed_steps_never_run_again(self) -> None:
        calls = Counter(c.key for c in RecordingStep.calls)
        for rid in self.runs:
            for e in self.engine.store.journal(rid):
                if e.kind == "step_done":
                    self.completed_calls.setdefault(e.data["key"], calls[e.data["key"]])
        for key, seen in self.completed_calls.items():
            assert calls[key] == seen, f"step {key} ran again after it completed"

    def teardown(self) -> None:
        self.engine.close()
        self.engine.store.close()
        shutil.rmtree(self.folder, ignore_errors=True)


RunsUnderChaos.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestRunsUnderChaos = RunsUnderChaos.TestCase
