"""The SQLite store: WAL mode, one file in the state directory.

Hazards: SQLite in WAL mode with ``synchronous=NORMAL`` survives a crash of the process
but may lose the last commits on power loss; ``FULL`` (our default) syncs every commit.
One connection per store object; the engine is its only writer, other processes (``status``,
``history``) read through their own connections, which WAL allows while a writer works.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from certwright.errors import RunNotFound, StoreError
from certwright.state import names as N
from certwright.state.records import JournalEntry, RunRecord, Timer

_BODY_FIELDS = ("entry", "step_index", "attempt", "inflight", "inputs", "vars", "memo",
                "waiting", "watch", "deadline", "wake_at", "counters", "error", "alarms", "seq")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


CHECKPOINT_EVERY = 0.5  # seconds between background checkpoints
CHECKPOINT_BACKSTOP_PAGES = 20000  # commits checkpoint themselves past this WAL size


class SQLiteStore:
    """A :class:`state.base.Store` on one SQLite file (``path``, or ``:memory:``)."""

    def __init__(self, path: str | Path, *, synchronous: str = "full",
                 background_checkpoint: bool = False) -> None:
        """``background_checkpoint``: copy the WAL into the database from a thread of its
        own (every :data:`CHECKPOINT_EVERY` seconds) instead of in whichever commit crosses
        SQLite's 1000-page mark, which then takes several fsyncs longer (a latency spike
        on the path of a transition). Commits still checkpoint past
        :data:`CHECKPOINT_BACKSTOP_PAGES`, should the thread fall behind."""
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
        if self.path != ":memory:":
            os.chmod(self.path, 0o600)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA busy_timeout=10000")
        self._enter_wal()
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._migrate()
        self._open_tx: _Tx | None = None
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        if background_checkpoint and self.path != ":memory:":
            self._db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP_PAGES}")
            self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                                  name="certwright-checkpoint", daemon=True)
            self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._closing.wait(CHECKPOINT_EVERY):
                # PASSIVE: never waits for the writer or blocks it; what it could not
                # copy this time (or after an error) it copies next time.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()

    def _enter_wal(self) -> None:
        """Switch to WAL. On a new file another process may be switching at the same
        moment, and SQLite answers that with SQLITE_BUSY at once, without its busy
        handler: so try again for a while."""
        deadline = time.monotonic() + 10.0
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
                time.sleep(0.01)

    # -- schema -----------------------------------------------------------------------
    def _refuse_newer(self, version: int) -> None:
        """StoreError when the file's schema ``version`` is newer than this certwright's."""
        if version > len(N.MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this "
                f"certwright knows ({len(N.MIGRATIONS)}); upgrade certwright")

    def _migrate(self) -> None:
        """Bring the schema up to date. The version is read inside the write transaction,
        so two processes opening the same new store never both apply a migration."""
        with self._lock:
            if self._version() == len(N.MIGRATIONS):
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._version()
                self._refuse_newer(version)
                for number in range(version, len(N.MIGRATIONS)):
                    for statement in N.MIGRATIONS[number].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(
                        f"INSERT OR REPLACE INTO {N.T_META}(key, value) "
                        f"VALUES('schema_version', ?)", (str(number + 1),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _version(self) -> int:
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (N.T_META,)
        ).fetchone()
        if not has_meta:
            return 0
        row = self._db.execute(
            f"SELECT value FROM {N.T_META} WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def schema_version(self) -> int:
        row = self._db.execute(
            f"SELECT value FROM {N.T_META} WHERE key='schema_version'").fetchone()
        return int(row[0])

    # -- writes -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """One atomic group of writes; commits at the end of the block."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            tx = self._open_tx = _Tx(self._db)
            try:
                yield tx
                tx.flush()
            except BaseException:
                self._open_tx = None
                self._db.execute("ROLLBACK")
                raise
            self._open_tx = None
            self._db.execute("COMMIT")

    def _flush_open_tx(self) -> None:
        """Reads of runs or the journal inside a transaction see its buffered writes."""
        if self._open_tx is not None:
            self._open_tx.flush()

    # -- reads ------------------------------------------------------------------------
    def find_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            self._flush_open_tx()
            row = self._db.execute(
                f"SELECT id, pipeline, spec_hash, state, status, body, created, updated "
                f"FROM {N.T_RUNS} WHERE id=?", (run_id,)).fetchone()
        return _run_from_row(row) if row else None

    def load_run(self, run_id: str) -> RunRecord:
        run = self.find_run(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r} in {self.path}")
        return run

    def list_runs(self, statuses: Iterable[str] | None = None) -> list[RunRecord]:
        sql = (f"SELECT id, pipeline, spec_hash, state, status, body, created, updated "
               f"FROM {N.T_RUNS}")
        args: tuple[str, ...] = ()
        if statuses is not None:
            args = tuple(statuses)
            sql += f" WHERE status IN ({','.join('?' * len(args))})"
        with self._lock:
            self._flush_open_tx()
            rows = self._db.execute(sql + " ORDER BY created, id", args).fetchall()
        return [_run_from_row(r) for r in rows]

    def run_ids(self, statuses: Iterable[str]) -> list[tuple[str, str]]:
        """(id, spec_hash) of runs with these statuses, cheaply (no bodies parsed)."""
        args = tuple(statuses)
        with self._lock:
            self._flush_open_tx()
            return self._db.execute(
                f"SELECT id, spec_hash FROM {N.T_RUNS} WHERE status IN "
                f"({','.join('?' * len(args))})", args).fetchall()

    def journal(self, run_id: str) -> list[JournalEntry]:
        with self._lock:
            self._flush_open_tx()
            rows = self._db.execute(
                f"SELECT seq, run_id, at, kind, data FROM {N.T_JOURNAL} WHERE run_id=? "
                f"ORDER BY seq", (run_id,)).fetchall()
        return [JournalEntry(run_id=r[1], kind=r[3], data=json.loads(r[4]), at=r[2], seq=r[0])
                for r in rows]

    def timers(self) -> list[Timer]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT due, id, run_id, entry, kind FROM {N.T_TIMERS}").fetchall()
        return [Timer(*r) for r in rows]

    def timers_after(self, timer_id: int) -> list[Timer]:
        """Timers with an id above ``timer_id`` (added since a reader last looked)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT due, id, run_id, entry, kind FROM {N.T_TIMERS} WHERE id > ?",
                (timer_id,)).fetchall()
        return [Timer(*r) for r in rows]

    def runs_for(self, key: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT run_id FROM {N.T_CORRELATIONS} WHERE key=?", (key,)).fetchall()
        return [r[0] for r in rows]

    def correlations(self, run_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT key FROM {N.T_CORRELATIONS} WHERE run_id=? ORDER BY key",
                (run_id,)).fetchall()
        return [r[0] for r in rows]

    def load_spec(self, spec_hash: str) -> tuple[str, str, str]:
        with self._lock:
            row = self._db.execute(
                f"SELECT name, source, text FROM {N.T_SPECS} WHERE hash=?", (spec_hash,)).fetchone()
        if row is None:
            raise StoreError(f"pipeline version {spec_hash[:12]} is not in {self.path}")
        return row[0], row[1], row[2]

    def load_secrets(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT body FROM {N.T_SECRETS} WHERE run_id=?",
                                   (run_id,)).fetchone()
        return dict(json.loads(row[0])) if row else None

    def is_processed(self, source: str, ident: str) -> bool:
        with self._lock:
            return self._db.execute(
                f"SELECT 1 FROM {N.T_PROCESSED} WHERE source=? AND ident=?",
                (source, ident)).fetchone() is not None

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=10)
        with self._lock:
            self._db.close()


ROWS_PER_INSERT = 500  # journal rows or runs per multi-row INSERT


class _Tx:
    """Writes inside one open transaction (see :class:`state.base.Tx`).

    Journal entries and run rows are buffered and written at the end of the transaction
    (or before a read of them), many rows per INSERT: each statement a Python thread runs
    releases and re-takes the GIL, which under load costs far more than the statement.
    Journal sequence numbers are assigned here, from the table's maximum read once per
    transaction: the write lock (BEGIN IMMEDIATE) makes that safe across processes.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._next_seq = 0
        self._journal: list[tuple[int, str, str, str, str]] = []
        self._runs: dict[str, tuple[Any, ...]] = {}

    def append(self, entry: JournalEntry) -> int:
        if not self._next_seq:
            # AUTOINCREMENT keeps the largest number ever used here (explicit ones too) and
            # never reuses one, not even one whose row is gone
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name=?",
                                   (N.T_JOURNAL,)).fetchone()
            self._next_seq = int(row[0] if row else 0) + 1
        seq = self._next_seq
        self._next_seq += 1
        self._journal.append((seq, entry.run_id, entry.at, entry.kind, _dumps(entry.data)))
        return seq

    def put_run(self, run: RunRecord) -> None:
        body = _dumps({k: getattr(run, k) for k in _BODY_FIELDS})
        self._runs[run.id] = (run.id, run.pipeline, run.spec_hash, run.state, run.status, body,
                              run.created, run.updated)

    def flush(self) -> None:
        """Write the buffered journal entries and runs (in seq order)."""
        rows, self._journal = self._journal, []
        for i in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[i:i + ROWS_PER_INSERT]
            self._db.execute(
                f"INSERT INTO {N.T_JOURNAL}(seq, run_id, at, kind, data) VALUES "
                + ",".join(["(?,?,?,?,?)"] * len(chunk)), [v for r in chunk for v in r])
        runs = list(self._runs.values())
        self._runs = {}
        for i in range(0, len(runs), ROWS_PER_INSERT):
            chunk = runs[i:i + ROWS_PER_INSERT]
            self._db.execute(
                f"INSERT OR REPLACE INTO {N.T_RUNS}(id, pipeline, spec_hash, state, status, "
                f"body, created, updated) VALUES " + ",".join(["(?,?,?,?,?,?,?,?)"] * len(chunk)),
                [v for r in chunk for v in r])

    def add_timer(self, run_id: str, entry: int, kind: str, due: str) -> int:
        cur = self._db.execute(
            f"INSERT INTO {N.T_TIMERS}(run_id, entry, kind, due) VALUES(?,?,?,?)",
            (run_id, entry, kind, due))
        return int(cur.lastrowid or 0)

    def delete_timer(self, timer_id: int) -> None:
        self._db.execute(f"DELETE FROM {N.T_TIMERS} WHERE id=?", (timer_id,))

    def clear_timers(self, run_id: str, kinds: Iterable[str] | None = None) -> None:
        if kinds is None:
            self._db.execute(f"DELETE FROM {N.T_TIMERS} WHERE run_id=?", (run_id,))
        else:
            ks = tuple(kinds)
            self._db.execute(
                f"DELETE FROM {N.T_TIMERS} WHERE run_id=? AND kind IN ({','.join('?' * len(ks))})",
                (run_id, *ks))

    def set_correlations(self, run_id: str, entry: int, keys: Iterable[str]) -> None:
        self._db.execute(f"DELETE FROM {N.T_CORRELATIONS} WHERE run_id=?", (run_id,))
        self._db.executemany(
            f"INSERT OR IGNORE INTO {N.T_CORRELATIONS}(key, run_id, entry) VALUES(?,?,?)",
            [(k, run_id, entry) for k in keys])

    def put_spec(self, spec_hash: str, name: str, source: str, text: str) -> None:
        self._db.execute(
            f"INSERT OR IGNORE INTO {N.T_SPECS}(hash, name, source, text, created) "
            f"VALUES(?,?,?,?,?)", (spec_hash, name, source, text, _now()))

    def put_secrets(self, run_id: str, secrets: Mapping[str, Any]) -> None:
        self._db.execute(f"INSERT OR REPLACE INTO {N.T_SECRETS}(run_id, body) VALUES(?,?)",
                         (run_id, json.dumps(secrets)))

    def mark_processed(self, source: str, ident: str, run_id: str | None) -> bool:
        cur = self._db.execute(
            f"INSERT OR IGNORE INTO {N.T_PROCESSED}(source, ident, run_id, at) VALUES(?,?,?,?)",
            (source, ident, run_id, _now()))
        return cur.rowcount == 1


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    body = json.loads(row[5])
    return RunRecord(id=row[0], pipeline=row[1], spec_hash=row[2], state=row[3], status=row[4],
                     created=row[6], updated=row[7], **body)
