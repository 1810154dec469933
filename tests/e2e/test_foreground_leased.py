"""A foreground ``certwright run --no-wait`` (or ``resume``) on a PostgreSQL store that
daemons serve drives its run under a lease of its own, as a daemon would: no daemon takes
the run while the command's step executes, so the step runs once, and the run finishes
once. Before, the command held only its state folder's run lock, which daemons on a
shared store do not take: a daemon's sync found the run running with no lease, took it
and ran the step a second time beside the command.
"""
from __future__ import annotations

import json
from pathlib import Path

from certwright.state import names as N
from tests.fixtures.daemon.harness import cli, env_for, wait_for
from tests.support.pg_daemons import make_runs, rows, start_daemon
from tests.support.postgres import Cluster, postgres  # noqa: F401 - fixtures

PIPELINE = """
pipeline: slowstep
version: 1
inputs:
  log: {type: string}
initial: working
states:
  working:
    run:
      - step: shell
        with:
          argv: [sh, -c, 'echo "$CERTWRIGHT_IDEMPOTENCY_KEY" >> "$0"; sleep 5', "${log}"]
    next: done
  done: {final: true}
"""


def test_a_foreground_run_beside_daemons_runs_its_step_once(
        tmp_path: Path, postgres: Cluster) -> None:
    """Two daemons (one in the command's folder, one in another; a 3 s lease, so each
    looks for free runs every second and syncs every 2 s) and a foreground run whose
    step takes 5 s: the step ran once, the run finished once, the command's lease was
    released at its end, and no daemon logged taking the run."""
    url = postgres.store_url(str(tmp_path))
    pipeline = tmp_path / "slowstep.yaml"
    pipeline.write_text(PIPELINE)
    work = tmp_path / "work.log"
    daemons = [start_daemon(tmp_path, url, name, ["--lease", "3"]) for name in ("a", "b")]
    try:
        done = cli(tmp_path / "a", "--state-dir", str(tmp_path / "a"), "--store", url,
                   "run", str(pipeline), "--run-id", "fg1", "--set", f"log={work}",
                   "--no-wait", env=env_for(tmp_path / "a"))
    finally:
        for d in daemons:
            d.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    assert work.read_text().splitlines() == ["fg1:1:0"]
    kinds = [(kind, json.loads(data).get("recovering"))
             for kind, data in rows(url, f"SELECT kind, data FROM {N.T_JOURNAL} "
                                         f"WHERE run_id = 'fg1' ORDER BY seq")]
    assert kinds.count(("step_started", False)) == 1
    assert ("step_started", True) not in kinds
    assert [k for k, _ in kinds].count("step_done") == 1
    assert rows(url, f"SELECT run_id FROM {N.T_LEASES} WHERE run_id = 'fg1'") == []
    assert not [e for d in daemons for e in d.events() if e.get("run_id") == "fg1"
                or (e.get("event") == "runs_leased" and e.get("count"))]


def test_resume_of_a_run_a_daemon_drives_is_refused_with_exit_4(
        tmp_path: Path, postgres: Cluster) -> None:
    """A daemon is executing the run's step: ``resume --no-wait`` in the daemon's folder
    says which daemon drives the run and exits 4, and the step still runs once."""
    url = postgres.store_url(str(tmp_path))
    work = tmp_path / "work.log"
    daemon = start_daemon(tmp_path, url, "a", ["--lease", "3"])
    try:
        make_runs(url, tmp_path, PIPELINE, "slowstep.yaml", [{"log": str(work)}], ["bg1"])
        wait_for(work.exists, 30, "the daemon to start the step")
        refused = cli(tmp_path / "a", "--state-dir", str(tmp_path / "a"), "--store", url,
                      "resume", "bg1", "--no-wait", env=env_for(tmp_path / "a"))
        wait_for(lambda: dict(rows(url, f"SELECT id, status FROM {N.T_RUNS}")).get("bg1")
                 == "succeeded", 30, "the daemon to finish the run")
    finally:
        daemon.stop()
    assert refused.returncode == 4, refused.stderr[-2000:]
    assert "run bg1 is driven by daemon" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert work.read_text().splitlines() == ["bg1:1:0"]
