"""The generic built-in steps run for real: ``shell`` starts real processes, ``set`` and
``assert`` see rendered parameters, ``wait.file`` watches real files and ``wait.until`` parks
a run under a fake clock. Direct ``run(ctx)`` calls check one behaviour each; the engine
path (inline, FakeClock, real SQLite) checks what only the engine can show: templates,
parking, wake timers and polls."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from certwright.clock import FakeClock, SystemClock, format_instant
from certwright.engine.plugins.step import Done, StepContext, Wait
from certwright.engine.testing import load_text, make_engine
from certwright.errors import PermanentError, StepError
from certwright.steps.generic import Assert, Set, Shell
from certwright.steps.waits import WaitFile, WaitUntil
from tests.support.procs import alive


def _ctx(tmp_path: Path, params: dict[str, Any], *, step_id: str = "s",
         recovering: bool = False, timeout: float | None = None,
         memo: dict[str, Any] | None = None, clock: Any = None) -> StepContext:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return StepContext(run_id="r1", pipeline="t", state="s", step_id=step_id,
                       idempotency_key="r1:3:1", attempt=2, params=params, run_dir=run_dir,
                       state_dir=tmp_path, clock=clock or SystemClock(), memo=memo or {},
                       recovering=recovering, timeout=timeout)


def _gone_soon(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def strays() -> Iterator[list[int]]:
    """Pids a test's commands leave behind; killed at the end whatever the outcome."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _read_pid(path: Path, strays: list[int]) -> int:
    deadline = time.monotonic() + 5
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.02)
    pid = int(path.read_text())
    strays.append(pid)
    return pid


# -- shell --------------------------------------------------------------------------------

def test_shell_argv_runs_without_a_shell(tmp_path: Path) -> None:
    """An argument with ``;`` and ``$HOME`` reaches the program verbatim: no shell parses it,
    so no second command runs."""
    marker = tmp_path / "injected"
    arg = f"a; touch {marker}; echo $HOME"
    out = Shell().run(_ctx(tmp_path, {"argv": ["echo", arg]})).outputs
    assert out["stdout"] == arg + "\n"
    assert not marker.exists()


def test_shell_command_string_is_split_without_a_shell_unless_asked(tmp_path: Path) -> None:
    """``command`` is split like a shell would, but run directly; with ``shell: true`` the
    same text goes to /bin/sh, so ``;`` and variables work."""
    plain = Shell().run(_ctx(tmp_path, {"command": "echo 'one two'; echo $0"})).outputs
    assert plain["stdout"] == "one two; echo $0\n"
    shelled = Shell().run(_ctx(tmp_path, {"command": "echo one; echo two >&2; echo ${X:-x}",
                                          "shell": True, "env": {"X": 7}})).outputs
    assert (shelled["stdout"], shelled["stderr"]) == ("one\n7\n", "two\n")
    joined = Shell().run(_ctx(tmp_path, {"argv": ["echo", "a b", "$0"], "shell": True}))
    assert joined.outputs["stdout"] == "a b $0\n"  # argv is quoted for the shell


