"""The writes of one SQLite transaction (:class:`Tx`), and rows turned back into runs.

Used only by :mod:`state.sqlite`; the statements run inside its ``BEGIN IMMEDIATE``, so a
storage failure here leaves through the store's transaction as a StoreFault.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from certwright.state import names as N
from certwright.state.artefacts import Artefact, artefact_body, secrets_body
from certwright.state.records import (
    CertificateRecord,
    DaemonRecord,
    JournalEntry,
    RenewalRecord,
    RunRecord,
)
from certwright.state.sealing import Sealer

RUN_COLUMNS = "id, pipeline, spec_hash, state, status, body, created, updated, host, wants_host"
_BODY_FIELDS = ("entry", "step_index", "attempt", "inflight", "inputs", "vars", "memo",
                "waiting", "watch", "deadline", "wake_at", "counters", "error", "alarms", "seq")


# json.dumps with these options builds an encoder at every call; one, made once, writes
# the same text (every journal entry and run row goes through it)
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


ROWS_PER_INSERT = 500  # journal rows or runs per multi-row INSERT


class Tx:
    """Writes inside one open transaction (see :class:`state.base.Tx`).

    Journal entries and run rows are buffered and written at the end of the transaction
    (or before a read of them), many rows per INSERT: each statement a Python thread runs
    releases and re-takes the GIL, which under load costs far more than the statement.
    Journal sequence numbers are assigned here, from the table's maximum read once per
    transaction: the write lock (BEGIN IMMEDIATE) makes that safe across processes.
    """

    def __init__(self, db: sqlite3.Connection, sealer: Sealer | None = None) -> None:
        self._db = db
        self._sealer = sealer
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
                              run.created, run.updated, run.host, run.wants_host)

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
                f"INSERT OR REPLACE INTO {N.T_RUNS}({RUN_COLUMNS}) VALUES "
                + ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(chunk)),
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
                         (run_id, secrets_body(run_id, secrets, self._sealer)))

    def put_artefact(self, art: Artefact) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO {N.T_ARTEFACTS}(run_id, name, body) VALUES(?,?,?)",
            (art.run_id, art.name, artefact_body(art, self._sealer, _now())))

    def put_certificate(self, cert: CertificateRecord) -> None:
        body = {k: v for k, v in vars(cert).items() if k not in ("name", "run_id", "renew_at")}
        self._db.execute(
            f"INSERT OR REPLACE INTO {N.T_CERTIFICATES}(name, run_id, renew_at, body) "
            f"VALUES(?,?,?,?)", (cert.name, cert.run_id, cert.renew_at, _dumps(body)))

    def put_renewal(self, renewal: RenewalRecord) -> None:
        body = {k: v for k, v in vars(renewal).items() if k not in ("name", "next_at")}
        self._db.execute(
            f"INSERT OR REPLACE INTO {N.T_RENEWALS}(name, next_at, body) VALUES(?,?,?)",
            (renewal.name, renewal.next_at, _dumps(body)))

    def delete_renewal(self, name: str) -> None:
        self._db.execute(f"DELETE FROM {N.T_RENEWALS} WHERE name=?", (name,))

    def put_daemon(self, daemon: DaemonRecord) -> None:
        body = {k: v for k, v in vars(daemon).items() if k not in ("id", "heartbeat")}
        self._db.execute(
            f"INSERT OR REPLACE INTO {N.T_DAEMONS}(id, heartbeat, body) VALUES(?,?,?)",
            (daemon.id, daemon.heartbeat, _dumps(body)))

    def delete_daemon(self, daemon_id: str) -> None:
        self._db.execute(f"DELETE FROM {N.T_DAEMONS} WHERE id=?", (daemon_id,))

    def mark_processed(self, source: str, ident: str, run_id: str | None) -> bool:
        cur = self._db.execute(
            f"INSERT OR IGNORE INTO {N.T_PROCESSED}(source, ident, run_id, at) VALUES(?,?,?,?)",
            (source, ident, run_id, _now()))
        return cur.rowcount == 1

    def mark_all_processed(self, marks: Iterable[tuple[str, str]], run_id: str | None,
                           ) -> bool:
        wanted = list(dict.fromkeys(marks))
        if any(self._db.execute(f"SELECT 1 FROM {N.T_PROCESSED} WHERE source=? AND ident=?",
                                mark).fetchone() for mark in wanted):
            return False
        for source, ident in wanted:
            self.mark_processed(source, ident, run_id)
        return True


def run_from_row(row: tuple[Any, ...]) -> RunRecord:
    body = json.loads(row[5])
    return RunRecord(id=row[0], pipeline=row[1], spec_hash=row[2], state=row[3], status=row[4],
                     created=row[6], updated=row[7], host=row[8], wants_host=row[9], **body)


def certificate_from_row(row: tuple[Any, ...]) -> CertificateRecord:
    return CertificateRecord(name=row[0], run_id=row[1], renew_at=row[2], **json.loads(row[3]))


def renewal_from_row(row: tuple[Any, ...]) -> RenewalRecord:
    return RenewalRecord(name=row[0], next_at=row[1], **json.loads(row[2]))


def daemon_from_row(row: tuple[Any, ...]) -> DaemonRecord:
    return DaemonRecord(id=row[0], heartbeat=row[1], **json.loads(row[2]))
