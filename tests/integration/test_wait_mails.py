"""wait.mails against a real Maildir and a real SQLite store: the mails a call finds are
taken with its result (a Wait too), and a later call judges them again from ``cur/``."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from certwright.clock import SystemClock
from certwright.engine.plugins.step import Done, StepContext, Wait
from certwright.mail.maildir import Maildir
from certwright.state.sqlite import SQLiteStore
from certwright.steps.mails import WaitMails
from tests.support.mail import CA_BASE, PROBE_PATH, commit_take, probe_mail

ADDRS = ("admin@one.test", "admin@two.test")


def link(i: int) -> str:
    return f"{CA_BASE}{PROBE_PATH}?token=t{i}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "certwright.sqlite")
    yield s
    s.close()


def ctx(tmp_path: Path, store: SQLiteStore, memo: Any = None) -> StepContext:
    return StepContext(
        run_id="r1", pipeline="t", state="s", step_id="w", idempotency_key="r1:1:0",
        attempt=1, run_dir=tmp_path / "run", state_dir=tmp_path, clock=SystemClock(),
        params={"maildir": str(tmp_path / "mail"), "link_base": CA_BASE,
                "expect": [{"to": a, "link_path": PROBE_PATH} for a in ADDRS]},
        memo=memo or {}, processed=store.is_processed)


def test_a_mail_found_while_waiting_is_taken_with_the_wait_and_judged_again_later(
        tmp_path: Path, store: SQLiteStore) -> None:
    """The first mail comes alone: the Wait carries its marks (committed, then the move to
    cur/), its memo names the file; when the second comes, the first is judged again from
    cur/ (no second mark) and the step is Done with both links in order."""
    md = Maildir(tmp_path / "mail")
    md.deliver(probe_mail(to=ADDRS[0], link=link(0), message_id="<p0@ca.example>"))
    first = WaitMails().run(ctx(tmp_path, store))
    assert isinstance(first, Wait) and len(first.marks) == 2
    assert "admin@two.test" in first.description and "(1 of 2 in)" in first.description
    assert commit_take(store, first)
    assert md.list_new() == [] and len(md.list_cur()) == 1
    md.deliver(probe_mail(to=ADDRS[1], link=link(1), message_id="<p1@ca.example>"))
    done = WaitMails().run(ctx(tmp_path, store, first.memo))
    assert isinstance(done, Done)
    assert done.outputs["links"] == [link(0), link(1)]
    assert done.outputs["message_ids"] == ["<p0@ca.example>", "<p1@ca.example>"]
    assert {ident for _, ident in done.marks} >= {"<p1@ca.example>"}
    assert "<p0@ca.example>" not in {ident for _, ident in done.marks}  # taken already
    assert commit_take(store, done)
    assert md.list_new() == [] and len(md.list_cur()) == 2


def test_a_wait_whose_commit_was_lost_finds_its_mail_again_in_new(
        tmp_path: Path, store: SQLiteStore) -> None:
    """A crash before the Wait's commit loses its marks and its memo; the mail is still in
    new/ (the move waits for the commit), so the next call takes it again."""
    md = Maildir(tmp_path / "mail")
    md.deliver(probe_mail(to=ADDRS[0], link=link(0), message_id="<p0@ca.example>"))
    lost = WaitMails().run(ctx(tmp_path, store))
    assert isinstance(lost, Wait) and lost.marks
    md.deliver(probe_mail(to=ADDRS[1], link=link(1), message_id="<p1@ca.example>"))
    done = WaitMails().run(ctx(tmp_path, store))
    assert isinstance(done, Done) and done.outputs["links"] == [link(0), link(1)]
    assert len(done.marks) == 4 and commit_take(store, done)
    assert md.list_new() == [] and len(md.list_cur()) == 2


def test_a_memo_naming_a_file_that_cannot_be_read_again_looks_anew(
        tmp_path: Path, store: SQLiteStore) -> None:
    """A memo naming a file that is gone (removed by hand) does not stop the step: it
    looks for that mail again as if nothing had been taken."""
    md = Maildir(tmp_path / "mail")
    memo = {"items": {"1": {"took": "1.gone.host"}}}
    md.deliver(probe_mail(to=ADDRS[0], link=link(0)))
    result = WaitMails().run(replace(ctx(tmp_path, store), memo=memo))
    assert isinstance(result, Wait) and len(result.marks) == 2
