"""Wake-ups between daemons on one PostgreSQL store, as real processes: with a long
fallback poll (a 90 s lease, so free runs are looked for every 30 s, and a 90 s sync), a run
another process makes is taken and finished by a daemon within seconds, so are the runs a
daemon lets go of on a graceful stop, and a mail routed by one daemon for a run whose
lease the other holds reaches that run within seconds.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from certwright.state import names as N
from certwright.state.leases_pg import PgLeases
from certwright.state.postgres import PostgresStore
from tests.fixtures.daemon.harness import Proc, wait_for
from tests.support.mail import probe_mail
from tests.support.pg_daemons import make_runs, rows, start_daemon
from tests.support.postgres import Cluster, postgres  # noqa: F401 - fixtures

POLL = 90        # seconds: the daemons' lease and sync interval (their fallback polls)
QUICK = 20.0     # seconds within which a wake-up must have done the work (the poll: >= 25)

ECHO = """
pipeline: echo
version: 1
initial: working
states:
  working:
    run:
      - step: shell
        with: {argv: [sh, -c, "true"]}
    next: finished
  finished: {final: success}
"""

SLOW = """
pipeline: slow
version: 1
initial: working
states:
  working:
    run:
      - step: shell
        with: {argv: [sh, -c, "sleep 8"]}
    next: finished
  finished: {final: success}
"""

MAILED = """
pipeline: mailed
version: 1
inputs:
  maildir: {type: string}
initial: asking
states:
  asking:
    run:
      - step: wait.mail
        id: probe
        with: {maildir: "${maildir}", to: "postmaster@example.test"}
    next: answered
  answered: {final: success}
