"""certwright.mail.intake: the one read → parse → Message-ID → takes path that the daemon's
router and the mail steps share (takes read from a real SQLite store)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from certwright.mail import cache as mailcache
from certwright.mail import intake as intake_mod
from certwright.mail.intake import Admitted, Foreign, Intake, Refused
from certwright.mail.maildir import Maildir
from certwright.state.sqlite import SQLiteStore
from tests.support.mail import people_truncated, probe_mail, truncated_mime


@pytest.fixture
def md(tmp_path: Path) -> Iterator[Maildir]:
    box = Maildir(tmp_path / "Maildir")
    box.ensure()
    mailcache.clear()
    yield box
    mailcache.clear()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "state" / "certwright.sqlite")
    yield s
    s.close()


def quarantine_reason(md: Maildir, name: str) -> str:
    return (md.path / ".quarantine" / "reasons" / f"{name}.reason").read_text().strip()


def test_admit_parses_once_and_names_the_message(md: Maildir,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean message is admitted with its Message-ID; a second admit, by anyone in the
    process, takes it from the cache without reading or parsing it again."""
    name = md.deliver(probe_mail(message_id="<one@ca.example>"))
    calls: list[int] = []
    real = intake_mod.parse_message

    def counting(raw: bytes, **kw: Any) -> Any:
        calls.append(len(raw))
        return real(raw, **kw)
    monkeypatch.setattr(intake_mod, "parse_message", counting)
    first = Intake(md, structlog.get_logger()).admit(name)
    second = Intake(md, structlog.get_logger()).admit(name)
    assert isinstance(first, Admitted) and first.message_id == "<one@ca.example>"
    assert second == first and len(calls) == 1


def test_a_message_without_message_id_is_named_by_its_hash(md: Maildir) -> None:
    """No Message-ID: the SHA-256 of the bytes stands in for it."""
    raw = b"".join(line for line in probe_mail().splitlines(keepends=True)
                   if not line.lower().startswith(b"message-id:"))
    name = md.deliver(raw)
    got = Intake(md, structlog.get_logger()).admit(name)
    assert isinstance(got, Admitted)
    assert got.message_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_hostile_mail_is_logged_and_moved_aside_with_its_reason(md: Maildir) -> None:
    """A message that does not parse: mail_hostile with the caller's bindings, then moved
    into the quarantine with the reason; it is not cached."""
    name = md.deliver(truncated_mime("postmaster@example.test"))
    with structlog.testing.capture_logs() as logs:
        got = Intake(md, structlog.get_logger().bind(maildir="mine")).admit(name)
    assert isinstance(got, Refused) and got.kind == "hostile" and got.moved
    assert "truncated MIME" in quarantine_reason(md, name)
    hostile = [e for e in logs if e["event"] == "mail_hostile"]
    assert hostile and hostile[0]["file"] == name and hostile[0]["maildir"] == "mine"
    assert mailcache.get(md.new, name) is None


def test_too_large_mail_is_refused_unread(tmp_path: Path) -> None:
    """A file over the Maildir's read cap that claims to be the CA's (its head says so) is
    moved aside as hostile (message too large); anyone else's is left where it is."""
    small = Maildir(tmp_path / "small", max_read=100)
    small.ensure()
    name = small.deliver(b"X-Certwright-Kind: domain_probe\n" + b"x" * 200)
    got = Intake(small, structlog.get_logger()).admit(name)
    assert isinstance(got, Refused) and got.kind == "hostile"
    assert "message too large" in quarantine_reason(small, name)
    theirs = small.deliver(b"From: bob@people.example\n\n" + b"x" * 200)
    left = Intake(small, structlog.get_logger()).admit(theirs)
    assert isinstance(left, Foreign) and "too large" in left.reason
    assert small.list_new() == [theirs]


def test_hostile_mail_that_is_not_the_cas_is_left_alone(md: Maildir) -> None:
    """A person's message that does not parse is Foreign: not moved, not logged as hostile
    (a mailbox may be shared with people)."""
    name = md.deliver(people_truncated())
    with structlog.testing.capture_logs() as logs:
        got = Intake(md, structlog.get_logger()).admit(name)
    assert isinstance(got, Foreign) and "truncated MIME" in got.reason
    assert md.list_new() == [name]
    assert not [e for e in logs if e["event"] == "mail_hostile"]


