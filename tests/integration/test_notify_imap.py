"""notify.check on mail as an IMAP server serves it: RFC 5322 line endings (CRLF), which an
IMAP spool keeps as fetched. The serial and fingerprint lines must be read all the same, in
a Maildir holding such a message and in a real IMAP spool fed by Dovecot.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certwright.clock import SystemClock
from certwright.engine.plugins.step import Done, StepContext, Wait
from certwright.mail.imap import ImapSource
from certwright.mail.intake import parse
from certwright.mail.maildir import Maildir
from certwright.state.sqlite import SQLiteStore
from certwright.steps.mail import NotifyCheck
from tests.support.dovecot import Dovecot, dovecot  # noqa: F401 - a fixture
from tests.support.mail import commit_take, issuance_mail

TO = "admin@example.test"
SERIAL, FINGERPRINT = "0A:1B:2C", "ab" * 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "certwright.sqlite")
    try:
        yield s
    finally:
        s.close()


def _ctx(tmp_path: Path, store: SQLiteStore, maildir: str) -> StepContext:
    return StepContext(run_id="r1", pipeline="t", state="signed", step_id="n",
                       idempotency_key="r1:1:0", attempt=1,
                       params={"maildir": maildir, "to": TO, "serial": SERIAL,
                               "fingerprint": FINGERPRINT},
                       run_dir=tmp_path / "run", state_dir=tmp_path, clock=SystemClock(),
                       processed=store.is_processed)


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_the_issuance_mail_with_crlf_line_endings_is_matched(
        tmp_path: Path, store: SQLiteStore) -> None:
    """A Maildir message whose lines end in CRLF (as fetched over IMAP) names its serial and
    fingerprint: notify.check takes it, matched, and the parsed text has no CR left."""
    raw = _crlf(issuance_mail(to=TO, serial=SERIAL, fingerprint=FINGERPRINT))
    assert "\r" not in parse(raw).text
    Maildir(tmp_path / "mail").deliver(raw)
    done = NotifyCheck().run(_ctx(tmp_path, store, "mail"))
    assert isinstance(done, Done), done
    assert done.outputs["matched"] is True and done.outputs["message_id"]
    assert commit_take(store, done)
    assert len(Maildir(tmp_path / "mail").list_cur()) == 1


class _Router:
    """Records what the IMAP source routes (the daemon's router is not needed here)."""

    claims = None

    def __init__(self) -> None:
        self.routed: list[str] = []
        self.event = threading.Event()

    def route(self, md: Maildir, name: str) -> str:
        self.routed.append(name)
        self.event.set()
        return "routed"

    def hold(self, md: Maildir, name: str) -> str:  # pragma: no cover - no store here
        raise AssertionError("no store: every message is routed")


def test_the_issuance_mail_fetched_into_an_imap_spool_is_matched(
        tmp_path: Path, store: SQLiteStore, dovecot: Dovecot) -> None:
    """The issuance mail appended to a real Dovecot and fetched into the daemon's spool:
    notify.check, naming the spool, takes it (matched) on its first look."""
    pw = tmp_path / "imap.pw"
    pw.write_text(dovecot.password + "\n")
    router = _Router()
    src: Any = ImapSource(dovecot.url(pw) + "&name=certs", tmp_path, router,
                          cafile=dovecot.cafile)
    dovecot.append(issuance_mail(to=TO, serial=SERIAL, fingerprint=FINGERPRINT))
    src.start()
    try:
        assert router.event.wait(20), "the issuance mail was not fetched"
    finally:
        src.stop()
    result = NotifyCheck().run(_ctx(tmp_path, store, "imap/certs"))
    assert not isinstance(result, Wait), result.memo
    assert isinstance(result, Done) and result.outputs["matched"] is True


class _AppendingRouter(_Router):
    """Appends one more message to the mailbox while the source routes the first: it lands
    between the source's search and its flagging (its EXISTS comes with that command's
    answer, before any IDLE)."""

    def __init__(self, box: Dovecot, raw: bytes) -> None:
        super().__init__()
        self.box, self.raw = box, raw

    def route(self, md: Maildir, name: str) -> str:
        if not self.routed:
            self.box.append(self.raw)
        return super().route(md, name)


def test_mail_arriving_during_a_sync_is_fetched_without_waiting_for_the_idle_timeout(
        tmp_path: Path, dovecot: Dovecot) -> None:
    """A message appended while the source fetches another is fetched at once, not after
    ``idle_timeout`` (the server reported it before IDLE began, and never again)."""
    pw = tmp_path / "imap.pw"
    pw.write_text(dovecot.password + "\n")
    second = issuance_mail(to=TO, serial="0D:0E", fingerprint="cd" * 32)
    router = _AppendingRouter(dovecot, second)
    src: Any = ImapSource(dovecot.url(pw) + "&name=certs", tmp_path, router,
                          cafile=dovecot.cafile, idle_timeout=300.0)
    dovecot.append(issuance_mail(to=TO, serial=SERIAL, fingerprint=FINGERPRINT))
    src.start()
    try:
        deadline = time.monotonic() + 10
        while len(router.routed) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        src.stop()
    assert len(router.routed) == 2, router.routed
