"""Generic built-in steps: shell, set, assert, noop."""
from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import IO, Any, ClassVar

from certwright.engine.model.conditions import evaluate, truthy
from certwright.engine.model.spec import Condition, parse_duration
from certwright.engine.model.template import render, render_shell, render_words
from certwright.engine.plugins.step import BaseStep, Done, StepContext
from certwright.errors import PermanentError, StepError

_OUTPUT_CAP = 64 * 1024  # bytes of stdout/stderr kept in outputs
# After a timed-out command's process group was killed, how long to keep reading its pipes
# (what it wrote before dying). Only a process that left the group (setsid) can hold them
# longer; the step does not wait for it.
_DRAIN_AFTER_KILL = 1.0


class _Captured:
    """The first ``_OUTPUT_CAP`` bytes of a child's stdout and stderr. Everything is read
    (the rest is dropped), so a chatty command never blocks on a full pipe and never fills
    the engine's memory, however much it writes."""

    def __init__(self, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self._bufs = {stdout.fileno(): self.out, stderr.fileno(): self.err}
        self._open = set(self._bufs)

    def read(self, deadline: float | None) -> bool:
        """Read until both pipes are at end of file (True) or ``deadline`` (a monotonic
        time) passes (False)."""
        with selectors.DefaultSelector() as sel:
            for fd in self._open:
                sel.register(fd, selectors.EVENT_READ)
            while self._open:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        self._open.discard(key.fd)
                        sel.unregister(key.fd)
                        continue
                    buf = self._bufs[key.fd]
                    if len(buf) < _OUTPUT_CAP:
                        buf += chunk[:_OUTPUT_CAP - len(buf)]
        return True


def _kill_group(pgid: int) -> None:
    """SIGKILL a command's whole process group: its children and grandchildren too (a
    ``sleep 30 &``), which would otherwise outlive the step and keep its pipes open. Called
    only before the command is reaped, so its pid (the group's id) cannot have been reused."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# Process groups of commands running now. A command in a session of its own no longer gets
# the terminal's SIGINT, and a foreground ``certwright run`` left with Ctrl-C exits while its
# step threads (daemon threads) are still executing: nobody would time those commands out
# or reap them. So they are killed at exit, as a crash would leave them; the journal holds
# the step as in flight, and ``resume`` runs it again with the same idempotency key.
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_live_groups() -> None:
    with _LIVE_LOCK:
        groups = list(_LIVE)
    for pgid in groups:
        _kill_group(pgid)


def _execute(cmd: list[str] | str, shell: bool, cwd: str | None, env: Mapping[str, str],
             timeout: float | None) -> tuple[int | None, bytes, bytes]:
    """Run ``cmd`` in a session of its own and return (exit status, stdout, stderr); the
    status is None when the timeout passed and the command's process group was killed.
    Raises OSError when the command cannot be started."""
    proc = subprocess.Popen(cmd, shell=shell, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    stdout, stderr = proc.stdout, proc.stderr
    if stdout is None or stderr is None:  # never with stdout=stderr=PIPE
        _kill_group(proc.pid)
        proc.wait()
        raise RuntimeError(f"shell: {cmd!r} was started without pipes for its output")
    with _LIVE_LOCK:
        _LIVE.add(proc.pid)
    captured = _Captured(stdout, stderr)
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    try:
        if not captured.read(deadline):
            timed_out = True
        else:  # the pipes are closed, but the command may still run (exec >&-; sleep)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                proc.wait(left)
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            _kill_group(proc.pid)
            captured.read(time.monotonic() + _DRAIN_AFTER_KILL)
    finally:
        if proc.returncode is None and not timed_out:  # interrupted: leave nothing behind
            _kill_group(proc.pid)
        stdout.close()
        stderr.close()
        with _LIVE_LOCK:
            _LIVE.discard(proc.pid)
        proc.wait()
    return (None if timed_out else proc.returncode), bytes(captured.out), bytes(captured.err)


class Shell(BaseStep):
    """Run a command. An argv list runs without a shell; ``shell: true`` runs a string in
    ``/bin/sh -c``. A ``${...}`` value in ``command`` is always data: one argument without
    a shell, an environment variable (``CERTWRIGHT_REF_<n>``) the script expands with one
    (:meth:`render_params`). The environment gets ``CERTWRIGHT_RUN_ID``, ``CERTWRIGHT_RUN_DIR``,
    ``CERTWRIGHT_IDEMPOTENCY_KEY``, ``CERTWRIGHT_ATTEMPT`` and ``CERTWRIGHT_RECOVERING``,
    so a command with side effects can make them idempotent. A non-zero exit fails the step
    (retryable unless ``permanent_exit_codes`` lists the code); stdout and stderr (first
    64 KiB each) become outputs."""

    name: ClassVar[str] = "shell"
    description: ClassVar[str] = "Run a command (argv list, or a string with shell: true)"
    idempotent: ClassVar[bool] = False
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "argv": {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1},
            "command": {"type": "string", "minLength": 1},
            "shell": {"type": "boolean"},
            "cwd": {"type": "string"},
            "env": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
            "timeout": {"type": ["number", "string"]},
            "ok_exit_codes": {"type": "array", "items": {"type": "integer"}},
            "permanent_exit_codes": {"type": "array", "items": {"type": "integer"}},
        },
        "oneOf": [{"required": ["argv"]}, {"required": ["command"]}],
    }

    def render_params(self, params: Mapping[str, Any],
                      namespace: Mapping[str, Any]) -> dict[str, Any]:
        """Render ``command`` so that no value can change what it runs: with ``shell:
        true`` values reach the script as environment variables it expands (never as
        script text, :func:`render_shell`); without a shell the template is split into
        words before each is rendered, so a value is one argument (:func:`render_words`,
        the result given as ``argv``). Every other parameter renders as usual."""
        command = params.get("command")
        rendered: dict[str, Any] = render({k: v for k, v in params.items() if k != "command"},
                                          namespace)
        if not isinstance(command, str) or "argv" in rendered:
            if command is not None:  # not a string, or beside argv: the schema says why
                rendered["command"] = render(command, namespace)
            return rendered
        env = rendered.get("env")
        if rendered.get("shell") is True and (env is None or isinstance(env, Mapping)):
            try:
                script, values = render_shell(command, namespace)
            except ValueError as exc:
                raise PermanentError(f"shell: {exc}") from None
            rendered["command"] = script
            if values:
                rendered["env"] = {**(env or {}), **values}
        elif rendered.get("shell") is True:
            rendered["command"] = command  # env is no mapping: the schema says so
        else:
            try:
                rendered["argv"] = render_words(command, namespace)
            except ValueError as exc:
                raise PermanentError(f"shell: command {command!r} cannot be split into "
                                     f"words: {exc}") from None
            if not rendered["argv"]:
                rendered["command"] = command  # only blanks: the schema says so
                del rendered["argv"]
        return rendered

    def run(self, ctx: StepContext) -> Done:
        p = ctx.params
        use_shell = bool(p.get("shell", False))
        if "argv" in p:
            cmd: list[str] | str = [str(a) for a in p["argv"]]
            if use_shell:
                cmd = shlex.join(cmd)
        elif use_shell:
            cmd = str(p["command"])
        else:
            cmd = shlex.split(str(p["command"]))
        env = dict(os.environ)
        env.update({k: str(v) for k, v in (p.get("env") or {}).items()})
        env.update({
            "CERTWRIGHT_RUN_ID": ctx.run_id, "CERTWRIGHT_RUN_DIR": str(ctx.run_dir),
            "CERTWRIGHT_IDEMPOTENCY_KEY": ctx.idempotency_key,
            "CERTWRIGHT_ATTEMPT": str(ctx.attempt),
            "CERTWRIGHT_RECOVERING": "1" if ctx.recovering else "0"})
        timeout = p.get("timeout", ctx.timeout)
        if timeout is not None:
            try:
                timeout = parse_duration(timeout)
            except ValueError as exc:  # a templated value: the loader could not check it
                raise PermanentError(f"shell: timeout: {exc}") from exc
        shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
        try:
            code, stdout, stderr = _execute(cmd, use_shell, p.get("cwd") or None, env, timeout)
        except OSError as exc:  # missing, not executable, no such cwd: a retry cannot help
            raise PermanentError(f"cannot run {shown!r}: {exc.strerror}: "
                                 f"{exc.filename}") from exc
        if code is None:
            raise StepError(f"{shown!r} did not finish within {timeout} s; it was killed "
                            "(with every process it started)")
        out = stdout.decode(errors="replace")
        err = stderr.decode(errors="replace")
        if out or err:  # for the log file, and the terminal's display of a step's output
            ctx.log.debug("command_output", exit_code=code, stdout=out, stderr=err)
        ok = set(p.get("ok_exit_codes") or [0])
        if code not in ok:
            tail = err.strip().splitlines()[-3:] if err.strip() else []
            msg = f"{shown!r} exited with status {code}"
            if tail:
                msg += ": " + " | ".join(tail)
            permanent = code in set(p.get("permanent_exit_codes") or [])
            raise StepError(msg, retryable=not permanent)
        ctx.log.info("command_ran", command=shown, exit_code=code)
        return Done({"exit_code": code, "stdout": out, "stderr": err})


class Set(BaseStep):
    """Make values available to later steps as ``${steps.<id>.<name>}``."""

    name: ClassVar[str] = "set"
    description: ClassVar[str] = "Define values for later steps"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}

    def run(self, ctx: StepContext) -> Done:
        return Done(dict(ctx.params))


class Assert(BaseStep):
    """Fail the step (permanently) unless a condition holds, with the given message."""

    name: ClassVar[str] = "assert"
    description: ClassVar[str] = "Check a condition; fail with a message when it does not hold"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"that": {}, "equals": {"type": "array", "minItems": 2, "maxItems": 2},
                       "message": {"type": "string"}},
    }

    def run(self, ctx: StepContext) -> Done:
        p = ctx.params
        if "equals" in p:
            # The runner rendered the params already; compare the values through references
            # to them, so a value containing "${...}" (a command's output, an escaped "$${")
            # is data, not a template to resolve a second time.
            left, right = p["equals"]
            ok = evaluate(Condition("equals", ("${left}", "${right}")),
                          {"left": left, "right": right})
            what = f"{p['equals'][0]!r} == {p['equals'][1]!r}"
        else:
            ok = truthy(p.get("that"))
            what = f"{p.get('that')!r} is true"
        if not ok:
            raise PermanentError(p.get("message") or f"assertion failed: {what}")
        return Done({"ok": True})


class Noop(BaseStep):
    """Do nothing (benchmarks, placeholders)."""

    name: ClassVar[str] = "noop"
    description: ClassVar[str] = "Do nothing"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}

    def run(self, ctx: StepContext) -> Done:
        return Done({})
