"""One IMAP mailbox, several daemons: the mailbox's id in the store's marks (the same for
every spool of it, whatever the state dir), the store's claim that lets one daemon route a
message (on SQLite and PostgreSQL), and the router's hold of a copy another daemon routes.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from certwright.engine.daemon import mailroute
from certwright.engine.daemon.mailroute import MailRouter
from certwright.events import Event
from certwright.mail import cache as mailcache
from certwright.mail.books import mailbox_id
from certwright.mail.imap import ImapAccount, ImapSource
from certwright.mail.imapbox import Claim, spool_identity
from certwright.mail.ledger import Ledger
from certwright.mail.maildir import Maildir
from certwright.state.postgres import PostgresStore
from certwright.state.sqlite import SQLiteStore
from tests.support.mail import person_mail, probe_mail
from tests.support.postgres import Cluster, postgres  # noqa: F401 - a fixture


class _Router:
    claims = None

    def route(self, md: Maildir, name: str) -> str:
        raise AssertionError("an empty spool routes nothing")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spool(state: Path, url: str) -> Maildir:
    """The spool an ImapSource of ``url`` makes in ``state`` when it starts (its server is
    not there: the source only retries)."""
    src = ImapSource(url, state, _Router())
    src.start()
    src.stop()
    return src.md


def _message_source(md: Maildir, name: str) -> str:
    return Ledger(md, None).marks("<m@ca.example>", name)[0][0]


def test_two_spools_of_one_mailbox_mark_under_one_id(tmp_path: Path) -> None:
    """Two daemons' spools of one account (other state dirs, other account names) give a
    message the same marks: the IMAP mailbox and its UIDVALIDITY, not the spool's path.
    Another mailbox, or another UIDVALIDITY, is another id; a Maildir keeps its path's."""
    port = _closed_port()
    url = f"imaps://certs:pw@127.0.0.1:{port}/INBOX"
    one = _spool(tmp_path / "a", url + "?name=one")
    two = _spool(tmp_path / "b", url + "?name=two")
    other = _spool(tmp_path / "c", f"imaps://certs:pw@127.0.0.1:{port}/Archive")
    assert one.path != two.path
    box = f"mail:imap://certs@127.0.0.1:{port}/INBOX;UIDVALIDITY=7"
    assert _message_source(one, "7.3.imap") == _message_source(two, "7.3.imap") == box
    assert Ledger(one, None).marks("<m>", "7.3.imap") == Ledger(two, None).marks("<m>",
                                                                                "7.3.imap")
    assert _message_source(one, "8.3.imap") == box.replace("=7", "=8")
    assert _message_source(other, "7.3.imap") == box.replace("INBOX", "Archive")
    plain = Maildir(tmp_path / "Maildir")
    plain.ensure()
    assert spool_identity(plain.path) is None
    assert _message_source(plain, "7.3.imap") == "mail:" + mailbox_id(plain.path)
    assert ImapAccount("imaps://certs:pw@MAIL.Example/inbox").identity == \
        ImapAccount("imaps://certs:pw@mail.example:993/INBOX").identity


