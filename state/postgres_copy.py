"""Copy a SQLite store into an empty PostgreSQL store, row for row, and prove it.

``certwright store migrate`` calls :func:`copy_sqlite_to_postgres`. What it copies: every
table but ``meta`` (the target has its own schema version, the same number): pipelines
(specs), runs, journal (with their seqs), timers (with their ids), correlations, processed
marks, secrets, the certificate inventory, the renewal schedule and what runs made
(artefacts; sealed ones stay sealed: the target needs the same store key). Journal seqs and
timer ids keep their numbers, and the target's sequences are moved past the largest the
source ever handed out (SQLite's ``sqlite_sequence``, deleted rows included), so no number
is ever used twice. Then it checks: each table's row count and a SHA-256 over its rows in
key order, read back from both databases, must be equal, else it raises.

Contract and hazards:

* The caller holds both stores for the copy (the SQLite folder's daemon lock, the
  PostgreSQL store's daemon lock), so no daemon writes either while it runs; the source
  is read in one read transaction (a snapshot) all the same.
* The target must be empty (no runs, journal, timers, specs, certificates): a copy into a
  store in use would mix two histories. :class:`CopyRefused` (a StoreError) says so.
* All of it is one PostgreSQL transaction: a failure (a fault, a mismatch) leaves the
  target as empty as it was; the source is never written.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certwright.errors import StoreError
from certwright.state import names as N
from certwright.state.postgres import PostgresStore
from certwright.state.postgres_faults import pg_fault
from certwright.state.sqlite import SQLiteStore

# (table, its columns, how many lead columns are its key), in an order that needs no
# other table first
TABLES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    (N.T_SPECS, ("hash", "name", "source", "text", "created"), 1),
    (N.T_RUNS, ("id", "pipeline", "spec_hash", "state", "status", "body", "created",
                "updated", "host", "wants_host"), 1),
    (N.T_JOURNAL, ("seq", "run_id", "at", "kind", "data"), 1),
    (N.T_TIMERS, ("id", "run_id", "entry", "kind", "due"), 1),
    (N.T_CORRELATIONS, ("key", "run_id", "entry"), 2),
    (N.T_PROCESSED, ("source", "ident", "run_id", "at"), 2),
    (N.T_SECRETS, ("run_id", "body"), 1),
    (N.T_CERTIFICATES, ("name", "run_id", "renew_at", "body"), 1),
    (N.T_RENEWALS, ("name", "next_at", "body"), 1),
    (N.T_ARTEFACTS, ("run_id", "name", "body"), 2),
)
_SEQUENCED = {N.T_JOURNAL: "seq", N.T_TIMERS: "id"}  # identity columns to move on


class CopyRefused(StoreError):
    """The copy cannot start (the target is not empty) or did not check out."""


@dataclass(frozen=True)
class TableCopy:
    """One table's result: rows in the source and the target, and their checksums."""

    table: str
    source_rows: int
    target_rows: int
    source_sum: str
    target_sum: str

    @property
    def ok(self) -> bool:
        return (self.source_rows, self.source_sum) == (self.target_rows, self.target_sum)


def checksum(rows: list[tuple[Any, ...]], key_len: int) -> str:
    """SHA-256 of ``rows`` sorted by their first ``key_len`` columns, each row as JSON
    (so an integer 3 and a text "3" differ, and NULL is null)."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: tuple(r[:key_len])):
        digest.update(json.dumps(list(row), separators=(",", ":")).encode() + b"\n")
    return digest.hexdigest()


def _source_rows(path: Path) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, int]]:
    """Every copied table's rows and the sequences' high-water marks, from one snapshot."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        db.execute("BEGIN")
        rows = {t: db.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall()
                for t, cols, _ in TABLES}
        marks = dict(db.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        db.execute("COMMIT")
    finally:
        db.close()
    return rows, {t: int(marks.get(t, 0)) for t in _SEQUENCED}


def copy_sqlite_to_postgres(source: Path, target: PostgresStore,
                            progress: Callable[[str], None] = lambda _: None
                            ) -> list[TableCopy]:
    """Copy the SQLite store at ``source`` into the empty ``target`` (see the module) and
    return each table's counts and checksums, all equal. CopyRefused when the target is
    not empty or a check fails (nothing is left in the target then); StoreFault when a
    store fails."""
    SQLiteStore(source).close()  # brings an older file up to today's schema first
    rows, marks = _source_rows(source)
    progress(f"read {sum(len(r) for r in rows.values())} rows from {source}")
    try:
        with target.transaction() as tx:
            conn = tx._conn  # noqa: SLF001 - this module is the store's own bulk writer
            _refuse_unless_empty(conn, target.path)
            for table, cols, _ in TABLES:
                with conn.cursor().copy(
                        f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows[table]:
                        copy.write_row(row)
            for table, column in _SEQUENCED.items():
                top = max([marks[table], *(int(r[0]) for r in rows[table])], default=0)
                if top:
                    conn.execute("SELECT setval(pg_get_serial_sequence(%s, %s), %s)",
                                 (table, column, top))
            found = _checked(_compare(conn, rows))
    except CopyRefused:
        raise
    except Exception as exc:
        fault = pg_fault(exc, target.path, "copying into")
        if fault is None:
            raise
        raise fault from exc
    return _committed(target, found)


def _committed(target: PostgresStore, during: list[TableCopy]) -> list[TableCopy]:
    """The checks again, on what a fresh connection reads once the copy is committed."""
    out = []
    for (table, cols, key_len), before in zip(TABLES, during, strict=True):
        back = target._rows("reading", f"SELECT {', '.join(cols)} FROM {table}")  # noqa: SLF001
        found = TableCopy(table, before.source_rows, len(back), before.source_sum,
                          checksum(back, key_len))
        if not found.ok:
            raise CopyRefused(f"{table} read back from {target.path} after the commit does "
                              f"not match its source ({found.target_rows} rows, "
                              f"{found.source_rows} expected)")
        out.append(found)
    return out


def _checked(found: list[TableCopy]) -> list[TableCopy]:
    """``found``, or CopyRefused (rolling the copy back) naming the tables that differ."""
    bad = [c for c in found if not c.ok]
    if bad:
        raise CopyRefused("the copy does not match its source, so nothing was committed: "
                          + "; ".join(f"{c.table}: {c.source_rows} rows, {c.target_rows} "
                                      f"copied" for c in bad))
    return found


def _refuse_unless_empty(conn: Any, where: str) -> None:
    counts = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
              for t, _, _ in TABLES}
    used = {t: n for t, n in counts.items() if n}
    if used:
        said = ", ".join(f"{t}: {n} rows" for t, n in used.items())
        raise CopyRefused(f"the PostgreSQL store {where} is not empty ({said}); migrate "
                          f"into an empty database or schema, so two histories never mix")


def _compare(conn: Any, rows: dict[str, list[tuple[Any, ...]]]) -> list[TableCopy]:
    """Each table read back from the target (inside the copy's transaction) beside the
    source's rows."""
    out = []
    for table, cols, key_len in TABLES:
        back = [tuple(r) for r in conn.execute(f"SELECT {', '.join(cols)} FROM {table}")]
        out.append(TableCopy(table, len(rows[table]), len(back),
                             checksum(rows[table], key_len), checksum(back, key_len)))
    return out
