"""Run leases on a real PostgreSQL store (``state.leases_pg``): taken, renewed, expired,
taken over with a larger token, released, shared out with SKIP LOCKED, and fencing: a
transaction of a daemon whose lease was taken over commits nothing.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwright.state import names as N
from certwright.state.contract import entry, raises, run
from certwright.state.leases_pg import FencingRefused, PgLeases
from certwright.state.postgres import PostgresStore
from tests.support.postgres import Cluster, postgres  # noqa: F401 - fixtures

SHORT = 0.5  # seconds: a lease a test lets expire


@pytest.fixture
def url(tmp_path: Path, postgres: Cluster) -> str:
    return postgres.store_url(str(tmp_path))


@pytest.fixture
def stores(url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two daemons' stores on one PostgreSQL store."""
    a, b = PostgresStore(url), PostgresStore(url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _expire(store: PostgresStore, run_id: str) -> None:
    """Make a lease expired now (as if its owner stopped renewing it long ago)."""
    store.query("expiring", f"UPDATE {N.T_LEASES} SET expires_at = now() - interval '1 s' "
                            f"WHERE run_id = %s", (run_id,))


def _log(store: PostgresStore, run_id: str) -> list[tuple[int, str, str, str | None]]:
    rows = store.query("reading", f"SELECT token, owner, how, ended FROM {N.T_LEASE_LOG} "
                                  f"WHERE run_id = %s ORDER BY token", (run_id,))
    return [(int(r[0]), r[1], r[2], r[3]) for r in rows]


def test_a_lease_is_taken_renewed_and_refused_to_another_owner(stores) -> None:
    """The first owner takes the lease; taking it again (renewing) keeps its token; another
    owner is refused while it is live."""
    a, b = stores
    la, lb = PgLeases(a, "host-a:1:x"), PgLeases(b, "host-b:2:y")
    token = la.take("r1")
    assert token is not None
    assert la.take("r1") == token
    assert lb.take("r1") is None
    assert la.held() == {"r1": token} and lb.held() == {}
    assert la.renew() == []
    assert _log(a, "r1") == [(token, "host-a:1:x", "new", None)]


def test_an_expired_lease_is_taken_over_with_a_larger_token_and_its_loser_learns_it(
        stores) -> None:
    """Past its expiry another owner takes the lease over: a larger token, the first tenure
    logged as expired; the first owner's renewal reports the run lost."""
    a, b = stores
    la, lb = PgLeases(a, "host-a:1:x", lease_s=SHORT), PgLeases(b, "host-b:2:y")
    first = la.take("r1")
    assert first is not None
    time.sleep(SHORT + 0.2)
    second = lb.take("r1")
    assert second is not None and second > first
    assert lb.taken_over == 1
    assert la.renew() == ["r1"] and la.held() == {}
    assert _log(a, "r1") == [(first, "host-a:1:x", "new", "expired"),
                             (second, "host-b:2:y", "takeover", None)]


def test_fencing_refuses_a_stale_token_s_transaction_and_nothing_of_it_commits(stores) -> None:
    """A daemon whose lease was taken over writes the run in a transaction: it fails with
    FencingRefused naming the run and its old token, and neither its journal entry nor its
    run row (nor the other run's write in the same transaction) is in the store."""
    a, b = stores
    la, lb = PgLeases(a, "host-a:1:x"), PgLeases(b, "host-b:2:y")
    a.fence = la
    with a.transaction() as tx:  # a new run: its lease is taken by the first write
        tx.put_run(run("r1"))
        tx.append(entry("r1", kind="created"))
    token = la.token("r1")
    assert token is not None
    _expire(a, "r1")
    assert lb.take("r1") is not None

    def stale() -> None:
        with a.transaction() as tx:
            tx.put_run(run("r2"))
            tx.append(entry("r1", kind="step_started"))
    refused = raises(FencingRefused, stale)
    assert refused.run_id == "r1" and refused.token == token
    assert "r1" in str(refused) and f"token {token}" in str(refused)
    assert [e.kind for e in a.journal("r1")] == ["created"]
    assert a.find_run("r2") is None
    assert la.token("r1") is None  # dropped: the run is another daemon's now
    b.fence = lb
    with b.transaction() as tx:  # the new holder writes on
        tx.append(entry("r1", kind="step_started"))
    assert [e.kind for e in b.journal("r1")] == ["created", "step_started"]


def test_the_runs_a_transaction_holds_are_checked_together_before_it_commits(stores) -> None:
    """Many held runs written in one transaction are checked in one go at its end: with
    every lease held it commits; when two of them were taken over meanwhile, it names the
    first of those, drops both from what this daemon holds, keeps the others, and commits
    nothing, not even the writes of the runs whose leases were still good."""
    a, b = stores
    la, lb = PgLeases(a, "host-a:1:x"), PgLeases(b, "host-b:2:y")
    a.fence = la
    ids = [f"r{i}" for i in range(5)]
    with a.transaction() as tx:
        for rid in ids:
            tx.put_run(run(rid))
    assert sorted(la.held()) == ids
    with a.transaction() as tx:
        for rid in ids:
            tx.append(entry(rid, kind="step_started"))
    assert all([e.kind for e in a.journal(rid)] == ["step_started"] for rid in ids)
    for rid in ("r3", "r1"):
        _expire(a, rid)
        assert lb.take(rid) is not None

    def stale() -> None:
        with a.transaction() as tx:
            for rid in ids:
                tx.append(entry(rid, kind="step_done"))
    refused = raises(FencingRefused, stale)
    assert refused.run_id == "r1"
    assert sorted(la.held()) == ["r0", "r2", "r4"]
    assert all([e.kind for e in a.journal(rid)] == ["step_started"] for rid in ids)
    with a.transaction() as tx:  # the leases still held write on
        tx.append(entry("r0", kind="step_done"))
    assert [e.kind for e in a.journal("r0")] == ["step_started", "step_done"]


def test_a_write_for_a_run_another_daemon_holds_is_refused_before_any_lease(stores) -> None:
    """A daemon that never held the run (say a cancel) cannot write it while another
    daemon's lease is live; deleting that run's timer is fenced too."""
    a, b = stores
    la, lb = PgLeases(a, "host-a:1:x"), PgLeases(b, "host-b:2:y")
    b.fence = lb
    with b.transaction() as tx:
        timer = tx.add_timer("r1", 1, "wake", "2030-01-01T00:00:00.000000Z")
    a.fence = la

    def cancel() -> None:
        with a.transaction() as tx:
            tx.delete_timer(timer)
    assert raises(FencingRefused, cancel).token is None
    assert [t.id for t in a.timers()] == [timer]


def test_release_frees_a_lease_at_once_and_logs_it(stores) -> None:
    """Released leases go at once (another owner takes them with a new token, no waiting),
    and the log says released; release() with no ids lets every lease go."""
    a, b = stores
    la, lb = PgLeases(a, "host-a:1:x"), PgLeases(b, "host-b:2:y")
    first = la.take("r1")
    la.take("r2")
    assert la.release(["r1"]) == 1
    second = lb.take("r1")
    assert first is not None and second is not None and second > first
    assert _log(a, "r1")[0][3] == "released"
    assert la.release() == 1 and la.held() == {}
    assert lb.take("r2") is not None


def test_free_running_runs_are_shared_out_and_a_live_lease_is_left_alone(stores) -> None:
    """claim_free takes running runs no live lease covers, up to its limit; a second owner
    gets the rest, and neither takes a run the other holds."""
    a, b = stores
    with a.transaction() as tx:
        for i in range(5):
            tx.put_run(run(f"r{i}", status="running"))
        tx.put_run(run("parked", status="waiting"))
    la, lb = PgLeases(a, "host-a:1:x"), PgLeases(b, "host-b:2:y")
    got_a = la.claim_free(limit=3)
    got_b = lb.claim_free(limit=10)
    assert len(got_a) == 3 and len(got_b) == 2
    assert set(got_a) | set(got_b) == {f"r{i}" for i in range(5)}
    assert la.claim_free() == [] and lb.claim_free() == []


def test_free_runs_waiting_for_a_host_are_left_to_its_daemons(stores) -> None:
    """claim_free of a daemon of host a skips a free run waiting for host b, which b's
    daemon takes; runs waiting for no host go to either; an owner with no host (no host
    rule) takes any."""
    a, b = stores
    with a.transaction() as tx:
        tx.put_run(run("for-b", status="running", host="b", wants_host="b"))
        tx.put_run(run("for-c", status="running", host="c", wants_host="c"))
        tx.put_run(run("any", status="running", host="b"))
    la, lb = PgLeases(a, "a:1:x", host="a"), PgLeases(b, "b:2:y", host="b")
    assert la.claim_free() == ["any"]
    assert lb.claim_free() == ["for-b"]
    assert la.claim_free() == [] and lb.claim_free() == []
    assert PgLeases(a, "none:3:z").claim_free() == ["for-c"]


def test_taking_many_leases_at_once_is_taking_each(stores) -> None:
    """take_many, in the store's transaction: a free run is taken (logged new), one of this
    owner keeps its token, an expired one of another owner is taken over (its tenure
    logged expired), a live one of another owner is left out; all commit together."""
    a, b = stores
    la, lb = PgLeases(a, "host-a:1:x"), PgLeases(b, "host-b:2:y", lease_s=SHORT)
    own = la.take("mine")
    live, gone = lb.take("theirs"), lb.take("expired")
    assert own is not None and live is not None and gone is not None
    lb.lease_s = 60.0
    assert lb.take("theirs") == live  # renewed past the test
    _expire(b, "expired")
    with a.transaction():
        taken = la.take_many(["free", "mine", "theirs", "expired", "free"])
    assert set(taken) == {"free", "mine", "expired"} and taken["mine"] == own
    assert taken["expired"] > gone and la.taken_over == 1
    assert la.held() == taken and lb.take("expired") is None
    assert _log(a, "free") == [(taken["free"], "host-a:1:x", "new", None)]
    assert _log(a, "mine") == [(own, "host-a:1:x", "new", None)]
    assert _log(a, "expired") == [(gone, "host-b:2:y", "new", "expired"),
                                  (taken["expired"], "host-a:1:x", "takeover", None)]
    assert _log(a, "theirs") == [(live, "host-b:2:y", "new", None)]


@pytest.mark.parametrize("many", [False, True], ids=["take", "take_many"])
def test_a_take_racing_a_release_logs_a_new_tenure_after_the_released_one(
        stores, many: bool) -> None:
    """Another owner takes a lease while its holder's release is in flight (a daemon's
    sync adopting a run the other is parking): the take waits for the release, so it logs
    a new tenure that starts after the released one ended, never a takeover whose loser
    seems to hold on past it (the cluster campaign read that as two drivers at once)."""
    a, b = stores
    la, lb = PgLeases(a, "host-a:1:x"), PgLeases(b, "host-b:2:y")
    first = la.take("r1")
    released, go_on = threading.Event(), threading.Event()

    def release() -> None:
        with a.transaction():
            la.release(["r1"])
            released.set()
            go_on.wait(5)
            time.sleep(0.3)  # the take below is waiting by now

    thread = threading.Thread(target=release)
    thread.start()
    try:
        assert released.wait(5)
        go_on.set()
        second = lb.take_many(["r1", "r2"])["r1"] if many else lb.take("r1")
    finally:
        go_on.set()
        thread.join()
    assert first is not None and second is not None and second > first
    assert _log(a, "r1") == [(first, "host-a:1:x", "new", "released"),
                             (second, "host-b:2:y", "new", None)]
    assert lb.taken_over == 0
    (ended, taken), = a.query("reading", f"SELECT (SELECT ended_at FROM {N.T_LEASE_LOG} "
                                         f"WHERE token = %s), (SELECT taken_at FROM "
                                         f"{N.T_LEASE_LOG} WHERE token = %s)",
                              (first, second))
    assert ended <= taken


def test_the_next_expiry_is_the_earliest_live_lease_of_another_owner(stores) -> None:
    """next_expiry_s: seconds until another owner's earliest live lease ends; an owner's own
    leases and leases already expired do not count, and None when no other owner holds a
    live one."""
    a, b = stores
    la, lb = PgLeases(a, "host-a:1:x", lease_s=60.0), PgLeases(b, "host-b:2:y", lease_s=30.0)
    assert la.next_expiry_s() is None
    la.take("own")
    assert la.next_expiry_s() is None
    left = lb.next_expiry_s()
    assert left is not None and 55.0 < left <= 60.0
    lb.take("later")
    lb.lease_s = 10.0
    lb.take("sooner")
    left = la.next_expiry_s()
    assert left is not None and 5.0 < left <= 10.0
    _expire(b, "sooner")
    left = la.next_expiry_s()
    assert left is not None and 25.0 < left <= 30.0
    _expire(b, "later")
    assert la.next_expiry_s() is None


def test_a_dead_owner_s_runs_are_looked_for_just_after_its_lease_ends(stores) -> None:
    """RunLeases.look does nothing (no query) until another owner's earliest lease has
    ended, then takes the free running runs and plans the next look: the moment a dead
    daemon's runs are taken over is its leases' end, not the next keep."""
    from certwright.engine.daemon.leasing import LOOK_SLACK, RunLeases
    a, b = stores
    with a.transaction() as tx:
        for rid in ("r1", "r2"):
            tx.put_run(run(rid, status="running"))
    dead = PgLeases(a, "host-a:1:x", lease_s=SHORT)
    assert dead.take("r1") is not None and dead.take("r2") is not None
    now = [100.0]
    survivor = RunLeases(PgLeases(b, "host-b:2:y", lease_s=60.0), monotonic=lambda: now[0])
    assert survivor.look_in() is None and survivor.look() == []
    assert survivor.keep() == []  # both leases live: nothing taken, the look planned
    planned = survivor.look_in()
    assert planned is not None and LOOK_SLACK <= planned <= SHORT + LOOK_SLACK
    now[0] += planned / 2
    assert survivor.look() == []  # not yet: the planned moment is still ahead
    time.sleep(SHORT + LOOK_SLACK)  # the server's clock passes the leases' end
    now[0] += planned
    assert sorted(survivor.look()) == ["r1", "r2"]
    assert sorted(survivor.leases.held()) == ["r1", "r2"]
    assert survivor.look_in() is None  # no other owner holds a live lease now
    assert [how for _, _, how, _ in _log(b, "r1")] == ["new", "takeover"]