def test_gone_message_is_none(md: Maildir) -> None:
    """A message another process took before the read is reported gone, not raised."""
    assert Intake(md, structlog.get_logger()).admit("1.M1P1Q1R0.host") is None


def _take(store: SQLiteStore, intake: Intake, message_id: str, name: str) -> None:
    """Commit the marks a step's Done carries for ``name``, as the engine does."""
    with store.transaction() as tx:
        for source, ident in intake.ledger.marks(message_id, name):
            assert tx.mark_processed(source, ident, "run-1")


def test_finish_taken_moves_a_take_the_store_has_and_new_still_holds(
        md: Maildir, store: SQLiteStore) -> None:
    """A take committed in the store for this very file whose move to cur/ did not happen
    (a crash after the commit): whoever finds it finishes the move and treats it as gone."""
    name = md.deliver(probe_mail(message_id="<lost@ca.example>"))
    intake = Intake(md, structlog.get_logger(), processed=store.is_processed)
    assert not intake.finish_taken(name, "<lost@ca.example>")  # not taken at all
    _take(store, intake, "<lost@ca.example>", name)
    assert md.list_new() == [name]
    with structlog.testing.capture_logs() as logs:
        assert intake.finish_taken(name, "<lost@ca.example>")
    assert md.list_new() == [] and md.list_cur() == [f"{name}:2,S"]
    assert [e["event"] for e in logs] == ["mail_move_finished"]


def test_an_older_versions_log_is_read_with_its_owner(md: Maildir) -> None:
    """A take an older version recorded in its processed log: the caller's own key leaves
    it to the caller; anyone else finishes the move (the log names who took it)."""
    name = md.deliver(probe_mail(message_id="<lost@ca.example>"))
    md.processed_log().mark("<lost@ca.example>", name, "run-1:1:0")
    intake = Intake(md, structlog.get_logger())
    assert not intake.finish_taken(name, "<lost@ca.example>", own_key="run-1:1:0")
    assert md.list_new() == [name]
    with structlog.testing.capture_logs() as logs:
        assert intake.finish_taken(name, "<lost@ca.example>", own_key="run-2:1:0")
    assert md.list_new() == [] and md.list_cur() == [f"{name}:2,S"]
    assert [e["taken_by"] for e in logs if e["event"] == "mail_move_finished"] == ["run-1:1:0"]


def test_no_log_is_made_when_an_older_version_left_none(md: Maildir,
                                                        store: SQLiteStore) -> None:
    """Takes are the store's: an intake on a Maildir with no old log creates none."""
    Intake(md, structlog.get_logger(), processed=store.is_processed)
    assert md.legacy_log() is None
    assert not (md.books / "certwright-processed.sqlite3").exists()


def test_a_message_id_taken_from_another_file_is_a_duplicate(md: Maildir,
                                                             store: SQLiteStore) -> None:
    """The same Message-ID in a second file is moved aside as a duplicate, logged with its
    Message-ID; the first file is no duplicate of itself."""
    first = md.deliver(probe_mail(message_id="<same@ca.example>"))
    again = md.deliver(probe_mail(message_id="<same@ca.example>"))
    intake = Intake(md, structlog.get_logger(), processed=store.is_processed)
    assert intake.refuse_duplicate(again, "<same@ca.example>") is None  # nothing taken yet
    _take(store, intake, "<same@ca.example>", first)
    assert intake.refuse_duplicate(first, "<same@ca.example>") is None
    with structlog.testing.capture_logs() as logs:
        refused = intake.refuse_duplicate(again, "<same@ca.example>")
    assert refused is not None and refused.kind == "duplicate" and refused.moved
    assert quarantine_reason(md, again).startswith("duplicate: Message-ID <same@ca.example>")
    assert any(e["event"] == "mail_duplicate" and e["file"] == again
               and e["message_id"] == "<same@ca.example>" for e in logs)


def test_set_aside_of_a_vanished_message_says_so(md: Maildir) -> None:
    """Moving aside a message that is gone reports moved=False and raises nothing."""
    refused = Intake(md, structlog.get_logger()).set_aside("1.M1P1Q1R0.host", "why")
    assert refused == Refused("aside", "why", moved=False)