def test_shell_outputs_exit_code_stdout_and_stderr(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    result = Shell().run(_ctx(tmp_path, {
        "argv": [sys.executable, "-c",
                 ("import os, sys; print(os.getcwd()); print('warn', file=sys.stderr); "
                  "sys.exit(3)")],
        "cwd": str(tmp_path / "sub"), "ok_exit_codes": [0, 3]}))
    assert isinstance(result, Done)
    assert result.outputs == {"exit_code": 3, "stdout": f"{tmp_path / 'sub'}\n",
                              "stderr": "warn\n"}


def test_shell_output_is_capped_and_a_chatty_command_does_not_block(tmp_path: Path) -> None:
    """Only the first 64 KiB of each stream are kept, but everything is read: a command that
    writes megabytes (more than a pipe holds) still finishes."""
    code = ("import sys; sys.stdout.write('o' * 3_000_000); sys.stdout.flush(); "
            "sys.stderr.write('e' * 3_000_000)")
    out = Shell().run(_ctx(tmp_path, {"argv": [sys.executable, "-c", code],
                                      "timeout": 30})).outputs
    assert out["exit_code"] == 0
    assert out["stdout"] == "o" * 65536 and out["stderr"] == "e" * 65536


def test_shell_non_zero_exit_fails_with_the_status_and_stderr_tail(tmp_path: Path) -> None:
    """The message names the command, its status and the last stderr lines; the failure is
    retryable unless the status is listed as permanent."""
    argv = ["sh", "-c", "echo noise; echo first >&2; echo 'disk full' >&2; exit 4"]
    with pytest.raises(StepError) as info:
        Shell().run(_ctx(tmp_path, {"argv": argv}))
    message = str(info.value)
    assert message.startswith("'sh -c ") and message.endswith(
        "exited with status 4: first | disk full")  # stderr only, the last lines
    assert info.value.retryable and not isinstance(info.value, PermanentError)
    with pytest.raises(StepError) as info:
        Shell().run(_ctx(tmp_path, {"argv": argv, "permanent_exit_codes": [4]}))
    assert not info.value.retryable
    with pytest.raises(StepError, match="exited with status 0"):
        Shell().run(_ctx(tmp_path, {"argv": ["true"], "ok_exit_codes": [1]}))


def test_shell_a_program_that_cannot_run_fails_permanently_saying_why(tmp_path: Path) -> None:
    """A missing program, a missing folder or a file that is not executable: retrying would
    not help, so the failure is permanent and says what is wrong."""
    with pytest.raises(PermanentError, match=r"No such file or directory.*no-such-program"):
        Shell().run(_ctx(tmp_path, {"argv": ["no-such-program-certwright"]}))
    with pytest.raises(PermanentError, match="cannot run"):
        Shell().run(_ctx(tmp_path, {"argv": ["true"], "cwd": str(tmp_path / "missing")}))
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)  # exec needs an x bit, even for root
    with pytest.raises(PermanentError, match=r"cannot run.*Permission denied"):
        Shell().run(_ctx(tmp_path, {"argv": [str(script)]}))


def test_shell_environment_carries_key_attempt_and_recovering(tmp_path: Path) -> None:
    """So a command with side effects can make itself idempotent."""
    show = ["sh", "-c", ('echo "$CERTWRIGHT_RUN_ID|$CERTWRIGHT_RUN_DIR|'
                         '$CERTWRIGHT_IDEMPOTENCY_KEY|$CERTWRIGHT_ATTEMPT|$CERTWRIGHT_RECOVERING'
                         '|$MINE"')]
    fresh = Shell().run(_ctx(tmp_path, {"argv": show, "env": {"MINE": "x"}})).outputs
    assert fresh["stdout"] == f"r1|{tmp_path / 'run'}|r1:3:1|2|0|x\n"
    again = Shell().run(_ctx(tmp_path, {"argv": show}, recovering=True)).outputs
    assert again["stdout"] == f"r1|{tmp_path / 'run'}|r1:3:1|2|1|\n"


def _slow(tmp_path: Path, name: str) -> tuple[list[str], Path, Path]:
    """A command that writes its pid, sleeps 30 s, then leaves ``<name>.done``: if the
    marker is missing once the process is gone, the step killed it before its end."""
    pidfile, done = tmp_path / f"{name}.pid", tmp_path / f"{name}.done"
    return ["sh", "-c", f"echo $$ > {pidfile}; sleep 30; touch {done}"], pidfile, done


def test_shell_timeout_kills_a_slow_command(tmp_path: Path, strays: list[int]) -> None:
    """The step's timeout (or the ``timeout`` parameter, a duration) kills the command and
    fails the step retryably: the command is gone without having reached its end."""
    argv, pidfile, done = _slow(tmp_path, "first")
    with pytest.raises(StepError, match=r"did not finish within 0\.5 s"):
        Shell().run(_ctx(tmp_path, {"argv": argv}, timeout=0.5))
    assert _gone_soon(_read_pid(pidfile, strays)) and not done.exists()
    argv, pidfile, done = _slow(tmp_path, "second")
    with pytest.raises(StepError, match=r"did not finish within 1\.0 s"):
        Shell().run(_ctx(tmp_path, {"argv": argv, "timeout": "1s"}, timeout=60))
    assert _gone_soon(_read_pid(pidfile, strays)) and not done.exists()
    with pytest.raises(PermanentError, match="not a duration"):
        Shell().run(_ctx(tmp_path, {"argv": ["true"], "timeout": "soon"}))


