"""Where certwright keeps its bookkeeping for a mailbox: in the state dir, not the Maildir.

A Maildir belongs to the MTA that delivers into it (and maybe to people who read it):
certwright's quarantine of mail moved aside lives in ``<state dir>/mailboxes/<name>-<hash>/``,
one folder per Maildir (the hash of its resolved path keeps two Maildirs of the same name
apart). Every process of one state dir (``run``, the daemon) finds the same folder.

Which messages were taken is the store's to say (:mod:`certwright.mail.ledger`). Versions
before that kept a processed log here (:class:`ProcessedLog`): it is still read when it
exists, and no longer written.

Earlier still, both lived in the Maildir itself (``certwright-processed.sqlite3``,
``.quarantine/``). :func:`carry_over` copies such an old processed log into the new place
once (a consistent SQLite backup), so runs that took mail before the upgrade still find
their takes; the old files are left where they are (nothing is ever deleted).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["PROCESSED_LOG", "ProcessedLog", "books_dir", "carry_over", "mailbox_id"]

PROCESSED_LOG = "certwright-processed.sqlite3"


def mailbox_id(maildir: Path | str) -> str:
    """The name of ``maildir`` among certwright's mailboxes: ``<name>-<hash>``, the hash
    of its resolved path (the same in every process of one host)."""
    resolved = Path(maildir).expanduser().resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    return f"{resolved.name or 'maildir'}-{digest}"


def books_dir(state_dir: Path | str, maildir: Path | str) -> Path:
    """The bookkeeping folder of ``maildir`` under ``state_dir`` (not created here)."""
    return Path(state_dir) / "mailboxes" / mailbox_id(maildir)


def carry_over(legacy: Path, target: Path) -> bool:
    """Copy the old processed log ``legacy`` to ``target`` if only the old one exists.

    Returns True when it copied. Safe when several processes do it at once: the copy is
    made under a temporary name and linked into place (the first link wins).
    """
    if target.exists() or not legacy.is_file():
        return False
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    try:
        src = sqlite3.connect(f"file:{legacy}?mode=ro", uri=True, timeout=30.0)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class ProcessedLog:
    """Which Message-IDs were taken by a step, from which file, under which step key.

    A small SQLite file in WAL mode (synchronous=FULL: a mark survives power loss once it
    returned). Each thread keeps its own connection to it (opened once: a new connection
    and a rollback journal per call cost several fsyncs a message), so the log is safe
    across threads and processes. The first mark of a Message-ID wins; later marks of the
    same id are ignored.
    """

    _local = threading.local()

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        conns: dict[str, sqlite3.Connection] = getattr(self._local, "conns", None) or {}
        self._local.conns = conns
        key = str(self.path)
        conn = conns.get(key)
        if conn is not None and os.path.exists(key):
            return conn
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS processed (message_id TEXT PRIMARY KEY,"
                     " name TEXT NOT NULL, step_key TEXT, at REAL NOT NULL)")
        conn.execute("CREATE INDEX IF NOT EXISTS processed_step_key ON processed(step_key)")
        conns[key] = conn
        return conn

    def seen(self, message_id: str, name: str) -> bool:
        """True if ``message_id`` was already taken from a file other than ``name``.

        False when never seen, or seen from this very file (a repeat after a crash between
        :meth:`mark` and moving the file): that is the same delivery, not a duplicate.
        """
        row = self._connect().execute("SELECT name FROM processed WHERE message_id = ?",
                                      (message_id,)).fetchone()
        return row is not None and row[0] != name

    def taken(self, message_id: str, name: str) -> str | None:
        """The step key that took ``message_id`` from this very file ``name``, or None.

        A message found in ``new/`` that was taken from that file already is one whose
        move to ``cur/`` was lost (a power cut after the mark): finish the move."""
        row = self._connect().execute("SELECT name, step_key FROM processed WHERE message_id = ?",
                                      (message_id,)).fetchone()
        return str(row[1] or "") if row is not None and row[0] == name else None

    def mark(self, message_id: str, name: str, step_key: str | None = None) -> bool:
        """Record that ``message_id`` (file ``name``) was taken by step ``step_key``.

        Durable when it returns. The first record of a Message-ID wins: returns True if
        this call made it or the existing record has the same name and step key (a repeat
        after a crash), False if someone else took that Message-ID first.
        """
        conn = self._connect()
        conn.execute("INSERT OR IGNORE INTO processed (message_id, name, step_key, at)"
                     " VALUES (?, ?, ?, ?)", (message_id, name, step_key, time.time()))
        row = conn.execute("SELECT name, step_key FROM processed WHERE message_id = ?",
                           (message_id,)).fetchone()
        return row is not None and (row[0], row[1]) == (name, step_key)

    def find_by_key(self, step_key: str) -> tuple[str, str] | None:
        """``(message_id, name)`` taken by the step with ``step_key``, or None."""
        row = self._connect().execute("SELECT message_id, name FROM processed WHERE step_key = ?"
                                      " ORDER BY at LIMIT 1", (step_key,)).fetchone()
        return (row[0], row[1]) if row else None
