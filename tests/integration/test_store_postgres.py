"""What only the PostgreSQL store promises, beyond the contract suites: migrations applied
once by several processes opening a new store at once (the advisory lock), the server
stopped in the middle of a transaction (a ServerFault, nothing half-written, and the same
store object goes on once it is back), a read-only server, and the daemon's lock.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from certwright.errors import StoreError
from certwright.state import names as N
from certwright.state.contract import entry, raises, write_everything
from certwright.state.faults import StoreFault
from certwright.state.postgres import PostgresStore
from tests.support.postgres import Cluster, own_cluster, postgres  # noqa: F401 - fixtures

_OPEN_AT_ONCE = """
import os, sys, time
from pathlib import Path
import psycopg, psycopg_pool
from certwright.state.postgres import PostgresStore
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.0005)
store = PostgresStore(sys.argv[1])
print(store.schema_version())
store.close()
"""


def test_processes_opening_a_new_store_at_once_migrate_it_once(
        tmp_path: Path, postgres: Cluster) -> None:
    """Six processes released together onto an empty schema all open it at today's
    version; the migrations ran once (one version row, every table there once)."""
    url, go = postgres.store_url(str(tmp_path)), tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, url, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    time.sleep(0.5)  # let them all import and start polling before the gate opens
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in results]
    assert {out.strip() for out, _ in results} == {str(len(N.PG_MIGRATIONS))}
    store = PostgresStore(url)
    try:
        schema = url.rsplit("search_path%3D", 1)[1]
        tables = postgres.sql(f"SELECT count(*) FROM pg_tables WHERE schemaname='{schema}'")
        assert int(tables) == 14  # meta, the eleven tables of the store, leases and their log
        assert store.schema_version() == len(N.PG_MIGRATIONS)
        assert postgres.sql(f"SELECT count(*) FROM {schema}.{N.T_META}") == "1"
    finally:
        store.close()


def test_the_server_stopped_inside_a_transaction(tmp_path: Path, own_cluster: Cluster) -> None:
    """The server stops (fast: every connection cut) while a transaction is open with its
    writes sent: the block fails with a ServerFault ("unavailable", what to do), nothing
    of it is stored, reads fail the same way while it is down, and once it is back the
    same store object reads the earlier commit and writes again."""
    store = PostgresStore(own_cluster.store_url(str(tmp_path)))
    try:
        with store.transaction() as tx:
            write_everything(tx, "r1")

        def cut() -> None:
            with store.transaction() as tx:
                write_everything(tx, "r2")
                tx.append(entry("r1", 1))
                own_cluster.stop()
                tx.append(entry("r1", 2))
        fault = raises(StoreFault, cut)
        assert isinstance(fault, StoreFault) and fault.kind == "unavailable"
        assert "check that the PostgreSQL server runs" in str(fault)
        down = raises(StoreFault, lambda: store.load_run("r1"))
        assert isinstance(down, StoreFault) and down.kind == "unavailable"
        own_cluster.start()
        assert [e.data for e in store.journal("r1")] == [{"n": 0}]
        assert store.find_run("r2") is None and store.load_secrets("r2") is None
        with store.transaction() as tx:
            tx.append(entry("r1", 3))
        assert [e.data["n"] for e in store.journal("r1")] == [0, 3]
    finally:
        store.close()


def test_a_server_that_refuses_writes_is_a_read_only_fault(
        tmp_path: Path, postgres: Cluster) -> None:
    """Connected with read-only transactions (as to a standby), reads work and a write
    fails as the "read-only" fault, the transaction rolled back."""
    url = postgres.store_url(str(tmp_path))
    PostgresStore(url).close()  # made and migrated on a writable connection
    store = PostgresStore(url + "%20-cdefault_transaction_read_only%3Don")
    try:
        assert store.list_runs() == []

        def write() -> None:
            with store.transaction() as tx:
                write_everything(tx, "r1")
        fault = raises(StoreFault, write)
        assert isinstance(fault, StoreFault) and fault.kind == "read-only"
        assert "point the URL at the primary" in str(fault)
    finally:
        store.close()


def test_a_server_that_is_not_there_is_said_plainly(tmp_path: Path) -> None:
    """No server on the port: opening fails at once as "unavailable", naming the URL
    without its password and the driver's reason."""
    fault = raises(StoreFault, lambda: PostgresStore(
        "postgresql://certwright:hunter2@127.0.0.1:9/certwright"))
    assert isinstance(fault, StoreFault) and fault.kind == "unavailable"
    assert "hunter2" not in str(fault) and "127.0.0.1" in str(fault)
    assert "connection" in str(fault).lower()


