"""Journals written by earlier versions replay, with today's fold, into the runs they stored.

The fixtures (``tests/fixtures/journals/v*/``, written by ``make_fixtures.py`` there) are
frozen: each holds one run's journal rows and the run row the store kept beside them. A
change to the fold (or to the entries' meaning) that can no longer read them fails here;
a deliberate change adds a new fixture version and keeps reading the old ones.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from certwright.engine.run.journal import fold
from certwright.state.records import JournalEntry, RunRecord

JOURNALS = Path(__file__).resolve().parents[1] / "fixtures" / "journals"
CASES = sorted(JOURNALS.glob("v*/*.json"))
# every kind the fold knows (engine/run/journal.py)
KINDS = {"created", "entered", "step_started", "step_done", "step_waiting", "step_failed",
         "run_failed", "cancelled", "alarm"}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _entries(fixture: dict[str, Any]) -> list[JournalEntry]:
    return [JournalEntry(run_id=e["run_id"], kind=e["kind"], data=e["data"], at=e["at"],
                         seq=e["seq"]) for e in fixture["journal"]]


def _stored(fixture: dict[str, Any]) -> dict[str, Any]:
    """The run row's columns and body fields, as one mapping of record fields."""
    row = dict(fixture["row"])
    body = row.pop("body")
    return {**row, **body}


def _all_entries() -> list[JournalEntry]:
    return [e for path in CASES for e in _entries(_load(path))]


def test_there_are_fixtures() -> None:
    """The v1 fixtures are in place (a missing folder must not pass as "nothing to do")."""
    assert len([p for p in CASES if p.parent.name == "v1"]) >= 8


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_the_fold_gives_the_stored_run_field_for_field(path: Path) -> None:
    """Replaying the journal with today's fold gives every field the store held."""
    fixture = _load(path)
    stored = _stored(fixture)
    known = {f.name for f in fields(RunRecord)}
    assert set(stored) <= known, f"fields the record lost: {set(stored) - known}"
    run = fold(_entries(fixture))
    assert {k: getattr(run, k) for k in stored} == stored


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_the_journal_is_the_runs_own_in_seq_order(path: Path) -> None:
    """Each fixture holds one run's entries, in increasing seq, starting with created."""
    fixture = _load(path)
    entries = _entries(fixture)
    assert {e.run_id for e in entries} == {fixture["run_id"]} and entries[0].kind == "created"
    assert [e.seq for e in entries] == sorted({e.seq for e in entries})


def test_the_fixtures_cover_every_entry_kind() -> None:
    """Together the fixtures hold every kind of entry the fold knows."""
    assert {e.kind for e in _all_entries()} == KINDS


def test_the_fixtures_cover_the_ways_a_run_goes() -> None:
    """A retry with backoff, a permanent failure, a state timeout and a bounded retry of
    the state, a wait resumed by an event and one by its timer, a step recovered after a
    crash; runs succeeded, failed, cancelled, and parked waiting, backing off, in flight."""
    entries = _all_entries()
    data = {k: [e.data for e in entries if e.kind == k] for k in KINDS}
    assert any(d["retry_at"] for d in data["step_failed"])
    assert any(d["retry_at"] is None for d in data["step_failed"])
    assert {"timeout", "loop", "start", "next"} <= {d["trigger"] for d in data["entered"]}
    assert any(d["wake_at"] for d in data["step_waiting"])
    assert any(d["wake_at"] is None for d in data["step_waiting"])
    assert any(d["recovering"] for d in data["step_started"])
    statuses = {_stored(_load(p))["status"] for p in CASES}
    assert statuses == {"succeeded", "failed", "cancelled", "waiting", "backoff", "running"}


def test_secrets_are_redacted_in_the_journals() -> None:
    """A secret input and a secret step output show as <secret>; their values, which the
    store kept apart, appear in no journal entry and no run row."""
    entries = _all_entries()
    assert any("<secret>" in d["inputs"].values() for d in
               (e.data for e in entries if e.kind == "created"))
    assert any("<secret>" in d["outputs"].values() for d in
               (e.data for e in entries if e.kind == "step_done"))
    checked = 0
    for path in CASES:
        fixture = _load(path)
        shown = json.dumps([fixture["journal"], fixture["row"]])
        for value in _strings(fixture["secrets"]):
            assert value not in shown, f"{path.name}: a secret in clear"
            checked += 1
    assert checked


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []
