"""Several daemons on one PostgreSQL store, as real processes: they share the runs under
leases; one SIGKILLed mid-way and restarted, or SIGSTOPped past its lease and continued,
its late writes refused by fencing and logged; the server restarted under them. Every
run completes once, its step re-run (if at all) with the same idempotency key, and the
lease log shows no run with two holders at once.
"""
from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from certwright.state import names as N
from tests.fixtures.daemon.harness import Proc, env_for, wait_for
from tests.support.pg_daemons import lease_tenures, make_runs, rows, start_daemon
from tests.support.postgres import Cluster, own_cluster, postgres  # noqa: F401 - fixtures

PIPELINE = """
pipeline: shared
version: 1
inputs:
  log: {type: string}
  at: {type: string}
  work: {type: string, default: "1"}
initial: working
states:
  working:
    run:
      - step: shell
        id: work
        with:
          argv: [sh, -c, 'n=0; while [ -n "$GATE" ] && [ ! -e "$GATE" ] && [ $n -lt 900 ];
                 do sleep 0.1; n=$((n+1)); done; sleep "$1";
                 echo "$CERTWRIGHT_RUN_ID $CERTWRIGHT_IDEMPOTENCY_KEY" >> "$0"',
                 "${log}", "${work}"]
    next: parked
  parked:
    run:
      - step: wait.until
        id: later
        with: {at: "${at}"}
    next: finished
  finished: {final: success}
"""


