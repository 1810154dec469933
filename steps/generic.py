"""Generic built-in steps: shell, set, assert, noop."""
from __future__ import annotations

import os
import shlex
import subprocess
from typing import Any, ClassVar, Mapping

from engine.conditions import evaluate, truthy
from engine.errors import PermanentError, StepError
from engine.spec import Condition
from steps.base import BaseStep, Done, StepContext

_OUTPUT_CAP = 64 * 1024  # bytes of stdout/stderr kept in outputs


class Shell(BaseStep):
    """Run a command. An argv list runs without a shell; ``shell: true`` runs a string in
    ``/bin/sh -c``. The environment gets ``CERTWRIGHT_RUN_ID``, ``CERTWRIGHT_RUN_DIR``,
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
        if isinstance(timeout, str):
            from engine.spec import parse_duration
            timeout = parse_duration(timeout)
        shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
        try:
            proc = subprocess.run(cmd, shell=use_shell, cwd=p.get("cwd") or None, env=env,
                                  capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise PermanentError(f"cannot run {shown!r}: {exc.strerror}: {exc.filename}")
        except subprocess.TimeoutExpired:
            raise StepError(f"{shown!r} did not finish within {timeout} s; it was killed")
        out = proc.stdout[:_OUTPUT_CAP].decode(errors="replace")
        err = proc.stderr[:_OUTPUT_CAP].decode(errors="replace")
        ok = set(p.get("ok_exit_codes") or [0])
        if proc.returncode not in ok:
            tail = err.strip().splitlines()[-3:] if err.strip() else []
            msg = f"{shown!r} exited with status {proc.returncode}"
            if tail:
                msg += ": " + " | ".join(tail)
            permanent = proc.returncode in set(p.get("permanent_exit_codes") or [])
            raise StepError(msg, retryable=not permanent)
        ctx.log.info("command_ran", command=shown, exit_code=proc.returncode)
        return Done({"exit_code": proc.returncode, "stdout": out, "stderr": err})


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
            ok = evaluate(Condition("equals", tuple(p["equals"])), {})
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
