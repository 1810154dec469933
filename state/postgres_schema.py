"""The PostgreSQL store's schema: its version read, and its migrations applied once.

:func:`migrate` brings the schema of the connection's ``current_schema()`` up to
``len(names.PG_MIGRATIONS)``, the list numbered as SQLite's ``MIGRATIONS``, in one
transaction under ``pg_advisory_xact_lock`` on the migration key (per schema), re-reading
the version once the lock is held, so processes opening a new store at once apply each
migration once. A schema newer than this code is refused (StoreError), never downgraded.

Hazard: the version is read from ``pg_class`` as a table, not through ``to_regclass``: a
session's catalog cache may still say "no such table" from before another process's
migration committed, and an advisory lock, unlike a table's, does not refresh it (six
processes opening one new store failed with DuplicateTable that way).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from certwright.errors import StoreError
from certwright.state import names as N

if TYPE_CHECKING:
    import psycopg


def schema_version_on(conn: psycopg.Connection[Any]) -> int:
    """The version the schema records; 0 when it has no tables yet."""
    if not conn.execute(
            "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relname = %s AND n.nspname = "
            "current_schema()", (N.T_META,)).fetchone():
        return 0
    row = conn.execute(f"SELECT value FROM {N.T_META} WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def _refuse_newer(version: int, where: str) -> None:
    if version > len(N.PG_MIGRATIONS):
        raise StoreError(
            f"the PostgreSQL store {where} has schema version {version}, newer than this "
            f"certwright knows ({len(N.PG_MIGRATIONS)}); upgrade certwright")


def migrate(conn: psycopg.Connection[Any], where: str, *, readonly: bool = False) -> None:
    """Bring the schema up to date (see the module); ``where`` names the store in errors.
    ``conn`` is in autocommit mode; ``readonly`` connections are let write for this."""
    version = schema_version_on(conn)
    _refuse_newer(version, where)
    if version == len(N.PG_MIGRATIONS):
        return
    if readonly:
        conn.execute("SET default_transaction_read_only = off")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))",
                     (N.PG_LOCK_MIGRATE,))
        version = schema_version_on(conn)
        _refuse_newer(version, where)
        for number in range(version, len(N.PG_MIGRATIONS)):
            for statement in N.PG_MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement.encode())
            conn.execute(
                f"INSERT INTO {N.T_META}(key, value) VALUES('schema_version', %s) "
                f"ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value", (str(number + 1),))
