"""Passphrase recovery by a security question, the way trusted services bound it.

:meth:`Recovery.start` opens a recovery session for an email: the server picks one of the
account's five questions at random, pins it for ``recovery_question_hours`` (so repeated
starts show that one question, never all five) and binds it to a session id (256-bit
random, stored as sha256) that lives ``recovery_minutes``. :meth:`Recovery.answer` takes
the session id and an answer; the caller never names a question.

Contract:

* Wrong answers are counted per email over ``recovery_window_minutes``; the
  ``recovery_attempts``-th locks the email's recovery for ``recovery_lock_hours``, closes
  its open sessions and mails the owner once. While locked, both routes answer 429
  ``recovery_locked`` with the seconds left. Per client address the app's rate limiter
  bounds starts and answers as well.
* An email without an active account gets a decoy session: the same status and body, a
  question pinned the same way (from :data:`DECOY_QUESTIONS`), wrong answers counted and
  locked the same way, one scrypt per answer as for a real one; it can never succeed and
  sends no mail.
* A right answer with an acceptable passphrase replaces the passphrase, ends every API
  session of the account, closes the recovery session and mails the owner. A right
  answer with a weak passphrase is 422 and keeps the session (it is not a wrong answer).
* Answers are compared as scrypt hashes (constant time), as the store keeps them.

Hazards: anyone can lock an account's recovery with wrong answers (never its login); the
owner is told by mail. A mail that fails is logged and does not undo the reset or lock.
"""
from __future__ import annotations

import secrets
import sqlite3
from datetime import datetime, timedelta
from typing import Any

import structlog

from certwright.ca.errors import ApiError
from certwright.ca.outbox import Outbox
from certwright.ca.passphrase import check_passphrase
from certwright.ca.store import CAStore, check_secret, hash_secret, hash_token, normalize_answer
from certwright.clock import Clock, format_instant, parse_instant

log = structlog.get_logger("ca.recovery")

SCHEMA = """
CREATE TABLE IF NOT EXISTS recovery_subjects (
    email TEXT PRIMARY KEY, question TEXT, question_until TEXT,
    window_start TEXT, failures INTEGER NOT NULL DEFAULT 0, locked_until TEXT);
CREATE TABLE IF NOT EXISTS recovery_sessions (
    id_hash TEXT PRIMARY KEY, email TEXT NOT NULL, account_id TEXT,
    question TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open');
"""

#: Questions a decoy session asks (an email without an account): common ones, so that a
#: decoy reads like a real account's question.
DECOY_QUESTIONS = (
    "What was the name of your first pet?", "In which city were you born?",
    "What was the name of your first school?", "What is your mother's maiden name?",
    "What was the make of your first car?", "What was your childhood nickname?",
    "What is the name of the street you grew up on?", "What was your first job?",
)
# Compared against for decoys, so a decoy's answer costs one scrypt as a real one does.
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))


