"""Hosts on the SQLite store, through the CLI as a user runs it: a foreground `run` of a
run of another host parks at its first host-bound step (exit 3, naming the host),
`status` and `history` say so, `resume` here parks again, `move` hands the run to this
host and `resume` finishes it; bad hosts, unknown and finished runs are refused."""
from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.daemon.harness import cli, env_for

PIPELINE = """
pipeline: hosted
version: 1
initial: working
states:
  working:
    run:
      - {step: noop, id: first}
      - {step: key.generate, id: key}
    next: done
  done: {final: success}
"""


def test_a_run_of_another_host_parks_until_moved_here(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (tmp_path / "hosted.yaml").write_text(PIPELINE)
    env = env_for(state, {"CERTWRIGHT_HOST": "alpha"})

    def run(*args: str):  # type: ignore[no-untyped-def]
        return cli(state, "--state-dir", str(state), *args, env=env)

    parked = run("run", str(tmp_path / "hosted.yaml"), "--set", "host=Beta", "--run-id", "h1")
    assert parked.returncode == 3, parked.stderr
    assert "parked: run h1 is waiting for host beta" in parked.stderr
    assert "certwright move h1 --host HOST" in parked.stderr
    assert not (state / "runs" / "h1" / "server.key").exists()
    shown = json.loads(run("status", "--json").stdout)["runs"][0]
    assert (shown["host"], shown["wants_host"], shown["host_served"], shown["interrupted"]) \
        == ("beta", "beta", False, False)
    assert "h1: waiting for host beta (no daemon of beta serves this store" in \
        run("status").stdout
    assert "key waits for host beta (not started on alpha)" in run("history", "h1").stdout
    again = run("resume", "h1")
    assert again.returncode == 3 and "waiting for host beta" in again.stderr

    bad = run("move", "h1", "--host", "no such")
    assert bad.returncode == 2 and "is not a host name" in bad.stderr
    unknown = run("move", "h9", "--host", "alpha")
    assert unknown.returncode == 1 and "no run 'h9'" in unknown.stderr
    moved = run("move", "h1", "--host", "alpha")
    assert moved.returncode == 0, moved.stderr
    assert "moved to host alpha (was beta)" in moved.stderr and "not moved" in moved.stderr
    done = run("resume", "h1")
    assert done.returncode == 0, done.stderr
    assert (state / "runs" / "h1" / "server.key").exists()
    assert "host beta -> alpha by " in run("history", "h1").stdout
    finished = run("move", "h1", "--host", "beta")
    assert finished.returncode == 2 and "a finished run is not moved" in finished.stderr


def test_a_run_made_here_has_this_host_and_never_waits(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (tmp_path / "hosted.yaml").write_text(PIPELINE)
    env = env_for(state, {"CERTWRIGHT_HOST": "alpha"})
    done = cli(state, "--state-dir", str(state), "run", str(tmp_path / "hosted.yaml"),
               "--run-id", "h1", env=env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(cli(state, "--state-dir", str(state), "status", "--all", "--json",
                           env=env).stdout)["runs"][0]
    assert (shown["host"], shown["wants_host"], shown["status"]) == ("alpha", None,
                                                                     "succeeded")
