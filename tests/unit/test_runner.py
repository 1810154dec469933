"""The runner under a fake clock, on a real SQLite file, with inline step execution."""
from __future__ import annotations

import json
import os
import random
import stat
from datetime import timedelta

import pytest

from certwright.clock import FakeClock, parse_instant
from certwright.engine.run.journal import fold
from certwright.engine.testing import (
    CrashAfterCommits,
    Crashed,
    RecordingStep,
    load_text,
    make_engine,
)

LINEAR = """
pipeline: linear
version: 1
inputs:
  flavour: {type: string, default: plain}
initial: a
states:
  a:
    run:
      - step: test.record
        id: one
      - step: test.record
        id: two
    next:
      - to: b
        when: {equals: ["${flavour}", "plain"]}
      - to: c
  b:
    run: [{step: test.record, id: three}]
    next: done
  c: {final: failure}
  done: {final: true}
"""


@pytest.fixture(autouse=True)
def _reset() -> None:
    RecordingStep.reset()


def _raise_crashed() -> None:
    raise Crashed


def _journal_kinds(engine, rid):
    return [e.kind for e in engine.store.journal(rid)]


def test_linear_run_reaches_final_state_and_journal_replays(tmp_path):
    """Each step runs once, in order; replaying the journal gives the stored run."""
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(LINEAR), {"flavour": "plain"}, run_id="r1")
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.state, run.status) == ("done", "succeeded")
    assert [c.step_id for c in RecordingStep.calls] == ["one", "two", "three"]
    assert [c.key for c in RecordingStep.calls] == ["r1:1:0", "r1:1:1", "r1:2:0"]
    assert fold(engine.store.journal(rid)) == run


def test_guard_chooses_the_edge(tmp_path):
    """A `when` guard that does not hold sends the run down the next edge."""
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(LINEAR), {"flavour": "spicy"})
    engine.run_until_idle()
    assert engine.store.load_run(rid).state == "c"


RETRY = """
pipeline: retry
version: 1
initial: a
states:
  a:
    run:
      - step: test.record
        id: flaky
        with: {fail: %(fail)d, permanent: %(permanent)s}
        retry: {max_attempts: 4, initial_delay: 10s, multiplier: 3, max_delay: 60s, jitter: 0}
    next: ok
    %(on_error)s
  ok: {final: true}
  broken: {final: failure}
"""


def _retry_spec(fail: int, permanent: bool = False, on_error: str = "on_error: broken"):
    return load_text(RETRY % {"fail": fail, "permanent": str(permanent).lower(),
                              "on_error": on_error})


def test_retryable_failures_back_off_on_the_policy_schedule(tmp_path):
    """Attempts follow 10 s, 30 s (x3) under the fake clock, all with the same key."""
    clock = FakeClock()
    engine = make_engine(tmp_path, clock)
    rid = engine.start_run(_retry_spec(2), {})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.status == "backoff"
    assert parse_instant(run.wake_at) - clock.now() == timedelta(seconds=10)
    clock.advance(9)
    engine.run_until_idle()
    assert len(RecordingStep.calls) == 1
    clock.advance(1)
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert parse_instant(run.wake_at) - clock.now() == timedelta(seconds=30)
    clock.advance(30)
    engine.run_until_idle()
    assert engine.store.load_run(rid).state == "ok"
    assert [c.attempt for c in RecordingStep.calls] == [1, 2, 3]
    assert {c.key for c in RecordingStep.calls} == {f"{rid}:1:0"}


def test_a_retry_after_asked_by_the_step_outlasts_the_policy(tmp_path):
    """A StepError with retry_after (a CA's Retry-After: 1 h) delays the next attempt that
    long, past the policy's 60 s max_delay; a shorter one leaves the policy's delay."""
    clock = FakeClock()
    engine = make_engine(tmp_path, clock)
    spec = load_text(RETRY.replace("permanent: %(permanent)s}", "permanent: false, "
                                   "retry_after: 3600}")
                     % {"fail": 2, "on_error": "on_error: broken"})
    rid = engine.start_run(spec, {})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.status == "backoff"
    assert parse_instant(run.wake_at) - clock.now() == timedelta(seconds=3600)
    clock.advance(3599)
    engine.run_until_idle()
    assert len(RecordingStep.calls) == 1
    clock.advance(1)
    engine.run_until_idle()
    assert len(RecordingStep.calls) == 2
    short = load_text(RETRY.replace("permanent: %(permanent)s}", "permanent: false, "
                                    "retry_after: 2}") % {"fail": 1, "on_error": ""})
    rid2 = engine.start_run(short, {})
    engine.run_until_idle()
    assert parse_instant(engine.store.load_run(rid2).wake_at) - clock.now() == timedelta(seconds=10)


