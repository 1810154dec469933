"""The CLI's surface as a user meets it: the foreground wait line, where the store lives
by default, the global ``--state-dir`` flag, plain ``history``, and lock refusals that
always name the holder's pid (also while the holder has not yet written it)."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certwright.errors import RunLocked
from certwright.state.locks import HOLDER_WAIT, run_lock

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "pipelines" / "examples" / "hello.yaml"
_SCRIPT = Path(sys.executable).parent / "certwright"
CERTWRIGHT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "certwright"]

WAIT_LINE = re.compile(r"^waiting for file (?P<path>\S+) to appear; (?P<left>\w+) left "
                       r"\(state '(?P<state>[^']+)' times out at (?P<at>[0-9T:-]+)Z\)$")
TWO_DAYS = """
pipeline: patient
version: 1
initial: asking
states:
  asking:
    run:
      - step: wait.file
        id: answer
        with: {path: "${run.dir}/answer"}
    timeout: {after: 2d, to: given_up}
    next: answered
  answered: {final: true}
  given_up: {final: failure}
"""


def _env(**extra: str | None) -> dict[str, str]:
    """os.environ without any store location, plus ``extra`` (None removes a name)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CERTWRIGHT_STATE_DIR", "XDG_STATE_HOME", "CERTWRIGHT_NOW")}
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CERTWRIGHT, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def popen(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*CERTWRIGHT, *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _drain(proc: subprocess.Popen[str]) -> str:
    """What is left on a finished process's stdout; closes its pipes."""
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    proc.stdout.close()
    proc.stderr.close()
    return out


def _seconds(text: str) -> int:
    """``1h``, ``59m58s``, ``1d23h`` -> seconds (format_duration's output)."""
    assert re.fullmatch(r"(\d+[dhms])+", text), text
    size = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(n) * size[u] for n, u in re.findall(r"(\d+)([dhms])", text))


class _Lines:
    """Reads a pipe line by line in a thread, so that a test can wait for one line."""

    def __init__(self, stream: object) -> None:
        self.seen: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._t = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._t.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no line matching {pattern.pattern!r} in:\n" + "\n".join(self.seen)
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, "process ended before:\n" + "\n".join(self.seen)
            self.seen.append(line)
            m = pattern.match(line)
            if m:
                return m

    def rest(self) -> str:
        self._t.join(timeout=30)
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return "\n".join(self.seen)


# -- 1. the foreground wait line ---------------------------------------------------------

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(("pipeline", "timeout"), [("hello", 3600), ("patient", 2 * 86400)])
def test_foreground_shows_the_file_waited_for_and_the_time_left_then_goes_on(
        tmp_path: Path, pipeline: str, timeout: int) -> None:
    state = tmp_path / "state"
    source = str(HELLO)
    if pipeline == "patient":
        (tmp_path / "patient.yaml").write_text(TWO_DAYS)
        source = str(tmp_path / "patient.yaml")
    env = _env(CERTWRIGHT_NOW=NOW.strftime("%Y-%m-%dT%H:%M:%SZ"))
    proc = popen("--state-dir", str(state), "run", source, "--run-id", "fg", env=env,
                 cwd=tmp_path)
    err = _Lines(proc.stderr)
    try:
        m = err.wait_for(WAIT_LINE)
        expected = state / "runs" / "fg" / ("approved" if pipeline == "hello" else "answer")
        assert m["path"] == str(expected)
        assert timeout - 60 <= _seconds(m["left"]) <= timeout
        assert m["at"] == (NOW + timedelta(seconds=timeout)).strftime("%Y-%m-%dT%H:%M:%S")
        assert m["state"] == ("waiting" if pipeline == "hello" else "asking")
        assert proc.poll() is None  # still waiting in the foreground
        expected.write_text("ok\n")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err.rest()
    out = _drain(proc)
    assert proc.returncode == 0, log
    assert "run fg succeeded" in log
    if pipeline == "hello":
        assert out.strip() == f"approved: {expected}"


