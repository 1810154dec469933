"""Hosts: a host-bound step starts only on an engine of its run's host; elsewhere the run
parks waiting for that host (wants_host), and an engine of that host takes it. Engines
on real SQLite files, a fake clock, inline steps: deterministic, no sleeping."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from certwright.clock import FakeClock
from certwright.engine import testing
from certwright.engine.cli.steps_cmd import step_rows
from certwright.engine.run.hosts import check_host, local_host
from certwright.engine.run.journal import fold
from certwright.engine.run.options import EngineOptions
from certwright.engine.run.runner import Engine
from certwright.engine.testing import RecordingStep, load_text, make_engine
from certwright.errors import InputError
from certwright.state.records import RUNNING, SUCCEEDED
from certwright.state.sqlite import SQLiteStore

PIPELINE = """
pipeline: hosted
version: 1
initial: working
states:
  working:
    run:
      - {step: test.record, id: anywhere}
      - {step: test.on_host, id: here}
      - {step: test.record, id: after}
    next: done
  done: {final: success}
"""


class OnHost(RecordingStep):
    """A recording step that must run on its run's host."""

    name: ClassVar[str] = "test.on_host"
    host_bound: ClassVar[bool] = True


@pytest.fixture(autouse=True)
def _reset() -> None:
    RecordingStep.reset()


def _registry():  # type: ignore[no-untyped-def]
    reg = testing.test_registry()
    reg.register(OnHost)
    return reg


def _engine(tmp_path: Path, host: str | None, clock: FakeClock):  # type: ignore[no-untyped-def]
    return make_engine(tmp_path, clock, registry=_registry(),
                       options=EngineOptions(inline=True, host=host))


def _steps_run() -> list[str]:
    return [c.step_id for c in RecordingStep.calls]


def test_a_host_bound_step_waits_for_the_runs_host(tmp_path: Path) -> None:
    """On alpha, a run of host beta does its any-host step, then parks before the
    host-bound one: still running, wants_host beta, journaled once, let go."""
    clock = FakeClock()
    alpha = _engine(tmp_path, "alpha", clock)
    rid = alpha.start_run(load_text(PIPELINE, _registry()), {}, "r1", host="beta")
    alpha.run_until_idle()
    alpha.sync()  # a later look at the store takes nothing back
    alpha.run_until_idle()
    run = alpha.store.load_run(rid)
    assert _steps_run() == ["anywhere"]
    assert (run.status, run.host, run.wants_host, run.waiting) == (
        RUNNING, "beta", "beta", "host beta")
    journal = alpha.store.journal(rid)
    awaited = [e.data for e in journal if e.kind == "host_awaited"]
    assert awaited == [{"index": 1, "step": "here", "host": "beta", "seen_on": "alpha"}]
    assert fold(journal) == run
    assert not alpha.is_active(rid)
    assert alpha.store.run_ids([RUNNING], host="alpha") == []
    alpha.close()


def test_an_engine_of_the_runs_host_takes_it_and_finishes(tmp_path: Path) -> None:
    """An engine of beta opening the store loads the run waiting for beta and runs the
    host-bound step and the rest; each step_started says on which host it started."""
    clock = FakeClock()
    alpha = _engine(tmp_path, "alpha", clock)
    rid = alpha.start_run(load_text(PIPELINE, _registry()), {}, "r1", host="beta")
    alpha.run_until_idle()
    alpha.close()
    beta = _engine(tmp_path, "beta", clock)
    beta.run_until_idle()
    run = beta.store.load_run(rid)
    assert run.status == SUCCEEDED and run.wants_host is None
    assert _steps_run() == ["anywhere", "here", "after"]
    started = {e.data["step"]: e.data.get("host") for e in beta.store.journal(rid)
               if e.kind == "step_started"}
    assert started == {"anywhere": "alpha", "here": "beta", "after": "beta"}
    assert fold(beta.store.journal(rid)) == run
    beta.close()


RETRYING = """
pipeline: retrying
version: 1
initial: working
states:
  working:
    run:
      - step: test.on_host
        id: here
        with: {fail: 1}
        retry: {max_attempts: 2, initial_delay: 10s, jitter: 0}
    next: done
  done: {final: success}
"""


def test_a_retry_due_on_another_host_waits_for_the_runs_host(tmp_path: Path) -> None:
    """A host-bound step failed on beta; its retry timer fires on alpha: the run is
    running again, waiting for beta (not stuck in backoff), and beta's retry succeeds."""
    clock = FakeClock()
    beta = _engine(tmp_path, "beta", clock)
    rid = beta.start_run(load_text(RETRYING, _registry()), {}, "r1")
    beta.run_until_idle()
    assert beta.store.load_run(rid).status == "backoff"
    beta.close()
    alpha = _engine(tmp_path, "alpha", clock)
    clock.advance(10)
    alpha.run_until_idle()
    run = alpha.store.load_run(rid)
    assert (run.status, run.wants_host, run.wake_at) == (RUNNING, "beta", None)
    assert fold(alpha.store.journal(rid)) == run
    alpha.close()
    again = _engine(tmp_path, "beta", clock)
    again.run_until_idle()
    assert again.store.load_run(rid).status == SUCCEEDED
    assert [c.attempt for c in RecordingStep.calls] == [1, 2]
    again.close()