def test_permanent_error_skips_retries_and_takes_on_error(tmp_path):
    engine = make_engine(tmp_path)
    rid = engine.start_run(_retry_spec(1, permanent=True), {})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.state, run.status) == ("broken", "failed")
    assert "failed on attempt 1" in run.error
    assert len(RecordingStep.calls) == 1


def test_exhausted_retries_take_on_error(tmp_path):
    clock = FakeClock()
    engine = make_engine(tmp_path, clock)
    rid = engine.start_run(_retry_spec(10), {})
    for _ in range(5):
        engine.run_until_idle()
        clock.advance(120)
    assert engine.store.load_run(rid).state == "broken"
    assert len(RecordingStep.calls) == 4


def test_failure_without_on_error_fails_the_run_naming_state_and_step(tmp_path):
    engine = make_engine(tmp_path)
    rid = engine.start_run(_retry_spec(1, permanent=True, on_error=""), {})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.status == "failed" and run.state == "a"
    assert "state 'a', step 'flaky' failed" in run.error


def test_jitter_spreads_delays_within_bounds():
    from certwright.engine.model.spec import RetryPolicy
    policy = RetryPolicy(max_attempts=5, initial_delay=10, multiplier=2, max_delay=100,
                         jitter=0.2)
    rng = random.Random(1)
    delays = [policy.delay(2, rng) for _ in range(200)]
    assert all(16 <= d <= 24 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100
    assert policy.delay(10, rng) <= 100


WAITING = """
pipeline: waiting
version: 1
initial: asking
states:
  asking:
    run:
      - step: wait.file
        id: answer
        with: {path: "${run.dir}/answer"}
    timeout: {after: 2d, to: expired}
    next: answered
  expired:
    retry: {max: 2, to: asking, else: given_up}
  answered: {final: true}
  given_up: {final: failure}
"""


def test_wait_times_out_loops_a_bounded_number_of_times_then_fails(tmp_path):
    clock = FakeClock()
    engine = make_engine(tmp_path, clock)
    rid = engine.start_run(load_text(WAITING), {})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.status == "waiting" and "answer" in run.waiting
    entries = []
    for _ in range(3):
        clock.advance(days=2, seconds=1)
        engine.run_until_idle()
        run = engine.store.load_run(rid)
        entries.append((run.state, run.counters.get("expired", 0)))
    assert entries == [("asking", 1), ("asking", 2), ("given_up", 3)]
    assert run.status == "failed"


def test_deadline_that_passed_while_no_process_ran_fires_on_next_start(tmp_path):
    """Stop the engine, move the clock past the deadline, start a new engine: it fires."""
    clock = FakeClock()
    first = make_engine(tmp_path, clock)
    rid = first.start_run(load_text(WAITING), {})
    first.run_until_idle()
    first.close()
    first.store.close()
    clock.advance(days=3)
    second = make_engine(tmp_path, clock)
    second.run_until_idle()
    run = second.store.load_run(rid)
    assert run.state == "asking" and run.counters["expired"] == 1
    kinds = [(e.kind, e.data.get("trigger")) for e in second.store.journal(rid)]
    assert ("entered", "timeout") in kinds


AT = """
pipeline: at
version: 1
initial: order
states:
  order:
    run: [{step: test.record, id: order, with: {outputs: {expires: "%(expires)s"}}}]
    next: asking
  asking:
    run:
      - step: wait.file
        id: answer
        with: {path: "${run.dir}/answer"}
    timeout: {at: "${steps.order.expires}", %(after)s to: expired}
    next: answered
  answered: {final: true}
  expired: {final: failure}
"""


def test_timeout_at_takes_its_instant_from_a_step_and_the_earlier_one_wins(tmp_path):
    """``at`` resolves on entry (an order's expiry); with ``after`` too, the earlier wins;
    an empty value leaves ``after``; a value that is no instant fails the run, saying so."""
    clock = FakeClock()
    engine = make_engine(tmp_path, clock)
    soon = clock.now() + timedelta(hours=5)
    rid = engine.start_run(load_text(AT % {"expires": soon.isoformat(), "after": "after: 1d,"}), {})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.state, run.status) == ("asking", "waiting")
    assert parse_instant(run.deadline) == soon
    clock.advance(hours=5)
    engine.run_until_idle()
    assert engine.store.load_run(rid).state == "expired"

    late = clock.now() + timedelta(days=30)
    rid2 = engine.start_run(
        load_text(AT % {"expires": late.isoformat(), "after": "after: 1d,"}), {})
    rid3 = engine.start_run(load_text(AT % {"expires": "", "after": "after: 2h,"}), {})
    rid4 = engine.start_run(load_text(AT % {"expires": "next tuesday", "after": ""}), {})
    engine.run_until_idle()
    assert parse_instant(engine.store.load_run(rid2).deadline) == clock.now() + timedelta(days=1)
    assert parse_instant(engine.store.load_run(rid3).deadline) == clock.now() + timedelta(hours=2)
    bad = engine.store.load_run(rid4)
    assert bad.status == "failed" and bad.state == "asking"
    assert "timeout.at" in bad.error and "next tuesday" in bad.error and "'asking'" in bad.error