class Recovery:
    """Recovery sessions, attempts and locks (see the module contract)."""

    def __init__(self, *, store: CAStore, outbox: Outbox, clock: Clock,
                 config: dict[str, Any]) -> None:
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.config = config
        with store.transaction() as db:
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)

    # -- starting a recovery -------------------------------------------------------------
    def start(self, email: str) -> dict[str, Any]:
        """A new recovery session for ``email``: its id, question and expiry."""
        email = email.strip().lower()
        now = self.clock.now()
        account = self.store.find_account(email=email)
        if account is not None and account["status"] != "active":
            account = None
        with self.store.transaction() as db:
            subject = self._subject(db, email)
            self._refuse_if_locked(subject, now)
            question = subject["question"]
            until = subject["question_until"]
            pool = ([q["question"] for q in self.store.questions(account["id"])]
                    if account else list(DECOY_QUESTIONS))
            # A new pick once the last one is old, or no longer this email's (an account
            # joined or went since it was pinned).
            if question not in pool or not until or parse_instant(until) <= now:
                question = secrets.choice(pool)
                until = format_instant(
                    now + timedelta(hours=self.config["recovery_question_hours"]))
                db.execute("UPDATE recovery_subjects SET question=?, question_until=? "
                           "WHERE email=?", (question, until, email))
            # Forget what ended a day ago (rows of unknown emails included).
            cutoff = format_instant(now - timedelta(days=1))
            db.execute("DELETE FROM recovery_sessions WHERE expires_at<?", (cutoff,))
            db.execute("DELETE FROM recovery_subjects WHERE coalesce(locked_until, '')<? "
                       "AND coalesce(question_until, '')<? AND coalesce(window_start, '')<?",
                       (cutoff, cutoff, cutoff))
            recovery_id = "rec_" + secrets.token_urlsafe(32)
            expires = format_instant(now + timedelta(minutes=self.config["recovery_minutes"]))
            db.execute("INSERT INTO recovery_sessions (id_hash, email, account_id, question, "
                       "created_at, expires_at) VALUES (?,?,?,?,?,?)",
                       (hash_token(recovery_id), email, account["id"] if account else None,
                        question, format_instant(now), expires))
        log.info("recovery_started", account_id=account["id"] if account else None)
        return {"recovery_id": recovery_id, "question": question, "expires_at": expires}

    # -- answering -----------------------------------------------------------------------
    def answer(self, recovery_id: str, answer: str, new_passphrase: str,
               client: str) -> dict[str, Any]:
        """Set a new passphrase when ``answer`` fits the session's question."""
        now = self.clock.now()
        with self.store.transaction() as db:
            found = db.execute("SELECT * FROM recovery_sessions WHERE id_hash=?",
                               (hash_token(recovery_id or ""),)).fetchone()
            row = dict(found) if found else None
            if row is not None:  # a lock is reported before the session's state
                self._refuse_if_locked(self._subject(db, row["email"]), now)
        if row is None or row["status"] != "open" or parse_instant(row["expires_at"]) <= now:
            raise ApiError(410, "recovery_expired", "no open recovery session with that id "
                           "(unknown, used or expired); start again with POST "
                           "/api/v1/recovery")
        email, account_id = row["email"], row["account_id"]
        stored = _DUMMY_HASH
        account = self.store.find_account(account_id=account_id) if account_id else None
        if account is not None:
            found = next((q for q in self.store.questions(account["id"])
                          if q["question"] == row["question"]), None)
            stored = found["answer_hash"] if found else _DUMMY_HASH
        good = check_secret(normalize_answer(answer), stored) and account is not None \
            and account["status"] == "active"
        if not good or account is None:
            raise self._wrong(email, account, now, client)
        broken = check_passphrase(new_passphrase, account["name"], account["email"])
        if broken:
            raise ApiError(422, "passphrase_rejected", f"the new passphrase breaks "
                           f"{len(broken)} rule(s)", rules=[v.as_dict() for v in broken])
        pw_hash = hash_secret(new_passphrase)  # before the transaction: it takes 50 ms
        with self.store.transaction() as db:
            used = db.execute("UPDATE recovery_sessions SET status='used' WHERE id_hash=? "
                              "AND status='open'", (row["id_hash"],)).rowcount
            if not used:  # a concurrent answer used or locked it first
                raise ApiError(410, "recovery_expired", "this recovery session was closed "
                               "meanwhile; start again with POST /api/v1/recovery")
            db.execute("UPDATE recovery_subjects SET failures=0, window_start=NULL "
                       "WHERE email=?", (email,))
            self.store.set_passphrase(account["id"], pw_hash)
            self.store.record("passphrase_recovered", account["id"], detail=client)
        log.info("passphrase_recovered", account_id=account["id"])
        self._mail(email, "Your certwright CA passphrase was reset", (
            f"The passphrase of the CA account {email} was reset at "
            f"{format_instant(now)} by answering its security question, from the address "
            f"{client}. Every API session of the account has been ended.\n\n"
            "If this was not you, your account has been taken over: tell the CA's "
            "operator at once.\n"), kind="recovery_reset")
        return {"status": "ok"}

    def _wrong(self, email: str, account: dict[str, Any] | None, now: datetime,
               client: str) -> ApiError:
        """Count a wrong answer; lock at the limit. The refusal to raise is returned."""
        limit = int(self.config["recovery_attempts"])
        with self.store.transaction() as db:
            subject = self._subject(db, email)
            locked = _locked_error(subject, now)
            if locked:  # a concurrent answer locked it first: no second count or mail
                return locked
            start = subject["window_start"]
            window = timedelta(minutes=self.config["recovery_window_minutes"])
            failures = int(subject["failures"])
            if not start or parse_instant(start) + window <= now:
                start, failures = format_instant(now), 0
            failures += 1
            locked_until = None
            if failures >= limit:
                locked_until = format_instant(
                    now + timedelta(hours=self.config["recovery_lock_hours"]))
                db.execute("UPDATE recovery_sessions SET status='locked' WHERE email=? "
                           "AND status='open'", (email,))
            db.execute("UPDATE recovery_subjects SET window_start=?, failures=?, "
                       "locked_until=coalesce(?, locked_until) WHERE email=?",
                       (start, failures, locked_until, email))
            if account is not None:
                self.store.record("recovery_refused", account["id"], detail=client)
        log.warning("recovery_refused", account_id=account["id"] if account else None,
                    attempts_left=max(limit - failures, 0), locked=bool(locked_until))
        if locked_until and account is not None:
            self.store.record("recovery_locked", account["id"], detail=client)
            self._mail(email, "Recovery of your certwright CA account is locked", (
                f"Someone answered the security question of the CA account {email} wrong "
                f"{failures} times (the last from the address {client}), so {failures} "
                f"wrong answers locked its recovery until {locked_until}.\n\n"
                "Your passphrase still works and nothing was changed. If this was not "
                "you, someone is trying to take over the account.\n"),
                kind="recovery_locked")
        return ApiError(403, "bad_answer", "that is not the answer to the question",
                        attempts_left=max(limit - failures, 0))

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _subject(db: sqlite3.Connection, email: str) -> dict[str, Any]:
        """The email's row of pinned question, failures and lock (created if missing)."""
        db.execute("INSERT OR IGNORE INTO recovery_subjects (email) VALUES (?)", (email,))
        found = db.execute("SELECT * FROM recovery_subjects WHERE email=?",
                           (email,)).fetchone()
        return dict(found)

    @staticmethod
    def _refuse_if_locked(subject: dict[str, Any], now: datetime) -> None:
        locked = _locked_error(subject, now)
        if locked:
            raise locked

    def _mail(self, to: str, subject: str, body: str, *, kind: str) -> None:
        """Queue the owner's notice in the outbox (durable, retried) and try it now."""
        delivery = self.outbox.deliver(self.outbox.enqueue(to, subject, body, kind=kind))
        if delivery.status == "failed":
            log.warning("recovery_mail_failed", kind=kind, reason=delivery.reason)


def _locked_error(subject: dict[str, Any], now: datetime) -> ApiError | None:
    until = subject["locked_until"]
    if until and now < parse_instant(until):
        seconds = max(int((parse_instant(until) - now).total_seconds()), 1)
        return ApiError(429, "recovery_locked", "too many wrong answers: recovery of this "
                        f"account is locked until {until}", retry_after=seconds)
    return None
