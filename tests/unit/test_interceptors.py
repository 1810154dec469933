"""Interceptors: the hooks an engine calls (claims, waits, commits, observers), and the
daemon's run locks built on them."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from certwright.clock import FakeClock
from certwright.engine.daemon.locking import RunLocks
from certwright.engine.plugins.step import Wait
from certwright.engine.run.interceptor import Interceptor, Interceptors, StepOutcome
from certwright.engine.testing import CrashAfterCommits, RecordingStep, load_text, make_engine
from certwright.state.locks import run_lock, try_run_lock
from certwright.state.records import RunRecord
from certwright.state.sqlite import SQLiteStore

TWO_STATES = """
pipeline: two
version: 1
initial: a
states:
  a:
    run:
      - step: test.record
        id: flaky
        with: {fail: 1}
        retry: {max_attempts: 2, initial_delay: 10s, jitter: 0}
    next: b
  b:
    run:
      - step: wait.file
        id: answer
        with: {path: "${run.dir}/answer", poll: 30}
    next: done
  done: {final: true}
"""


@pytest.fixture(autouse=True)
def _reset() -> None:
    RecordingStep.reset()


class Recorder(Interceptor):
    """Notes every hook call, and where the store (read apart) has the run meanwhile."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.calls: list[tuple[Any, ...]] = []

    def _stored_seq(self, rid: str) -> int:
        store = SQLiteStore(self.db)
        try:
            found = store.find_run(rid)
            return found.seq if found else 0
        finally:
            store.close()

    def committed(self, count: int) -> None:
        self.calls.append(("committed", count))

    def waiting(self, run_id: str, paths: list[str]) -> None:
        self.calls.append(("waiting", run_id, [Path(p).name for p in paths]))  # folders

    def transitioned(self, run: RunRecord, from_state: str | None, to_state: str,
                     trigger: str) -> None:
        assert self._stored_seq(run.id) >= run.seq  # told only once it is durable
        self.calls.append(("transitioned", from_state, to_state, trigger))

    def step_started(self, run: RunRecord, step_id: str, attempt: int) -> None:
        self.calls.append(("step_started", step_id, attempt))

    def step_finished(self, run: RunRecord, step_id: str, outcome: StepOutcome) -> None:
        self.calls.append(("step_finished", step_id, outcome))

    def run_finished(self, run: RunRecord) -> None:
        self.calls.append(("run_finished", run.status))


def test_observers_hear_a_runs_life_after_each_commit_in_order(tmp_path: Path) -> None:
    clock = FakeClock()
    rec = Recorder(tmp_path / "certwright.sqlite")
    engine = make_engine(tmp_path, clock, interceptors=[rec])
    rid = engine.start_run(load_text(TWO_STATES), {}, run_id="o1")
    engine.run_until_idle()
    clock.advance(11)
    engine.run_until_idle()
    (tmp_path / "runs" / rid / "answer").write_text("yes")
    engine.wake(rid)
    engine.run_until_idle()
    assert engine.store.load_run(rid).status == "succeeded"
    life = [c for c in rec.calls if c[0] != "committed"]
    assert life == [
        ("transitioned", None, "a", "start"),
        ("step_started", "flaky", 1), ("step_finished", "flaky", "failed"),
        ("step_started", "flaky", 2), ("step_finished", "flaky", "done"),
        ("transitioned", "a", "b", "next"),
        ("step_started", "answer", 1),
        ("waiting", rid, [rid]), ("step_finished", "answer", "waiting"),
        ("step_finished", "answer", "done"),
        ("transitioned", "b", "done", "next"), ("run_finished", "succeeded")]
    counts = [c[1] for c in rec.calls if c[0] == "committed"]
    assert counts == list(range(1, len(counts) + 1))


def test_a_refused_claim_leaves_the_run_alone_until_it_is_granted(tmp_path: Path) -> None:
    class Gate(Interceptor):
        open = False

        def claim(self, run_id: str) -> bool:
            return self.open

    gate = Gate()
    engine = make_engine(tmp_path, interceptors=[gate])
    rid = engine.start_run(load_text(TWO_STATES), {}, run_id="c1")
    engine.run_until_idle()
    assert RecordingStep.calls == []
    assert engine.store.load_run(rid).attempt == 0
    gate.open = True
    engine.sync()  # the refused run is taken up again
    engine.run_until_idle()
    assert [c.attempt for c in RecordingStep.calls] == [1]


