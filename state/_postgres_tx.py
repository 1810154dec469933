"""The writes of one PostgreSQL transaction (:class:`PgTx`).

Used only by :mod:`state.postgres`, inside its transaction (which holds the store's write
lock, an advisory transaction lock), so a storage failure here leaves through the store's
transaction as a ServerFault. Rows are encoded as the SQLite store encodes them (JSON
bodies, ISO instants as text), so ``store migrate`` copies them unchanged.

Journal entries and run rows are buffered, as in the SQLite store, and written by
:meth:`PgTx.flush` at the end of the transaction (or before a read in it), many rows per
INSERT: a pump of the daemon writes thousands of them, and one round trip to the server
each cost more than the rows. Those statements are sent as they are, with numbered
placeholders (:func:`_values`), not parsed by psycopg at every execution. Clears of all of
a run's timers or correlations (every state entered clears both) wait too: the runs are
noted and their rows deleted in one statement at the flush, or before anything else is
written to that table, so the writes to each table keep their order.

Journal sequence numbers are assigned here: the statement that takes the write lock also
reads the journal's identity sequence (:data:`LOCK_AND_NEXT_SEQ`, without moving it), the
appends of the transaction count on from there, and the statement that writes the last
journal rows moves the sequence to the last one used. The write lock makes that safe
across daemons (every journal write takes it), and numbers grow in commit order, so a
reader following the journal by seq misses nothing. Numbers of a transaction that rolled
back may be given again (no one saw them), a committed one's never. That is two round
trips to the server fewer per transaction than a ``nextval`` and a ``setval`` of their
own, in every transaction a daemon commits for a mail.

Fencing: with a :class:`Fence` (several daemons: ``state.leases_pg.PgLeases``), every run
the transaction writes (journal, run row, timers, correlations, secrets) is checked against
its lease before the transaction commits, and a refusal (this daemon no longer holds the
run's lease) rolls the whole transaction back, so nothing of it is committed. A run whose
lease this daemon holds is checked by :meth:`PgTx.seal`, all such runs in one statement
(``fence.check_held``), at the end; a run it holds no lease of is checked (and its lease
taken) at its first write (``fence.check``). Checking late is as safe as checking early:
the transaction holds the store's write lock throughout, which every write of every
daemon, lease takeovers included, takes first.

Wake-ups (:mod:`state.notify_pg`): a writer that is not a daemon (no fence) and says it
hands its work on (``announce``: the store's, on unless the writer drives the run itself,
as a foreground ``run`` does) sends a ``run`` notice when it writes a running run, and a
``timer`` notice when it adds a timer, once each per transaction, so the daemons take or
load them at once rather than at their next poll. A daemon's own writes send none here:
it holds the runs it writes and fires the timers it sets.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from certwright.errors import StoreError
from certwright.state import names as N
from certwright.state._sqlite_tx import _BODY_FIELDS, ROWS_PER_INSERT, RUN_COLUMNS, _dumps, _now
from certwright.state.artefacts import Artefact, artefact_body, secrets_body
from certwright.state.notify_pg import Notice, send
from certwright.state.records import (
    RUNNING,
    CertificateRecord,
    DaemonRecord,
    JournalEntry,
    RenewalRecord,
    RunRecord,
)
from certwright.state.sealing import Sealer

if TYPE_CHECKING:
    import psycopg

# RUN_COLUMNS and LOCK_AND_NEXT_SEQ for state.postgres
__all__ = ["LOCK_AND_NEXT_SEQ", "RUN_COLUMNS", "RUN_IDS", "Fence", "PgTx"]

# the ids of runs with some statuses, those waiting for another host left out unless the
# host is None (see Store.run_ids)
RUN_IDS = (f"SELECT id, spec_hash FROM {N.T_RUNS} WHERE status = ANY(%s) AND (%s::text IS "
           f"NULL OR wants_host IS NULL OR wants_host = %s)")


# the store's write lock taken (see the module), then the journal's next seq read: the
# sequence's last value as the last transaction moved it (OFFSET 0 keeps the lock's
# subquery apart, so it is taken before the sequence is read)
_SEQ = f"pg_get_serial_sequence('{N.T_JOURNAL}', 'seq')"
LOCK_AND_NEXT_SEQ = (f"SELECT coalesce(pg_sequence_last_value({_SEQ}::regclass), 0) + 1 "
                     f"FROM (SELECT pg_advisory_xact_lock(%s, hashtext(current_schema())) "
                     f"OFFSET 0) AS locked")

_JOURNAL_ROWS = (f"INSERT INTO {N.T_JOURNAL}(seq, run_id, at, kind, data) OVERRIDING SYSTEM "
                 f"VALUE VALUES ")
_RUN_ROWS = f"INSERT INTO {N.T_RUNS}({RUN_COLUMNS}) VALUES "
_RUN_REPLACES = (" ON CONFLICT (id) DO UPDATE SET pipeline=EXCLUDED.pipeline, "
                 "spec_hash=EXCLUDED.spec_hash, state=EXCLUDED.state, status=EXCLUDED.status, "
                 "body=EXCLUDED.body, created=EXCLUDED.created, updated=EXCLUDED.updated, "
                 "host=EXCLUDED.host, wants_host=EXCLUDED.wants_host")


@functools.lru_cache(maxsize=64)
def _values(head: str, tail: str, width: int, rows: int) -> str:
    """``head`` + ``rows`` groups of ``width`` numbered placeholders (``($1,$2),($3,$4)``) +
    ``tail``, made once per size. Sent as it is (a ``RawCursor``): psycopg parses a
    ``%s`` query of more than 50 parameters anew at every execution, which for a few
    thousand of them cost several times what sending the rows did."""
    groups = ("(" + ",".join(f"${r * width + c + 1}" for c in range(width)) + ")"
              for r in range(rows))
    return head + ",".join(groups) + tail


@functools.lru_cache(maxsize=64)
def _moving_seq(head: str, width: int, rows: int) -> str:
    """:func:`_values` of journal rows in a statement that also moves the journal's
    sequence to the parameter after them (the last seq written): one round trip."""
    return (f"WITH written AS ({_values(head, '', width, rows)}) "
            f"SELECT setval({_SEQ}, ${rows * width + 1})")


class Fence(Protocol):
    """Checks, inside a transaction, that its writes for a run may commit."""

    def token(self, run_id: str) -> int | None:
        """The token of the lease this daemon holds on ``run_id`` (None: none held)."""

    def check(self, conn: psycopg.Connection[Any], run_id: str) -> None:
        """Raise (a StoreError) when writes for ``run_id`` must not commit."""

    def check_held(self, conn: psycopg.Connection[Any], run_ids: list[str]) -> None:
        """As :meth:`check` for runs this daemon holds a lease of, in one go."""


# Marks every (source, ident) processed, or none when one is marked already: how many
_MARK_ALL = f"""
    WITH want AS (SELECT * FROM unnest(%s::text[], %s::text[]) AS w(source, ident)),
    ins AS (
        INSERT INTO {N.T_PROCESSED}(source, ident, run_id, at)
        SELECT source, ident, %s, %s FROM want
        WHERE NOT EXISTS (SELECT 1 FROM {N.T_PROCESSED} p JOIN want USING (source, ident))
        ON CONFLICT DO NOTHING RETURNING 1)
    SELECT count(*) FROM ins