def test_a_missing_database_is_unavailable_and_names_it(postgres: Cluster) -> None:
    """A URL naming a database the server does not have: an unavailable fault saying so."""
    fault = raises(StoreError, lambda: PostgresStore(postgres.url("nosuchdb")))
    assert isinstance(fault, StoreFault) and "nosuchdb" in str(fault)


_HOLD = """
import sys
from certwright.state.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
store.hold_daemon()
print("held", flush=True)
sys.stdin.read()
"""


def test_several_daemons_hold_a_store_and_its_lock_dies_with_each(
        tmp_path: Path, postgres: Cluster) -> None:
    """A daemon's hold is seen (host and pid) and a second daemon may hold the store too
    (leases share the runs); a store in another schema is not held; the store is free
    once every holder closed (or died)."""
    url = postgres.store_url(str(tmp_path))
    held = subprocess.Popen([sys.executable, "-c", _HOLD, url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout is not None and held.stdout.readline().strip() == "held"
        store = PostgresStore(url)
        try:
            assert store.daemon_serves()
            assert store.daemon_holder() == (held.pid, os.uname().nodename)
            second = PostgresStore(url)
            second.hold_daemon()
            second.close()
            assert store.daemon_serves()
            elsewhere = PostgresStore(postgres.store_url(str(tmp_path / "other")))
            try:
                assert not elsewhere.daemon_serves()
            finally:
                elsewhere.close()
            held.kill()
            held.wait(timeout=30)
            deadline = time.monotonic() + 30
            while store.daemon_serves() and time.monotonic() < deadline:
                time.sleep(0.05)  # the server notices the dead session's socket
            store.hold_daemon()
            assert store.daemon_holder() == (os.getpid(), os.uname().nodename)
        finally:
            store.close()
    finally:
        if held.poll() is None:
            held.kill()
            held.wait()
        for pipe in (held.stdin, held.stdout):
            if pipe is not None:
                pipe.close()


def test_a_copy_keeps_every_table_and_never_reuses_a_number(
        tmp_path: Path, postgres: Cluster) -> None:
    """Every kind of row (secrets, processed marks, certificates, renewals too) is copied
    and checks out; a timer id and a journal seq deleted or burnt in SQLite are not
    handed out again by PostgreSQL."""
    from certwright.state.contract_artefacts import KEY_PEM, art, sealer
    from certwright.state.contract_certificates import certificate
    from certwright.state.contract_renewals import renewal
    from certwright.state.postgres_copy import TABLES, copy_sqlite_to_postgres
    from certwright.state.sqlite import SQLiteStore
    db = tmp_path / "certwright.sqlite"
    old = SQLiteStore(db, sealer=sealer())
    try:
        with old.transaction() as tx:
            write_everything(tx, "r1")
            tx.put_artefact(art("r1", "/srv/r1/server.key", "key", KEY_PEM))
            tx.put_certificate(certificate("example.test"))
            tx.put_renewal(renewal("example.test"))
            gone = tx.add_timer("r1", 1, "wake", "2026-01-01T00:00:00.000000Z")
        with old.transaction() as tx:
            tx.delete_timer(gone)
        top_seq = max(e.seq for e in old.journal("r1"))
    finally:
        old.close()
    target = PostgresStore(postgres.store_url(str(tmp_path)), sealer=sealer())
    try:
        tables = copy_sqlite_to_postgres(db, target)
        assert [t.table for t in tables] == [t for t, _, _ in TABLES]
        assert all(t.ok and t.target_rows > 0 for t in tables)
        assert target.find_certificate("example.test") == certificate("example.test")
        assert target.find_renewal("example.test") == renewal("example.test")
        assert [a.data for a in target.artefacts("r1")] == [KEY_PEM]  # sealed, and opens
        with target.transaction() as tx:
            assert not tx.mark_processed("mail", "<r1@example.test>", None)
            assert tx.add_timer("r1", 2, "wake", "2026-01-02T00:00:00.000000Z") > gone
            assert tx.append(entry("r1", 9)) > top_seq
    finally:
        target.close()


_WRITER = """
import sys
from certwright.state.contract import entry
from certwright.state.postgres import PostgresStore
store = PostgresStore(sys.argv[1], synchronous="normal")
seen = []
for n in range(40):
    with store.transaction() as tx:
        seen.append(tx.append(entry("w" + sys.argv[2], n)))
        tx.add_timer("w" + sys.argv[2], n, "wake", "2026-01-01T00:00:00.000000Z")
print(" ".join(map(str, seen)))
store.close()
"""


def test_writers_in_several_processes_take_turns(tmp_path: Path, postgres: Cluster) -> None:
    """Four processes writing at once: every seq is unique, each process's grow, each
    run's journal holds its 40 entries in order, and a reader following timers_after
    with the largest id it saw misses none (ids grow in commit order)."""
    url = postgres.store_url(str(tmp_path))
    reader = PostgresStore(url)
    try:
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(4)]
        followed: list[int] = []
        while any(p.poll() is None for p in procs):
            followed += [t.id for t in reader.timers_after(max(followed, default=0))]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
        followed += [t.id for t in reader.timers_after(max(followed, default=0))]
        seqs = [[int(s) for s in out.split()] for out, _ in outs]
        assert all(s == sorted(s) for s in seqs)
        assert len({x for s in seqs for x in s}) == 160
        for i, mine in enumerate(seqs):
            assert [(e.seq, e.data["n"]) for e in reader.journal(f"w{i}")] == [
                (seq, n) for n, seq in enumerate(mine)]
        assert sorted(followed) == sorted(t.id for t in reader.timers())
        assert len(followed) == 160
    finally:
        reader.close()


def test_a_transaction_left_open_makes_another_wait_then_fail(
        tmp_path: Path, postgres: Cluster) -> None:
    """While one store's transaction stays open, another's waits for the write lock, and
    past its lock timeout fails as a ServerFault, leaving nothing; the first commits."""
    url = postgres.store_url(str(tmp_path))
    first, second = PostgresStore(url), PostgresStore(url, lock_timeout=0.2)
    try:
        with first.transaction() as tx:
            tx.append(entry("r1", 1))

            def wait() -> None:
                with second.transaction() as other:
                    other.append(entry("r2", 1))
            fault = raises(StoreFault, wait)
            assert isinstance(fault, StoreFault) and "lock timeout" in str(fault)
        assert [e.data for e in second.journal("r1")] == [{"n": 1}]
        assert second.journal("r2") == []
    finally:
        first.close()
        second.close()


def test_an_error_of_the_caller_leaves_the_block_as_it_was(
        tmp_path: Path, postgres: Cluster) -> None:
    """An exception that is no storage failure (the caller's, or a bug in a statement)
    leaves the transaction unchanged: same object, no cause added, nothing committed."""
    from certwright.state.contract import Boom
    store = PostgresStore(postgres.store_url(str(tmp_path)))
    try:
        boom = Boom("the caller's")

        def fail() -> None:
            with store.transaction() as tx:
                tx.append(entry("r1"))
                raise boom
        assert raises(Boom, fail) is boom and boom.__cause__ is None
        assert store.journal("r1") == []
    finally:
        store.close()


def test_asking_whether_a_daemon_serves_leaves_no_lock_behind(
        tmp_path: Path, postgres: Cluster) -> None:
    """``daemon_serves`` tries the daemon lock and lets it go on the same session: asked
    many times over a pool of connections, it holds nothing afterwards, so a daemon (or
    ``store migrate``, which wants the lock alone) gets it, and it is then named."""
    url = postgres.store_url(str(tmp_path))
    probe = PostgresStore(url)
    daemon = PostgresStore(url)
    try:
        for _ in range(20):
            assert probe.daemon_serves() is False
        daemon.hold_daemon(alone=True)
        assert probe.daemon_serves() is True
        assert probe.daemon_holder()[0] == os.getpid()
    finally:
        daemon.close()
        probe.close()


def test_buffered_journal_rows_are_read_in_their_transaction_and_numbers_never_reused(
        tmp_path: Path, postgres: Cluster) -> None:
    """Journal entries and run rows wait in the transaction until its end, yet a read in
    it sees them; after a transaction that rolled back, numbers go on past every committed
    one; and a row given its number by the table's own identity (as an older certwright or
    a manual repair would) follows on, not over, the numbers the store assigned itself."""
    from certwright.state.contract import Boom, run
    store = PostgresStore(postgres.store_url(str(tmp_path)))
    try:
        with store.transaction() as tx:
            first = tx.append(entry("r1", 1))
            tx.put_run(run("r1"))
            assert [e.seq for e in store.journal("r1")] == [first]
            assert store.find_run("r1") is not None
            second = tx.append(entry("r1", 2))
        assert second == first + 1

        def rolled_back() -> int:
            with store.transaction() as tx:
                tx.append(entry("r2", 1))
                tx.append(entry("r2", 2))
                raise Boom("undo")
        raises(Boom, rolled_back)
        assert store.journal("r2") == []
        with store.transaction() as tx:
            third = tx.append(entry("r3", 1))
        assert third > second
        by_default = store.query("inserting", f"INSERT INTO {N.T_JOURNAL}(run_id, at, kind, "
                                 f"data) VALUES ('r4', 'x', 'note', '{{}}') RETURNING seq")
        assert int(by_default[0][0]) > third
        with store.transaction() as tx:
            assert tx.append(entry("r5", 1)) > int(by_default[0][0])
    finally:
        store.close()


def test_a_transaction_left_idle_is_ended_by_the_server_and_frees_the_lock(
        tmp_path: Path, postgres: Cluster, monkeypatch) -> None:
    """A process stopped inside a transaction (SIGSTOP, a hung host) would hold the
    store's write lock for as long as it stays stopped, and every other writer, failover
    included, would wait for it. The server ends such a session once it has been idle in
    its transaction for ``IDLE_TX_TIMEOUT_MS``: another store then writes, and the stopped
    one, going on, fails as a store fault with nothing of its transaction committed."""
    from certwright.state import postgres as pg
    monkeypatch.setattr(pg, "IDLE_TX_TIMEOUT_MS", 1000)
    url = postgres.store_url(str(tmp_path))
    # the other gives up after 3 s: only the server's ending the stopped session (after 1 s
    # idle) lets it write before the stopped one would go on, at 6 s
    stopped, other = PostgresStore(url), PostgresStore(url, lock_timeout=3.0)
    try:
        def stall() -> None:
            with stopped.transaction() as tx:
                tx.append(entry("r1", 1))
                tx.flush()  # sent: the transaction holds the write lock and a row
                time.sleep(6)  # stopped past the server's idle timeout
                tx.append(entry("r1", 2))
        import threading
        worker = threading.Thread(target=lambda: setattr(worker, "fault", raises(
            StoreFault, stall)))
        worker.start()
        time.sleep(0.5)
        with other.transaction() as tx:
            tx.append(entry("r2", 1))
        worker.join(30)
        assert isinstance(getattr(worker, "fault", None), StoreFault)
        assert "failed" in str(worker.fault) and "PostgreSQL store" in str(worker.fault)
        assert [e.data for e in other.journal("r2")] == [{"n": 1}]
        assert other.journal("r1") == []
    finally:
        stopped.close()
        other.close()


def test_a_warm_store_keeps_its_sessions_open_and_a_cold_one_opens_them_on_use(
        tmp_path: Path, postgres: Cluster) -> None:
    """A daemon's store (``warm=2``) has its two sessions set up when it opens, so the
    first mail after a quiet spell does not wait for them; a command's (``warm=0``) has
    none until it reads."""
    url = postgres.store_url(str(tmp_path))
    PostgresStore(url).close()  # the schema made, so opening migrates nothing

    def sessions() -> int:
        time.sleep(0.2)  # a session just closed leaves pg_stat_activity soon after
        return int(postgres.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                "'certwright' AND pid <> pg_backend_pid()"))

    before = sessions()
    cold = PostgresStore(url)
    try:
        assert sessions() == before
        cold.schema_version()
        assert sessions() == before + 1
    finally:
        cold.close()
    warm = PostgresStore(url, warm=2)
    try:
        assert sessions() == before + 2
        warm.schema_version()
        assert sessions() == before + 2
    finally:
        warm.close()
    assert sessions() == before
