"""Logs as a user (or a log shipper) sees them: JSON lines, one event per transition, no
secret values."""
from __future__ import annotations

import json
import os
import subprocess
import sys

PIPELINE = """
pipeline: logged
version: 1
inputs:
  password: {type: string, secret: true, required: true}
initial: first
states:
  first:
    run:
      - step: shell
        id: uses_secret
        with: {argv: [sh, -c, 'test -n "$0"', "${password}"]}
    next: second
  second:
    run: [noop]
    next: done
  done: {final: true}
"""


def test_log_json_gives_one_json_event_per_transition_and_no_secret(tmp_path):
    pipeline = tmp_path / "logged.yaml"
    pipeline.write_text(PIPELINE)
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(tmp_path / "state")}
    secret = "Correct Horse Battery-Staple 42!"
    done = subprocess.run(
        [sys.executable, "-m", "certwright", "--log-json", "run", str(pipeline),
         "--set", f"password={secret}", "--run-id", "logged-1"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert events, done.stderr
    transitions = [(e["from"], e["to"], e["trigger"]) for e in events
                   if e["event"] == "transitioned"]
    assert transitions == [(None, "first", "start"), ("first", "second", "next"),
                           ("second", "done", "next")]
    assert all(e["run_id"] == "logged-1" for e in events if e["event"] == "transitioned")
    assert secret not in done.stderr and secret not in done.stdout
    history = subprocess.run([sys.executable, "-m", "certwright", "history", "logged-1",
                              "--json"], env=env, capture_output=True, text=True, check=False)
    assert secret not in history.stdout
    assert '"<secret>"' in history.stdout


def test_log_json_ends_a_failed_command_with_a_json_line_too(tmp_path):
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "certwright", "--log-json", "resume", "no-such-run"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines, done.stderr
    last = json.loads(lines[-1])  # every line a JSON line, the last the failure
    assert last["event"] == "command_failed" and last["level"] == "error"
    assert last["exit_code"] == done.returncode
    assert "no-such-run" in last["error"]
    plain = subprocess.run([sys.executable, "-m", "certwright", "resume", "no-such-run"],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    assert plain.stderr.strip().splitlines()[-1] == f"certwright: {last['error']}"