def test_shell_timeout_kills_the_whole_process_tree(tmp_path: Path, strays: list[int]) -> None:
    """A background grandchild (``sleep 30 &``) dies with the command, and the step returns
    at once rather than when the grandchild would have ended (the marker it leaves at its
    end is never written)."""
    pidfile, done = tmp_path / "grandchild.pid", tmp_path / "grandchild.done"
    with pytest.raises(StepError, match="did not finish within"):
        Shell().run(_ctx(tmp_path, {
            "command": f"(sleep 30; touch {done}) & echo $! > {pidfile}; wait",
            "shell": True, "timeout": 1}))
    pid = _read_pid(pidfile, strays)
    assert _gone_soon(pid), f"grandchild {pid} survived the timeout"
    assert not done.exists(), "the step waited for the grandchild's end"

    # a deeper tree, through a program that is no shell and ignores SIGTERM
    pidfile2 = tmp_path / "deep.pid"
    done2 = tmp_path / "deep.done"
    code = ("import signal, subprocess, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"subprocess.Popen(['sh', '-c', 'echo $$ > {pidfile2}; sleep 30; "
            f"touch {done2}']).wait()")
    with pytest.raises(StepError, match="did not finish within"):
        Shell().run(_ctx(tmp_path, {"argv": [sys.executable, "-c", code]}, timeout=1.5))
    assert _gone_soon(_read_pid(pidfile2, strays)) and not done2.exists()


def test_shell_timeout_returns_even_if_an_escaped_process_holds_the_output(
        tmp_path: Path, strays: list[int]) -> None:
    """A grandchild that left the process group (setsid) cannot be killed with it; it still
    holds stdout, but the step gives up on the pipe and returns while it still runs."""
    pidfile = tmp_path / "escaped.pid"
    code = (f"import os, time; os.setsid(); open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
            "time.sleep(30)")
    with pytest.raises(StepError, match="did not finish within"):
        Shell().run(_ctx(tmp_path, {"argv": ["sh", "-c", (f"'{sys.executable}' -c \"{code}\" & "
                                                          "sleep 30")]}, timeout=1))
    # still alive: the step did not wait for the holder of its pipe to end (killed by the
    # fixture)
    assert alive(_read_pid(pidfile, strays))


def test_shell_a_command_that_closes_its_output_still_times_out(
        tmp_path: Path, strays: list[int]) -> None:
    """End of output is not the end of the command: one that closes stdout and stderr and
    keeps running is still bounded by the timeout (and killed before its end)."""
    _argv, pidfile, done = _slow(tmp_path, "closed")
    script = f"exec >&- 2>&-; echo $$ > {pidfile}; sleep 30; touch {done}"
    with pytest.raises(StepError, match="did not finish within"):
        Shell().run(_ctx(tmp_path, {"argv": ["sh", "-c", script]}, timeout=1))
    assert _gone_soon(_read_pid(pidfile, strays)) and not done.exists()


EXIT_WHILE_RUNNING = """
import sys, threading, time
from pathlib import Path
from certwright.clock import SystemClock
from certwright.engine.plugins.step import StepContext
from certwright.steps.generic import Shell

pidfile = Path(sys.argv[1])
ctx = StepContext(run_id="r1", pipeline="t", state="s", step_id="s", idempotency_key="k",
                  attempt=1, params={"command": f"sleep 30 & echo $! > {pidfile}; wait",
                                    "shell": True},
                  run_dir=pidfile.parent, state_dir=pidfile.parent, clock=SystemClock())
threading.Thread(target=Shell().run, args=(ctx,), daemon=True).start()
while not pidfile.exists() or not pidfile.read_text().strip():
    time.sleep(0.02)
sys.exit(3)  # as `certwright run` does after Ctrl-C, with the step still executing
"""


def test_shell_commands_still_running_are_killed_when_the_process_exits(
        tmp_path: Path, strays: list[int]) -> None:
    """A command runs in a session of its own (so its whole tree can be killed), where the
    terminal's Ctrl-C no longer reaches it; when the process leaves with a step still
    executing in a daemon thread, the command's tree is killed rather than orphaned."""
    pidfile = tmp_path / "bg.pid"
    done = subprocess.run([sys.executable, "-c", EXIT_WHILE_RUNNING, str(pidfile)],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 3, done.stderr
    pid = _read_pid(pidfile, strays)
    assert _gone_soon(pid), f"{pid} outlived the process that started it"


# -- set and assert -------------------------------------------------------------------------

def test_set_outputs_what_it_was_given(tmp_path: Path) -> None:
    params = {"name": "x", "count": 3, "nested": {"a": [1, 2]}}
    assert Set().run(_ctx(tmp_path, params)).outputs == params


def test_assert_passes_when_the_condition_holds(tmp_path: Path) -> None:
    for params in ({"that": True}, {"that": "yes"}, {"that": 1}, {"equals": ["3", 3]},
                   {"equals": ["a", "a"], "message": "never shown"}):
        assert Assert().run(_ctx(tmp_path, params)).outputs == {"ok": True}, params


def test_assert_fails_permanently_naming_what_did_not_hold(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match=r"assertion failed: 'no' is true"):
        Assert().run(_ctx(tmp_path, {"that": "no"}))
    with pytest.raises(PermanentError, match=r"assertion failed: 'issued' == 'revoked'"):
        Assert().run(_ctx(tmp_path, {"equals": ["issued", "revoked"]}))
    with pytest.raises(PermanentError, match=r"^the certificate is not valid yet$"):
        Assert().run(_ctx(tmp_path, {"equals": [1, 2],
                                     "message": "the certificate is not valid yet"}))


def test_assert_compares_values_as_given_not_as_templates(tmp_path: Path) -> None:
    """Parameters arrive rendered; a value that happens to contain ``${...}`` (a command's
    output, an escaped ``$${``) is data, not a reference to resolve a second time."""
    assert Assert().run(_ctx(tmp_path, {"equals": ["${HOME}", "${HOME}"]})).outputs["ok"]
    with pytest.raises(PermanentError, match=r"'cost: \$\{price\}' == 'cost: 3'"):
        Assert().run(_ctx(tmp_path, {"equals": ["cost: ${price}", "cost: 3"]}))


SHELL_SET_ASSERT = """
pipeline: generic
version: 1
inputs:
  who: {type: string, required: true}
  expect: {type: string, required: true}
initial: work
states:
  work:
    run:
      - step: shell
        id: greet
        with:
          argv: [sh, -c, 'printf "%s|%s" "$1" "$CERTWRIGHT_IDEMPOTENCY_KEY"', sh, "hi ${who}"]
      - step: set
        id: facts
        with: {said: "${steps.greet.stdout}", code: "${steps.greet.exit_code}"}
      - step: assert
        id: check
        with: {equals: ["${steps.facts.said}", "${expect}|${run.id}:1:0"]}
    next: done
    on_error: broken
  done: {final: true}
  broken: {final: failure}
"""


def test_shell_set_and_assert_through_the_engine(tmp_path: Path) -> None:
    """Templates fill the argv (a ``;`` in an input stays an argument), outputs flow to set,
    types survive a whole-value reference, and a failing assert fails the run with its
    message."""
    engine = make_engine(tmp_path, FakeClock())
    spec = load_text(SHELL_SET_ASSERT)
    good = engine.start_run(spec, {"who": "there; x", "expect": "hi there; x"}, run_id="good")
    bad = engine.start_run(spec, {"who": "you", "expect": "hi me"}, run_id="bad")
    engine.run_until_idle()
    run = engine.store.load_run(good)
    assert (run.state, run.status) == ("done", "succeeded")
    assert run.vars["greet"] == {"exit_code": 0, "stdout": "hi there; x|good:1:0",
                                 "stderr": ""}
    assert run.vars["facts"] == {"said": "hi there; x|good:1:0", "code": 0}
    failed = engine.store.load_run(bad)
    assert failed.state == "broken"
    failures = [e.data for e in engine.store.journal(bad) if e.kind == "step_failed"]
    assert [(f["step"], f["retry_at"]) for f in failures] == [("check", None)]
    assert "assertion failed: 'hi you|bad:1:0' == 'hi me|bad:1:0'" in failures[0]["error"]
    engine.close()


INJECTION = """
pipeline: injection
version: 1
inputs:
  label: {type: string, required: true}
initial: work
states:
  work:
    run:
      - step: shell
        id: shelled
        with: {command: "echo ${label}", shell: true}
      - step: shell
        id: quoted
        with:
          command: >-
            printf '[%s]' "before ${label} after" '${label}' x${label}y "$(printf '%s' ${label})"
          shell: true
      - step: shell
        id: words
        with: {command: "printf '[%s]' ${label} '--name=${label}' $${HOME}"}
      - step: shell
        id: escaped
        with: {command: "echo $${HOME} ${run.id}", shell: true}
    next: done
  done: {final: true}
"""

NASTY = "x; touch F \"q\" 'a' $(touch G) `touch H` $HOME \\ end"


def test_a_value_is_never_parsed_as_shell_text_and_is_one_argument(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``${...}`` values reach a ``shell: true`` command as data: ``--set 'label=x; touch F'``
    creates no file, wherever the reference stands (bare, in the author's double or single
    quotes, inside a word, in ``$(...)``), and each is one word; without a shell, a value
    with spaces is one argument (the template is split, then each word rendered), and
    ``$${`` still reaches the shell as ``${``."""
    engine = make_engine(tmp_path, FakeClock())
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    rid = engine.start_run(load_text(INJECTION), {"label": NASTY}, run_id="inj")
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.state, run.status) == ("done", "succeeded"), run.error
    assert sorted(p.name for p in work.iterdir()) == []  # no F, G or H
    assert run.vars["shelled"]["stdout"] == NASTY + "\n"
    assert run.vars["quoted"]["stdout"] == (f"[before {NASTY} after][{NASTY}]"
                                            f"[x{NASTY}y][{NASTY}]")
    assert run.vars["words"]["stdout"] == f"[{NASTY}][--name={NASTY}][${{HOME}}]"
    assert run.vars["escaped"]["stdout"] == f"{os.environ['HOME']} inj\n"
    engine.close()


def test_a_value_that_is_no_number_in_shell_arithmetic_fails_the_step(tmp_path: Path) -> None:
    """bash would run the ``$(...)`` of ``a[$(touch F)]`` evaluated in ``$((...))``."""
    with pytest.raises(PermanentError, match=r"shell: \$\{n\} is used in shell arithmetic"):
        Shell().render_params({"command": "echo $(( ${n} + 1 ))", "shell": True},
                              {"inputs": {"n": "a[$(touch F)]"}})


# -- wait.file ------------------------------------------------------------------------------

def test_wait_file_appears_directly(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "answer"
    first = WaitFile().run(_ctx(tmp_path, {"path": str(target), "poll": "2m"}))
    assert isinstance(first, Wait)
    assert first.description == f"file {target} to appear" and first.poll == 120.0
    assert first.watch == (str(target.parent),) and first.correlations
    target.parent.mkdir()
    target.write_bytes(b"yes")
    done = WaitFile().run(_ctx(tmp_path, {"path": str(target)}, memo=dict(first.memo)))
    assert isinstance(done, Done)
    assert done.outputs == {"path": str(target), "sha256": hashlib.sha256(b"yes").hexdigest()}


def test_wait_file_a_folder_or_fifo_is_not_the_file(tmp_path: Path) -> None:
    """Neither counts as the file appearing, and a named pipe with no writer does not block
    the check (opening it would wait for a writer forever)."""
    folder = tmp_path / "folder"
    folder.mkdir()
    assert isinstance(WaitFile().run(_ctx(tmp_path, {"path": str(folder)})), Wait)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.append(WaitFile().run(_ctx(tmp_path, {"path": str(fifo)}))),
        daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the stuck open so the thread can end
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(5)
        pytest.fail("the check blocked on a FIFO")
    assert isinstance(results[0], Wait)


FILES = """
pipeline: files
version: 1
inputs:
  path: {type: string, required: true}
  until: {type: string, required: true}
initial: waiting
states:
  waiting:
    run:
      - step: wait.file
        id: f
        with: {path: "${path}", until: "${until}", poll: 30s}
    next: done
  done: {final: true}
"""


def test_wait_file_parks_until_the_file_appears_through_the_engine(tmp_path: Path) -> None:
    clock = FakeClock()
    engine = make_engine(tmp_path / "state", clock)
    target = tmp_path / "drop" / "approved"
    rid = engine.start_run(load_text(FILES), {"path": str(target), "until": "appears"})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.status == "waiting" and run.waiting == f"file {target} to appear"
    assert run.wake_at == format_instant(clock.now() + timedelta(seconds=30))
    clock.advance(31)  # the poll finds nothing yet
    engine.run_until_idle()
    assert engine.store.load_run(rid).status == "waiting"
    target.parent.mkdir()
    target.write_text("ok")
    clock.advance(30)  # the next poll finds it
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.state, run.status) == ("done", "succeeded")
    assert run.vars["f"] == {"path": str(target),
                             "sha256": hashlib.sha256(b"ok").hexdigest()}
    engine.close()


def test_wait_file_changes_ignores_the_content_it_started_with(tmp_path: Path) -> None:
    """With ``until: changes`` a file that exists already does not end the wait, nor does
    rewriting the same bytes; new content does."""
    clock = FakeClock()
    engine = make_engine(tmp_path / "state", clock)
    target = tmp_path / "serial"
    target.write_text("1")
    rid = engine.start_run(load_text(FILES), {"path": str(target), "until": "changes"})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.status == "waiting" and run.waiting == f"file {target} to change"
    assert run.memo == {"initial": hashlib.sha256(b"1").hexdigest()}
    target.write_text("1")  # touched, same content
    engine.wake(rid)
    engine.run_until_idle()
    clock.advance(31)
    engine.run_until_idle()
    assert engine.store.load_run(rid).status == "waiting"
    target.write_text("2")
    engine.wake(rid)  # as the watcher would
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.state, run.status) == ("done", "succeeded")
    assert run.vars["f"]["sha256"] == hashlib.sha256(b"2").hexdigest()

    # a file that did not exist when the wait began: its appearance is the change
    late = tmp_path / "late"
    rid2 = engine.start_run(load_text(FILES), {"path": str(late), "until": "changes"})
    engine.run_until_idle()
    assert engine.store.load_run(rid2).status == "waiting"
    late.write_text("new")
    clock.advance(30)
    engine.run_until_idle()
    assert engine.store.load_run(rid2).vars["f"]["sha256"] == hashlib.sha256(b"new").hexdigest()
    engine.close()


# -- wait.until -----------------------------------------------------------------------------

UNTIL = """
pipeline: until
version: 1
inputs:
  at: {type: string, required: true}
initial: waiting
states:
  waiting:
    run:
      - step: wait.until
        id: t
        with: {at: "${at}"}
    next: done
  done: {final: true}
"""


def test_wait_until_parks_until_the_instant_then_completes(tmp_path: Path) -> None:
    clock = FakeClock()
    engine = make_engine(tmp_path, clock)
    at = clock.now() + timedelta(hours=1)
    # no zone: UTC
    rid = engine.start_run(load_text(UNTIL), {"at": at.strftime("%Y-%m-%dT%H:%M:%S")})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert run.status == "waiting" and run.wake_at == format_instant(at)
    assert run.waiting == f"until {format_instant(at)}"
    clock.advance(minutes=59, seconds=59)
    engine.run_until_idle()
    assert engine.store.load_run(rid).status == "waiting"
    clock.advance(seconds=1)
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.state, run.status) == ("done", "succeeded")
    assert run.vars["t"] == {"at": format_instant(at)}
    engine.close()


def test_wait_until_an_instant_in_the_past_completes_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    engine = make_engine(tmp_path, clock)
    past = clock.now() - timedelta(days=1)
    rid = engine.start_run(load_text(UNTIL), {"at": format_instant(past)})
    engine.run_until_idle()
    run = engine.store.load_run(rid)
    assert (run.state, run.status) == ("done", "succeeded")
    assert "step_waiting" not in [e.kind for e in engine.store.journal(rid)]
    assert run.vars["t"] == {"at": format_instant(past)}
    engine.close()


def test_wait_until_with_an_offset_and_a_bad_instant(tmp_path: Path) -> None:
    """An offset is converted to UTC; text that is no instant fails permanently, naming it."""
    clock = FakeClock()
    waiting = WaitUntil().run(_ctx(tmp_path, {"at": "2026-01-01T02:00:00+01:00"}, clock=clock))
    assert isinstance(waiting, Wait) and waiting.until == clock.now() + timedelta(hours=1)
    clock.advance(hours=1)
    done = WaitUntil().run(_ctx(tmp_path, {"at": "2026-01-01T02:00:00+01:00"}, clock=clock))
    assert isinstance(done, Done) and done.outputs == {"at": "2026-01-01T01:00:00.000000Z"}
    with pytest.raises(PermanentError, match="'next tuesday' is not an instant"):
        WaitUntil().run(_ctx(tmp_path, {"at": "next tuesday"}, clock=clock))
