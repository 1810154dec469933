"""The daemon across time (CERTWRIGHT_NOW moves a process's clock): deadlines that passed
while it was down, renewals with back-off, and pipeline edits picked up while it runs."""
from __future__ import annotations

import json
import shutil
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certwright.clock import format_instant
from certwright.engine.daemon.renew import renewals_status
from tests.fixtures.daemon.harness import (
    FIXTURES,
    cli,
    drop_request,
    env_for,
    spawn,
    statuses,
    store_rows,
    wait_for,
)


def _daemon(state: Path, root: Path, *args: str, now: datetime | None = None):
    env = env_for(state, {"CERTWRIGHT_NOW": format_instant(now)} if now else None)
    n = len(list(root.glob("daemon*.log")))
    proc = spawn(["--state-dir", str(state), "--log-json", "daemon", *args], env,
                 root / f"daemon{n}.log")
    wait_for(lambda: "daemon_ready" in proc.text() or proc.popen.poll() is not None, 60,
             "daemon ready")
    assert proc.popen.poll() is None, proc.text()[-3000:]
    return proc


def _entered(state: Path, run_id: str) -> list[str]:
    rows = store_rows(state, "SELECT data FROM journal WHERE run_id=? AND kind='entered' "
                             "ORDER BY seq", (run_id,))
    return [json.loads(r[0])["to"] for r in rows]


def test_deadline_passed_while_down_fires_on_restart(tmp_path: Path):
    """Runs parked by `run --no-wait`; daemon down past the 2-day deadline; on restart the
    runs are expired and waiting (probing) again."""
    state, md = tmp_path / "state", tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):  # the MTA's Maildir: made by it, not by certwright
        (md / sub).mkdir(parents=True)
    ids = [f"late-{i}" for i in range(3)]
    for i, rid in enumerate(ids):
        r = cli(state, "run", str(FIXTURES / "waitmail.yaml"), "--no-wait", "--run-id", rid,
                "--set", f"to=postmaster@late{i}.test", "--set", f"maildir={md}")
        assert r.returncode == 3, r.stderr
    first = _daemon(state, tmp_path, "--maildir", str(md))
    assert first.stop(signal.SIGTERM) == 0
    assert all(statuses(state)[r] == ("probed", "waiting") for r in ids)
    later = datetime.now(UTC) + timedelta(days=2, hours=1)
    second = _daemon(state, tmp_path, "--maildir", str(md), now=later)
    try:
        # entered is committed before wait.mail parks the run again: wait for both
        wait_for(lambda: all(_entered(state, r)[-2:] == ["expired", "probed"]
                             and statuses(state)[r] == ("probed", "waiting") for r in ids),
                 30, "runs expired and waiting (probing) again")
        assert second.text().count("state_timed_out") == 3
    finally:
        second.stop(signal.SIGTERM)


def _rows(state: Path) -> list[dict]:
    return renewals_status(state)


def test_renewal_under_a_moved_clock_then_backoff_with_the_current_pipeline(tmp_path: Path):
    """An installed certificate is renewed when a third of its life is left (the log names
    the run it renews); a later renewal with a broken pipeline edit backs off."""
    state, inbox, pipes = tmp_path / "state", tmp_path / "inbox", tmp_path / "pipelines"
    inbox.mkdir()
    pipes.mkdir()
    shutil.copy(FIXTURES / "selfsigned.yaml", pipes / "selfsigned.yaml")
    (tmp_path / "certs").mkdir()
    config = tmp_path / "daemon.yaml"
    config.write_text(f"inbox: {inbox}\npipelines: {pipes}\nrenew_check: 1s\n")
    inputs = {"domain": "renew.test", "cert_dir": str(tmp_path / "certs" / "renew.test"),
              "python": sys.executable, "script": str(FIXTURES / "selfsign.py")}
    d = _daemon(state, tmp_path, "--config", str(config))
    drop_request(inbox, "r.json", "selfsigned", inputs, run_id="orig")
    wait_for(lambda: statuses(state).get("orig") == ("installed", "succeeded"), 60, "installed")
    wait_for(lambda: _rows(state), 30, "the renewal to be scheduled")
    row = _rows(state)[0]
    assert row["run_id"] == "orig" and row["status"] == "scheduled"
    assert d.stop(signal.SIGTERM) == 0

    now = datetime.now(UTC)
    d = _daemon(state, tmp_path, "--config", str(config), now=now + timedelta(days=70))
    started = wait_for(lambda: [e for e in _events(d) if e["event"] == "renewal_started"], 60,
                       "a renewal to start")
    assert started[0]["renews"] == "orig"
    new_id = started[0]["run_id"]
    wait_for(lambda: _rows(state) and _rows(state)[0]["run_id"] == new_id, 60,
             "the renewal to install and be scheduled in turn")
    assert _rows(state)[0]["attempts"] == 0
    assert statuses(state)[new_id] == ("installed", "succeeded")

    # A broken edit is refused (the old version stays); a failing valid one is used.
    good = (FIXTURES / "selfsigned.yaml").read_text()
    (pipes / "selfsigned.yaml").write_text(good.replace("install.files", "install.fils"))
    line = next(i for i, t in enumerate(good.splitlines(), 1) if "install.files" in t)
    wait_for(lambda: any(e["event"] == "pipeline_invalid" for e in _events(d)), 60,
             "the broken edit to be refused")
    bad = next(e for e in _events(d) if e["event"] == "pipeline_invalid")
    assert f"selfsigned.yaml:{line}:" in bad["problems"]
    assert "install.fils" in bad["problems"]
    failing = (FIXTURES / "selfsigned.yaml").read_text().replace(
        '"${python}", "${script}"', '"false", "${script}"')
    (pipes / "selfsigned.yaml").write_text(failing.replace("version: 1", "version: 2"))
    wait_for(lambda: sum(e["event"] == "pipeline_loaded" for e in _events(d)) >= 2, 60,
             "the good edit to be loaded")
    assert d.stop(signal.SIGTERM) == 0
    d = _daemon(state, tmp_path, "--config", str(config), now=now + timedelta(days=140))
    try:
        wait_for(lambda: _rows(state)[0]["status"] == "backoff", 90, "the renewal to back off")
        row = _rows(state)[0]
        assert row["attempts"] == 1 and "failed" in row["last_error"]
        assert row["next_at"] > format_instant(now + timedelta(days=140, minutes=59))
    finally:
        d.stop(signal.SIGTERM)


def _events(proc) -> list[dict]:
    return proc.events()
