"""What a person sees on a terminal: ``run`` through a real pty, read back through a
terminal emulator (pyte), and the same commands piped.

A run on a terminal shows a line per state (a tick or a cross, the time taken), one live
line for the current step or wait, and the result; the structured log goes to a file in
the run's folder. Piped, the output is plain lines with no redraw; NO_COLOR and TERM=dumb
give no escape byte; ``-q`` only the result; ``--log-json`` only JSON lines.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pyte
import pytest

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "certwright"
CERTWRIGHT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "certwright"]

# a structlog line (console or JSON) as the log renders it; never on the terminal by default
LOG_LINE = re.compile(r"\[\s*(debug|info|warning|error)\s*\]|^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z"
                      r"|\"event\": ")

QUICK = """
pipeline: quick
version: 1
initial: greeting
states:
  greeting:
    run:
      - step: shell
        id: greet
        with: {argv: [sh, -c, 'echo "hello from the step"']}
      - step: set
        id: done
        with: {report: "greeted"}
    next: finished
  finished: {final: success}
"""

SILENT = QUICK.replace('      - step: set\n        id: done\n        with: {report: "greeted"}\n',
                       "")

FAILING = """
pipeline: failing
version: 1
initial: building
states:
  building:
    run:
      - step: shell
        id: compile
        with:
          argv: [sh, -c, 'for i in $(seq 1 15); do echo "output line $i"; done;
                         echo "fatal: no disk" >&2; exit 3']
          permanent_exit_codes: [3]
    next: built
    on_error: broken
  built: {final: success}
  broken: {final: failure}
"""


def _env(tmp_path: Path, **extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CERTWRIGHT_STATE_DIR", "XDG_STATE_HOME", "CERTWRIGHT_NOW", "NO_COLOR",
                        "CERTWRIGHT_LOG_LEVEL", "FORCE_COLOR")}
    env.update({"TERM": "xterm-256color", "LANG": "C.UTF-8",
                "CERTWRIGHT_LIVE_DIR": str(tmp_path / "live")})
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Terminal:
    """A command on a real pty of ``cols`` x ``rows``, its bytes fed to a pyte screen."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, cols: int = 100,
                 rows: int = 40) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=str(cwd),
                                   dimensions=(rows, cols))

    def read_until(self, done: Callable[[Terminal], bool], timeout: float = 60) -> bool:
        """Read output until ``done(self)``, EOF or ``timeout`` s; whether ``done`` held."""
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(self):
                return True
            try:
                data = self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return done(self)
            self.raw += data
            self.stream.feed(data)
        return done(self)

    def finish(self, timeout: float = 60) -> int:
        self.read_until(lambda t: not t.child.isalive(), timeout)
        self.read_until(lambda t: False, 0.5)  # the last bytes
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)

    def resize(self, cols: int, rows: int) -> None:
        self.screen.resize(rows, cols)
        self.child.setwinsize(rows, cols)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(line for line in self.lines() if line)

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()


@pytest.fixture
def term():
    made: list[Terminal] = []

    def start(*args: str, env: dict[str, str], cwd: Path, cols: int = 100,
              rows: int = 40) -> Terminal:
        t = Terminal([*CERTWRIGHT, *args], env, cwd, cols, rows)
        made.append(t)
        return t
    yield start
    for t in made:
        t.kill()


def _no_log_line(lines: list[str]) -> None:
    logged = [line for line in lines if LOG_LINE.search(line)]
    assert not logged, "\n".join(logged)


def test_hello_shows_state_lines_and_one_wait_line_then_the_result(tmp_path, term):
    state = tmp_path / "state"
    t = term("--state-dir", str(state), "run", "hello", "--run-id", "h1", env=_env(tmp_path),
             cwd=tmp_path, cols=200)
    assert t.read_until(lambda t: " left · " in t.text()), t.text()
    first = t.lines()
    _no_log_line(first)
    screen = "\n".join(first)
    assert re.search(r"^✓ started\b.*\d", screen, re.MULTILINE), screen
    wait = [line for line in first if " left · " in line]
    assert len(wait) == 1 and "to appear" in wait[0] and "approved" in wait[0], screen
    (state / "runs" / "h1" / "approved").write_text("ok\n")
    assert t.finish() == 0
    final = t.text()
    _no_log_line(t.lines())
    assert " left · " not in final, final          # the wait line left no fragment
    for name in ("started", "waiting", "approved"):
        assert re.search(rf"^✓ {name}\b", final, re.MULTILINE), final
    assert re.search(r"^✓ finished\b", final, re.MULTILINE), final
    assert f"approved: {state / 'runs' / 'h1' / 'approved'}" in final
    assert "run h1 succeeded" in final
    assert (state / "runs" / "h1" / "certwright.log").read_text().count("transitioned") >= 4


