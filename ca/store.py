"""The CA's durable store: accounts, sessions, links, domains, certificates (SQLite).

Contract:

* One connection shared by the request threads, guarded by a re-entrant lock; every
  public method is one transaction. :meth:`CAStore.transaction` lets the service group
  several calls (look up, then insert) so a check and its action are atomic.
* A second, query-only connection reads committed state (sessions, the domain list,
  certificate look-ups) without waiting for the writer, so the HTTP event loop can
  authenticate and answer reads without a thread hop and without blocking on a commit.
* Secrets are stored only as hashes: passphrases and recovery answers with scrypt, link
  and session tokens with sha256 (they are 256-bit random, so a fast hash suffices).
* Instants are ISO 8601 UTC strings (``engine.clock.format_instant``), which sort.
* WAL mode with synchronous=FULL: an issued certificate is on disk before it is returned.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from certwright.clock import Clock, SystemClock, format_instant

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    pw_hash TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL,
    confirmed_at TEXT);
CREATE TABLE IF NOT EXISTS questions (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, question TEXT NOT NULL, answer_hash TEXT NOT NULL,
    PRIMARY KEY (account_id, idx));
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    expires_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS links (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    domain TEXT, address TEXT NOT NULL, token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open', failures INTEGER NOT NULL DEFAULT 0,
    idem_key TEXT, closed_at TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS links_idem ON links(account_id, idem_key)
    WHERE idem_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS domains (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    domain TEXT NOT NULL, created_at TEXT NOT NULL, verified_at TEXT,
    verified_by TEXT, PRIMARY KEY (account_id, domain));
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY, account_id TEXT NOT NULL, idem_key TEXT NOT NULL,
    csr_sha256 TEXT NOT NULL, names TEXT NOT NULL, cert_pem TEXT NOT NULL,
    fingerprint TEXT NOT NULL, not_before TEXT NOT NULL, not_after TEXT NOT NULL,
    created_at TEXT NOT NULL, revoked_at TEXT, revoke_reason TEXT,
    UNIQUE (account_id, idem_key));
-- keys revoked for keyCompromise (sha256 of the DER SubjectPublicKeyInfo): never certified
-- again, whichever account asks
CREATE TABLE IF NOT EXISTS compromised_keys (
    spki_sha256 TEXT PRIMARY KEY, serial TEXT NOT NULL, revoked_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, event TEXT NOT NULL,
    account_id TEXT, subject TEXT, detail TEXT);
"""

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_secret(secret: str) -> str:
    """Salted scrypt hash of ``secret`` as ``scrypt$n$r$p$salt$hash`` (hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` matches a :func:`hash_secret` value (constant-time compare)."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def hash_token(token: str) -> str:
    """sha256 hex of a high-entropy token."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_answer(answer: str) -> str:
    """Recovery answers compare case- and whitespace-insensitively."""
    return " ".join(answer.lower().split())