"""


class PgTx:
    """Writes inside one open transaction (see :class:`state.base.Tx`): journal entries and
    run rows buffered until :meth:`flush`, the others sent at once."""

    def __init__(self, conn: psycopg.Connection[Any], fence: Fence | None = None, *,
                 announce: bool = False, sealer: Sealer | None = None,
                 next_seq: int = 0) -> None:
        """``next_seq``: the journal's next seq, read under the write lock (0: read it at
        the first append)."""
        self._conn = conn
        self._sealer = sealer
        self._fence = fence
        self._next_seq = next_seq
        self._journal: list[tuple[int, str, str, str, str]] = []
        self._runs: dict[str, tuple[Any, ...]] = {}
        # runs whose timers or correlations are all deleted at the next flush (see the module)
        self._cleared: dict[str, dict[str, None]] = {N.T_TIMERS: {}, N.T_CORRELATIONS: {}}
        self._fenced: set[str] = set()
        self._held: list[str] = []  # runs to check in seal()
        self._announce = announce and fence is None  # see the module: wake-ups
        self._sent: set[str] = set()

    def _wake(self, kind: str) -> None:
        """Send a ``kind`` notice to the daemons, once per transaction (see the module)."""
        if self._announce and kind not in self._sent:
            send(self._conn, Notice(kind, ""))
            self._sent.add(kind)

    def _for(self, run_id: str) -> None:
        """Fence the run's writes once per transaction (see the module)."""
        if self._fence is None or run_id in self._fenced:
            return
        if self._fence.token(run_id) is None:
            self._fence.check(self._conn, run_id)
        else:
            self._held.append(run_id)
        self._fenced.add(run_id)

    def flush(self, table: str | None = None) -> psycopg.Connection[Any]:
        """Write the buffered clears, journal entries and runs (with ``table``: only those
        a read of that table would miss); the transaction's connection."""
        for name in self._cleared:
            if table in (None, name):
                self._delete_cleared(name)
        if table in (None, N.T_JOURNAL):
            rows, self._journal = self._journal, []
            self._insert_many(_JOURNAL_ROWS, 5, rows, moves_seq=True)
        if table in (None, N.T_RUNS):
            runs, self._runs = list(self._runs.values()), {}
            self._insert_many(_RUN_ROWS, 10, runs, _RUN_REPLACES)
        return self._conn

    def _delete_cleared(self, table: str) -> None:
        """Delete the rows of ``table`` of the runs cleared since the last time, at once."""
        ids, self._cleared[table] = self._cleared[table], {}
        if ids:
            self._conn.execute(f"DELETE FROM {table} WHERE run_id = ANY(%s)", (list(ids),))

    def _insert_many(self, head: str, width: int, rows: list[tuple[Any, ...]],
                     tail: str = "", *, moves_seq: bool = False) -> None:
        """``rows`` in statements of up to ROWS_PER_INSERT rows each (see :func:`_values`);
        ``moves_seq``: the last statement also moves the journal's sequence to the first
        value of its last row (the seq)."""
        if not rows:
            return
        from psycopg import RawCursor
        with RawCursor(self._conn) as cur:
            for i in range(0, len(rows), ROWS_PER_INSERT):
                chunk = rows[i:i + ROWS_PER_INSERT]
                args = [v for r in chunk for v in r]
                if moves_seq and i + ROWS_PER_INSERT >= len(rows):
                    cur.execute(_moving_seq(head, width, len(chunk)), [*args, chunk[-1][0]])
                else:
                    cur.execute(_values(head, tail, width, len(chunk)), args)

    def seal(self) -> None:
        """Write what is buffered, then check the leases of the runs written, just before
        the commit (see the module). The writes and the check go in one pipeline: one
        round trip to the server, the check's rows (or the first error) awaited once."""
        if not (self._held or self._journal or self._runs or any(self._cleared.values())):
            return
        with self._conn.pipeline():
            self.flush()
            if self._fence is not None and self._held:
                self._fence.check_held(self._conn, self._held)
                self._held = []

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        row = self._conn.execute(sql, args).fetchone()
        return row[0] if row else None

    def append(self, entry: JournalEntry) -> int:
        self._for(entry.run_id)
        if not self._next_seq:
            self._next_seq = int(self._one(
                f"SELECT nextval(pg_get_serial_sequence('{N.T_JOURNAL}', 'seq'))", ()))
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        self._journal.append((seq, entry.run_id, entry.at, entry.kind, _dumps(entry.data)))
        return seq

    def put_run(self, run: RunRecord) -> None:
        self._for(run.id)
        body = _dumps({k: getattr(run, k) for k in _BODY_FIELDS})
        self._runs[run.id] = (run.id, run.pipeline, run.spec_hash, run.state, run.status, body,
                              run.created, run.updated, run.host, run.wants_host)
        if run.status == RUNNING:
            self._wake("run")

    def add_timer(self, run_id: str, entry: int, kind: str, due: str) -> int:
        self._for(run_id)
        self._wake("timer")
        self._delete_cleared(N.T_TIMERS)  # a clear before it goes first
        return int(self._one(
            f"INSERT INTO {N.T_TIMERS}(run_id, entry, kind, due) VALUES(%s,%s,%s,%s) "
            f"RETURNING id", (run_id, entry, kind, due)))

    def delete_timer(self, timer_id: int) -> None:
        self._delete_cleared(N.T_TIMERS)
        run_id = self._one(f"DELETE FROM {N.T_TIMERS} WHERE id=%s RETURNING run_id",
                           (timer_id,))
        if run_id is not None:
            self._for(run_id)

    def clear_timers(self, run_id: str, kinds: Iterable[str] | None = None) -> None:
        self._for(run_id)
        if kinds is None:
            self._cleared[N.T_TIMERS][run_id] = None
            return
        self._delete_cleared(N.T_TIMERS)
        self._conn.execute(f"DELETE FROM {N.T_TIMERS} WHERE run_id=%s AND kind = ANY(%s)",
                           (run_id, list(kinds)))

    def set_correlations(self, run_id: str, entry: int, keys: Iterable[str]) -> None:
        self._for(run_id)
        self._cleared[N.T_CORRELATIONS][run_id] = None
        rows = [(k, run_id, entry) for k in dict.fromkeys(keys)]
        if rows:
            self._delete_cleared(N.T_CORRELATIONS)
            with self._conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {N.T_CORRELATIONS}(key, run_id, entry) VALUES(%s,%s,%s) "
                    f"ON CONFLICT DO NOTHING", rows)

    def put_spec(self, spec_hash: str, name: str, source: str, text: str) -> None:
        self._conn.execute(
            f"INSERT INTO {N.T_SPECS}(hash, name, source, text, created) "
            f"VALUES(%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            (spec_hash, name, source, text, _now()))

    def put_secrets(self, run_id: str, secrets: Mapping[str, Any]) -> None:
        self._for(run_id)
        self._conn.execute(
            f"INSERT INTO {N.T_SECRETS}(run_id, body) VALUES(%s,%s) ON CONFLICT (run_id) "
            f"DO UPDATE SET body=EXCLUDED.body",
            (run_id, secrets_body(run_id, secrets, self._sealer)))

    def put_artefact(self, art: Artefact) -> None:
        if art.run_id:  # a shared one (an account) is written with a fenced run's result
            self._for(art.run_id)
        self._conn.execute(
            f"INSERT INTO {N.T_ARTEFACTS}(run_id, name, body) VALUES(%s,%s,%s) "
            f"ON CONFLICT (run_id, name) DO UPDATE SET body=EXCLUDED.body",
            (art.run_id, art.name, artefact_body(art, self._sealer, _now())))

    def put_certificate(self, cert: CertificateRecord) -> None:
        body = {k: v for k, v in vars(cert).items() if k not in ("name", "run_id", "renew_at")}
        self._conn.execute(
            f"INSERT INTO {N.T_CERTIFICATES}(name, run_id, renew_at, body) "
            f"VALUES(%s,%s,%s,%s) ON CONFLICT (name) DO UPDATE SET run_id=EXCLUDED.run_id, "
            f"renew_at=EXCLUDED.renew_at, body=EXCLUDED.body",
            (cert.name, cert.run_id, cert.renew_at, _dumps(body)))

    def put_renewal(self, renewal: RenewalRecord) -> None:
        body = {k: v for k, v in vars(renewal).items() if k not in ("name", "next_at")}
        self._conn.execute(
            f"INSERT INTO {N.T_RENEWALS}(name, next_at, body) VALUES(%s,%s,%s) "
            f"ON CONFLICT (name) DO UPDATE SET next_at=EXCLUDED.next_at, body=EXCLUDED.body",
            (renewal.name, renewal.next_at, _dumps(body)))

    def delete_renewal(self, name: str) -> None:
        self._conn.execute(f"DELETE FROM {N.T_RENEWALS} WHERE name=%s", (name,))

    def put_daemon(self, daemon: DaemonRecord) -> None:
        body = {k: v for k, v in vars(daemon).items() if k not in ("id", "heartbeat")}
        self._conn.execute(
            f"INSERT INTO {N.T_DAEMONS}(id, heartbeat, body) VALUES(%s,%s,%s) "
            f"ON CONFLICT (id) DO UPDATE SET heartbeat=EXCLUDED.heartbeat, body=EXCLUDED.body",
            (daemon.id, daemon.heartbeat, _dumps(body)))

    def delete_daemon(self, daemon_id: str) -> None:
        self._conn.execute(f"DELETE FROM {N.T_DAEMONS} WHERE id=%s", (daemon_id,))

    def mark_all_processed(self, marks: Iterable[tuple[str, str]], run_id: str | None,
                           ) -> bool:
        """One statement: the look and the inserts (none when one is marked already)."""
        wanted = list(dict.fromkeys(marks))
        if not wanted:
            return True
        sources, idents = (list(column) for column in zip(*wanted, strict=True))
        got = int(self._one(_MARK_ALL, (sources, idents, run_id, _now())))
        if got not in (0, len(wanted)):
            raise StoreError(f"{got} of {len(wanted)} marks were written in {N.T_PROCESSED}: "
                             f"another writer marked some at the same time")
        return got == len(wanted)

    def mark_processed(self, source: str, ident: str, run_id: str | None) -> bool:
        cur = self._conn.execute(
            f"INSERT INTO {N.T_PROCESSED}(source, ident, run_id, at) VALUES(%s,%s,%s,%s) "
            f"ON CONFLICT DO NOTHING", (source, ident, run_id, _now()))
        return cur.rowcount == 1
