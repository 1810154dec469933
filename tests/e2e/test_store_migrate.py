"""``certwright store migrate`` as a user runs it: a SQLite store with parked runs copied
into PostgreSQL with counts and checksums, the runs then finished there by ``resume``; and
what it refuses (a daemon on either store, a target in use, another direction).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from certwright.state.locks import daemon_lock, run_lock
from certwright.state.postgres import PostgresStore
from certwright.state.sqlite import SQLiteStore
from tests.e2e.test_store_postgres import _status, cli
from tests.support.postgres import Cluster, postgres  # noqa: F401 - a fixture

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARKED, EXIT_LOCKED = 0, 1, 2, 3, 4


def _park(state: Path, *run_ids: str) -> None:
    for rid in run_ids:
        done = cli("--state-dir", str(state), "run", "hello", "--no-wait", "--run-id", rid)
        assert done.returncode == EXIT_PARKED, done.stderr


def test_store_migrate_copies_parked_runs_which_then_finish_on_postgresql(
        tmp_path: Path, postgres: Cluster) -> None:
    """Three parked runs and a finished one move from SQLite to PostgreSQL with every row:
    runs, journals, timers, correlations, secrets and pinned pipelines read the same from
    both; counts and checksums are printed; ``resume`` completes the parked runs there and
    their new journal entries get seqs above every old one. ``--from`` defaults to the
    state folder's SQLite store."""
    state = tmp_path / "state"
    _park(state, "p0", "p1", "p2", "p3")
    (state / "runs" / "p0" / "approved").write_text("ok\n")
    assert cli("--state-dir", str(state), "resume", "p0").returncode == EXIT_OK
    url = postgres.store_url(str(tmp_path))
    done = cli("--state-dir", str(state), "store", "migrate", "--to", url, "--json")
    assert done.returncode == EXIT_OK, done.stderr
    tables = {t["table"]: t for t in json.loads(done.stdout)["tables"]}
    assert all(t["ok"] and t["sha256"] == t["source_sha256"] for t in tables.values())
    assert tables["runs"]["rows"] == 4 and tables["timers"]["rows"] >= 3
    old, new = SQLiteStore(state / "certwright.sqlite"), PostgresStore(url)
    try:
        for store in (old, new):
            assert {r.id: r.status for r in store.list_runs()} == {
                "p0": "succeeded", "p1": "waiting", "p2": "waiting", "p3": "waiting"}
        assert sorted(old.timers()) == sorted(new.timers())
        for rid in ("p0", "p1", "p2", "p3"):
            assert old.journal(rid) == new.journal(rid)
            assert old.load_run(rid) == new.load_run(rid)
            assert old.load_secrets(rid) == new.load_secrets(rid)
            assert old.correlations(rid) == new.correlations(rid)
        spec = old.load_run("p1").spec_hash
        assert old.load_spec(spec) == new.load_spec(spec)
        top = max(e.seq for rid in ("p0", "p1", "p2", "p3") for e in old.journal(rid))
    finally:
        old.close()
        new.close()
    for rid in ("p1", "p2", "p3"):
        (state / "runs" / rid / "approved").write_text("ok\n")
        done = cli("--state-dir", str(state), "--store", url, "resume", rid)
        assert done.returncode == EXIT_OK, done.stderr
    assert set(_status(state, url).values()) == {"succeeded"}
    new = PostgresStore(url)
    try:
        assert min(e.seq for e in new.journal("p1") if e.seq > top) > top
        assert len(new.journal("p1")) > len(SQLiteStore(state / "certwright.sqlite",
                                                         readonly=True).journal("p1"))
    finally:
        new.close()


def test_store_migrate_refuses_a_store_in_use(tmp_path: Path, postgres: Cluster) -> None:
    """A daemon serving the SQLite store or the PostgreSQL one, or a process driving one of
    its runs (exit 4, naming the pid), and a target that holds runs already (exit 1), are
    refused with nothing copied."""
    state = tmp_path / "state"
    _park(state, "p1")
    source, url = f"sqlite://{state}/certwright.sqlite", postgres.store_url(str(tmp_path))
    with daemon_lock(state):
        done = cli("store", "migrate", "--from", source, "--to", url)
        assert done.returncode == EXIT_LOCKED and f"pid {os.getpid()}" in done.stderr
    with run_lock(state, "p1"):
        done = cli("store", "migrate", "--from", source, "--to", url)
        assert done.returncode == EXIT_LOCKED and f"pid {os.getpid()}" in done.stderr
        assert "run p1" in done.stderr
    serving = PostgresStore(url)
    try:
        serving.hold_daemon()
        other = PostgresStore(url)
        try:
            other.hold_daemon()  # a second daemon may share the store (leases)
        finally:
            other.close()
        done = cli("store", "migrate", "--from", source, "--to", url)
        assert done.returncode == EXIT_LOCKED and f"pid {os.getpid()}" in done.stderr, \
            done.stderr
        assert serving.list_runs() == []
    finally:
        serving.close()
    assert cli("store", "migrate", "--from", source, "--to", url).returncode == EXIT_OK
    again = cli("store", "migrate", "--from", source, "--to", url)
    assert again.returncode == EXIT_FAILED and "is not empty (" in again.stderr
    assert "runs: 1 rows" in again.stderr
    wrong = cli("store", "migrate", "--from", url, "--to", source)
    assert wrong.returncode == EXIT_USAGE and "copies a SQLite store into" in wrong.stderr