class CAStore:
    """All persistent state of one CA (see module docstring for the contract)."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._depth = 0
        # A second connection for reads of committed state (see :meth:`read_one`): in WAL
        # mode it never waits for the writer, so the HTTP event loop may use it.
        self._ro_lock = threading.Lock()
        self._ro = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._ro.row_factory = sqlite3.Row
        self._ro.execute("PRAGMA query_only=1")

    def close(self) -> None:
        with self._lock, self._ro_lock:
            self._db.close()
            self._ro.close()

    def now(self) -> str:
        return format_instant(self.clock.now())

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one transaction (nested calls join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def _one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        # One SELECT is a transaction of its own (autocommit); inside transaction() it
        # joins that one and sees its uncommitted writes. fetchall() runs the statement
        # to its end, so no read transaction stays open.
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return dict(rows[0]) if rows else None

    def _all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def read_one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        """One row of committed state through the read connection: never waits for a
        writer's transaction (WAL), so it is safe on an event loop. Not for reads that
        must see the caller's own open transaction."""
        with self._ro_lock:
            rows = self._ro.execute(sql, args).fetchall()
        return dict(rows[0]) if rows else None

    def read_all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Like :meth:`read_one`, every row."""
        with self._ro_lock:
            return [dict(r) for r in self._ro.execute(sql, args).fetchall()]

    def _exec(self, sql: str, *args: Any) -> int:
        with self.transaction() as db:
            return db.execute(sql, args).rowcount

    # -- audit ---------------------------------------------------------------------------
    def record(self, event: str, account_id: str | None = None, subject: str | None = None,
               detail: str | None = None) -> None:
        """Append a decision to the audit table (never a secret)."""
        self._exec("INSERT INTO audit (at, event, account_id, subject, detail) "
                   "VALUES (?,?,?,?,?)", self.now(), event, account_id, subject, detail)

    def audit(self, event: str | None = None) -> list[dict[str, Any]]:
        if event:
            return self._all("SELECT * FROM audit WHERE event=? ORDER BY id", event)
        return self._all("SELECT * FROM audit ORDER BY id")

    # -- accounts ------------------------------------------------------------------------
    def create_account(self, email: str, name: str, pw_hash: str,
                       questions: list[tuple[str, str]]) -> str:
        """Insert a pending account; ``pw_hash`` and the answers are already hashed."""
        account_id = "acct_" + secrets.token_hex(8)
        with self.transaction() as db:
            db.execute("INSERT INTO accounts (id, email, name, pw_hash, status, created_at) "
                       "VALUES (?,?,?,?,'pending',?)",
                       (account_id, email, name, pw_hash, self.now()))
            for idx, (question, answer_hash) in enumerate(questions):
                db.execute("INSERT INTO questions VALUES (?,?,?,?)",
                           (account_id, idx, question, answer_hash))
        return account_id

    def delete_account(self, account_id: str) -> None:
        self._exec("DELETE FROM accounts WHERE id=?", account_id)

    def set_account_status(self, account_id: str, status: str) -> None:
        self._exec("UPDATE accounts SET status=? WHERE id=?", status, account_id)

    def find_account(self, *, email: str | None = None,
                     account_id: str | None = None) -> dict[str, Any] | None:
        if email is not None:
            return self._one("SELECT * FROM accounts WHERE email=?", email)
        return self._one("SELECT * FROM accounts WHERE id=?", account_id)

    def activate_account(self, account_id: str) -> None:
        self._exec("UPDATE accounts SET status='active', confirmed_at=? WHERE id=?",
                   self.now(), account_id)

    def set_passphrase(self, account_id: str, pw_hash: str) -> None:
        """Replace the passphrase hash and end every session of the account."""
        with self.transaction() as db:
            db.execute("UPDATE accounts SET pw_hash=? WHERE id=?", (pw_hash, account_id))
            db.execute("DELETE FROM sessions WHERE account_id=?", (account_id,))

    def purge_unconfirmed(self, before: datetime) -> list[str]:
        """Delete pending accounts created before ``before``; returns their ids."""
        with self.transaction() as db:
            ids = [r["id"] for r in db.execute(
                "SELECT id FROM accounts WHERE status IN ('pending', 'rejected') "
                "AND created_at<?",
                (format_instant(before),))]
            for account_id in ids:
                db.execute("DELETE FROM accounts WHERE id=?", (account_id,))
        return ids

    def questions(self, account_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM questions WHERE account_id=? ORDER BY idx", account_id)

    # -- sessions ------------------------------------------------------------------------
    def create_session(self, account_id: str, expires: datetime) -> str:
        token = secrets.token_urlsafe(32)
        self._exec("INSERT INTO sessions VALUES (?,?,?)", hash_token(token), account_id,
                   format_instant(expires))
        return token

    def session_account(self, token: str) -> str | None:
        """The account of a live session (committed state, through the read connection)."""
        row = self.read_one("SELECT account_id FROM sessions WHERE token_hash=? AND "
                            "expires_at>?", hash_token(token), self.now())
        return row["account_id"] if row else None

    # -- links (account confirmations and domain probes) ----------------------------------
    def create_link(self, kind: str, account_id: str, address: str, expires: datetime, *,
                    domain: str | None = None, idem_key: str | None = None) -> tuple[str, str]:
        """A new single-use link; returns ``(link_id, token)``; only the hash is kept."""
        link_id = ("conf_" if kind == "account" else "probe_") + secrets.token_hex(10)
        token = secrets.token_urlsafe(32)
        self._exec("INSERT INTO links (id, kind, account_id, domain, address, token_hash, "
                   "created_at, expires_at, idem_key) VALUES (?,?,?,?,?,?,?,?,?)",
                   link_id, kind, account_id, domain, address, hash_token(token), self.now(),
                   format_instant(expires), idem_key)
        return link_id, token

    def find_link(self, link_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM links WHERE id=?", link_id)

    def find_link_by_key(self, account_id: str, idem_key: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM links WHERE account_id=? AND idem_key=?",
                         account_id, idem_key)

    def latest_link(self, account_id: str, kind: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM links WHERE account_id=? AND kind=? "
                         "ORDER BY created_at DESC LIMIT 1", account_id, kind)

    def close_link(self, link_id: str, status: str) -> None:
        self._exec("UPDATE links SET status=?, closed_at=? WHERE id=?", status, self.now(),
                   link_id)

    def delete_link(self, link_id: str) -> None:
        self._exec("DELETE FROM links WHERE id=?", link_id)

    def count_failure(self, link_id: str) -> int:
        """Add one wrong-token attempt; returns the new count."""
        with self.transaction() as db:
            db.execute("UPDATE links SET failures=failures+1 WHERE id=?", (link_id,))
            row = db.execute("SELECT failures FROM links WHERE id=?", (link_id,)).fetchone()
        return int(row["failures"])

    # -- domains -------------------------------------------------------------------------
    def add_domain(self, account_id: str, domain: str) -> bool:
        """Add ``domain`` to the account; False when it was there already."""
        return self._exec("INSERT OR IGNORE INTO domains (account_id, domain, created_at) "
                          "VALUES (?,?,?)", account_id, domain, self.now()) == 1

    def domains(self, account_id: str, names: list[str] | None = None) -> list[dict[str, Any]]:
        """The account's domains (committed state), all or those in ``names``."""
        if names is None:
            return self.read_all("SELECT * FROM domains WHERE account_id=? ORDER BY domain",
                                 account_id)
        marks = ",".join("?" * len(names))
        return self.read_all(f"SELECT * FROM domains WHERE account_id=? AND domain IN "
                             f"({marks}) ORDER BY domain", account_id, *names)

    def find_domain(self, account_id: str, domain: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM domains WHERE account_id=? AND domain=?",
                         account_id, domain)

    def verify_domain(self, account_id: str, domain: str, link_id: str) -> None:
        self._exec("UPDATE domains SET verified_at=?, verified_by=? WHERE account_id=? AND "
                   "domain=?", self.now(), link_id, account_id, domain)

    def delete_domain(self, account_id: str, domain: str) -> bool:
        return self._exec("DELETE FROM domains WHERE account_id=? AND domain=?",
                          account_id, domain) == 1

    # -- certificates --------------------------------------------------------------------
    def find_certificate(self, *, serial: str | None = None, account_id: str | None = None,
                         idem_key: str | None = None,
                         committed: bool = False) -> dict[str, Any] | None:
        """A certificate by serial or by (account, key); ``committed``: through the read
        connection (see :meth:`read_one`)."""
        one = self.read_one if committed else self._one
        if serial is not None:
            return one("SELECT * FROM certificates WHERE serial=?", serial)
        return one("SELECT * FROM certificates WHERE account_id=? AND idem_key=?",
                   account_id, idem_key)

    def insert_certificate(self, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._exec(f"INSERT INTO certificates ({cols}) VALUES ({marks})", *row.values())

    def count_certificates(self, account_id: str | None = None) -> int:
        if account_id is None:
            row = self._one("SELECT count(*) AS n FROM certificates")
        else:
            row = self._one("SELECT count(*) AS n FROM certificates WHERE account_id=?",
                            account_id)
        return int(row["n"]) if row else 0

    def revoke(self, serial: str, reason: str, spki_sha256: str | None = None) -> bool:
        """Revoke ``serial`` unless it is already (the first date and reason stay); with
        ``spki_sha256`` its key is recorded as compromised in the same transaction.
        True when this call revoked it."""
        with self.transaction() as db:
            now = self.now()
            done = db.execute("UPDATE certificates SET revoked_at=?, revoke_reason=? WHERE "
                              "serial=? AND revoked_at IS NULL", (now, reason, serial)).rowcount
            if done and spki_sha256:
                db.execute("INSERT OR IGNORE INTO compromised_keys VALUES (?,?,?)",
                           (spki_sha256, serial, now))
        return done == 1

    def find_compromised_key(self, spki_sha256: str) -> dict[str, Any] | None:
        """The revocation that marked this key compromised (serial, revoked_at), or None."""
        return self.read_one("SELECT * FROM compromised_keys WHERE spki_sha256=?", spki_sha256)

    def revoked(self) -> list[dict[str, Any]]:
        return self._all("SELECT serial, revoked_at, revoke_reason FROM certificates "
                         "WHERE revoked_at IS NOT NULL ORDER BY revoked_at")