def _stores(kind: str, tmp_path: Path, request: pytest.FixtureRequest, n: int) -> list[Any]:
    if kind == "sqlite":
        return [SQLiteStore(tmp_path / "certwright.sqlite") for _ in range(n)]
    cluster: Cluster = request.getfixturevalue("postgres")
    url = cluster.store_url(str(tmp_path))
    return [PostgresStore(url) for _ in range(n)]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_exactly_one_daemon_claims_a_message_fetched_by_all_at_once(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Eight daemons (a store object and a spool each) claim one message at the same
    moment: one claim wins; asked again (a fetch after a crash), the winner is still the
    winner and the others still lose."""
    stores = _stores(kind, tmp_path, request, 8)
    try:
        claims = []
        for i, store in enumerate(stores):
            (tmp_path / f"spool{i}").mkdir()
            claims.append(Claim(store, tmp_path / f"spool{i}", "imap://certs@h:993/INBOX"))
        start = threading.Barrier(len(claims))
        won: list[bool | None] = [None] * len(claims)

        def claim(i: int) -> None:
            start.wait()
            won[i] = claims[i].claim("5.9.imap")
        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claims))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert won.count(True) == 1, won
        assert [c.claim("5.9.imap") for c in claims] == won
        assert sum(c.claim("5.10.imap") for c in claims) == 1  # the next message: one too
    finally:
        for store in stores:
            store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    mailcache.clear()
    s = SQLiteStore(tmp_path / "state" / "certwright.sqlite")
    yield s
    s.close()
    mailcache.clear()


def _spool_of(tmp_path: Path) -> Maildir:
    md = Maildir(tmp_path / "spool")
    md.ensure()
    (md.path / "certwright-imap-mailbox").write_text("imap://certs@h:993/INBOX\n")
    return md


def test_a_copy_another_daemon_routes_is_held_then_put_aside_once_taken(
        tmp_path: Path, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A held copy is offered to no run (the other daemon routes it) and stays in ``new/``
    while nobody took it; once the store says a step took the message, it goes aside as
    taken elsewhere (after the settle time), logged. A person's mail is never held."""
    monkeypatch.setattr(mailroute, "TAKEN_SETTLE", 0.0)
    md = _spool_of(tmp_path)
    events: list[Event] = []
    router = MailRouter(lambda key: ["r1"], events.append, processed=store.is_processed)
    name = md.deliver(probe_mail(to="postmaster@h", message_id="<p@ca.example>"),
                      name="7.1.imap")
    person = md.deliver(person_mail(to="postmaster@h"), name="7.2.imap")
    with structlog.testing.capture_logs() as logs:
        assert router.hold(md, name) == mailroute.PENDING
        assert router.hold(md, person) == mailroute.FOREIGN
        assert router.route(md, name) == mailroute.PENDING  # known: still not offered
        assert router.sweep() == 0
        assert events == [] and (md.new / name).exists()
        with store.transaction() as tx:  # another daemon's step takes its own copy
            for source, ident in Ledger(md, store.is_processed).marks("<p@ca.example>", name):
                assert tx.mark_processed(source, ident, "r1")
        assert router.sweep() == 0  # seen taken: a step here may be moving it right now
        assert router.sweep() == 1
    assert not (md.new / name).exists() and (md.path / ".quarantine" / "new" / name).exists()
    assert (md.new / person).exists()
    assert [e["event"] for e in logs if e["event"].startswith("mail_")] == [
        "mail_claimed_elsewhere", "mail_not_ours", "mail_taken_elsewhere", "mail_moved_aside"]
    assert events == []


def test_a_routed_copy_of_an_imap_spool_is_offered_again_to_runs_still_waiting(
        tmp_path: Path, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """An IMAP spool's routed message is offered again to the run still waiting for it
    once the re-offer is due (its first offer may have gone to another daemon's re-check,
    in a spool without it); a Maildir's message is offered to a run once."""
    monkeypatch.setattr(mailroute, "REOFFER_FIRST", 0.0)
    spool = _spool_of(tmp_path)
    plain = Maildir(tmp_path / "Maildir")
    plain.ensure()
    for md, given in ((spool, "7.1.imap"), (plain, None)):
        events: list[Event] = []
        router = MailRouter(lambda key: ["r1"], events.append, processed=store.is_processed)
        name = md.deliver(probe_mail(to="postmaster@h", message_id=f"<{md.path.name}@ca>"),
                          name=given)
        assert router.route(md, name) == mailroute.ROUTED
        router.sweep()  # the first sweep sets the time of the next offer
        router.sweep()
        assert len(events) == (2 if md is spool else 1), (md.path, events)


def test_a_held_copy_nobody_took_goes_aside_after_the_grace_saying_why(
        tmp_path: Path, store: SQLiteStore) -> None:
    """A held copy that no step took within the grace is moved aside like unmatched mail,
    its reason naming the other daemon's claim."""
    md = _spool_of(tmp_path)
    router = MailRouter(lambda key: [], lambda event: None, grace=0.0,
                        processed=store.is_processed)
    name = md.deliver(probe_mail(to="postmaster@h"), name="7.1.imap")
    assert router.hold(md, name) == mailroute.PENDING
    assert router.sweep() == 1
    reason = (md.path / ".quarantine" / "reasons" / f"{name}.reason").read_text()
    assert reason.startswith("routed by another daemon (its claim came first), not taken")
