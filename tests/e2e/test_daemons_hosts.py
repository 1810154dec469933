"""Hosts on one PostgreSQL store, as real processes: daemons started with ``--host alpha``
and ``--host beta`` (one machine, a state folder each). A run of host beta has its
any-host steps done by whichever daemon takes it and its key and CSR steps only by beta;
while no daemon of its host serves the store it waits, and ``status`` says so; ``move``
from a dead host to a live one lets the live host's daemon finish it. Which daemon ran
which step is read from the journal (each ``step_started`` names its engine's host) and
from the lease log (each tenure names its daemon).
"""
from __future__ import annotations

import json
import signal
from itertools import pairwise
from pathlib import Path

from certwright.state import names as N
from tests.fixtures.daemon.harness import Proc, cli, env_for, wait_for
from tests.support.pg_daemons import lease_tenures, make_runs, rows, start_daemon, started_on
from tests.support.postgres import Cluster, postgres  # noqa: F401 - a fixture

PIPELINE = """
pipeline: hosted
version: 1
inputs:
  log: {type: string}
initial: working
states:
  working:
    run:
      - step: shell
        id: ca_call
        with: {argv: [sh, -c, 'echo "$CERTWRIGHT_RUN_ID" >> "$0"', "${log}"]}
      - {step: key.generate, id: key}
      - {step: csr.generate, id: csr, with: {key: "${steps.key.path}", domain: example.test}}
      - {step: noop, id: after}
    next: done
  done: {final: success}
"""


def _start_runs(url: str, root: Path, ids: list[str], host: str) -> None:
    """Runs of ``host`` made in the store (running, none driven yet)."""
    make_runs(url, root, PIPELINE, "hosted.yaml", [{"log": str(root / "ca.log")}] * len(ids),
              ids, host=host)


def _daemon(root: Path, url: str, host: str) -> Proc:
    env = env_for(root / host)
    env.pop("CERTWRIGHT_HOST", None)
    return start_daemon(root, url, host, ["--lease", "3", "--host", host], env=env)


def _runs(url: str) -> dict[str, tuple[str, str | None]]:
    return {rid: (status, wants) for rid, status, wants in
            rows(url, f"SELECT id, status, wants_host FROM {N.T_RUNS}")}


def _status(root: Path, url: str, *args: str) -> str:
    done = cli(root, "--state-dir", str(root / "reader"), "--store", url, "status", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _no_overlap(url: str) -> None:
    for spans in lease_tenures(url).values():
        for (_, ended, _), (taken_next, _, _) in pairwise(spans):
            assert ended is not None and ended <= taken_next, spans


def test_host_bound_steps_run_only_on_the_runs_host(tmp_path: Path, postgres: Cluster) -> None:
    """alpha alone does the any-host step of runs of host beta and parks them waiting for
    beta (status: no daemon of beta serves); beta, started, takes them and does their key
    and CSR steps; alpha never starts one."""
    url = postgres.store_url(str(tmp_path))
    ids = [f"h{i}" for i in range(3)]
    procs = [_daemon(tmp_path, url, "alpha")]
    try:
        _start_runs(url, tmp_path, ids, "beta")
        wait_for(lambda: all(_runs(url).get(i) == ("running", "beta") for i in ids), 60,
                 "alpha to park every run waiting for beta")
        shown = _status(tmp_path, url)
        assert ("waiting for host beta (no daemon of beta serves this store: start one, or "
                "`certwright move h0 --host ...`)") in shown
        assert {i: dict(started_on(url)[i]) for i in ids} == {
            i: {"ca_call": {"alpha"}} for i in ids}
        wait_for(lambda: not rows(url, f"SELECT run_id FROM {N.T_LEASES}"), 30,
                 "alpha to let go of every run it parked")
        procs.append(_daemon(tmp_path, url, "beta"))
        wait_for(lambda: all(_runs(url).get(i) == ("succeeded", None) for i in ids), 90,
                 "beta to finish every run")
    finally:
        for p in procs:
            p.stop()
    started = started_on(url)
    for i in ids:
        assert started[i]["ca_call"] == {"alpha"}
        assert started[i]["key"] == started[i]["csr"] == {"beta"}
    owners = {o.split(":")[0] for (o,) in rows(url, f"SELECT owner FROM {N.T_LEASE_LOG}")}
    assert owners == {"alpha", "beta"}
    events = [e for e in procs[0].events() if e.get("event") == "host_awaited"]
    assert {e["run_id"] for e in events} == set(ids) and {e["host"] for e in events} == {"beta"}
    assert not (tmp_path / "alpha" / "runs" / "h0" / "server.key").exists()
    assert (tmp_path / "beta" / "runs" / "h0" / "server.key").exists()
    _no_overlap(url)


def test_a_run_waiting_for_a_dead_host_completes_once_moved(
        tmp_path: Path, postgres: Cluster) -> None:
    """A daemon of gamma is SIGKILLed; runs of host gamma park on alpha; status says no
    daemon of gamma serves the store; `move RUN --host alpha` (journaled) lets alpha
    finish them, their key steps on alpha."""
    url = postgres.store_url(str(tmp_path))
    alpha, gamma = _daemon(tmp_path, url, "alpha"), _daemon(tmp_path, url, "gamma")
    try:
        gamma.popen.send_signal(signal.SIGKILL)
        gamma.popen.wait(10)
        ids = ["m0", "m1"]
        _start_runs(url, tmp_path, ids, "gamma")
        wait_for(lambda: all(_runs(url).get(i) == ("running", "gamma") for i in ids), 60,
                 "alpha to park the runs waiting for gamma")
        assert "no daemon of gamma serves this store" in _status(tmp_path, url, "m0")
        doc = json.loads(_status(tmp_path, url, "--json"))
        assert {r["run"]: r["host_served"] for r in doc["runs"]} == dict.fromkeys(ids, False)
        for rid in ids:
            moved = cli(tmp_path, "--state-dir", str(tmp_path / "ops"), "--store", url,
                        "move", rid, "--host", "alpha")
            assert moved.returncode == 0, moved.stderr
            assert "are not moved" in moved.stderr
        wait_for(lambda: all(_runs(url).get(i) == ("succeeded", None) for i in ids), 90,
                 "alpha to finish the moved runs")
        again = cli(tmp_path, "--state-dir", str(tmp_path / "ops"), "--store", url,
                    "move", "m0", "--host", "gamma")
        assert again.returncode == 2 and "finished run is not moved" in again.stderr
    finally:
        alpha.stop()
        gamma.stop()
    started = started_on(url)
    for rid in ids:
        assert started[rid]["key"] == {"alpha"}
        moves = [json.loads(d) for (d,) in rows(
            url, f"SELECT data FROM {N.T_JOURNAL} WHERE run_id = '{rid}' AND kind = 'moved'")]
        assert [(m["previous"], m["host"]) for m in moves] == [("gamma", "alpha")]
    _no_overlap(url)
