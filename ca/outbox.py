"""The CA's durable outbox: mail written with what it announces, sent after commit, once.

A message (account confirmation, domain probe, issuance notice) is a row of the CA's store,
inserted by :meth:`Outbox.enqueue` inside the caller's store transaction, so it commits or
rolls back with the account, probe or certificate it announces: a crash right after the
commit loses no mail. After the commit the caller may try it at once
(:meth:`Outbox.deliver`, so the API can answer 502 with the MTA's words for a permanent
refusal); :class:`OutboxSender`, a thread of the CA's process, sends every row still due,
including those a killed process left behind.

Contract:

* **Sent once, as one message.** The Message-ID and Date come from the row, so a resend
  after a crash between SMTP's final ``250`` and the row's ``sent`` mark is the same
  message, which receivers (our intake's duplicate check) drop. One process sends a row at
  a time (an in-process claim; one CA process serves a CA folder).
* **Transient failures never fail anything**: connection refused, timeouts, 4xx replies
  reschedule the row with a backoff of 15 s doubling to 15 min (:data:`BACKOFF`), for up to
  :data:`GIVE_UP` (RFC 5321 4.5.4.1 suggests 4-5 days) after it was written.
* **A permanent 5xx** marks the row ``failed`` with the MTA's words, logged
  (``outbox_failed``).
* **No secret in clear in the store**: bodies carry link tokens, so they are kept encrypted
  (Fernet) with a key in ``outbox.key`` beside the database (0600), and dropped once sent.

Hazards: rows are never deleted (an audit trail of what was sent); a lost key file makes
pending bodies unreadable: such a row is marked failed with that reason.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography.fernet import Fernet, InvalidToken

from certwright.atomic import write_new
from certwright.ca.outmail import Mailer, MailError
from certwright.ca.store import CAStore
from certwright.clock import Clock, format_instant, parse_instant

log = structlog.get_logger("ca.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, recipient TEXT NOT NULL,
    subject TEXT NOT NULL, body BLOB NOT NULL, ref TEXT, created_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    next_at TEXT NOT NULL, last_error TEXT, sent_at TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_at);
"""

#: Delay before attempt n+1 after n transient failures: 15 s doubling, at most 15 min
#: (a stopped MTA is usually back within minutes; an hourly retry would delay a probe).
BACKOFF = tuple(min(15 * 2**n, 900) for n in range(7))
GIVE_UP = timedelta(days=5)
GRACE = timedelta(seconds=30)  # a new row is the enqueuing request's to try first
POLL_S = 5.0  # the sender looks for due rows at least this often (real seconds)


@dataclass(frozen=True)
class Delivery:
    """What one attempt came to: ``sent``, ``queued`` (will be retried) or ``failed``."""

    status: str
    reason: str | None = None


def _load_key(path: Path) -> Fernet:
    """The outbox key at ``path``, created (0600) on first use."""
    try:
        return Fernet(path.read_bytes().strip())
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):  # another process made it first
        write_new(path, Fernet.generate_key(), 0o600)
    return Fernet(path.read_bytes().strip())