def test_a_file_event_completes_the_wait(tmp_path):
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(WAITING), {})
    engine.run_until_idle()
    (tmp_path / "runs" / rid / "answer").write_text("42")
    engine.wake(rid)
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.state == "answered"
    assert run.vars["answer"]["path"].endswith("/answer")


def test_cancel_stops_a_waiting_run_and_clears_its_timers(tmp_path):
    clock = FakeClock()
    engine = make_engine(tmp_path, clock)
    rid = engine.start_run(load_text(WAITING), {})
    engine.run_until_idle()
    engine.cancel(rid, "changed my mind")
    engine.run_until_idle()
    clock.advance(days=5)
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.status, run.state, run.error) == ("cancelled", "asking", "changed my mind")
    assert engine.store.timers() == []


SECRETS = """
pipeline: secrets
version: 1
inputs:
  password: {type: string, secret: true, required: true}
initial: a
states:
  a:
    run:
      - step: test.record
        id: issue
        with: {outputs: {token: "tok-${password}", visible: "yes"}}
      - step: test.record
        id: use
        with: {outputs: {seen: "${steps.issue.token}"}}
    next: done
  done: {final: true}
"""


def test_secrets_never_reach_the_journal_but_reach_later_steps(tmp_path):
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(SECRETS), {"password": "hunter2-Secret"},
                           secret_inputs=["password"])
    engine.run_until_idle()
    journal = json.dumps([e.data for e in engine.store.journal(rid)])
    assert "hunter2" not in journal
    assert "<secret>" in journal
    run = engine.store.load_run(rid)
    use = next(c for c in RecordingStep.calls if c.step_id == "use")
    assert use.params["outputs"]["seen"] == "tok-hunter2-Secret"  # the step got the value
    assert run.vars["use"]["seen"] == "<secret>"  # echoed into a public output: masked
    kept = engine.store.load_secrets(rid)  # beside the journal, in the same store
    assert kept["inputs"] == {"password": "hunter2-Secret"}
    assert kept["outputs"]["issue"]["token"] == "tok-hunter2-Secret"
    assert stat.S_IMODE(os.stat(engine.store.path).st_mode) == 0o600
    assert not (tmp_path / "runs" / rid / "secrets.json").exists()


def test_secrets_of_a_run_from_before_the_store_kept_them_are_read_from_its_file(tmp_path):
    """Runs started by an older certwright kept secrets in <run dir>/secrets.json."""
    from certwright.engine.run import secrets as secret_store
    engine = make_engine(tmp_path)
    run_dir = tmp_path / "runs" / "old-run"
    run_dir.mkdir(parents=True)
    (run_dir / "secrets.json").write_text(json.dumps(
        {"inputs": {"password": "p4ss-Word"}, "outputs": {"issue": {"token": "t0k"}}}))
    found = secret_store.load(engine.store, tmp_path, "old-run")
    assert found == {"inputs": {"password": "p4ss-Word"}, "outputs": {"issue": {"token": "t0k"}}}
    assert secret_store.load(engine.store, tmp_path, "none") == {"inputs": {}, "outputs": {}}