def _start_runs(url: str, root: Path, n: int, work: str) -> list[str]:
    """``n`` runs created in the store (running, none driven yet)."""
    at = (datetime.now(UTC) + timedelta(seconds=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ids = [f"s{i:02d}" for i in range(n)]
    make_runs(url, root, PIPELINE, "shared.yaml",
              [{"log": str(root / "work.log"), "at": at, "work": work}] * n, ids)
    return ids


def _daemon(root: Path, url: str, name: str, lease: str = "3", gate: Path | None = None,
            ) -> Proc:
    """A daemon; with ``gate``, its work steps wait (up to 90 s) until that file exists."""
    env = env_for(root / name, {"GATE": str(gate)} if gate else None)
    return start_daemon(root, url, name, ["--lease", lease], env=env)


def _held_by(url: str, pid: int) -> int:
    return len([o for (o,) in rows(url, f"SELECT owner FROM {N.T_LEASES}")
                if o.split(":")[1] == str(pid)])


def _all_done(url: str, ids: list[str]) -> bool:
    status = dict(rows(url, f"SELECT id, status FROM {N.T_RUNS}"))
    return all(status.get(i) == "succeeded" for i in ids)


def _check_once(url: str, root: Path, ids: list[str]) -> None:
    """Each run succeeded with one finish in its journal; its work step ran with one
    idempotency key however often it ran; no lease tenure overlapped the next one."""
    finished = defaultdict(int)
    for rid, data in rows(url, f"SELECT run_id, data FROM {N.T_JOURNAL} "
                                f"WHERE kind = 'entered'"):
        finished[rid] += "finished" in json.loads(data).values()
    assert {i: finished[i] for i in ids} == dict.fromkeys(ids, 1)
    keys = defaultdict(set)
    for line in (root / "work.log").read_text().splitlines():
        rid, key = line.split()
        keys[rid].add(key)
    assert {i: len(keys[i]) for i in ids} == dict.fromkeys(ids, 1)
    tenures = lease_tenures(url)
    assert set(tenures) >= set(ids)
    for rid, spans in tenures.items():
        for (_, ended, token), (taken_next, _, token_next) in pairwise(spans):
            assert ended is not None and ended <= taken_next, (rid, spans)
            assert token_next > token


def test_a_daemon_killed_mid_way_loses_no_run_and_none_runs_twice(
        tmp_path: Path, postgres: Cluster) -> None:
    """Two daemons share 16 runs; the one holding leases is SIGKILLed while steps execute
    and restarted: every run succeeds once (its step, if re-run, with the same key) and
    the other daemon took the dead one's runs over."""
    url = postgres.store_url(str(tmp_path))
    a, b = _daemon(tmp_path, url, "a"), _daemon(tmp_path, url, "b")
    procs = [a, b]
    try:
        ids = _start_runs(url, tmp_path, 16, "2")
        victim = wait_for(lambda: next((p for p in (a, b) if _held_by(url, p.popen.pid) >= 2),
                                       None), 60, "a daemon to hold leases")
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait(10)
        survivor = b if victim is a else a
        wait_for(lambda: _all_done(url, ids) or "runs_leased" in survivor.text(), 60,
                 "the survivor to take the dead daemon's runs")
        procs.append(_daemon(tmp_path, url, "a" if victim is a else "b"))
        wait_for(lambda: _all_done(url, ids), 90, "every run to succeed")
    finally:
        for p in procs:
            p.stop()
    _check_once(url, tmp_path, ids)
    assert any(how == "takeover" for (how,) in rows(url, f"SELECT how FROM {N.T_LEASE_LOG}"))


def test_a_daemon_stopped_past_its_lease_is_fenced_off_when_continued(
        tmp_path: Path, postgres: Cluster) -> None:
    """A daemon holding the leases of runs whose step executes is SIGSTOPped past its
    lease; the other daemon takes the runs over; continued, the stopped one's writes are
    refused by fencing (logged with run and token), and every run still succeeds once.
    Each daemon's steps wait behind a gate of its own, so the stopped daemon's steps
    finish first, after it is continued and while the other's still execute, however
    slowly the machine starts the daemons."""
    url = postgres.store_url(str(tmp_path))
    ids = _start_runs(url, tmp_path, 6, "0")
    gate_a, gate_b = tmp_path / "gate-a", tmp_path / "gate-b"
    a = _daemon(tmp_path, url, "a", lease="2", gate=gate_a)
    procs = [a]
    try:
        wait_for(lambda: _held_by(url, a.popen.pid) == len(ids), 60, "a to hold every lease")
        # b is ready before a stops, so a stays stopped only a lease or so: stopped inside a
        # transaction for 10 s, a would have its session ended by the server instead (see
        # state.postgres.IDLE_TX_TIMEOUT_MS) and lose its leases without a late write
        procs.append(_daemon(tmp_path, url, "b", lease="2", gate=gate_b))
        a.popen.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: _held_by(url, procs[1].popen.pid) == len(ids), 60,
                     "b to take every run over")
        finally:
            a.popen.send_signal(signal.SIGCONT)
        gate_a.touch()
        wait_for(lambda: "fencing_refused" in a.text(), 60, "a's late writes to be refused")
        gate_b.touch()
        wait_for(lambda: _all_done(url, ids), 90, "every run to succeed")
    finally:
        gate_a.touch()
        gate_b.touch()
        for p in procs:
            p.stop()
    refused = [e for e in a.events() if e.get("event") == "fencing_refused"]
    assert refused and refused[0]["run_id"] in ids and "token" in refused[0]
    _check_once(url, tmp_path, ids)


def _listens_again(proc: Proc) -> bool:
    """Whether the daemon's wake listener lost its connection and listened again."""
    events = proc.events()
    return (any(e.get("event") == "wake_listener_down" for e in events)
            and any(e.get("event") == "wake_listening" and e.get("reconnects", 0) >= 1
                    for e in events))


def test_the_daemons_live_through_a_server_restart_and_every_run_completes(
        tmp_path: Path, own_cluster: Cluster) -> None:
    """PostgreSQL stopped while two daemons drive runs, started again seconds later: the
    daemons log the outage, back off, reconnect, and every run completes once; each
    daemon's wake listener, cut off too, reconnects by itself and listens again."""
    url = own_cluster.store_url(str(tmp_path))
    a, b = _daemon(tmp_path, url, "a"), _daemon(tmp_path, url, "b")
    try:
        ids = _start_runs(url, tmp_path, 8, "2")
        wait_for(lambda: _held_by(url, a.popen.pid) + _held_by(url, b.popen.pid) > 0, 60,
                 "the daemons to lease runs")
        own_cluster.stop()
        time.sleep(3)
        own_cluster.start()
        wait_for(lambda: _all_done(url, ids), 120, "every run to succeed")
        assert a.popen.poll() is None and b.popen.poll() is None
        wait_for(lambda: all(_listens_again(p) for p in (a, b)), 60,
                 "each daemon's wake listener to listen again")
    finally:
        for p in (a, b):
            p.stop()
    logs = a.text() + b.text()  # the outage was seen: by a pump, housekeeping or the pool
    assert any(said in logs for said in ("store_unavailable", "daemon_housekeeping_failed",
                                         "error connecting in 'certwright-store'"))
    _check_once(url, tmp_path, ids)
