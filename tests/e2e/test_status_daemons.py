"""`certwright status` lists the daemons serving the store from their heartbeat rows: host,
pid, started, last heartbeat, runs driven; stale past three heartbeats (SIGSTOP, with the
clock moved on rather than a sleep), gone once killed, removed by a graceful stop."""
from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta

from certwright.clock import format_instant
from tests.e2e.test_daemon_metrics import served  # noqa: F401 - the fixture, by name
from tests.fixtures.daemon.harness import cli, env_for


def test_status_shows_the_daemon_and_its_heartbeat_then_stale(served):
    """`status` lists the daemon (host, pid, heartbeat, runs); stopped (SIGSTOP) past three
    heartbeats it is shown stale; a graceful stop removes its row."""
    state, _, daemon, _ = served
    pid = daemon.popen.pid
    r = cli(state, "status", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["daemons"]
    assert [(d["pid"], d["stale"]) for d in rows] == [(pid, False)]
    assert rows[0]["host"] and rows[0]["heartbeat"] and rows[0]["runs"] == 2
    text = cli(state, "status").stdout
    assert "HEARTBEAT" in text and str(pid) in text
    os.kill(pid, signal.SIGSTOP)
    later = format_instant(datetime.now(UTC) + timedelta(minutes=5))
    r = cli(state, "status", "--json", env=env_for(state, {"CERTWRIGHT_NOW": later}))
    assert [(d["pid"], d["stale"]) for d in json.loads(r.stdout)["daemons"]] == [(pid, True)]
    text = cli(state, "status", env=env_for(state, {"CERTWRIGHT_NOW": later})).stdout
    assert "stale" in text
    os.kill(pid, signal.SIGCONT)
    assert daemon.stop() == 0
    assert json.loads(cli(state, "status", "--json").stdout)["daemons"] == []


def test_a_killed_daemon_is_shown_gone(served):
    """SIGKILL leaves the heartbeat row; `status` says the pid is not running here."""
    state, _, daemon, _ = served
    daemon.stop(signal.SIGKILL)
    rows = json.loads(cli(state, "status", "--json").stdout)["daemons"]
    assert [(d["pid"], d["stale"], d["state"]) for d in rows] == [
        (daemon.popen.pid, True, "gone")]