"""


def _daemon(root: Path, url: str, name: str, *extra: str) -> Proc:
    """A daemon whose fallback polls are POLL seconds apart."""
    state = root / name
    state.mkdir(parents=True, exist_ok=True)
    config = state / "config.yaml"
    config.write_text(f"daemon:\n  sync_interval: {POLL}s\n  lease: {POLL}s\n")
    proc = start_daemon(root, url, name, extra, before=["--config", str(config)])
    wait_for(lambda: "wake_listening" in proc.text(), 30, f"daemon {name} to listen")
    return proc


def _make(url: str, root: Path, text: str, inputs: list[dict], ids: list[str]) -> None:
    """Runs made in the store by a process that is no daemon (they wait to be taken)."""
    make_runs(url, root, text, "p.yaml", inputs, ids)


def _statuses(url: str) -> dict[str, str]:
    return dict(rows(url, f"SELECT id, status FROM {N.T_RUNS}"))


def _owner(proc: Proc) -> str:
    return next(e["owner"] for e in proc.events() if e.get("event") == "daemon_leasing")


def test_a_run_made_elsewhere_is_taken_at_once_not_at_the_next_poll(
        tmp_path: Path, postgres: Cluster) -> None:
    """Two daemons that look for free runs only every 30 s (and sync every 90 s): five runs
    made by another process all succeed within QUICK seconds, taken on the notice of
    their transaction (``runs_leased`` with ``why=notice``)."""
    url = postgres.store_url(str(tmp_path))
    procs = [_daemon(tmp_path, url, "a"), _daemon(tmp_path, url, "b")]
    try:
        ids = [f"e{i}" for i in range(5)]
        made = time.monotonic()
        _make(url, tmp_path, ECHO, [{}] * len(ids), ids)
        wait_for(lambda: all(_statuses(url).get(i) == "succeeded" for i in ids), QUICK,
                 "every run to be taken and finished on a wake-up")
        took = time.monotonic() - made
    finally:
        for p in procs:
            p.stop()
    woken = [e for p in procs for e in p.events()
             if e.get("event") == "runs_leased" and e.get("why") == "notice"]
    assert woken, [p.text()[-2000:] for p in procs]
    assert took < POLL / 3  # long before the fallback would have looked


def _held_by(url: str, proc: Proc) -> int:
    store = PostgresStore(url)
    try:
        return len(store.query("reading", f"SELECT run_id FROM {N.T_LEASES} WHERE owner = %s",
                               (_owner(proc),)))
    finally:
        store.close()


def test_runs_a_daemon_lets_go_of_on_a_graceful_stop_are_taken_at_once(
        tmp_path: Path, postgres: Cluster) -> None:
    """Daemon a drives three runs whose step sleeps 8 s; stopped (SIGTERM) with the steps
    in flight, it waits for them, then releases their leases with a notice in the same
    transaction, and daemon b takes them at once (``runs_leased``, ``why=notice``) and runs
    the step again: all done within 36 s of b's start, where b's next look for free runs
    comes 30 s after it, and the step then takes 8 s more."""
    url = postgres.store_url(str(tmp_path))
    a = _daemon(tmp_path, url, "a")
    procs = [a]
    try:
        ids = ["g0", "g1", "g2"]
        _make(url, tmp_path, SLOW, [{}] * len(ids), ids)
        wait_for(lambda: _held_by(url, a) == len(ids), 30, "a to hold every run")
        b = _daemon(tmp_path, url, "b")
        procs.append(b)
        ready = time.monotonic()
        assert a.stop() == 0
        wait_for(lambda: all(_statuses(url).get(i) == "succeeded" for i in ids), 36,
                 "b to take the released runs at once and finish them")
        took = time.monotonic() - ready
    finally:
        for p in procs:
            p.stop()
    assert any(e.get("event") == "runs_leased" and e.get("why") == "notice"
               for e in b.events()), \
        b.text()[-3000:]
    assert took < POLL / 3 + 8  # before the poll's claim and the step after it


def _stop_outside_transactions(proc: Proc, url: str) -> None:
    """SIGSTOP ``proc`` at a moment it is in no transaction (else it would hold the
    store's write lock, and every writer would wait for it): stopped inside one, it is
    continued and stopped again a moment later."""
    store = PostgresStore(url)
    try:
        for _ in range(50):
            proc.popen.send_signal(signal.SIGSTOP)
            time.sleep(0.2)
            busy = store.query("reading", "SELECT count(*) FROM pg_stat_activity WHERE "
                                          "state = 'idle in transaction' "
                                          "OR wait_event_type = 'Lock'")
            if not busy[0][0]:
                return
            proc.popen.send_signal(signal.SIGCONT)
            time.sleep(0.3)
    finally:
        store.close()
    raise AssertionError("the daemon was in a transaction each time it was stopped")


def test_a_mail_for_a_run_another_daemon_holds_reaches_it_at_once(
        tmp_path: Path, postgres: Cluster) -> None:
    """Daemon a reads the Maildir, daemon b does not (and, stopped while a parked the run,
    never learnt of its wait). The run waiting for mail is leased by b (as while b
    re-checks it; here the test takes the lease in b's name, and b renews it). A mail
    routed by a cannot be dispatched there: a asks b (``run_recheck_asked``) in the same
    transaction, b re-checks the wait, finds the mail and finishes the run within QUICK
    seconds, where nothing else would make b look before its 90 s sync."""
    url = postgres.store_url(str(tmp_path))
    md = tmp_path / "mail"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    a = _daemon(tmp_path, url, "a", "--maildir", str(md))
    b = _daemon(tmp_path, url, "b")
    try:
        _stop_outside_transactions(b, url)
        try:
            _make(url, tmp_path, MAILED, [{"maildir": str(md)}], ["m1"])
            wait_for(lambda: _statuses(url).get("m1") == "waiting", 30,
                     "a to park the run waiting for mail")
        finally:
            b.popen.send_signal(signal.SIGCONT)
        store = PostgresStore(url)
        try:  # a lets the lease go just after the commit that parked the run
            as_b = PgLeases(store, _owner(b), lease_s=POLL)
            wait_for(lambda: as_b.take("m1") is not None, 30, "a to release the parked run")
        finally:
            store.close()
        (md / "tmp" / "probe").write_bytes(probe_mail(to="postmaster@example.test"))
        delivered = time.monotonic()
        os.rename(md / "tmp" / "probe", md / "new" / "probe")
        wait_for(lambda: _statuses(url).get("m1") == "succeeded", QUICK,
                 "the mail to reach the run through its holder")
        took = time.monotonic() - delivered
    finally:
        for p in (a, b):
            p.stop()
    assert "run_recheck_asked" in a.text(), a.text()[-3000:]
    assert any(e.get("event") == "transitioned" and e.get("run_id") == "m1"
               and e.get("to") == "answered" for e in b.events()), b.text()[-3000:]
    assert list((md / "cur").iterdir())  # b's wait took the mail
    assert took < 30  # else b would look only at its sync, 90 s after its start
