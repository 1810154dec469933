"""Wake-ups on a real PostgreSQL store (``state.notify_pg``): a notice is heard only when its
transaction commits; a writer that is not a daemon announces running runs (one notice for
many), a daemon's own writes and a foreground run announce nothing; a lease released while
its run is running wakes the others, one released after it parked does not; a ``recheck``
names the holder of the run's lease.
"""
from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwright.state.contract import Boom, run
from certwright.state.leases_pg import PgLeases
from certwright.state.notify_pg import Notice, WakeListener, send
from certwright.state.postgres import PostgresStore
from certwright.state.records import RUNNING, WAITING
from tests.support.postgres import Cluster, postgres  # noqa: F401 - fixtures

QUIET = 0.6  # seconds a test waits to see that no notice comes


class Ear:
    """A listener on the store's wake channel and what it heard."""

    def __init__(self, url: str) -> None:
        self.heard: queue.Queue[Notice] = queue.Queue()
        self.listener = WakeListener(url, "test", self.heard.put, lambda: None)
        self.listener.start()
        if not self.listener.listening.wait(10):
            raise AssertionError("the listener did not start listening")

    def next(self, timeout: float = 10.0) -> Notice:
        return self.heard.get(timeout=timeout)

    def nothing(self) -> list[Notice]:
        """Whatever comes within QUIET seconds (a test asserts it is nothing)."""
        time.sleep(QUIET)
        out = []
        while not self.heard.empty():
            out.append(self.heard.get_nowait())
        return out


@pytest.fixture
def url(tmp_path: Path, postgres: Cluster) -> str:
    return postgres.store_url(str(tmp_path))


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ear(url: str, store: PostgresStore) -> Iterator[Ear]:
    e = Ear(url)
    try:
        yield e
    finally:
        e.listener.stop()


def test_a_notice_is_heard_when_its_transaction_commits_never_when_it_rolls_back(
        store: PostgresStore, ear: Ear) -> None:
    """A notice sent in a transaction that rolls back is never delivered; one sent in the
    next, committed transaction is (after it, so the first would have come before)."""
    def rolled_back() -> None:
        with store.transaction(), store.connection("test") as conn:
            send(conn, Notice("recheck", "rolled-back", "r0", "someone"))
            raise Boom

    with pytest.raises(Boom):
        rolled_back()
    with store.transaction(), store.connection("test") as conn:
        send(conn, Notice("recheck", "committed", "r1", "someone"))
    assert ear.next() == Notice("recheck", "committed", "r1", "someone")
    assert ear.nothing() == []


def test_a_listener_hears_only_its_own_store(tmp_path: Path, postgres: Cluster,
                                             store: PostgresStore, ear: Ear) -> None:
    """Two stores in one database (two schemas) have channels of their own."""
    other = PostgresStore(postgres.store_url(str(tmp_path / "other")))
    try:
        with other.transaction(), other.connection("test") as conn:
            send(conn, Notice("run", "other"))
    finally:
        other.close()
    assert ear.nothing() == []


def test_a_writer_that_is_no_daemon_announces_running_runs_once_per_transaction(
        store: PostgresStore, ear: Ear) -> None:
    """Three running runs written in one transaction: one ``run`` notice (folded); a
    timer: one ``timer`` notice. A parked run announces nothing."""
    with store.transaction() as tx:
        for rid in ("a", "b", "c"):
            tx.put_run(run(rid, RUNNING))
    assert ear.next() == Notice("run", "")
    with store.transaction() as tx:
        tx.add_timer("a", 1, "wake", "2030-01-01T00:00:00Z")
        tx.add_timer("b", 1, "wake", "2030-01-01T00:00:00Z")
    assert ear.next() == Notice("timer", "")
    with store.transaction() as tx:
        tx.put_run(run("d", status=WAITING))
    assert ear.nothing() == []


def test_a_daemon_and_a_foreground_run_announce_nothing_of_their_own_writes(
        url: str, store: PostgresStore, ear: Ear) -> None:
    """With a fence (a daemon: it drives what it writes) or with ``announce`` off (a
    foreground run), a running run and a timer send no notice."""
    store.fence = PgLeases(store, "daemon-a:1:x")
    with store.transaction() as tx:
        tx.put_run(run("a", RUNNING))
        tx.add_timer("a", 1, "wake", "2030-01-01T00:00:00Z")
    quiet = PostgresStore(url)
    try:
        quiet.announce = False
        with quiet.transaction() as tx:
            tx.put_run(run("b", RUNNING))
    finally:
        quiet.close()
    assert ear.nothing() == []


def test_a_lease_released_while_its_run_runs_wakes_the_others_but_not_once_parked(
        store: PostgresStore, ear: Ear) -> None:
    """Releasing the lease of a running run (a graceful stop) sends a ``run`` notice with
    the daemon's owner; releasing that of a parked run sends none."""
    with store.transaction() as tx:
        tx.put_run(run("busy", RUNNING))
        tx.put_run(run("parked", status=WAITING))
    ear.next()  # the writer's own announcement of "busy"
    leases = PgLeases(store, "daemon-a:1:x")
    assert leases.take("parked") is not None
    assert leases.release(["parked"]) == 1
    assert ear.nothing() == []
    assert leases.take("busy") is not None
    assert leases.release() == 1
    assert ear.next() == Notice("run", "daemon-a:1:x")


def test_a_recheck_is_addressed_to_the_holder_of_the_lease(
        store: PostgresStore, ear: Ear) -> None:
    """A daemon refused a run asks its holder, by name, to re-check it; with no other
    holder it sends nothing."""
    a, b = PgLeases(store, "daemon-a:1:x"), PgLeases(store, "daemon-b:2:y")
    assert b.take("r1") is not None
    with store.transaction():
        assert a.recheck("r1") is True
        assert a.recheck("r2") is False  # nobody holds it
        assert b.recheck("r1") is False  # its own
    assert ear.next() == Notice("recheck", "daemon-a:1:x", "r1", "daemon-b:2:y")
    assert ear.nothing() == []


def test_unreadable_payloads_are_dropped(store: PostgresStore, ear: Ear) -> None:
    """A notice that is not ours (not JSON, an unknown kind) is dropped, not handed on."""
    with store.transaction(), store.connection("test") as conn:
        for payload in ("hello", '{"k": "explode", "o": "x"}', '{"k": "run"}'):
            conn.execute("SELECT pg_notify('certwright_wake_' || left(md5(current_schema()),"
                         " 12), %s)", (payload,))
    assert ear.nothing() == []
    assert Notice.parse('{"k":"run","o":"x"}') == Notice("run", "x")
