"""Two daemons, one PostgreSQL store, one IMAP mailbox (a real Dovecot): each daemon spools
the mailbox into its own state dir, and every confirmation mail is routed by one of them
only, its marks in the store naming the IMAP mailbox whichever daemon took it.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certwright.state import names as N
from tests.fixtures.daemon.harness import FIXTURES, Proc, wait_for
from tests.support.dovecot import Dovecot, dovecot  # noqa: F401 - fixtures
from tests.support.mail import CA_BASE, probe_mail
from tests.support.pg_daemons import make_runs, rows, start_daemon
from tests.support.postgres import Cluster, postgres  # noqa: F401 - fixtures

ROUTED = ("mail_routed", "mail_unmatched")  # the router's word for a message it routed


def _status(url: str) -> dict[str, str]:
    return dict(rows(url, f"SELECT id, status FROM {N.T_RUNS}"))


def _parked(url: str, ids: list[str]) -> bool:
    """Every run waits for its mail, and no daemon holds its lease (any may take it)."""
    status = _status(url)
    return all(status.get(i) == "waiting" for i in ids) and not rows(
        url, f"SELECT run_id FROM {N.T_LEASES}")


def _done(url: str, ids: list[str]) -> bool:
    status = _status(url)
    return all(status.get(i) == "succeeded" for i in ids)


def _mail(d: Dovecot, i: int) -> None:
    d.append(probe_mail(to=f"r{i}@imap.test", message_id=f"<p{i}@ca.example>"))


def test_two_daemons_on_one_imap_mailbox_route_each_mail_once(
        tmp_path: Path, postgres: Cluster, dovecot: Dovecot) -> None:
    """Daemon a alone takes the first mail; with b started, four mails arrive while both
    idle on the mailbox; with a stopped, b takes the last. Every run finishes once; each
    message was routed by exactly one daemon (the other logged it taken elsewhere, or never
    fetched it); each message has one take in the store, every one under the same box
    ``imap://USER@HOST:PORT/INBOX;UIDVALIDITY=N``, a's and b's alike."""
    url = postgres.store_url(str(tmp_path))
    pw = tmp_path / "imap.pw"
    pw.write_text(dovecot.password + "\n")
    imap = ["--imap", dovecot.url(pw) + f"&name=certs&cafile={dovecot.cafile}"]
    ids = [f"r{i}" for i in range(6)]
    a = start_daemon(tmp_path, url, "a", imap)
    procs = [a]
    try:
        make_runs(url, tmp_path, (FIXTURES / "waitmail.yaml").read_text(), "waitmail.yaml",
                  [{"to": f"{i}@imap.test", "maildir": "imap/certs", "link_base": CA_BASE}
                   for i in ids], ids)
        wait_for(lambda: _parked(url, ids), 60, "a to park every run")
        _mail(dovecot, 0)
        wait_for(lambda: _done(url, ids[:1]), 30, "a to take the first mail")
        b = start_daemon(tmp_path, url, "b", imap)
        procs.append(b)
        for i in range(1, 5):
            _mail(dovecot, i)
        wait_for(lambda: _done(url, ids[:5]), 60, "the four mails both daemons see")
        settled = _within(20, lambda: not _spooled(tmp_path / "a")
                          and not _spooled(tmp_path / "b"))  # copies not taken: aside
        a.stop()
        _mail(dovecot, 5)
        wait_for(lambda: _done(url, ids), 30, "b to take the last mail")
    finally:
        for p in procs:
            p.stop()
    events = {"a": a.events(), "b": b.events()}
    routed, taken = _by_message(events, ROUTED), _by_message(events, ("mail_taken",))
    mails = [f"<p{i}@ca.example>" for i in range(6)]
    assert {m: len(routed[m]) for m in mails} == dict.fromkeys(mails, 1), dict(routed)
    assert {m: len(taken[m]) for m in mails} == dict.fromkeys(mails, 1), dict(taken)
    assert routed["<p0@ca.example>"] == ["a"] and routed["<p5@ca.example>"] == ["b"]
    assert settled, "a copy no step took was not put aside within 20 s"
    held = _by_message(events, ("mail_claimed_elsewhere",))
    for m, who in held.items():  # a copy held by one daemon was routed by the other
        assert set(who).isdisjoint(routed[m]), (m, who, routed[m])
    aside = {(w, e["file"]) for w, evs in events.items() for e in evs
             if e.get("event") == "mail_taken_elsewhere"}
    for w, evs in events.items():  # every copy here a step took elsewhere went aside
        names = {e["file"]: e["message_id"] for e in evs
                 if e.get("event") in (*ROUTED, "mail_claimed_elsewhere")}
        assert {n for n, m in names.items() if w not in taken[m]} == {
            n for who, n in aside if who == w}, (w, names, aside)
    marks = [(s, i) for s, i in rows(url, f"SELECT source, ident FROM {N.T_PROCESSED}")
             if s.startswith("mail:")]
    assert Counter(ident for _, ident in marks) == dict.fromkeys(
        (f"<p{i}@ca.example>" for i in range(6)), 1), marks
    boxes = {source for source, _ in marks}
    assert len(boxes) == 1, boxes
    box = boxes.pop()
    assert box.startswith(f"mail:imap://{dovecot.user}@{dovecot.host}:{dovecot.port}"
                          f"/INBOX;UIDVALIDITY="), box
    finished = Counter(rid for rid, data in rows(
        url, f"SELECT run_id, data FROM {N.T_JOURNAL} WHERE kind = 'entered'")
        if "verified" in json.loads(data).values())
    assert {i: finished[i] for i in ids} == dict.fromkeys(ids, 1)
    _no_tracebacks(a, b)


def _within(seconds: float, cond: Callable[[], bool]) -> bool:
    """Whether ``cond`` came true within ``seconds`` (checked again and again)."""
    try:
        wait_for(cond, seconds, "")
    except AssertionError:
        return False
    return True


def _spooled(state: Path) -> list[Path]:
    """The messages in the IMAP spool's ``new/`` of the daemon of ``state``."""
    new = state / "imap" / "certs" / "new"
    return list(new.iterdir()) if new.is_dir() else []


def _by_message(events: dict[str, list[dict[str, Any]]],
                kinds: tuple[str, ...]) -> dict[str, list[str]]:
    """message id -> the daemons that logged one of ``kinds`` for it (once each time)."""
    out: dict[str, list[str]] = defaultdict(list)
    for who, evs in events.items():
        for e in evs:
            if e.get("event") in kinds:
                out[e["message_id"]].append(who)
    return out


def _no_tracebacks(*procs: Proc) -> None:
    for p in procs:
        assert "Traceback" not in p.text(), p.text()[-3000:]