def test_a_run_made_here_runs_every_step_here(tmp_path: Path) -> None:
    """A run made by an engine of alpha has host alpha and never waits for a host."""
    alpha = _engine(tmp_path, "alpha", FakeClock())
    rid = alpha.start_run(load_text(PIPELINE, _registry()), {}, "r1")
    alpha.run_until_idle()
    run = alpha.store.load_run(rid)
    assert (run.status, run.host, run.wants_host) == (SUCCEEDED, "alpha", None)
    assert not [e for e in alpha.store.journal(rid) if e.kind == "host_awaited"]
    alpha.close()


def test_without_a_host_rule_every_step_starts(tmp_path: Path) -> None:
    """An engine with no host (tests, embedders) starts host-bound steps of any run,
    and a run with no host (made before hosts existed) runs on any engine."""
    engine = _engine(tmp_path / "a", None, FakeClock())
    rid = engine.start_run(load_text(PIPELINE, _registry()), {}, "r1", host="beta")
    engine.run_until_idle()
    assert engine.store.load_run(rid).status == SUCCEEDED
    engine.close()
    other = _engine(tmp_path / "b", None, FakeClock())
    old = other.start_run(load_text(PIPELINE, _registry()), {}, "r2")
    other.close()
    alpha = _engine(tmp_path / "b", "alpha", FakeClock())
    alpha.run_until_idle()
    assert alpha.store.load_run(old).host == ""
    assert alpha.store.load_run(old).status == SUCCEEDED
    alpha.close()


def test_a_move_gives_the_run_the_new_host_and_its_engine_takes_it(tmp_path: Path) -> None:
    """A run waiting for a dead host gamma, moved to alpha: journaled as moved (by whom),
    wants_host now alpha, and alpha's engine then runs its host-bound step."""
    clock = FakeClock()
    alpha = _engine(tmp_path, "alpha", clock)
    rid = alpha.start_run(load_text(PIPELINE, _registry()), {}, "r1", host="gamma")
    alpha.run_until_idle()
    alpha.close()
    store = SQLiteStore(tmp_path / "certwright.sqlite")  # as `certwright move`: not opened
    mover = Engine(store, tmp_path, registry=_registry(), clock=clock,
                   options=EngineOptions(inline=True, scope=[rid]))
    mover.move(rid, "alpha", by="ops@console")
    mover.pump()
    moved = mover.store.load_run(rid)
    assert (moved.host, moved.wants_host, moved.status) == ("alpha", "alpha", RUNNING)
    assert [e.data for e in mover.store.journal(rid) if e.kind == "moved"] == [
        {"host": "alpha", "previous": "gamma", "by": "ops@console"}]
    assert _steps_run() == ["anywhere"]  # the move itself starts nothing
    mover.close()
    again = _engine(tmp_path, "alpha", clock)
    again.run_until_idle()
    assert again.store.load_run(rid).status == SUCCEEDED
    assert _steps_run() == ["anywhere", "here", "after"]
    assert fold(again.store.journal(rid)) == again.store.load_run(rid)
    again.close()


def test_the_key_csr_and_install_steps_are_host_bound() -> None:
    """`certwright steps` lists key, CSR, install, reload and the TLS check as host-bound
    and the CA, ACME, mail and timer steps as runnable anywhere."""
    where = {r["name"]: r["where"] for r in step_rows()}
    assert {n for n, w in where.items() if w == "host"} == {
        "key.generate", "csr.generate", "install.files", "install.reload", "install.check",
        "install.beside"}
    assert where["ca.sign"] == where["acme.finalize"] == where["wait.mail"] == "any"


def test_host_names_are_checked_and_the_local_host_has_an_order() -> None:
    """A host name is lower-cased; a bad one is an InputError naming where it came from;
    CERTWRIGHT_HOST wins over the configuration's host, which wins over the machine."""
    assert check_host(" Web1.Example.ORG ", "--set host") == "web1.example.org"
    with pytest.raises(InputError, match=r"--set host: 'web 1' is not a host name"):
        check_host("web 1", "--set host")
    assert local_host("conf", {"CERTWRIGHT_HOST": "Env"}) == "env"
    assert local_host("conf", {}) == "conf"
    assert local_host(None, {})  # the machine's own name