class Outbox:
    """The outbox of one CA store; ``mailer`` sends, ``key_path`` holds the body key."""

    def __init__(self, *, store: CAStore, mailer: Mailer, clock: Clock, key_path: Path) -> None:
        self.store = store
        self.mailer = mailer
        self.clock = clock
        self._fernet = _load_key(key_path)
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self.wake = threading.Event()  # set to make the sender look at once
        with store.transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def message_id(self, row_id: str) -> str:
        """The Message-ID of row ``row_id``: the same for every attempt."""
        domain = self.mailer.mail_from.rpartition("@")[2] or "certwright.invalid"
        return f"<{row_id}@{domain}>"

    def enqueue(self, to: str, subject: str, body: str, *, kind: str,
                ref: str | None = None) -> str:
        """Write a message row; returns its id. Joins the caller's store transaction."""
        row_id = "msg_" + secrets.token_hex(12)
        now = self.clock.now()
        # Due only after GRACE: the caller delivers it right after its commit, and the
        # sender should not race it; a restarted process sends fresh rows at once.
        with self.store.transaction() as db:
            db.execute("INSERT INTO outbox (id, kind, recipient, subject, body, ref, "
                       "created_at, next_at) VALUES (?,?,?,?,?,?,?,?)",
                       (row_id, kind, to, subject, self._fernet.encrypt(body.encode()), ref,
                        format_instant(now), format_instant(now + GRACE)))
        return row_id

    # Reads go through the store's read connection (committed state, no write lock): a row
    # is read after the transaction that wrote it committed.
    def row(self, row_id: str) -> dict[str, Any] | None:
        """The committed row (its body encrypted, or empty once sent)."""
        return self.store.read_one("SELECT * FROM outbox WHERE id=?", row_id)

    def rows(self, *, kind: str | None = None) -> list[dict[str, Any]]:
        """Every committed row, oldest first (``kind``: only those)."""
        return self.store.read_all("SELECT * FROM outbox WHERE ?1 IS NULL OR kind=?1 "
                                   "ORDER BY created_at, id", kind)

    def due(self, *, fresh: bool = False) -> list[str]:
        """Ids of the pending rows whose next attempt is due now; ``fresh``: also those
        never tried (what a killed process left behind, when a new one starts)."""
        now = format_instant(self.clock.now())
        found = self.store.read_all("SELECT id FROM outbox WHERE status='pending' AND "
                                    "(next_at<=? OR (? AND attempts=0)) ORDER BY next_at, id",
                                    now, fresh)
        return [r["id"] for r in found]

    def next_due(self) -> str | None:
        """When the earliest pending row is due (an instant), None when none is pending."""
        found = self.store.read_one("SELECT min(next_at) AS at FROM outbox "
                                    "WHERE status='pending'")
        return found["at"] if found else None

    def deliver(self, row_id: str) -> Delivery:
        """Try row ``row_id`` now (if pending and no other thread is on it); repeat-safe."""
        with self._busy_lock:
            if row_id in self._busy:
                return Delivery("queued", "another attempt is under way")
            self._busy.add(row_id)
        try:
            return self._attempt(row_id)
        finally:
            with self._busy_lock:
                self._busy.discard(row_id)

    def _attempt(self, row_id: str) -> Delivery:
        row = self.row(row_id)
        if row is None:
            return Delivery("failed", "no such message")
        if row["status"] != "pending":
            return Delivery(row["status"], row["last_error"])
        bound = log.bind(message=row_id, kind=row["kind"], to=row["recipient"])
        try:
            body = self._fernet.decrypt(row["body"]).decode()
        except (InvalidToken, UnicodeDecodeError):
            return self._fail(row, "the body cannot be decrypted with outbox.key", bound)
        try:
            self.mailer.send(row["recipient"], row["subject"], body, kind=row["kind"],
                             message_id=self.message_id(row_id),
                             date=parse_instant(row["created_at"]))
        except MailError as exc:
            if exc.permanent:
                return self._fail(row, exc.reason, bound)
            return self._reschedule(row, exc.reason, bound)
        except ValueError as exc:  # a header the builder refuses: no retry helps
            return self._fail(row, str(exc), bound)
        self._mark(row_id, "UPDATE outbox SET status='sent', sent_at=?, body=x'', "
                   "attempts=attempts+1, last_error=NULL WHERE id=?",
                   format_instant(self.clock.now()))
        return Delivery("sent")

    def _mark(self, row_id: str, sql: str, *args: Any) -> None:
        with self.store.transaction() as db:
            db.execute(sql, (*args, row_id))

    def _fail(self, row: dict[str, Any], reason: str, bound: Any) -> Delivery:
        bound.error("outbox_failed", reason=reason, attempts=row["attempts"] + 1)
        self._mark(row["id"], "UPDATE outbox SET status='failed', attempts=attempts+1, "
                   "last_error=? WHERE id=?", reason)
        return Delivery("failed", reason)

    def _reschedule(self, row: dict[str, Any], reason: str, bound: Any) -> Delivery:
        now = self.clock.now()
        attempts = int(row["attempts"]) + 1
        if now - parse_instant(row["created_at"]) >= GIVE_UP:
            return self._fail(row, f"gave up after {attempts} attempts over "
                                   f"{GIVE_UP.days} days; last: {reason}", bound)
        delay = BACKOFF[min(attempts - 1, len(BACKOFF) - 1)]
        bound.warning("outbox_retry", reason=reason, attempts=attempts, retry_in_s=delay)
        self._mark(row["id"], "UPDATE outbox SET attempts=?, last_error=?, next_at=? "
                   "WHERE id=?", attempts, reason,
                   format_instant(now + timedelta(seconds=delay)))
        return Delivery("queued", reason)

    def send_due(self, *, fresh: bool = False) -> int:
        """Attempt every due row once (``fresh``: see :meth:`due`); how many were sent."""
        return sum(self.deliver(row_id).status == "sent" for row_id in self.due(fresh=fresh))


class OutboxSender:
    """A thread that sends the outbox's due rows until :meth:`stop`.

    It wakes on :attr:`Outbox.wake`, when the earliest row falls due by the
    outbox's clock, and at least every :data:`POLL_S` seconds (a fake clock moves without
    telling anyone). An error of the store is logged and the loop carries on.
    """

    def __init__(self, outbox: Outbox, *, poll: float = POLL_S) -> None:
        self.outbox = outbox
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> OutboxSender:
        self._thread = threading.Thread(target=self._loop, name=f"ca-outbox-{os.getpid()}",
                                        daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        outbox = self.outbox
        fresh = True  # the first pass also sends what a killed process never tried
        while not self._stop.is_set():
            outbox.wake.clear()
            try:
                outbox.send_due(fresh=fresh)
                fresh = False
                nxt = outbox.next_due()
            except Exception:
                log.exception("outbox_sender_error")
                nxt = None
            wait = self.poll
            if nxt is not None:  # a row still due now is another thread's: look again soon
                left = (parse_instant(nxt) - outbox.clock.now()).total_seconds()
                wait = max(0.2, min(wait, left))
            outbox.wake.wait(wait)

    def stop(self) -> None:
        """Stop the thread (after the attempt under way); safe to call twice."""
        self._stop.set()
        self.outbox.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