def test_a_long_wait_line_redraws_in_place_on_80_columns_and_after_a_resize(tmp_path, term):
    state = tmp_path / ("a-state-folder-with-a-long-name-" * 3)
    t = term("--state-dir", str(state), "run", "hello", "--run-id", "long", env=_env(tmp_path),
             cwd=tmp_path, cols=80, rows=24)
    assert t.read_until(lambda t: "waiting" in t.text()), t.text()
    assert len(str(state / "runs" / "long" / "approved")) > 80
    before = t.raw.count(b"waiting")
    assert t.read_until(lambda t: t.raw.count(b"waiting") >= before + 3, 30), t.raw[-400:]
    rows = [line for line in t.lines() if line]
    waits = [line for line in rows if " left · " in line]
    assert len(waits) == 1, "\n".join(rows)      # redrawn in place, not scrolled
    assert all(len(line) <= 80 for line in rows)
    shown = len(rows)
    t.resize(50, 24)
    before = t.raw.count(b"waiting")
    assert t.read_until(lambda t: t.raw.count(b"waiting") >= before + 3, 30), t.raw[-400:]
    rows = [line for line in t.lines() if line]
    assert len([line for line in rows if " left · " in line]) == 1, rows
    assert len(rows) == shown, "\n".join(rows)
    (state / "runs" / "long" / "approved").write_text("ok\n")
    assert t.finish() == 0
    assert " left · " not in t.text(), t.text()


def test_the_cacert_demo_fits_one_screen_with_no_log_line(tmp_path, term):
    state = tmp_path / "demo-state"
    env = _env(tmp_path, CERTWRIGHT_LIVE_DIR=str(state / "live"))
    t = term("--state-dir", str(state), "run", "cacert", "--set", "domain=example.test",
             env=env, cwd=tmp_path, cols=200, rows=30)
    assert t.finish(120) == 0, t.text()
    screen = t.text()
    lines = t.lines()
    _no_log_line(lines)
    assert "http_request" not in screen and "mail_server" not in screen
    for name in ("new", "registered", "probed", "verified", "signed"):
        assert re.search(rf"^✓ {name}\b.*\d+(\.\d+)?m?s", screen, re.MULTILINE), screen
    assert re.search(r"^✓ installed\b", screen, re.MULTILINE), screen
    assert " · " not in screen, screen            # no fragment of a live line
    assert "certificate installed for example.test" in screen
    # the expiry as a person reads it, not an ISO instant to the microsecond
    assert re.search(r"expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)", screen), screen
    assert "openssl verify" in screen
    assert len([line for line in lines if line]) <= 16, screen
    log = next((state / "runs").iterdir()) / "certwright.log"
    assert "http_request" in log.read_text()     # the CA's requests went to the log


def test_no_color_on_a_terminal_gives_no_escape_byte(tmp_path, term):
    pipeline = tmp_path / "quick.yaml"
    pipeline.write_text(QUICK)
    for extra in ({"NO_COLOR": "1"}, {"TERM": "dumb"}):
        t = term("--state-dir", str(tmp_path / "state"), "run", str(pipeline),
                 env=_env(tmp_path, **extra), cwd=tmp_path)
        assert t.finish() == 0, t.text()
        assert b"\x1b" not in t.raw, (extra, bytes(t.raw))
        assert b"\xe2\x9c\x93 greeting" in t.raw and b"greeted" in t.raw, bytes(t.raw)


