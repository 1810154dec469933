"""The store contract (``state.contract``, ``_certificates``, ``_renewals``, ``_daemons``,
``_batches``, ``_shared``) run on the PostgreSQL store, against a real cluster
(``tests.support.postgres``).

Each store of a test is a schema of its own in the session's cluster, named after the
test's path, so "the same path opens the same store" holds, and tests share no data. Every
test runs with ``synchronous=full`` (the CLI's) and ``normal`` (the daemon's, benchmarks').
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from certwright.state import names as N
from certwright.state.base import Store
from certwright.state.contract import StoreContract
from certwright.state.contract_artefacts import ArtefactContract
from certwright.state.contract_batches import BatchContract
from certwright.state.contract_certificates import CertificateContract
from certwright.state.contract_daemons import DaemonContract
from certwright.state.contract_hosts import HostContract
from certwright.state.contract_renewals import RenewalContract
from certwright.state.contract_shared import SharedStoreContract
from certwright.state.postgres import PostgresStore
from tests.support.postgres import Cluster, postgres  # noqa: F401 - a fixture

MODES: dict[str, dict[str, Any]] = {"full": {"synchronous": "full"},
                                    "normal": {"synchronous": "normal"}}


class _Postgres:
    """The PostgreSQL factory, in each mode of :data:`MODES`."""

    options: dict[str, Any]
    cluster: Cluster

    @pytest.fixture(autouse=True, params=sorted(MODES))
    def _mode(self, request: pytest.FixtureRequest, postgres: Cluster) -> None:
        self.options = MODES[request.param]
        self.cluster = postgres

    def url(self, path: Path) -> str:
        return self.cluster.store_url(str(path))

    def make_store(self, path: Path) -> PostgresStore:
        return PostgresStore(self.url(path), **self.options)


class TestPostgresStore(_Postgres, StoreContract):
    pass


class TestPostgresStoreCertificates(_Postgres, CertificateContract):
    pass


class TestPostgresStoreRenewals(_Postgres, RenewalContract):
    pass


class TestPostgresStoreDaemons(_Postgres, DaemonContract):
    pass


class TestPostgresStoreHosts(_Postgres, HostContract):
    pass


class TestPostgresStoreBatches(_Postgres, BatchContract):
    pass


class TestPostgresStoreArtefacts(_Postgres, ArtefactContract):
    def _conn(self, store: Store) -> Any:
        import psycopg
        return psycopg.connect(store.url, autocommit=True)

    def raw_bodies(self, store: Store, table: str) -> list[tuple[str, str]]:
        with self._conn(store) as conn:
            rows = conn.execute(f"SELECT run_id, body FROM {table} ORDER BY run_id")
            return [(r[0], r[1]) for r in rows.fetchall()]

    def replace_body(self, store: Store, table: str, run_id: str, body: str) -> None:
        with self._conn(store) as conn:
            conn.execute(f"UPDATE {table} SET body=%s WHERE run_id=%s", (body, run_id))


class TestPostgresStoreShared(_Postgres, SharedStoreContract):
    def store_code(self, path: Path) -> str:
        return (f"from certwright.state.postgres import PostgresStore\n"
                f"store = PostgresStore({self.url(path)!r}, **{self.options!r})")

    def _schema_sql(self, path: Path, statement: str) -> None:
        schema = self.url(path).rsplit("search_path%3D", 1)[1]
        self.cluster.sql(f"SET search_path = {schema}; {statement}")

    def make_old_store(self, path: Path) -> list[str]:
        """A version-1 store (before the secrets table), with two runs."""
        rows = ", ".join(f"('{rid}', 'p', 'h', 'a', '{status}', '{{}}', "
                         f"'2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')"
                         for rid, status in (("old1", "waiting"), ("old2", "succeeded")))
        self._schema_sql(path, f"{N.PG_MIGRATIONS[0]}; INSERT INTO {N.T_META}(key, value) "
                               f"VALUES('schema_version', '1'); "
                               f"INSERT INTO {N.T_RUNS} VALUES {rows}")
        return ["old1", "old2"]

    def make_newer_store(self, path: Path) -> None:
        self._schema_sql(path, f"UPDATE {N.T_META} SET value='{len(N.PG_MIGRATIONS) + 1}' "
                               f"WHERE key='schema_version'")


def test_both_backends_have_the_same_number_of_migrations() -> None:
    """Schema version N means the same tables on SQLite and PostgreSQL: one migration list
    per back-end, numbered alike, so neither may gain an entry alone."""
    assert len(N.PG_MIGRATIONS) == len(N.MIGRATIONS)
