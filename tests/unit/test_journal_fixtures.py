"""Yesterday's journals still read: stored journals kept as fixtures are replayed.

``journals-v1.json`` holds journals as this version writes them (every entry kind) and one
written by an older version (entries without the fields added since). A change to
``journal.apply`` or to the entry types that cannot fold them into the records stored
beside them fails here. Never edit the fixture to make a test pass: add a new one.
``journals-v2.json`` adds the kinds of hosts (``host_awaited``, ``moved``): a run moved
and finished on its new host, and one moved while it waits for its host. A record stored
before a field existed compares on its own fields, the newer ones at their defaults.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from certwright.engine.run.journal import KINDS, fold
from certwright.state.records import JournalEntry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "journals"
RUNS = {**json.loads((FIXTURES / "journals-v1.json").read_text()),
        **json.loads((FIXTURES / "journals-v2.json").read_text())}
NEWER = {"host": "", "wants_host": None}  # RunRecord fields added after v1, as defaults


def _entries(rid: str) -> list[JournalEntry]:
    return [JournalEntry(run_id=rid, kind=e["kind"], data=e["data"], at=e["at"], seq=e["seq"])
            for e in RUNS[rid]["journal"]]


@pytest.mark.parametrize("rid", sorted(RUNS))
def test_a_stored_journal_folds_into_its_stored_record(rid: str) -> None:
    assert asdict(fold(_entries(rid))) == {**NEWER, **RUNS[rid]["record"]}


def test_the_fixtures_hold_every_kind_of_entry() -> None:
    seen = {e["kind"] for run in RUNS.values() for e in run["journal"]}
    assert seen == KINDS


def test_an_old_journal_without_the_later_fields_reads_as_none_or_empty() -> None:
    run = fold(_entries("legacy-1"))
    assert (run.deadline, run.watch, run.memo, run.wake_at) == (None, [], {}, None)
    assert (run.status, run.error) == ("cancelled", "cancelled")
