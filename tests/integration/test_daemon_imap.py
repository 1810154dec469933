"""IMAP as a mail source, against a real Dovecot (IMAPS on loopback, IDLE)."""
from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from certwright.engine.daemon.config import DaemonConfig
from certwright.errors import InputError
from certwright.mail.imap import ImapAccount
from certwright.mail.maildir import Maildir
from tests.fixtures.daemon.harness import wait_for
from tests.integration.test_daemon_mail import Running, park, run_state
from tests.support.dovecot import Dovecot, dovecot, dovecot_fetch_no  # noqa: F401 - fixtures
from tests.support.mail import person_mail, probe_mail, truncated_mime


def test_imap_url_needs_tls_and_a_password_source():
    """imap:// (no TLS) and a URL without a password file are refused with the reason."""
    with pytest.raises(InputError, match="only imaps"):
        ImapAccount("imap://u@h/INBOX?password_file=/x")
    with pytest.raises(InputError, match="password_file"):
        ImapAccount("imaps://u@h/INBOX")
    acct = ImapAccount("imaps://u:secret@h:1993/Box")
    assert "secret" not in acct.shown and acct.port == 1993 and acct.mailbox == "Box"


def test_mail_fetched_over_imap_idle_wakes_its_run_and_is_flagged_not_deleted(
        tmp_path: Path, dovecot: Dovecot):
    r"""Mail appended while the daemon idles is spooled, routed and taken; every message on
    the server ends up \Seen + $Certwright and none is deleted; hostile mail goes aside."""
    state = tmp_path / "state"
    pw = tmp_path / "imap.pw"
    pw.write_text(dovecot.password + "\n")
    url = dovecot.url(pw) + "&name=certs"
    spool = Maildir(state / "imap" / "certs")
    park(state, spool.path, "postmaster@imap.test", "viaimap")
    dovecot.append(probe_mail(to="someone-else@imap.test", message_id="<other@ca.example>"))
    with structlog.testing.capture_logs() as logs:
        running = Running(state, DaemonConfig(imap=(url,), imap_cafile=dovecot.cafile))
        try:
            wait_for(lambda: any(e["event"] == "imap_connected" for e in logs), 20, "login")
            wait_for(lambda: len(list(spool.new.iterdir())) == 1, 20, "the first message")
            dovecot.append(probe_mail(to="postmaster@imap.test", message_id="<p@ca.example>"))
            wait_for(lambda: run_state(state, "viaimap") == "verified", 20, "the run to verify")
            dovecot.append(truncated_mime("postmaster@imap.test"))
            wait_for(lambda: (spool.path / ".quarantine" / "new").is_dir() and any(
                (spool.path / ".quarantine" / "new").iterdir()), 20, "hostile mail aside")
            wait_for(lambda: all("$Certwright" in f for f in dovecot.flags())
                     and len(dovecot.flags()) == 3, 20, "all flagged")
        finally:
            running.stop()
    flags = dovecot.flags()
    assert len(flags) == 3 and all("\\Seen" in f and "\\Deleted" not in f for f in flags)
    assert any(e["event"] == "mail_hostile" and "truncated MIME" in e["reason"] for e in logs)
    assert running.result == [0]
    assert not any("imap-test-password" in str(e) for e in logs)


def test_imap_reconnects_with_backoff_after_a_refused_login(tmp_path: Path,
                                                             dovecot: Dovecot):
    """A wrong password is logged and retried; fixing the file lets the next try in."""
    state = tmp_path / "state"
    pw = tmp_path / "imap.pw"
    pw.write_text("wrong\n")
    with structlog.testing.capture_logs() as logs:
        running = Running(state, DaemonConfig(imap=(dovecot.url(pw),),
                                              imap_cafile=dovecot.cafile))
        try:
            wait_for(lambda: any(e["event"] == "imap_failed" for e in logs), 20, "a failure")
            pw.write_text(dovecot.password + "\n")
            wait_for(lambda: any(e["event"] == "imap_connected" for e in logs), 30, "login")
        finally:
            running.stop()
    fails = [e for e in logs if e["event"] == "imap_failed"]
    assert fails[0]["retry_in"] == 1.0
    assert not any("wrong" in str(e.get("error", "")).split("password")[0] for e in fails)


def test_a_persons_mail_on_a_shared_imap_mailbox_stays_unread(tmp_path: Path,
                                                               dovecot: Dovecot):
    r"""A mailbox shared with people over IMAP: their mail gets only the $Certwright keyword
    (so it is not fetched again), never \Seen; the CA's mail is \Seen as before."""
    state = tmp_path / "state"
    pw = tmp_path / "imap.pw"
    pw.write_text(dovecot.password + "\n")
    dovecot.append(person_mail(to="postmaster@imap.test"))
    dovecot.append(probe_mail(to="postmaster@imap.test", message_id="<ca1@ca.example>"))
    running = Running(state, DaemonConfig(imap=(dovecot.url(pw),), imap_cafile=dovecot.cafile))
    try:
        wait_for(lambda: len(dovecot.flags()) == 2
                 and all("$Certwright" in f for f in dovecot.flags()), 20, "both flagged")
    finally:
        running.stop()
    person, ca = dovecot.flags()
    assert "\\Seen" not in person and "\\Seen" in ca


def test_a_fetch_answered_no_is_an_error_with_the_servers_words(
        tmp_path: Path, dovecot_fetch_no: Dovecot):
    """A message the server cannot serve (FETCH answered NO) is logged with the server's
    words and left unflagged for a later session; it is neither counted as 0 bytes nor
    spooled, and the messages after it are fetched and routed as usual."""
    state = tmp_path / "state"
    pw = tmp_path / "imap.pw"
    pw.write_text(dovecot_fetch_no.password + "\n")
    spool = Maildir(state / "imap" / "certs")
    park(state, spool.path, "postmaster@imap.test", "afterbroken")
    dovecot_fetch_no.deliver_unreadable(probe_mail(to="postmaster@imap.test",
                                                   message_id="<broken@ca.example>"))
    dovecot_fetch_no.append(probe_mail(to="postmaster@imap.test", message_id="<p@ca.example>"))
    url = dovecot_fetch_no.url(pw) + "&name=certs"
    with structlog.testing.capture_logs() as logs:
        running = Running(state, DaemonConfig(imap=(url,), imap_cafile=dovecot_fetch_no.cafile))
        try:
            wait_for(lambda: run_state(state, "afterbroken") == "verified", 30,
                     "the run to verify from the second message")
        finally:
            running.stop()
    refused = [e for e in logs if e["event"] == "imap_fetch_refused"]
    assert refused, [e["event"] for e in logs]
    assert refused[0]["uid"] == "1" and "NO" in refused[0]["reason"]
    assert "Internal error" in refused[0]["reason"]  # Dovecot's own words
    assert not any(e["event"] == "imap_failed" for e in logs)  # one session throughout
    assert [p.name for p in spool.path.rglob("*.1.imap")] == []  # nothing spooled for it
    broken, good = dovecot_fetch_no.flags()
    assert "$Certwright" not in broken and "$Certwright" in good
