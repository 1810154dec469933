"""The writes of one PostgreSQL transaction (:class:`PgTx`).

Used only by :mod:`state.postgres`, inside its transaction (which holds the store's write
lock, an advisory transaction lock), so a storage failure here leaves through the store's
transaction as a ServerFault. Rows are encoded as the SQLite store encodes them (JSON
bodies, ISO instants as text), so ``store migrate`` copies them unchanged.

Fencing: with a :class:`Fence` (several daemons: ``state.leases_pg.PgLeases``), the first
write of the transaction for each run (journal, run row, timers, correlations, secrets)
asks ``fence.check(conn, run_id)``, which raises when this daemon no longer holds the
run's lease; the store's transaction then rolls back and nothing of it is committed.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from certwright.state import names as N
from certwright.state._sqlite_tx import _BODY_FIELDS, RUN_COLUMNS, _dumps, _now
from certwright.state.records import (
    CertificateRecord,
    DaemonRecord,
    JournalEntry,
    RenewalRecord,
    RunRecord,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["RUN_COLUMNS", "RUN_IDS", "Fence", "PgTx"]  # RUN_COLUMNS for state.postgres

# the ids of runs with some statuses, those waiting for another host left out unless the
# host is None (see Store.run_ids)
RUN_IDS = (f"SELECT id, spec_hash FROM {N.T_RUNS} WHERE status = ANY(%s) AND (%s::text IS "
           f"NULL OR wants_host IS NULL OR wants_host = %s)")


class Fence(Protocol):
    """Checks, inside a transaction, that its writes for a run may commit."""

    def check(self, conn: psycopg.Connection[Any], run_id: str) -> None:
        """Raise (a StoreError) when writes for ``run_id`` must not commit."""


class PgTx:
    """Writes inside one open transaction (see :class:`state.base.Tx`); each is sent at once,
    so reads on the same connection see it."""

    def __init__(self, conn: psycopg.Connection[Any], fence: Fence | None = None) -> None:
        self._conn = conn
        self._fence = fence
        self._fenced: set[str] = set()

    def _for(self, run_id: str) -> None:
        """Fence the run's writes once per transaction (see the module)."""
        if self._fence is not None and run_id not in self._fenced:
            self._fence.check(self._conn, run_id)
            self._fenced.add(run_id)

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        row = self._conn.execute(sql, args).fetchone()
        return row[0] if row else None

    def append(self, entry: JournalEntry) -> int:
        self._for(entry.run_id)
        return int(self._one(
            f"INSERT INTO {N.T_JOURNAL}(run_id, at, kind, data) VALUES(%s,%s,%s,%s) "
            f"RETURNING seq", (entry.run_id, entry.at, entry.kind, _dumps(entry.data))))

    def put_run(self, run: RunRecord) -> None:
        self._for(run.id)
        body = _dumps({k: getattr(run, k) for k in _BODY_FIELDS})
        self._conn.execute(
            f"INSERT INTO {N.T_RUNS}({RUN_COLUMNS}) VALUES(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            f"ON CONFLICT (id) DO UPDATE SET pipeline=EXCLUDED.pipeline, "
            f"spec_hash=EXCLUDED.spec_hash, state=EXCLUDED.state, status=EXCLUDED.status, "
            f"body=EXCLUDED.body, created=EXCLUDED.created, updated=EXCLUDED.updated, "
            f"host=EXCLUDED.host, wants_host=EXCLUDED.wants_host",
            (run.id, run.pipeline, run.spec_hash, run.state, run.status, body, run.created,
             run.updated, run.host, run.wants_host))

    def add_timer(self, run_id: str, entry: int, kind: str, due: str) -> int:
        self._for(run_id)
        return int(self._one(
            f"INSERT INTO {N.T_TIMERS}(run_id, entry, kind, due) VALUES(%s,%s,%s,%s) "
            f"RETURNING id", (run_id, entry, kind, due)))

    def delete_timer(self, timer_id: int) -> None:
        run_id = self._one(f"DELETE FROM {N.T_TIMERS} WHERE id=%s RETURNING run_id",
                           (timer_id,))
        if run_id is not None:
            self._for(run_id)

    def clear_timers(self, run_id: str, kinds: Iterable[str] | None = None) -> None:
        self._for(run_id)
        if kinds is None:
            self._conn.execute(f"DELETE FROM {N.T_TIMERS} WHERE run_id=%s", (run_id,))
            return
        self._conn.execute(f"DELETE FROM {N.T_TIMERS} WHERE run_id=%s AND kind = ANY(%s)",
                           (run_id, list(kinds)))

    def set_correlations(self, run_id: str, entry: int, keys: Iterable[str]) -> None:
        self._for(run_id)
        self._conn.execute(f"DELETE FROM {N.T_CORRELATIONS} WHERE run_id=%s", (run_id,))
        rows = [(k, run_id, entry) for k in dict.fromkeys(keys)]
        if rows:
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
            f"DO UPDATE SET body=EXCLUDED.body", (run_id, json.dumps(secrets)))

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

    def mark_processed(self, source: str, ident: str, run_id: str | None) -> bool:
        cur = self._conn.execute(
            f"INSERT INTO {N.T_PROCESSED}(source, ident, run_id, at) VALUES(%s,%s,%s,%s) "
            f"ON CONFLICT DO NOTHING", (source, ident, run_id, _now()))
        return cur.rowcount == 1
