"""The store contract (``state.contract``, ``_certificates``, ``_daemons``, ``_batches``,
``_shared``) run on the SQLite store.

Every test runs in each way the engine opens the store: ``synchronous=full`` (the default,
``run`` and the CLI), ``normal`` (tests, benchmarks) and ``normal`` with the background
checkpointer (the daemon). A later back-end adds its own subclasses of the same contracts.
Below them, what only the SQLite store promises: its files are private.
"""
from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from certwright.state import names as N
from certwright.state.base import Store
from certwright.state.contract import StoreContract, write_everything
from certwright.state.contract_artefacts import ArtefactContract
from certwright.state.contract_batches import BatchContract
from certwright.state.contract_certificates import CertificateContract
from certwright.state.contract_daemons import DaemonContract
from certwright.state.contract_hosts import HostContract
from certwright.state.contract_renewals import RenewalContract
from certwright.state.contract_shared import LockContract, SharedStoreContract
from certwright.state.sqlite import SQLiteStore

MODES: dict[str, dict[str, Any]] = {
    "full": {"synchronous": "full"},
    "normal": {"synchronous": "normal"},
    "normal-checkpointer": {"synchronous": "normal", "background_checkpoint": True},
}


class _SQLite:
    """The SQLite factory and hooks, in each mode of :data:`MODES`."""

    options: dict[str, Any]  # set for each test by _mode, an autouse fixture

    @pytest.fixture(autouse=True, params=sorted(MODES))
    def _mode(self, request: pytest.FixtureRequest) -> None:
        self.options = MODES[request.param]

    def make_store(self, path: Path) -> SQLiteStore:
        return SQLiteStore(path, **self.options)


class TestSQLiteStore(_SQLite, StoreContract):
    pass


class TestSQLiteStoreCertificates(_SQLite, CertificateContract):
    pass


class TestSQLiteStoreRenewals(_SQLite, RenewalContract):
    pass


class TestSQLiteStoreDaemons(_SQLite, DaemonContract):
    pass


class TestSQLiteStoreHosts(_SQLite, HostContract):
    pass


class TestSQLiteStoreBatches(_SQLite, BatchContract):
    pass


class TestSQLiteStoreArtefacts(_SQLite, ArtefactContract):
    def raw_bodies(self, store: Store, table: str) -> list[tuple[str, str]]:
        conn = sqlite3.connect(store.path)
        try:
            return conn.execute(f"SELECT run_id, body FROM {table} ORDER BY run_id").fetchall()
        finally:
            conn.close()

    def replace_body(self, store: Store, table: str, run_id: str, body: str) -> None:
        conn = sqlite3.connect(store.path)
        try:
            conn.execute(f"UPDATE {table} SET body=? WHERE run_id=?", (body, run_id))
            conn.commit()
        finally:
            conn.close()


class TestSQLiteStoreShared(_SQLite, SharedStoreContract):
    def store_code(self, path: Path) -> str:
        return (f"from certwright.state.sqlite import SQLiteStore\n"
                f"store = SQLiteStore({str(path)!r}, **{self.options!r})")

    def make_old_store(self, path: Path) -> list[str]:
        """A version-1 store (before the secrets table), with two runs."""
        conn = sqlite3.connect(path)
        conn.executescript(N.MIGRATIONS[0])
        conn.execute(f"INSERT INTO {N.T_META}(key, value) VALUES('schema_version', '1')")
        for rid, status in (("old1", "waiting"), ("old2", "succeeded")):
            conn.execute(f"INSERT INTO {N.T_RUNS} VALUES(?, 'p', 'h', 'a', ?, '{{}}', "
                         f"'2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')", (rid, status))
        conn.commit()
        conn.close()
        return ["old1", "old2"]

    def make_newer_store(self, path: Path) -> None:
        conn = sqlite3.connect(path)
        conn.execute(f"UPDATE {N.T_META} SET value=? WHERE key='schema_version'",
                     (str(len(N.MIGRATIONS) + 1),))
        conn.commit()
        conn.close()


class TestFileLocks(LockContract):
    pass


def test_the_store_files_are_private(tmp_path: Path) -> None:
    """The database and its WAL, which hold secrets, are 0600 in a 0700 folder."""
    db = tmp_path / "state" / "certwright.sqlite"
    store = SQLiteStore(db)
    try:
        with store.transaction() as tx:
            write_everything(tx, "r1")
        files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
        assert {p.name for p in files} >= {db.name, db.name + "-wal"}
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {
            p.name: 0o600 for p in files}
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    finally:
        store.close()


def test_secrets_are_in_no_run_or_journal_row(tmp_path: Path) -> None:
    """Read raw, the runs and journal tables hold no secret; the secrets table does."""
    db = tmp_path / "certwright.sqlite"
    store = SQLiteStore(db)
    with store.transaction() as tx:
        write_everything(tx, "r1")
    store.close()
    conn = sqlite3.connect(db)
    try:
        def text(table: str) -> str:
            return repr(conn.execute(f"SELECT * FROM {table}").fetchall())
        assert "contract-secret-value" not in text(N.T_RUNS) + text(N.T_JOURNAL)
        assert "contract-secret-value" in text(N.T_SECRETS)
    finally:
        conn.close()