def test_the_runs_a_pump_will_claim_are_named_ahead_of_their_claims(tmp_path: Path) -> None:
    """claim_ahead hears, once per pump and before any claim of it, the ready runs the pump
    advances (at most its batch, in order); claim is still asked for each. An engine whose
    interceptors do not claim ahead never lists them."""
    class Ahead(Interceptor):
        def __init__(self) -> None:
            self.calls: list[tuple[str, Any]] = []

        def claim_ahead(self, run_ids: list[str]) -> None:
            self.calls.append(("ahead", list(run_ids)))

        def claim(self, run_id: str) -> bool:
            self.calls.append(("claim", run_id))
            return True

    ahead = Ahead()
    engine = make_engine(tmp_path, interceptors=[ahead])
    spec = load_text(TWO_STATES)
    engine.start_runs(spec, [{}, {}, {}], ["a1", "a2", "a3"])
    engine.pump()
    assert ahead.calls == [("ahead", ["a1", "a2", "a3"]), ("claim", "a1"), ("claim", "a2"),
                           ("claim", "a3")]
    listed: list[int] = []
    Interceptors([Interceptor()]).claim_ahead(lambda: listed.append(1) or [])
    assert listed == []


def test_filter_wait_changes_a_wait_before_it_is_recorded(tmp_path: Path) -> None:
    class NoPolls(Interceptor):
        def filter_wait(self, wait: Wait) -> Wait:
            return replace(wait, poll=None)

    clock = FakeClock()
    engine = make_engine(tmp_path, clock, interceptors=[NoPolls()])
    rid = engine.start_run(load_text(TWO_STATES), {}, run_id="w1")
    engine.run_until_idle()
    clock.advance(11)
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.status, run.wake_at) == ("waiting", None)


def test_the_chain_asks_every_interceptor_and_skips_defaults() -> None:
    class No(Interceptor):
        def claim(self, run_id: str) -> bool:
            return run_id != "x"

    chain = Interceptors([Interceptor(), No()])
    assert chain.claim("y") and not chain.claim("x")
    assert Interceptors().claim("x")
    chain.transitioned(RunRecord(id="r", pipeline="p", spec_hash="h"), None, "a", "start")
    chain.deliver()  # nobody overrides transitioned: nothing noted, nothing called


def test_crash_after_commits_calls_its_crash_at_that_commit_only(tmp_path: Path) -> None:
    hits: list[int] = []
    crash = CrashAfterCommits(3, crash=lambda: hits.append(3))
    engine = make_engine(tmp_path, interceptors=[crash])
    engine.start_run(load_text(TWO_STATES), {}, run_id="k1")
    engine.run_until_idle()
    assert hits == [3]


def test_run_locks_claim_a_runs_lock_and_let_go_once_it_parks(tmp_path: Path) -> None:
    """Another holder refuses the claim (counted); once free, the run is driven under
    its lock, which release_idle lets go when the run parks."""
    clock = FakeClock()
    locks = RunLocks(tmp_path)
    engine = make_engine(tmp_path, clock, interceptors=[locks])
    rid = engine.start_run(load_text(TWO_STATES), {}, run_id="l1")
    other = run_lock(tmp_path, rid).acquire()
    engine.run_until_idle()
    assert RecordingStep.calls == [] and locks.refused == {rid: 1}
    other.release()
    engine.sync(adopt=locks.claim)
    engine.run_until_idle()
    assert locks.held() == {rid} and RecordingStep.calls
    assert try_run_lock(tmp_path, rid) is None  # held here
    assert engine.store.load_run(rid).status == "backoff"
    assert locks.release_idle() == 1 and locks.held() == set()
    held = try_run_lock(tmp_path, rid)
    assert held is not None
    held.release()
    engine.close()
    locks.close()