def test_piped_output_is_plain_lines_without_redraws(tmp_path):
    pipeline = tmp_path / "quick.yaml"
    pipeline.write_text(QUICK)
    done = subprocess.run([*CERTWRIGHT, "--state-dir", str(tmp_path / "state"), "run",
                           str(pipeline), "--run-id", "p1"], env=_env(tmp_path),
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert b"\r" not in done.stderr and b"\x1b" not in done.stderr, done.stderr
    assert done.stdout.decode().strip() == "greeted"
    assert re.search(r"^✓ greeting\s+\d", err, re.MULTILINE), err
    assert "run p1 succeeded" in err
    _no_log_line(err.splitlines())


def test_quiet_prints_only_the_result(tmp_path, term):
    pipeline = tmp_path / "quick.yaml"
    pipeline.write_text(QUICK)
    t = term("--state-dir", str(tmp_path / "state"), "-q", "run", str(pipeline),
             env=_env(tmp_path), cwd=tmp_path)
    assert t.finish() == 0
    assert [line for line in t.lines() if line] == ["greeted"]


def test_verbose_shows_the_log_and_the_steps_own_output(tmp_path, term):
    pipeline = tmp_path / "quick.yaml"
    pipeline.write_text(QUICK)
    t = term("--state-dir", str(tmp_path / "state"), "-v", "run", str(pipeline),
             env=_env(tmp_path), cwd=tmp_path)
    assert t.finish() == 0
    screen = t.text()
    assert "hello from the step" in screen
    assert re.search(r"transitioned", screen) and re.search(r"^✓ greeting\b", screen,
                                                              re.MULTILINE)


def test_log_json_gives_only_json_lines_on_a_terminal(tmp_path, term):
    pipeline = tmp_path / "silent.yaml"
    pipeline.write_text(SILENT)
    t = term("--state-dir", str(tmp_path / "state"), "--log-json", "run", str(pipeline),
             env=_env(tmp_path), cwd=tmp_path, cols=400)
    assert t.finish() == 0
    lines = [line for line in bytes(t.raw).decode().splitlines() if line.strip()]
    assert lines
    events = [json.loads(line) for line in lines]
    assert "transitioned" in {e["event"] for e in events}


def test_a_failing_shell_step_shows_its_last_lines_and_the_log_file(tmp_path, term):
    pipeline = tmp_path / "failing.yaml"
    pipeline.write_text(FAILING)
    state = tmp_path / "state"
    t = term("--state-dir", str(state), "run", str(pipeline), "--run-id", "f1",
             env=_env(tmp_path), cwd=tmp_path)
    assert t.finish() == 1
    screen = t.text()
    _no_log_line(t.lines())
    assert re.search(r"^✗ building\b", screen, re.MULTILINE), screen
    assert "output line 15" in screen and "fatal: no disk" in screen
    assert "output line 1\n" not in screen + "\n"   # only the last lines
    log = state / "runs" / "f1" / "certwright.log"
    assert f"log: {log}" in screen, screen
    assert "step_failed" in log.read_text()
    assert "Traceback" not in screen


SECRET_OUTPUT = """
pipeline: leaky
version: 1
inputs:
  password: {type: string, secret: true, required: true}
initial: using
states:
  using:
    run:
      - step: shell
        id: leak
        with:
          argv: [sh, -c, 'echo "the password is $0"; exit 3', "${password}"]
          permanent_exit_codes: [3]
    next: done
  done: {final: true}
"""


def test_a_failing_steps_output_on_the_terminal_masks_secret_values(tmp_path, term):
    pipeline = tmp_path / "leaky.yaml"
    pipeline.write_text(SECRET_OUTPUT)
    secret = "Correct Horse Battery-Staple 42!"
    t = term("--state-dir", str(tmp_path / "state"), "run", str(pipeline), "--run-id", "s1",
             "--set", f"password={secret}", env=_env(tmp_path), cwd=tmp_path)
    assert t.finish() == 1
    assert "the password is <secret>" in t.text(), t.text()
    assert secret.encode() not in t.raw
    assert secret not in (tmp_path / "state" / "runs" / "s1" / "certwright.log").read_text()


RETRYING = """
pipeline: retrying
version: 1
initial: calling
states:
  calling:
    run:
      - step: shell
        id: call
        with:
          argv: [sh, -c, 'echo "HTTPSConnectionPool(host=127.0.0.1, port=9): Max retries exceeded
                 with url: /dir (Caused by NewConnectionError: Failed to establish a new
                 connection: [Errno 111] Connection refused)" >&2; exit 1']
        retry: {max_attempts: 3, initial_delay: 1h}
    next: done
  done: {final: true}
"""


def test_a_three_row_retry_message_redraws_in_place_on_80_columns(tmp_path, term):
    pipeline = tmp_path / "retrying.yaml"
    pipeline.write_text(RETRYING)
    t = term("--state-dir", str(tmp_path / "state"), "run", str(pipeline), "--run-id", "r1",
             env=_env(tmp_path), cwd=tmp_path, cols=80, rows=24)
    assert t.read_until(lambda t: "next attempt in" in t.text()), t.text()
    before = t.raw.count(b"next attempt in")
    assert t.read_until(lambda t: t.raw.count(b"next attempt in") >= before + 5, 30)
    rows = [line for line in t.lines() if line]
    assert len([line for line in rows if " · next attempt in" in line]) == 1, "\n".join(rows)
    assert not any("Max retries" in line for line in rows if "next attempt" not in line), rows
    t.child.kill(2)  # Ctrl-C parks the run
    assert t.finish() == 3
    assert " · next attempt in" not in t.text(), t.text()  # the live line left nothing
    assert "parked: run r1 is retrying after" in t.text()


def test_verbose_shows_all_of_a_failing_steps_output(tmp_path, term):
    pipeline = tmp_path / "failing.yaml"
    pipeline.write_text(FAILING)
    t = term("--state-dir", str(tmp_path / "state"), "-v", "run", str(pipeline),
             env=_env(tmp_path), cwd=tmp_path, rows=200)
    assert t.finish() == 1
    shown = [line.strip() for line in t.lines()]
    assert all(f"│ output line {i}" in shown for i in range(1, 16)), "\n".join(shown)
