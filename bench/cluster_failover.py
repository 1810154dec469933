"""``bench/cluster.py``'s failover figure: how long a dead daemon's runs go undriven.

``--failover-runs`` runs (default 1,000), each with a step executing (``sleep`` for
longer than the measurement: 8 at a time in the worker pool, the rest ready behind them,
so every run is active and leased), are driven by daemon A alone until A holds every
lease; daemon B then starts beside it. A is SIGKILLed: ``failover_s`` is the time from
the kill to every one of those runs being leased by B (read from the ``leases`` table,
expiry in the future), with ``lease_s`` the lease period both daemons were given. A
dead daemon's leases run out ``lease_s`` after its last renewal (up to a third of the
lease before the kill) and the survivor adopts runs whose lease is free at each sync of its
loop (``sync_interval``, 2 s), so the figure is at most about ``lease_s`` plus 2 s and the
takes (goal: at most ``lease_s + 2``; see ``docs/scaling.md``).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.postgres import Cluster

SLEEPER = """
pipeline: sleeper
version: 1
inputs:
  seconds: {type: string, required: true}
initial: busy
states:
  busy:
    run:
      - step: shell
        with: {argv: [sleep, "${seconds}"]}
    next: done
  done: {final: true}
"""


def _create(url: str, runs: int, folder: Path, seconds: str) -> None:
    from certwright.engine.model.loader import load_pipeline_text
    from certwright.engine.run.runner import Engine, EngineOptions
    from certwright.state.postgres import PostgresStore
    store = PostgresStore(url)
    engine = Engine(store, folder, options=EngineOptions(inline=True, max_batch=1000))
    spec = load_pipeline_text(SLEEPER, "sleeper.yaml", engine.registry)
    engine.open()
    for start in range(0, runs, 1000):
        ids = [f"f{i}" for i in range(start, min(runs, start + 1000))]
        engine.start_runs(spec, [{"seconds": seconds} for _ in ids], ids)
    engine.close()
    store.close()


def _kill_sleeps(seconds: str) -> None:
    """The steps' ``sleep`` processes (a step's process is a session of its own, so
    killing its daemon leaves it running)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().split(b"\0")[:2] == [b"sleep", seconds.encode()]:
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _until(what: str, check: Any, procs: list[subprocess.Popen[bytes]],
           timeout: float) -> float:
    """Poll ``check`` every 50 ms until true; the monotonic instant it was seen true."""
    end = time.monotonic() + timeout
    while not check():
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a daemon exited while waiting for {what}")
        if time.monotonic() > end:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic()


def failover(pg: Cluster, url: str, schema: str, folder: Path, command: list[str],
             env: dict[str, str], runs: int, lease_s: float) -> dict[str, Any]:
    """Seconds from SIGKILL of the daemon holding every run to all leased by the other."""
    # an hour, with digits of this bench's own, so its steps' processes are found after
    seconds = f"3600.{os.getpid()}"
    _create(url, runs, folder / "creator", seconds)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(name: str) -> subprocess.Popen[bytes]:
        state = folder / name
        state.mkdir()
        log = (folder / f"{name}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen([*command, "--state-dir", str(state), "daemon", "--store", url,
                                 "--lease", str(lease_s)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    def count(sql: str) -> int:
        return int(pg.sql(sql))

    live = f"SELECT count(*) FROM {schema}.leases WHERE expires_at > now()"
    try:
        a = start("a")
        _until("daemon A leasing every run", lambda: count(live) >= runs, procs, 300)
        owner_a = pg.sql(f"SELECT min(owner) FROM {schema}.leases")
        if count(f"SELECT count(DISTINCT owner) FROM {schema}.leases") != 1:
            raise SystemExit("the runs were not all leased by daemon A")
        start("b")
        _until("daemon B serving", lambda: count(f"SELECT count(*) FROM {schema}.daemons") >= 2,
               procs[1:], 120)
        time.sleep(1.0)  # B past its start-up, looking for free runs on its schedule
        os.killpg(a.pid, signal.SIGKILL)  # the daemon and its steps' processes at once
        a.wait()
        killed = time.monotonic()
        owner_a_sql = owner_a.replace("'", "''")
        done = _until("daemon B leasing every run", lambda: count(
            f"SELECT count(*) FROM {schema}.leases WHERE expires_at > now() "
            f"AND owner <> '{owner_a_sql}'") >= runs, procs[1:], 10 * lease_s + 60)
    finally:
        for proc in procs:  # steps sleep for an hour: no graceful stop to wait for
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for log in logs:
            log.close()
        _kill_sleeps(seconds)
    return {"failover_runs": runs, "lease_s": lease_s,
            "failover_s": round(done - killed, 2)}
