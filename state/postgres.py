"""The PostgreSQL store: the :class:`state.base.Store` contract on a PostgreSQL database.

Chosen by ``--store postgresql://...`` (``CERTWRIGHT_STORE``, the configuration's
``store:``); the SQLite store's tables (``names.PG_MIGRATIONS``), in the schema the URL's
``search_path`` names (default ``public``): several stores share a database, a schema each.

How it keeps the contract:

* **Connections.** A pool (``psycopg_pool``) of autocommit connections: a read outside a
  transaction sees every committed write (READ COMMITTED); one connection is taken for the
  whole of a ``transaction()`` block, and reads by the thread in that block go to it, so
  they see its writes. A connection found broken (the server restarted) is dropped by the
  pool and a read is tried once more on a fresh one; a transaction is never retried here
  (its block is the caller's code): it fails as a ServerFault and PostgreSQL has rolled
  it back. A long-lived process (a daemon) keeps ``warm`` connections open however long
  it idles (the pool closes the others after 10 idle minutes): the first mail after a
  quiet hour would otherwise wait for new sessions to be set up.
* **One writer at a time.** Each transaction first takes ``pg_advisory_xact_lock`` on the
  store's write key (:data:`state.names.PG_LOCK_WRITE` and the schema): the promise of
  SQLite's ``BEGIN IMMEDIATE``; the same statement reads the journal's next seq
  (``_postgres_tx``). Journal seqs and timer ids come from identity sequences moved under
  that lock, so they increase in commit order and ``timers_after(id)`` and
  ``waits_after(seq)`` miss nothing; a rolled-back transaction's numbers are skipped or
  given again (no one saw them), a committed one's never.
* **Migrations** (``state.postgres_schema``) run in one transaction under the migration
  advisory lock: two processes opening a new store at once apply each migration once; a
  store whose schema is newer than this code is refused.
* **Durability.** ``synchronous="full"`` is ``synchronous_commit=on`` (a commit is on the
  server's disk before it returns); ``"normal"`` is ``off`` (a crash of the server may lose
  the last few hundred milliseconds of commits, never make them half-applied).
* **No clock.** The store reads no time of its own (``put_spec`` and ``mark_processed``
  stamp rows as the SQLite store does); instants come from the engine's clock (leases
  excepted: they expire on the server's clock, one for every host).
* **Daemons** serving the store each hold a shared session advisory lock on the daemon key
  (:meth:`hold_daemon`), whose exclusive form ``store migrate`` tries, so it never copies a
  store a daemon writes; the connection's ``application_name`` names the host and pid.

Hazards: a server failure leaves as a ServerFault (exit 5) naming the URL without its
password. A daemon's session lock dies with its connection (a server restart): ``store
migrate`` should also find no live heartbeat. psycopg is imported only when needed.

Several daemons: runs are leased (``state.leases_pg``); with ``fence`` set (a daemon's
``PgLeases``) every transaction checks, before its first write for a run, that the run's
lease is still this daemon's (fencing), or rolls back. Wake-ups: ``state.notify_pg``
(``announce`` off: a foreground run's writes wake no daemon).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, cast

from certwright.errors import RunLocked, RunNotFound, StoreError
from certwright.state import names as N
from certwright.state._postgres_kept import KeptReads
from certwright.state._postgres_records import RecordReads
from certwright.state._postgres_tx import LOCK_AND_NEXT_SEQ, RUN_COLUMNS, RUN_IDS, Fence, PgTx
from certwright.state._sqlite_tx import run_from_row
from certwright.state.postgres_faults import ServerFault, pg_fault
from certwright.state.postgres_schema import migrate
from certwright.state.records import JournalEntry, RunRecord, Timer
from certwright.state.sealing import Sealer
from certwright.state.urls import display_url

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

POOL_SIZE = 4          # connections per store object: the engine's writer and a few readers
CONNECT_TIMEOUT = 5    # seconds to reach the server, and to wait for a pooled connection
LOCK_TIMEOUT = 10.0    # seconds a transaction waits for the write lock (SQLite's busy_timeout)
IDLE_TX_TIMEOUT_MS = 10_000  # the server ends a session stopped mid-transaction: its lock goes
_SYNC = {"full": "on", "normal": "off"}


class PostgresStore(KeptReads, RecordReads):
    """A :class:`state.base.Store` on the PostgreSQL database (and schema) of ``url``.

    Raises ServerFault when the server cannot be reached or refuses us, StoreError when its
    schema is newer than this certwright's. ``lock_timeout``: how long a transaction waits
    for another's to end before it fails as a ServerFault ("busy"), as SQLite's does."""

    def __init__(self, url: str, *, synchronous: str = "full", readonly: bool = False,
                 lock_timeout: float = LOCK_TIMEOUT, sealer: Sealer | None = None,
                 warm: int = 0) -> None:
        self.url = url
        self._warm = min(max(0, warm), POOL_SIZE)  # connections always open (see the module)
        self.sealer = sealer  # the store key: secrets and artefacts sealed (state.sealing)
        self.path = display_url(url)  # what messages name (never the password)
        self.readonly = readonly
        self.outdated = False
        self._lock = threading.RLock()
        self._tx: PgTx | None = None  # the open transaction, and its thread
        self._tx_thread: int | None = None
        self._daemon_conn: psycopg.Connection[Any] | None = None
        self.fence: Fence | None = None  # several daemons: the lease check of every write
        self.announce = True  # no fence: wake the daemons for runs and timers (notify_pg)
        if synchronous not in _SYNC:
            raise StoreError(f"synchronous must be one of {sorted(_SYNC)}, not {synchronous!r}")
        self._sync = _SYNC[synchronous]
        self._lock_ms = max(1, int(lock_timeout * 1000))
        self._pool = self._open()

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        self._configure(conn)
        return conn

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"SET synchronous_commit = {self._sync}; SET lock_timeout = {self._lock_ms}; "
                     f"SET idle_in_transaction_session_timeout = {IDLE_TX_TIMEOUT_MS}")
        if self.readonly:
            conn.execute("SET default_transaction_read_only = on")

    def _open(self) -> ConnectionPool[Any]:
        """Reach the server once directly (so a refusal is reported in its own words, not
        as a pool's timeout), migrate, then open the pool."""
        from psycopg_pool import ConnectionPool
        try:
            with self._connect() as first:
                migrate(first, self.path, readonly=self.readonly)
            pool: ConnectionPool[Any] = ConnectionPool(
                self.url, min_size=self._warm, max_size=POOL_SIZE, timeout=CONNECT_TIMEOUT,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                configure=self._configure, open=False, name="certwright-store")
            try:
                pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            except BaseException:
                pool.close()  # its worker threads, and whatever it connected
                raise
            return pool
        except ServerFault:
            raise
        except Exception as exc:
            self._raise_fault(exc, "opening")
            raise  # not a storage failure: as it was

    def _raise_fault(self, exc: BaseException, doing: str) -> None:
        """Raise the ServerFault ``exc`` means (from it); return when it means none."""
        fault = pg_fault(exc, self.path, doing)
        if fault is not None:
            raise fault from exc

    @contextmanager
    def _reading(self, doing: str, table: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A connection to read on: the open transaction's (in its thread), else a pooled
        one. A failure leaves as a ServerFault saying ``doing``. ``table``: the one table
        the caller reads (None: any), so only what is buffered for it is written first."""
        if self._tx is not None and self._tx_thread == threading.get_ident():
            yield self._tx.flush(table)  # its buffered rows first, so the read sees them
            return
        try:
            with self._pool.connection() as conn:
                yield conn
        except ServerFault:
            raise
        except Exception as exc:
            fault = pg_fault(exc, self.path, doing)
            if fault is None:
                raise
            raise fault from exc

    def _rows(self, doing: str, sql: str, args: Any = (),
              table: str | None = None) -> list[tuple[Any, ...]]:
        """The rows of a read (of ``table`` only, when given: see :meth:`_reading`); a
        connection the server dropped is replaced once."""
        import psycopg
        for attempt in (1, 2):
            try:
                with self._reading(doing, table) as conn:
                    cur = conn.execute(sql, args)
                    # rows when it gave columns (a command gives none); not cur.description,
                    # which builds a Column per column at every look
                    res = cur.pgresult
                    return list(cur.fetchall()) if res is not None and res.nfields else []
            except ServerFault as fault:
                cause = fault.__cause__
                if attempt == 2 or not isinstance(cause, psycopg.OperationalError) \
                        or self._tx is not None:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    def query(self, doing: str, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        """One statement's rows, in the thread's open transaction or autocommitted."""
        return self._rows(doing, sql, args)

    def in_transaction(self) -> bool:
        """Whether the calling thread has this store's transaction open (so it holds the
        store's write lock)."""
        return self._tx is not None and self._tx_thread == threading.get_ident()

    def connection(self, doing: str, table: str | None = None,
                   ) -> AbstractContextManager[psycopg.Connection[Any]]:
        """The thread's open transaction's connection, else a pooled one (``table``: the
        one table the caller's statements touch, see :meth:`_reading`)."""
        return self._reading(doing, table)

    # -- schema --------------------------------------------------------------------------
    def schema_version(self) -> int:
        rows = self._rows("reading", f"SELECT value FROM {N.T_META} "
                                     f"WHERE key='schema_version'")
        return int(rows[0][0])

    # -- writes --------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[PgTx]:
        """One atomic group of writes under the store's write lock; commits at the end of
        the block, rolls back when it raises. A server failure leaves as a ServerFault
        (the transaction rolled back by the server)."""
        with self._lock:
            if self.readonly:
                raise ServerFault("read-only", self.path, "writing to",
                                  "opened for reading only")
            try:
                conn = self._pool.getconn()
            except Exception as exc:
                self._raise_fault(exc, "writing to")
                raise
            try:
                with conn.transaction():
                    row = conn.execute(LOCK_AND_NEXT_SEQ, (N.PG_LOCK_WRITE,)).fetchone()
                    self._tx = PgTx(conn, self.fence, announce=self.announce,
                                    sealer=self.sealer, next_seq=int(row[0]) if row else 0)
                    self._tx_thread = threading.get_ident()
                    try:
                        yield self._tx
                        self._tx.seal()
                    finally:
                        self._tx = self._tx_thread = None
            except ServerFault:
                raise
            except Exception as exc:
                self._raise_fault(exc, "writing to")
                raise
            finally:
                self._pool.putconn(conn)

    # -- a daemon serving the store -------------------------------------------------------
    def hold_daemon(self, *, alone: bool = False) -> None:
        """Mark this process as a daemon serving the store (several may; ``alone``: none
        other, for ``store migrate``) until :meth:`close` or its death (RunLocked if not)."""
        label = f"certwright daemon {socket.gethostname()} {os.getpid()}"
        try:
            conn = self._connect()
            conn.execute("SELECT set_config('application_name', %s, false)", (label[:63],))
            how = "pg_try_advisory_lock" if alone else "pg_try_advisory_lock_shared"
            row = conn.execute(f"SELECT {how}(%s, hashtext(current_schema()))",
                               (N.PG_LOCK_DAEMON,)).fetchone()
        except Exception as exc:
            self._raise_fault(exc, "locking")
            raise
        if not (row and row[0]):
            conn.close()
            pid, host = self.daemon_holder()
            raise RunLocked(f"the PostgreSQL store {self.path} (a daemon on host "
                            f"{host or 'unknown'})", pid)
        self._daemon_conn = conn

    def daemon_holder(self) -> tuple[int | None, str | None]:
        """(pid, host) of a daemon serving the store, (None, None) when none does."""
        rows = self._rows("reading", """
            SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
            WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s
              AND l.objid = (hashtext(current_schema())::bigint & 4294967295)::oid
              AND l.objsubid = 2 AND l.database = (
                  SELECT oid FROM pg_database WHERE datname = current_database())""",
            (N.PG_LOCK_DAEMON,))
        for (name,) in rows:  # the first holder that is a daemon (several may hold it)
            parts = str(name or "").split()
            if len(parts) == 4 and parts[3].isdigit():
                return int(parts[3]), parts[2]
        return None, None

    def daemon_serves(self) -> bool:
        """Whether a daemon holds the store now (another session's daemon lock)."""
        with self._reading("reading") as conn:  # lock and unlock on the same session
            row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))",
                               (N.PG_LOCK_DAEMON,)).fetchone()
            if row and row[0]:
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(current_schema()))",
                             (N.PG_LOCK_DAEMON,))
                return False
        return True

    # -- reads ---------------------------------------------------------------------------
    def find_run(self, run_id: str) -> RunRecord | None:
        rows = self._rows("reading runs from", f"SELECT {RUN_COLUMNS} FROM {N.T_RUNS} "
                          f"WHERE id=%s", (run_id,), N.T_RUNS)
        return run_from_row(rows[0]) if rows else None

    def load_run(self, run_id: str) -> RunRecord:
        run = self.find_run(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r} in {self.path}")
        return run

    def list_runs(self, statuses: Iterable[str] | None = None) -> list[RunRecord]:
        sql, args = f"SELECT {RUN_COLUMNS} FROM {N.T_RUNS}", cast("tuple[Any, ...]", ())
        if statuses is not None:
            sql, args = sql + " WHERE status = ANY(%s)", (list(statuses),)
        rows = self._rows("reading runs from",
                          sql + ' ORDER BY created COLLATE "C", id COLLATE "C"', args)
        return [run_from_row(r) for r in rows]

    def run_ids(self, statuses: Iterable[str], *,
                host: str | None = None) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self._rows("reading runs from", RUN_IDS,
                                                 (list(statuses), host, host))]

    def journal(self, run_id: str) -> list[JournalEntry]:
        rows = self._rows("reading the journal from",
                          f"SELECT seq, run_id, at, kind, data FROM {N.T_JOURNAL} "
                          f"WHERE run_id=%s ORDER BY seq", (run_id,))
        return [JournalEntry(run_id=r[1], kind=r[3], data=json.loads(r[4]), at=r[2],
                             seq=int(r[0])) for r in rows]

    def timers(self) -> list[Timer]:
        rows = self._rows("reading timers from",
                          f"SELECT due, id, run_id, entry, kind FROM {N.T_TIMERS}")
        return [Timer(r[0], int(r[1]), r[2], int(r[3]), r[4]) for r in rows]

    def timers_after(self, timer_id: int) -> list[Timer]:
        rows = self._rows("reading timers from",
                          f"SELECT due, id, run_id, entry, kind FROM {N.T_TIMERS} "
                          f"WHERE id > %s", (timer_id,))
        return [Timer(r[0], int(r[1]), r[2], int(r[3]), r[4]) for r in rows]

    def waits_after(self, seq: int) -> list[tuple[int, str]]:
        return [(int(r[0]), r[1]) for r in self._rows("reading the journal from", f"SELECT seq,"
                f" run_id FROM {N.T_JOURNAL} WHERE seq>%s AND kind='step_waiting' ORDER BY seq",
                (seq,))]

    def runs_for(self, key: str) -> list[str]:
        rows = self._rows("reading correlations from",
                          f"SELECT run_id FROM {N.T_CORRELATIONS} WHERE key=%s", (key,))
        return [r[0] for r in rows]

    def correlations(self, run_id: str) -> list[str]:
        rows = self._rows("reading correlations from",
                          f"SELECT key FROM {N.T_CORRELATIONS} WHERE run_id=%s ORDER BY key",
                          (run_id,))
        return [r[0] for r in rows]

    def load_spec(self, spec_hash: str) -> tuple[str, str, str]:
        rows = self._rows("reading pipelines from",
                          f"SELECT name, source, text FROM {N.T_SPECS} WHERE hash=%s",
                          (spec_hash,))
        if not rows:
            raise StoreError(f"pipeline version {spec_hash[:12]} is not in {self.path}")
        return rows[0][0], rows[0][1], rows[0][2]

    def run_counts(self) -> list[tuple[str, str, str, int]]:
        rows = self._rows("reading runs from",
                          f"SELECT pipeline, state, status, COUNT(*) FROM {N.T_RUNS} GROUP BY "
                          f'pipeline, state, status ORDER BY pipeline COLLATE "C", '
                          f'state COLLATE "C", status COLLATE "C"')
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]

    def is_processed(self, source: str, ident: str) -> bool:
        return bool(self._rows("reading the processed log from",
                               f"SELECT 1 FROM {N.T_PROCESSED} WHERE source=%s AND ident=%s",
                               (source, ident)))

    def close(self) -> None:
        with self._lock:
            if self._daemon_conn is not None:
                with contextlib.suppress(Exception):
                    self._daemon_conn.close()
                self._daemon_conn = None
            self._pool.close()
