"""The CLI as a user runs it: real processes, SIGKILL, resume, locks, durable deadlines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.procs import alive

STEPS = 5
MARKERS = """
pipeline: markers
version: 1
initial: first
states:
  first:
    run:
%(first_steps)s
    next: second
  second:
    run:
%(second_steps)s
    next: done
  done: {final: true}
"""
STEP = """      - step: shell
        id: %(id)s
        with:
          argv: [sh, -c, 'mkdir -p "$0/markers" &&
                 echo "$CERTWRIGHT_IDEMPOTENCY_KEY" >> "$0/markers/%(id)s"%(extra)s', "${run.dir}"]
"""
SLOW = """; [ "$CERTWRIGHT_RECOVERING" = 1 ] || { touch "$0/markers/slow-started"; sleep 60; }"""


def _pipeline(tmp_path: Path, slow: str | None = None, slow_part: str = SLOW) -> Path:
    ids = [f"m{i}" for i in range(1, STEPS + 1)]
    render = [STEP % {"id": i, "extra": slow_part if i == slow else ""} for i in ids]
    text = MARKERS % {"first_steps": "".join(render[:3]).rstrip("\n"),
                      "second_steps": "".join(render[3:]).rstrip("\n")}
    path = tmp_path / "markers.yaml"
    path.write_text(text)
    return path


def cli(state: Path, *args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(state), **(env or {})}
    return subprocess.run([sys.executable, "-m", "certwright", *args], env=full_env,
                          capture_output=True, text=True, timeout=120, check=False, **kw)


def popen(state: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(state), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "certwright", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _markers(state: Path, run_id: str) -> dict[str, list[str]]:
    folder = state / "runs" / run_id / "markers"
    return {p.name: p.read_text().split() for p in folder.iterdir() if p.name.startswith("m")}


def test_pipeline_of_shell_steps_runs_to_the_end(tmp_path):
    state = tmp_path / "state"
    result = cli(state, "run", str(_pipeline(tmp_path)), "--run-id", "clean")
    assert result.returncode == 0, result.stderr
    markers = _markers(state, "clean")
    assert sorted(markers) == [f"m{i}" for i in range(1, STEPS + 1)]
    assert all(len(lines) == 1 for lines in markers.values())


# Commits: 1 start (created, entered, m1 intent), then one per step result (+ next intent)
# and the transitions between; killing after each commit covers every step boundary.
@pytest.mark.parametrize("commit", range(1, STEPS + 3))
def test_sigkill_at_each_step_boundary_then_resume_writes_each_marker_once(tmp_path, commit):
    state = tmp_path / "state"
    pipeline = _pipeline(tmp_path)
    killed = cli(state, "run", str(pipeline), "--run-id", "k",
                 env={"CERTWRIGHT_CRASH_AFTER_COMMITS": str(commit)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = cli(state, "resume", "k")
    assert resumed.returncode == 0, resumed.stderr
    markers = _markers(state, "k")
    assert sorted(markers) == [f"m{i}" for i in range(1, STEPS + 1)]
    for name, lines in markers.items():
        assert len(lines) == 1, (name, lines)
    # every step ran with its own key (run:entry:index), the one in flight included
    expected = {f"m{i}": f"k:1:{i - 1}" if i <= 3 else f"k:2:{i - 4}" for i in range(1, 6)}
    assert {name: lines[0] for name, lines in markers.items()} == expected
    history = json.loads(cli(state, "history", "k", "--json").stdout)
    recovered = [e["data"] for e in history if e["kind"] == "step_started"
                 and e["data"]["recovering"]]
    for entry in recovered:  # an intent committed before the kill: re-run, same key
        assert entry["key"] == expected[entry["step"]]
    kinds = [e["kind"] for e in history]
    assert kinds.count("step_done") == STEPS  # each step recorded done exactly once


def test_sigkill_in_the_middle_of_a_slow_step_reruns_it_with_the_same_key(tmp_path):
    state = tmp_path / "state"
    pipeline = _pipeline(tmp_path, slow="m4")
    proc = popen(state, "run", str(pipeline), "--run-id", "mid")
    started = state / "runs" / "mid" / "markers" / "slow-started"
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    resumed = cli(state, "resume", "mid")
    assert resumed.returncode == 0, resumed.stderr
    markers = _markers(state, "mid")
    assert markers["m4"] == ["mid:2:0", "mid:2:0"]  # ran again, same idempotency key
    for name in ("m1", "m2", "m3", "m5"):
        assert len(markers[name]) == 1, (name, markers[name])
    history = json.loads(cli(state, "history", "mid", "--json").stdout)
    recovering = [e for e in history if e["kind"] == "step_started" and e["data"]["recovering"]]
    assert [e["data"]["key"] for e in recovering] == ["mid:2:0"]


SLEEPER = ('; [ "$CERTWRIGHT_RECOVERING" = 1 ] || { sleep 60 & echo $! > "$0/markers/sleeper"; '
           'touch "$0/markers/slow-started"; wait; }')


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_parks_the_run_and_stops_the_steps_commands(tmp_path, sig):
    """`kill PID` or a closed terminal parks the run like Ctrl-C (exit 3): the command the
    step started, and its children, are stopped, and resume re-runs the step, same key."""
    state = tmp_path / "state"
    pipeline = _pipeline(tmp_path, slow="m4", slow_part=SLEEPER)
    assert cli(state, "validate", str(pipeline)).returncode == 0
    proc = popen(state, "run", str(pipeline), "--run-id", "term")
    started = state / "runs" / "term" / "markers" / "slow-started"
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sleeper = int((started.parent / "sleeper").read_text())
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 3, proc.stderr.read()
    for _ in range(100):  # the grandchild is gone (reaped by init once killed)
        if not alive(sleeper):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the step's command {sleeper} outlived the parked run")
    resumed = cli(state, "resume", "term")
    assert resumed.returncode == 0, resumed.stderr
    assert _markers(state, "term")["m4"] == ["term:2:0", "term:2:0"]


WAITER = """
pipeline: waiter
version: 1
initial: asking
states:
  asking:
    run:
      - step: wait.file
        id: answer
        with: {path: "${run.dir}/answer"}
    timeout: {after: 2d, to: expired}
    next: answered
  expired:
    retry: {max: 3, to: asking, else: given_up}
  answered: {final: true}
  given_up: {final: failure}
"""


def test_a_second_process_on_a_driven_run_is_refused_with_the_holders_pid(tmp_path):
    state = tmp_path / "state"
    pipeline = tmp_path / "waiter.yaml"
    pipeline.write_text(WAITER)
    proc = popen(state, "run", str(pipeline), "--run-id", "busy")
    try:
        deadline = time.monotonic() + 30
        while True:
            status = cli(state, "status", "busy", "--json")
            if (status.returncode == 0
                    and json.loads(status.stdout)["runs"][0]["status"] == "waiting"):
                break
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, status.stderr
            time.sleep(0.1)
        second = cli(state, "resume", "busy")
        assert second.returncode == 4
        assert f"pid {proc.pid}" in second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err  # Ctrl-C parks the run
    assert "certwright resume busy" in err
    (state / "runs" / "busy" / "answer").write_text("yes")
    done = cli(state, "resume", "busy")
    assert done.returncode == 0, done.stderr


def test_deadline_passes_while_nothing_runs_and_fires_on_resume(tmp_path):
    state = tmp_path / "state"
    pipeline = tmp_path / "waiter.yaml"
    pipeline.write_text(WAITER)
    parked = cli(state, "run", str(pipeline), "--run-id", "late", "--no-wait")
    assert parked.returncode == 3, parked.stderr
    run = json.loads(cli(state, "status", "late", "--json").stdout)["runs"][0]
    assert run["state"] == "asking" and run["deadline"]
    later = datetime.now(UTC) + timedelta(days=2, hours=1)
    moved = cli(state, "resume", "late", "--no-wait",
                env={"CERTWRIGHT_NOW": later.isoformat()})
    assert moved.returncode == 3, moved.stderr
    history = json.loads(cli(state, "history", "late", "--json").stdout)
    triggers = [(e["data"]["from"], e["data"]["to"], e["data"]["trigger"])
                for e in history if e["kind"] == "entered"]
    assert triggers[-2:] == [("asking", "expired", "timeout"), ("expired", "asking", "loop")]


def test_resume_without_the_run_folder_makes_it_and_writes_the_log_there(tmp_path):
    """A run whose folder is gone (moved from another host, or cleaned up) still gets its
    certwright.log when resumed: the folder is made again, private."""
    import shutil
    state = tmp_path / "state"
    pipeline = tmp_path / "waiter.yaml"
    pipeline.write_text(WAITER)
    assert cli(state, "run", str(pipeline), "--run-id", "gone", "--no-wait").returncode == 3
    shutil.rmtree(state / "runs" / "gone")
    again = cli(state, "resume", "gone", "--no-wait")
    assert again.returncode == 3, again.stderr
    assert "log_file_unavailable" not in again.stderr
    log = state / "runs" / "gone" / "certwright.log"
    assert "resum" in log.read_text()
    assert (os.stat(log.parent).st_mode & 0o777) == 0o700


def test_status_table_shows_waiting_for_and_deadline(tmp_path):
    state = tmp_path / "state"
    pipeline = tmp_path / "waiter.yaml"
    pipeline.write_text(WAITER)
    cli(state, "run", str(pipeline), "--run-id", "shown", "--no-wait")
    table = cli(state, "status")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()[1:3]
    assert header.split()[:5] == ["RUN", "PIPELINE", "STATE", "STATUS", "WAITING"]
    assert row.startswith("shown") and "waiting" in row and "left)" in row


def test_cancel_and_unknown_run(tmp_path):
    state = tmp_path / "state"
    pipeline = tmp_path / "waiter.yaml"
    pipeline.write_text(WAITER)
    cli(state, "run", str(pipeline), "--run-id", "c1", "--no-wait")
    assert cli(state, "cancel", "c1").returncode == 0
    run = json.loads(cli(state, "status", "c1", "--json").stdout)["runs"][0]
    assert run["status"] == "cancelled"
    missing = cli(state, "resume", "nope")
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr


def test_bad_input_is_a_usage_error(tmp_path):
    state = tmp_path / "state"
    pipeline = tmp_path / "waiter.yaml"
    pipeline.write_text(WAITER)
    bad = cli(state, "run", str(pipeline), "--set", "nosuch=1")
    assert bad.returncode == 2
    assert "nosuch" in bad.stderr


def test_validate_and_graph(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(WAITER)
    bad = tmp_path / "bad.yaml"
    bad.write_text(WAITER.replace("next: answered", "next: answred"))
    ok = cli(tmp_path, "validate", str(good))
    assert ok.returncode == 0 and "ok" in ok.stdout
    broken = cli(tmp_path, "validate", str(good), str(bad))
    assert broken.returncode == 2
    assert f"{bad}:12:11:" in broken.stderr and "answred" in broken.stderr
    mermaid = cli(tmp_path, "graph", str(good))
    assert "asking --> expired: timeout 2d" in mermaid.stdout
    dot = cli(tmp_path, "graph", str(good), "--format", "dot")
    assert '"expired" -> "given_up"' in dot.stdout


INVALID = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "invalid"


def test_validate_reports_every_broken_fixture_where_its_expect_lines_say(tmp_path):
    """The real `certwright validate` (real steps and their schemas) on every broken file
    at once: exit 2, and exactly the problems each file's `# expect:` lines name."""
    import re
    files = sorted(INVALID.glob("*.yaml"))
    assert len(files) >= 15
    done = cli(tmp_path, "validate", *map(str, files))
    assert done.returncode == 2
    got: dict[str, list[tuple[int, int, str]]] = {}
    for m in re.finditer(r"^(\S+\.yaml):(\d+):(\d+): (.*)$", done.stderr, re.MULTILINE):
        got.setdefault(m.group(1), []).append((int(m.group(2)), int(m.group(3)), m.group(4)))
    for path in files:
        expected = [(int(row), int(col), msg) for row, col, msg in
                    re.findall(r"^# expect: (\d+):(\d+): (.*)$", path.read_text(), re.MULTILINE)]
        found = got.get(str(path), [])
        assert len(found) == len(expected), (path.name, found)
        for (line, col, msg), (gl, gc, gm) in zip(expected, found, strict=True):
            assert (gl, gc) == (line, col) and msg in gm, (path.name, found)
