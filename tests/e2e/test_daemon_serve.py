"""The daemon as a user runs it: real CA and mail server processes, inbox, CLI, locks, signals."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.fixtures.daemon.harness import (
    MAILCA,
    World,
    ca_certificates,
    cli,
    drop_request,
    start_world,
    statuses,
    store_rows,
    wait_for,
)


@pytest.fixture
def world(tmp_path: Path):
    w = start_world(tmp_path, [f"d{i}.test" for i in range(6)])
    try:
        yield w
    finally:
        w.close()


def _installed(state: Path, ids: list[str]) -> bool:
    st = statuses(state)
    return all(st.get(i, ("", ""))[0] == "installed" for i in ids)


def test_inbox_and_cli_runs_are_served_to_installed(world: World):
    """Runs dropped into the inbox and parked by `run --no-wait` both reach installed."""
    inbox = world.root / "inbox"
    inbox.mkdir()
    daemon = world.start_daemon("--inbox", str(inbox))
    drop_request(inbox, "one.json", str(MAILCA), world.inputs("d0.test"), run_id="inbox-one")
    sets = [f"--set={k}={v}" for k, v in world.inputs("d1.test").items()]
    r = cli(world.state, "run", str(MAILCA), "--no-wait", "--run-id", "cli-one", *sets)
    assert r.returncode in (0, 3), r.stderr
    wait_for(lambda: _installed(world.state, ["inbox-one", "cli-one"]), 120,
             "both runs installed")
    assert (inbox / "done" / "inbox-one-one.json").exists()
    assert ca_certificates(world.ca_dir) == 2
    assert (world.root / "certs" / "d0.test" / "server.crt").exists()
    assert daemon.popen.poll() is None
    assert daemon.stop(signal.SIGTERM) == 0
    assert "daemon_stopped" in daemon.text()


def test_bad_inbox_file_goes_to_failed_with_reason(world: World):
    """A request naming an unknown input is refused into failed/ with an .error sidecar."""
    inbox = world.root / "inbox"
    inbox.mkdir()
    world.start_daemon("--inbox", str(inbox))
    drop_request(inbox, "bad.json", str(MAILCA), {**world.inputs("d2.test"), "colour": "red"})
    err = inbox / "failed" / "bad.json.error"
    wait_for(err.exists, 30, "the .error sidecar")
    assert "unknown input 'colour'" in err.read_text()
    assert (inbox / "failed" / "bad.json").exists()
    assert "inbox_refused" in world.daemon.text()


def test_second_daemon_is_refused_naming_the_first_pid(world: World):
    """Exit code 4 and the first daemon's pid in the message."""
    first = world.start_daemon()
    r = cli(world.state, "daemon", "--maildir", str(world.maildir))
    assert r.returncode == 4
    assert f"pid {first.popen.pid}" in r.stderr
    status = cli(world.state, "status", "--json")
    assert json.loads(status.stdout)["daemon_pid"] == first.popen.pid


def test_sigterm_leaves_no_half_written_state_and_the_run_resumes(world: World):
    """SIGTERM while runs are in flight: restart finishes them; the CA issued once each."""
    inbox = world.root / "inbox"
    inbox.mkdir()
    world.start_daemon("--inbox", str(inbox))
    ids = [f"term-{i}" for i in range(3)]
    for i, rid in enumerate(ids):
        drop_request(inbox, f"{rid}.json", str(MAILCA), world.inputs(f"d{i + 3}.test"), run_id=rid)
    wait_for(lambda: all(statuses(world.state).get(r) for r in ids), 30, "runs created")
    assert world.daemon.stop(signal.SIGTERM) == 0
    journal = store_rows(world.state, "SELECT COUNT(*) FROM journal")[0][0]
    assert journal > 0
    world.start_daemon("--inbox", str(inbox))
    wait_for(lambda: _installed(world.state, ids), 120, "runs installed after restart")
    assert ca_certificates(world.ca_dir) == 3
