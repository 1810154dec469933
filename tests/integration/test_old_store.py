"""A store written by version 1 (``tests/fixtures/stores/v1.sqlite3``) opened today.

Each test opens a copy (opening migrates and changes file modes, so never the fixture),
and checks that today's SQLite store reads back what v1 recorded (``journals/v1/*.json``,
``stores/v1.json``), that ``history`` shows it, and that today's engine drives the runs
v1 left parked to their end: answered, retried, timed out, recovered after a crash.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certwright.clock import FakeClock, parse_instant
from certwright.engine.run.journal import fold
from certwright.engine.run.runner import Engine
from certwright.engine.testing import RecordingStep, make_engine
from certwright.state import names as N
from certwright.state.records import JournalEntry, RunRecord, Timer
from certwright.state.sqlite import SQLiteStore
from tests.fixtures.journals.make_fixtures import TOKEN, answer, registry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "stores" / "v1.json").read_text())
RUNS: dict[str, dict[str, Any]] = {
    f["run_id"]: f for f in (json.loads(p.read_text(encoding="utf-8"))
                             for p in sorted((FIXTURES / "journals" / "v1").glob("*.json")))}


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state folder holding a copy of the v1 store."""
    shutil.copyfile(FIXTURES / "stores" / "v1.sqlite3", tmp_path / N.DB_FILE)
    return tmp_path


@pytest.fixture
def store(state_dir: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(state_dir / N.DB_FILE)
    yield opened
    opened.close()


@pytest.fixture
def engine(state_dir: Path) -> Iterator[Engine]:
    """Today's engine on the copy, its fake clock where v1's stopped."""
    RecordingStep.reset()
    started = make_engine(state_dir, FakeClock(parse_instant(MANIFEST["clock"])),
                          registry=registry())
    yield started
    started.close()
    started.store.close()


def _record(fixture: dict[str, Any]) -> RunRecord:
    row = dict(fixture["row"])
    return RunRecord(**{**row.pop("body"), **row})


def _entries(fixture: dict[str, Any]) -> list[JournalEntry]:
    return [JournalEntry(run_id=e["run_id"], kind=e["kind"], data=e["data"], at=e["at"],
                         seq=e["seq"]) for e in fixture["journal"]]


def test_the_store_opens_at_todays_schema_version(store: SQLiteStore) -> None:
    """v1's schema is upgraded (or already current) on open."""
    assert MANIFEST["schema_version"] <= store.schema_version() == len(N.MIGRATIONS)


def test_runs_read_back_as_recorded(store: SQLiteStore) -> None:
    """Every run v1 stored loads, field for field, and the listing has them all."""
    assert sorted(r.id for r in store.list_runs()) == sorted(MANIFEST["runs"]) == sorted(RUNS)
    for rid, fixture in RUNS.items():
        assert store.load_run(rid) == _record(fixture)
    assert sorted(rid for rid, _ in store.run_ids(["waiting", "backoff", "running"])) == sorted(
        MANIFEST["parked"])


def test_journals_read_back_as_recorded_and_replay(store: SQLiteStore) -> None:
    """Each run's journal reads back entry for entry, and folds into its stored run."""
    for rid, fixture in RUNS.items():
        assert store.journal(rid) == _entries(fixture)
        assert fold(store.journal(rid)) == store.load_run(rid)


def test_timers_correlations_and_secrets_read_back(store: SQLiteStore) -> None:
    """The parked runs' timers and correlation keys, and every run's secrets."""
    expected = [Timer(t["due"], t["id"], t["run_id"], t["entry"], t["kind"])
                for f in RUNS.values() for t in f["timers"]]
    assert sorted(store.timers()) == sorted(expected) and expected
    for rid, fixture in RUNS.items():
        assert store.correlations(rid) == fixture["correlations"]
        for key in fixture["correlations"]:
            assert store.runs_for(key) == [rid]
        assert store.load_secrets(rid) == fixture["secrets"]


def test_specs_and_processed_marks_read_back(store: SQLiteStore) -> None:
    """Pinned pipelines load by hash; a mail v1 processed is not processed again."""
    for spec in MANIFEST["specs"]:
        assert store.load_spec(spec["hash"]) == (spec["name"], spec["source"], spec["text"])
    with store.transaction() as tx:
        for mark in MANIFEST["processed"]:
            assert not tx.mark_processed(mark["source"], mark["ident"], mark["run_id"])


def test_history_shows_the_recorded_journal(state_dir: Path) -> None:
    """``certwright history --json`` on the old store prints v1's entries."""
    rid = "v1-succeeded"
    done = subprocess.run([sys.executable, "-m", "certwright", "--state-dir", str(state_dir),
                           "history", rid, "--json"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{k: e[k] for k in ("seq", "at", "kind", "data")}
                                       for e in RUNS[rid]["journal"]]


def _finished(engine: Engine, rid: str) -> RunRecord:
    run = engine.store.load_run(rid)
    assert fold(engine.store.journal(rid)) == run
    return run


def test_a_waiting_run_finishes_when_answered(engine: Engine) -> None:
    """The answer reaches the run through v1's correlation key; the rest of the state
    runs with the secret output v1 kept (shown redacted in today's journal)."""
    rid = "v1-waiting"
    engine.submit(answer(rid))
    engine.run_until_idle()
    run = _finished(engine, rid)
    assert (run.state, run.status) == ("done", "succeeded")
    check = [c for c in RecordingStep.calls if c.step_id == "check"]
    assert [c.params["outputs"]["seen"] for c in check] == [TOKEN]
    assert run.vars["check"]["seen"] == "<secret>"
    assert [t for t in engine.store.timers() if t.run_id == rid] == []


def test_a_backing_off_run_retries_with_the_same_key(engine: Engine) -> None:
    """v1's retry timer fires on today's engine; the attempt keeps the step's key."""
    rid = "v1-backoff"
    engine.clock.advance(30)
    engine.run_until_idle()
    register = [c for c in RecordingStep.calls if c.step_id == "register"]
    assert [(c.key, c.attempt) for c in register] == [(f"{rid}:1:0", 2)]
    engine.submit(answer(rid))
    engine.run_until_idle()
    assert _finished(engine, rid).status == "succeeded"


def test_a_step_left_in_flight_runs_again_recovering(engine: Engine) -> None:
    """The step v1 started and never finished runs again, same key, as recovering."""
    engine.run_until_idle()
    run = _finished(engine, "v1-inflight")
    assert (run.state, run.status) == ("done", "succeeded")
    started = [e.data for e in engine.store.journal("v1-inflight") if e.kind == "step_started"]
    assert [(d["key"], d["recovering"]) for d in started] == [
        ("v1-inflight:1:0", False), ("v1-inflight:1:0", True)]


def test_a_waiting_run_times_out_by_v1s_deadline(engine: Engine) -> None:
    """The timeout timer v1 stored fires once its instant passes, and the state's
    bounded retry counts v1's entries."""
    rid = "v1-waiting"
    deadline = parse_instant(RUNS[rid]["row"]["body"]["deadline"])
    engine.clock.set(deadline)
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.state, run.status, run.counters["asking"]) == ("asking", "waiting", 2)
    assert [e.data["trigger"] for e in engine.store.journal(rid)
            if e.kind == "entered"][-2:] == ["timeout", "loop"]
