"""The CA's mailer keeps one SMTP session per host, and reconnects when it has died."""
from __future__ import annotations

from pathlib import Path

from ca.mailserver import MailServer
from ca.outmail import Mailer
from engine.maildir import Maildir


def test_kept_session_is_reused_and_reopened_after_the_server_restarts(tmp_path: Path):
    md = Maildir(tmp_path / "md")
    first = MailServer("127.0.0.1", 0, domains=["example.test"], maildir=md.path)
    first.start()
    port = first.port
    mailer = Mailer(smarthost=("127.0.0.1", port), mail_from="ca@certwright.invalid")
    try:
        mailer.send("postmaster@example.test", "one", "body one", kind="test")
        mailer.send("postmaster@example.test", "two", "body two", kind="test")
        session = mailer._sessions[("127.0.0.1", port)]
        assert len(md.list_new()) == 2
        first.stop()
        second = MailServer("127.0.0.1", port, domains=["example.test"], maildir=md.path)
        second.start()
        try:
            mailer.send("postmaster@example.test", "three", "body three", kind="test")
            assert mailer._sessions[("127.0.0.1", port)] is not session  # reconnected
        finally:
            second.stop()
    finally:
        mailer.close()
    subjects = sorted(b"Subject: " + s for s in (b"one", b"two", b"three"))
    found = sorted(line for name in md.list_new() for line in md.read(name).splitlines()
                   if line.startswith(b"Subject: "))
    assert found == subjects
