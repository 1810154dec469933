"""The SQLite store: WAL mode, one file in the state directory.

Hazards: SQLite in WAL mode with ``synchronous=NORMAL`` survives a crash of the process
but may lose the last commits on power loss; ``FULL`` (our default) syncs every commit.
One connection per store object; the engine is its only writer, other processes (``status``,
``history``) read through their own connections, which WAL allows while a writer works.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from certwright.errors import RunNotFound, StoreError
from certwright.state import names as N
from certwright.state._sqlite_tx import (
    RUN_COLUMNS,
    Tx,
    certificate_from_row,
    daemon_from_row,
    renewal_from_row,
    run_from_row,
)
from certwright.state.artefacts import Artefact, artefact_from_body, secrets_from_body
from certwright.state.faults import StoreFault, guarded, store_fault
from certwright.state.opening import Connect, check_integrity, open_reader, open_writer
from certwright.state.records import (
    CertificateRecord,
    DaemonRecord,
    JournalEntry,
    RenewalRecord,
    RunRecord,
    Timer,
)
from certwright.state.sealing import Sealer

CHECKPOINT_EVERY = 0.5  # seconds between background checkpoints
CHECKPOINT_BACKSTOP_PAGES = 20000  # commits checkpoint themselves past this WAL size


class SQLiteStore:
    """A :class:`state.base.Store` on one SQLite file (``path``, or ``:memory:``).

    Every storage failure it meets (opening, reading, a transaction) leaves as a
    :class:`state.faults.StoreFault` naming the file, the cause and what to do.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "full",
                 background_checkpoint: bool = False, readonly: bool = False,
                 connect: Connect = sqlite3.connect, sealer: Sealer | None = None) -> None:
        """``sealer``: the store key, sealing secrets and artefacts (``state.sealing``).
        ``background_checkpoint``: copy the WAL into the database from a thread of its
        own (every :data:`CHECKPOINT_EVERY` seconds) instead of in whichever commit crosses
        SQLite's 1000-page mark, which then takes several fsyncs longer (a latency spike
        on the path of a transition). Commits still checkpoint past
        :data:`CHECKPOINT_BACKSTOP_PAGES`, should the thread fall behind.

        ``readonly``: open for reading only, writing nothing at all (``status``,
        ``history``; see :mod:`state.opening`); transactions then fail, and an older
        schema is read as it is (:attr:`outdated` says so). A writer refuses a damaged
        file (StoreFault "damaged"). ``connect``: how to open the SQLite connection
        (``sqlite3.connect`` or a wrapper with its signature, e.g. to inject faults)."""
        self.path = str(path)
        self.readonly = readonly
        self.sealer = sealer
        self._lock = threading.RLock()
        self._open_tx: Tx | None = None
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        try:
            self._open(synchronous, connect)
        except BaseException:
            if getattr(self, "_db", None) is not None:
                self._db.close()
            raise
        if background_checkpoint and self.path != ":memory:" and not readonly:
            self._db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP_PAGES}")
            self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                                  name="certwright-checkpoint", daemon=True)
            self._checkpointer.start()

    @guarded("opening")
    def _open(self, synchronous: str, connect: Connect) -> None:
        if self.readonly:
            self._db = open_reader(self.path, connect)
            self.outdated = self._version() < len(N.MIGRATIONS)
            self._refuse_newer(self._version())
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = open_writer(self.path, connect)
        self._db.execute("PRAGMA busy_timeout=10000")
        if self.path != ":memory:":
            check_integrity(self._db, self.path)
        self._enter_wal()
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._migrate()
        self.outdated = False

    def _checkpoint_loop(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:  # the next commit past the backstop checkpoints instead
            return
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
                    raise  # the guard of _open says which kind of failure this is
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
    def transaction(self) -> Iterator[Tx]:
        """One atomic group of writes; commits at the end of the block.

        A storage failure inside (a write, the commit) rolls the whole group back and
        leaves as a StoreFault: the store then holds what it held before."""
        with self._lock:
            self._begin()
            tx = self._open_tx = Tx(self._db, self.sealer)
            try:
                yield tx
                tx.flush()
                self._open_tx = None
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._open_tx = None
                with contextlib.suppress(sqlite3.Error):  # no transaction left is fine
                    self._db.execute("ROLLBACK")
                fault = store_fault(exc, self.path, "writing to") \
                    if isinstance(exc, sqlite3.Error) else None
                if fault is None:
                    raise
                raise fault from exc

    @guarded("writing to")
    def _begin(self) -> None:
        if self.readonly:
            raise StoreFault("read-only", self.path, "writing to",
                             "opened for reading only")
        self._db.execute("BEGIN IMMEDIATE")

    def _flush_open_tx(self) -> None:
        """Reads of runs or the journal inside a transaction see its buffered writes."""
        if self._open_tx is not None:
            self._open_tx.flush()

    # -- reads ------------------------------------------------------------------------
    @guarded("reading runs from")
    def find_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            self._flush_open_tx()
            row = self._db.execute(
                f"SELECT {RUN_COLUMNS} FROM {N.T_RUNS} WHERE id=?", (run_id,)).fetchone()
        return run_from_row(row) if row else None

    def load_run(self, run_id: str) -> RunRecord:
        run = self.find_run(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r} in {self.path}")
        return run

    @guarded("reading runs from")
    def list_runs(self, statuses: Iterable[str] | None = None) -> list[RunRecord]:
        sql = f"SELECT {RUN_COLUMNS} FROM {N.T_RUNS}"
        args: tuple[str, ...] = ()
        if statuses is not None:
            args = tuple(statuses)
            sql += f" WHERE status IN ({','.join('?' * len(args))})"
        with self._lock:
            self._flush_open_tx()
            rows = self._db.execute(sql + " ORDER BY created, id", args).fetchall()
        return [run_from_row(r) for r in rows]

    @guarded("reading runs from")
    def run_ids(self, statuses: Iterable[str], *,
                host: str | None = None) -> list[tuple[str, str]]:
        """(id, spec_hash) of runs with these statuses, cheaply (no bodies parsed)."""
        args: tuple[str, ...] = tuple(statuses)
        sql = (f"SELECT id, spec_hash FROM {N.T_RUNS} WHERE status IN "
               f"({','.join('?' * len(args))})")
        if host is not None:
            sql, args = sql + " AND (wants_host IS NULL OR wants_host = ?)", (*args, host)
        with self._lock:
            self._flush_open_tx()
            return self._db.execute(sql, args).fetchall()

    @guarded("reading runs from")
    def run_counts(self) -> list[tuple[str, str, str, int]]:
        with self._lock:
            self._flush_open_tx()
            rows = self._db.execute(
                f"SELECT pipeline, state, status, COUNT(*) FROM {N.T_RUNS} "
                f"GROUP BY pipeline, state, status ORDER BY pipeline, state, status").fetchall()
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]

    @guarded("reading the journal from")
    def journal(self, run_id: str) -> list[JournalEntry]:
        with self._lock:
            self._flush_open_tx()
            rows = self._db.execute(
                f"SELECT seq, run_id, at, kind, data FROM {N.T_JOURNAL} WHERE run_id=? "
                f"ORDER BY seq", (run_id,)).fetchall()
        return [JournalEntry(run_id=r[1], kind=r[3], data=json.loads(r[4]), at=r[2], seq=r[0])
                for r in rows]

    @guarded("reading timers from")
    def timers(self) -> list[Timer]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT due, id, run_id, entry, kind FROM {N.T_TIMERS}").fetchall()
        return [Timer(*r) for r in rows]

    @guarded("reading timers from")
    def timers_after(self, timer_id: int) -> list[Timer]:
        """Timers with an id above ``timer_id`` (added since a reader last looked)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT due, id, run_id, entry, kind FROM {N.T_TIMERS} WHERE id > ?",
                (timer_id,)).fetchall()
        return [Timer(*r) for r in rows]

    @guarded("reading the journal from")
    def waits_after(self, seq: int) -> list[tuple[int, str]]:
        with self._lock:
            self._flush_open_tx()
            return self._db.execute(
                f"SELECT seq, run_id FROM {N.T_JOURNAL} WHERE seq > ? AND kind='step_waiting' "
                f"ORDER BY seq", (seq,)).fetchall()

    @guarded("reading correlations from")
    def runs_for(self, key: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT run_id FROM {N.T_CORRELATIONS} WHERE key=?", (key,)).fetchall()
        return [r[0] for r in rows]

    @guarded("reading correlations from")
    def correlations(self, run_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT key FROM {N.T_CORRELATIONS} WHERE run_id=? ORDER BY key",
                (run_id,)).fetchall()
        return [r[0] for r in rows]

    @guarded("reading pipelines from")
    def load_spec(self, spec_hash: str) -> tuple[str, str, str]:
        with self._lock:
            row = self._db.execute(
                f"SELECT name, source, text FROM {N.T_SPECS} WHERE hash=?", (spec_hash,)).fetchone()
        if row is None:
            raise StoreError(f"pipeline version {spec_hash[:12]} is not in {self.path}")
        return row[0], row[1], row[2]

    @guarded("reading secrets from")
    def load_secrets(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(f"SELECT body FROM {N.T_SECRETS} WHERE run_id=?",
                                   (run_id,)).fetchone()
        return secrets_from_body(run_id, row[0], self.sealer) if row else None

    @guarded("reading what runs made from")
    def artefacts(self, run_id: str, name: str | None = None) -> list[Artefact]:
        if self.outdated:  # a read-only look at a store from before artefacts
            return []
        sql = f"SELECT name, body FROM {N.T_ARTEFACTS} WHERE run_id=?"
        args: tuple[str, ...] = (run_id,)
        if name is not None:
            sql, args = sql + " AND name=?", (run_id, name)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY name", args).fetchall()
        return [artefact_from_body(run_id, r[0], r[1], self.sealer) for r in rows]

    @guarded("reading the certificates from")
    def find_certificate(self, name: str) -> CertificateRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT name, run_id, renew_at, body FROM "
                                   f"{N.T_CERTIFICATES} WHERE name=?", (name,)).fetchone()
        return certificate_from_row(row) if row else None

    @guarded("reading the certificates from")
    def list_certificates(self) -> list[CertificateRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT name, run_id, renew_at, body FROM "
                                    f"{N.T_CERTIFICATES} ORDER BY name").fetchall()
        return [certificate_from_row(r) for r in rows]

    @guarded("reading the renewal schedule from")
    def find_renewal(self, name: str) -> RenewalRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT name, next_at, body FROM {N.T_RENEWALS} "
                                   f"WHERE name=?", (name,)).fetchone()
        return renewal_from_row(row) if row else None

    @guarded("reading the renewal schedule from")
    def list_renewals(self) -> list[RenewalRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT name, next_at, body FROM {N.T_RENEWALS} "
                                    f"ORDER BY name").fetchall()
        return [renewal_from_row(r) for r in rows]

    @guarded("reading the daemons from")
    def list_daemons(self) -> list[DaemonRecord]:
        if self.outdated:  # a read-only look at a store from before the daemons table
            return []
        with self._lock:
            rows = self._db.execute(f"SELECT id, heartbeat, body FROM {N.T_DAEMONS} "
                                    f"ORDER BY id").fetchall()
        return [daemon_from_row(r) for r in rows]

    @guarded("reading the processed log from")
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