def test_step_in_flight_at_a_crash_runs_again_with_the_same_key(tmp_path):
    """An intent without a result is re-run, recovering=True, same idempotency key."""
    # commit 1 starts the run; commit 2 holds the intent of step one: "crash" right after
    engine = make_engine(tmp_path, inline=True,
                         interceptors=[CrashAfterCommits(2, crash=_raise_crashed)])
    spec = load_text(LINEAR)
    rid = engine.start_run(spec, {"flavour": "plain"}, run_id="r9")
    with pytest.raises(Crashed):
        engine.pump()
    assert engine.store.load_run(rid).inflight == "r9:1:0"
    assert RecordingStep.calls == []  # the step never began
    engine.close()
    engine.store.close()
    RecordingStep.reset()
    again = make_engine(tmp_path)
    again.run_until_idle()
    first = RecordingStep.calls[0]
    assert (first.key, first.recovering) == ("r9:1:0", True)
    assert again.store.load_run(rid).status == "succeeded"


def test_running_runs_keep_their_pinned_pipeline(tmp_path):
    """A run resumes on the spec it started with, whatever the file says now."""
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(WAITING), {})
    engine.run_until_idle()
    spec_hash = engine.store.load_run(rid).spec_hash
    engine.close()
    changed = WAITING.replace("after: 2d", "after: 5m")
    assert load_text(changed).hash != spec_hash
    again = make_engine(tmp_path)
    run = again.store.load_run(rid)
    _name, _source, text = again.store.load_spec(run.spec_hash)
    assert "after: 2d" in text


def test_unknown_reference_at_run_time_fails_the_step_permanently(tmp_path):
    text = """
pipeline: refs
version: 1
initial: a
states:
  a:
    run:
      - step: test.record
        id: first
      - step: test.record
        id: second
        with: {outputs: {x: "${steps.first.nothing}"}}
    next: done
  done: {final: true}
"""
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(text), {})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.status == "failed"
    assert "${steps.first.nothing} has no value" in run.error


def test_an_alarm_output_is_recorded_on_the_run_and_shown_by_status(tmp_path, capsys):
    """notify.check reports a mismatch as an `alarm` output: it lands in the run's alarms
    (journaled) and `status` shows it instead of what the run waits for."""
    import argparse

    from certwright.engine.cli.status import cmd_status
    text = """
pipeline: alarmed
version: 1
initial: a
states:
  a:
    run:
      - step: test.record
        id: check
        with: {outputs: {matched: false, alarm: "issuance mail names serial 02, we hold 01"}}
    next: done
  done: {final: true}
"""
    engine = make_engine(tmp_path)
    rid = engine.start_run(load_text(text), {})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.alarms == ["issuance mail names serial 02, we hold 01"]
    assert fold(engine.store.journal(rid)) == run
    engine.store.close()
    cmd_status(argparse.Namespace(state_dir=tmp_path, run_id=None, json=False, all=True))
    assert "ALARM: issuance mail names serial 02" in capsys.readouterr().out


def test_load_specs_loads_the_pipelines_of_unfinished_runs_once_and_logs_a_bad_one(tmp_path):
    """A daemon's start: the pipeline a parked run follows is parsed once, before its
    event, and not again when the event comes; a version that does not load (here one the
    store lacks) is logged, not raised, and left to its run."""
    from structlog.testing import capture_logs

    from certwright.engine.model.loader import load_pipeline_text
    from certwright.engine.run.naming import run_dir_for
    from certwright.engine.run.runner import Engine
    from certwright.state.contract import run as a_run
    from certwright.state.sqlite import SQLiteStore
    clock = FakeClock()
    first = make_engine(tmp_path, clock)
    rid = first.start_run(load_text(WAITING), {})
    first.run_until_idle()
    with first.store.transaction() as tx:
        tx.put_run(a_run("orphan"))  # its version is not in the store
    first.close()
    first.store.close()
    parsed: list[str] = []

    def loader(text, source):
        parsed.append(source)
        return load_pipeline_text(text, source, first.registry)
    store = SQLiteStore(tmp_path / "certwright.sqlite", synchronous="normal")
    second = Engine(store, tmp_path, registry=first.registry, clock=clock, spec_loader=loader)
    second.open()
    with capture_logs() as logs:
        assert second.load_specs() == 1
    assert len(parsed) == 1
    assert [e["version"] for e in logs if e["event"] == "pipeline_version_unloadable"] \
        == ["c" * 12]
    (run_dir_for(tmp_path, rid) / "answer").write_text("yes")
    second.wake(rid)
    second.run_until_idle()
    assert store.load_run(rid).status == "succeeded" and len(parsed) == 1