def test_ctrl_c_while_waiting_parks_the_run_with_exit_3(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = popen("--state-dir", str(state), "run", "hello", "--run-id", "int", env=_env(),
                 cwd=tmp_path)
    err = _Lines(proc.stderr)
    try:
        m = err.wait_for(WAIT_LINE)
        assert m["path"] == str(state / "runs" / "int" / "approved")
        assert 3540 <= _seconds(m["left"]) <= 3600
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err.rest()
    _drain(proc)
    assert proc.returncode == 3, log
    parked = re.search(r"^parked: run int is waiting for file (\S+) to appear; (\w+) left", log,
                       re.MULTILINE)
    assert parked and parked[1] == m["path"], log
    assert "resume with: certwright resume int" in log
    run = json.loads(cli("--state-dir", str(state), "status", "int", "--json", env=_env(),
                         cwd=tmp_path).stdout)["runs"][0]
    assert run["status"] == "waiting" and run["deadline"][:19] == m["at"]


# -- 2. where the store lives by default -------------------------------------------------

def _parks_in(store: Path, env: dict[str, str], cwd: Path) -> None:
    parked = cli("run", "hello", "--no-wait", "--run-id", "d1", env=env, cwd=cwd)
    assert parked.returncode == 3, parked.stderr
    assert f"waiting for file {store / 'runs' / 'd1' / 'approved'} to appear" in parked.stderr
    assert (store / "certwright.sqlite").is_file()
    assert (store / "runs" / "d1" / "greeting.txt").read_text() == "hello, world\n"
    status = cli("status", "d1", "--json", env=env, cwd=cwd)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["runs"][0]["state"] == "waiting"


def test_default_store_is_under_xdg_state_home(tmp_path: Path) -> None:
    xdg, home = tmp_path / "xdg", tmp_path / "home"
    home.mkdir()
    _parks_in(xdg / "certwright", _env(XDG_STATE_HOME=str(xdg), HOME=str(home)), tmp_path)
    assert not (home / ".local").exists()
    assert sorted(p.name for p in xdg.iterdir()) == ["certwright"]


@pytest.mark.parametrize("xdg", [None, ""], ids=["unset", "empty"])
def test_default_store_falls_back_to_home_local_state(tmp_path: Path, xdg: str | None) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _parks_in(home / ".local" / "state" / "certwright", _env(XDG_STATE_HOME=xdg, HOME=str(home)),
              tmp_path)


def test_env_var_wins_over_xdg_state_home(tmp_path: Path) -> None:
    xdg, store = tmp_path / "xdg", tmp_path / "store"
    _parks_in(store, _env(XDG_STATE_HOME=str(xdg), CERTWRIGHT_STATE_DIR=str(store)), tmp_path)
    assert not xdg.exists()


# -- 3. the global --state-dir flag -------------------------------------------------------

def test_state_dir_flag_serves_run_status_history_cancel_and_beats_the_env_var(
        tmp_path: Path) -> None:
    decoy, xdg = tmp_path / "decoy", tmp_path / "xdg"
    env = _env(CERTWRIGHT_STATE_DIR=str(decoy), XDG_STATE_HOME=str(xdg))
    store = tmp_path / "flagged"
    flag = ("--state-dir", "flagged")  # relative: taken from the working directory
    parked = cli(*flag, "run", "hello", "--no-wait", "--run-id", "f1", env=env, cwd=tmp_path)
    assert parked.returncode == 3, parked.stderr
    assert str(store / "runs" / "f1" / "approved") in parked.stderr  # recorded absolute
    assert (store / "certwright.sqlite").is_file()

    status = cli(*flag, "status", "--json", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert [r["run"] for r in json.loads(status.stdout)["runs"]] == ["f1"]
    table = cli(*flag, "status", env=env, cwd=tmp_path)
    assert re.search(r"^f1\s+hello\s+waiting\s+waiting\s", table.stdout, re.MULTILINE), table.stdout

    history = cli(*flag, "history", "f1", "--json", env=env, cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout)[0]["kind"] == "created"

    cancelled = cli(*flag, "cancel", "f1", "--reason", "not today", env=env, cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    after = json.loads(cli("--state-dir", str(store), "status", "f1", "--json", env=env,
                           cwd=tmp_path).stdout)["runs"][0]
    assert after["status"] == "cancelled"

    # the env var's store was never touched (nor the XDG default); it knows no run f1
    assert not decoy.exists() and not xdg.exists()
    missing = cli("history", "f1", env=env, cwd=tmp_path)
    assert missing.returncode == 1 and "no run 'f1'" in missing.stderr


# -- 4. plain history ---------------------------------------------------------------------

def test_plain_history_tells_the_story_in_order(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = _env(CERTWRIGHT_STATE_DIR=str(state))
    t0 = NOW
    assert cli("run", "hello", "--no-wait", "--run-id", "h", env={
        **env, "CERTWRIGHT_NOW": t0.isoformat()}, cwd=tmp_path).returncode == 3
    # the first wait times out while nothing runs; the retry loop waits again
    late = cli("resume", "h", "--no-wait", env={
        **env, "CERTWRIGHT_NOW": (t0 + timedelta(hours=1, minutes=5)).isoformat()}, cwd=tmp_path)
    assert late.returncode == 3, late.stderr
    approved = state / "runs" / "h" / "approved"
    approved.write_text("yes\n")
    done = cli("resume", "h", env={
        **env, "CERTWRIGHT_NOW": (t0 + timedelta(hours=1, minutes=10)).isoformat()},
        cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    plain = cli("history", "h", env=env, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    entries = json.loads(cli("history", "h", "--json", env=env, cwd=tmp_path).stdout)
    assert len(lines) == len(entries)
    row = re.compile(r"^\s*(\d+)  (\d{4}-\d\d-\d\dT[0-9:.]+Z)  (\w+)\s+(.*)$")
    parsed = [row.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m[1]) for m in parsed] == [e["seq"] for e in entries]  # journal order
    assert [m[3] for m in parsed] == [e["kind"] for e in entries]
    story = [(m[3], m[4]) for m in parsed if m]

    transitions = [text for kind, text in story if kind == "entered"]
    first_deadline = (t0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert transitions[0] == "- -> started on start"
    assert transitions[1] == f"started -> waiting on next deadline {first_deadline}Z"
    assert transitions[2] == "waiting -> reminded on timeout"
    assert re.fullmatch(r"reminded -> waiting on loop deadline \S+Z", transitions[3])
    assert transitions[4:] == ["waiting -> approved on next",
                               "approved -> finished on next [success]"]

    assert story[0][0] == "created" and re.fullmatch(r"pipeline hello \([0-9a-f]{12}\)",
                                                     story[0][1])
    steps = [(kind, text.split()[0]) for kind, text in story
             if kind.startswith("step_") and kind != "step_waiting"]
    assert steps == [("step_started", "greet"), ("step_done", "greet"),
                     ("step_started", "approval"), ("step_started", "approval"),
                     ("step_done", "approval"), ("step_started", "done"), ("step_done", "done")]
    text = plain.stdout
    assert "greet attempt 1 key h:1:0" in text
    assert f"approval waiting for file {approved} to appear" in text
    assert '"stdout": "hello, world\\n"' in text  # the greet step's outputs
    assert f'done done {{"report": "approved: {approved}"}}' in text
    # every step sits between the transition into its state and the next one
    kinds = [kind for kind, _ in story]
    assert kinds.index("step_started") > kinds.index("entered")
    last = max(i for i, (kind, _) in enumerate(story) if kind == "entered")
    assert story[last - 1] == ("step_done", f'done done {{"report": "approved: {approved}"}}')


# -- 5. a refusal always names the holder's pid -------------------------------------------

# Takes the run lock the way `certwright run` does (FileLock.acquire), but stops right
# after the flock, before anything is written to the file, until told "go" on stdin; then
# holds the lock until stdin closes. The lock file may name an earlier, dead holder
# (argv[3]) beforehand.
HOLDER = textwrap.dedent("""
    import fcntl, os, sys
    from pathlib import Path
    import certwright.state.locks as locks

    state_dir, run_id, stale = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    lock = locks.run_lock(state_dir, run_id)
    if stale:
        lock.path.parent.mkdir(parents=True, exist_ok=True)
        lock.path.write_text(stale + " 2020-01-01T00:00:00Z\\n")
    original = fcntl.flock

    def slow_flock(fd, op):
        original(fd, op)
        if op & fcntl.LOCK_EX:  # taken: pause before anything is written
            print("flocked", flush=True)
            assert sys.stdin.readline().strip() == "go"

    fcntl.flock = slow_flock
    lock.acquire()
    fcntl.flock = original
    print("written", flush=True)
    sys.stdin.read()
    lock.release()
""")


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def _holder(state: Path, run_id: str, stale: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(state), run_id, stale],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "flocked"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, BrokenPipeError, ValueError):
            proc.kill()
            proc.wait()


def _go_later(proc: subprocess.Popen[str], delay: float) -> threading.Thread:
    def go() -> None:
        time.sleep(delay)
        try:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # the test gave up on the holder already
            pass
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("stale", ["", "dead"], ids=["empty-file", "dead-holders-pid"])
def test_probe_between_flock_and_pid_names_the_holder(tmp_path: Path, stale: str) -> None:
    state = tmp_path / "state"
    holder = _holder(state, "gap", str(_dead_pid()) if stale else "")
    try:
        go = _go_later(holder, 0.4)
        started = time.monotonic()
        with pytest.raises(RunLocked) as refused:
            run_lock(state, "gap").acquire()
        assert refused.value.pid == holder.pid, str(refused.value)
        assert f"run gap is locked by pid {holder.pid} since " in str(refused.value)
        assert time.monotonic() - started < HOLDER_WAIT + 1
        go.join()
        assert holder.stdout is not None and holder.stdout.readline().strip() == "written"
        assert run_lock(state, "gap").holder() == holder.pid
    finally:
        _stop(holder)
    assert run_lock(state, "gap").holder() is None  # released
    assert run_lock(state, "gap").path.read_text() == ""  # and no pid left behind


def test_status_probe_between_flock_and_pid_names_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = _holder(state, "gap", "")
    try:
        _go_later(holder, 0.4)
        assert run_lock(state, "gap").holder() == holder.pid
    finally:
        _stop(holder)


def _has_open(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("stale", ["", "dead"], ids=["empty-file", "dead-holders-pid"])
def test_cli_refused_in_the_gap_names_the_holders_pid(tmp_path: Path, stale: str) -> None:
    state = tmp_path / "state"
    env = _env(CERTWRIGHT_STATE_DIR=str(state))
    assert cli("run", "hello", "--no-wait", "--run-id", "gap", env=env,
               cwd=tmp_path).returncode == 3
    holder = _holder(state, "gap", str(_dead_pid()) if stale else "")
    try:
        second = popen("resume", "gap", env=env, cwd=tmp_path)
        lock = run_lock(state, "gap").path
        deadline = time.monotonic() + 60
        # the CLI has found the lock held (its file still without the holder's pid) ...
        while second.poll() is None and not _has_open(second.pid, lock):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.2)
        assert holder.stdin is not None
        holder.stdin.write("go\n")  # ... and only now does the holder write it
        holder.stdin.flush()
        _, err = second.communicate(timeout=60)
    finally:
        _stop(holder)
    assert second.returncode == 4, err
    assert f"run gap is locked by pid {holder.pid}" in err


def test_a_lock_held_for_an_instant_by_a_status_probe_does_not_refuse(tmp_path: Path) -> None:
    """`status` probes with a shared flock; a driver starting meanwhile waits it out."""
    state = tmp_path / "state"
    lock = run_lock(state, "brief")
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text("")
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
            "fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); time.sleep(0.3)")
    prober = subprocess.Popen([sys.executable, "-c", code, str(lock.path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert prober.stdout is not None and prober.stdout.readline().strip() == "held"
        with run_lock(state, "brief") as taken:
            assert taken.path.read_text().split()[0] == str(os.getpid())
    finally:
        prober.communicate(timeout=10)


def test_a_named_holder_is_refused_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = _holder(state, "held", "")
    try:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "written"
        started = time.monotonic()
        with pytest.raises(RunLocked) as refused:
            run_lock(state, "held").acquire()
        assert refused.value.pid == holder.pid
        assert time.monotonic() - started < HOLDER_WAIT / 2  # no waiting when it is named
    finally:
        _stop(holder)
