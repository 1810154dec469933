"""Waiting steps: for a file to appear or change, and for an instant."""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from certwright.clock import format_instant, parse_instant
from certwright.engine.plugins.step import BaseStep, Done, StepContext, Wait
from certwright.errors import PermanentError
from certwright.events import file_key


def _fingerprint(path: Path) -> str | None:
    """sha256 of the file's content, or None when it does not exist (or is not a file).

    Only a regular file (or a link to one) is opened: opening a named pipe would block the
    worker until someone writes to it, and a device is no file that appeared."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read(64 * 1024 * 1024)).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


class WaitFile(BaseStep):
    """Wait until a file exists (``appears``) or its content differs from when the wait
    began (``changes``). Outputs the path and the content's sha256."""

    name: ClassVar[str] = "wait.file"
    description: ClassVar[str] = "Wait for a file to appear or change"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["path"],
        "properties": {"path": {"type": "string", "minLength": 1},
                       "until": {"enum": ["appears", "changes"]},
                       "poll": {"type": ["number", "string"]}},
    }

    def run(self, ctx: StepContext) -> Done | Wait:
        path = Path(os.path.abspath(os.path.expanduser(str(ctx.params["path"]))))
        mode = ctx.params.get("until", "appears")
        current = _fingerprint(path)
        memo = dict(ctx.memo)
        if "initial" not in memo:
            memo["initial"] = current
        if mode == "appears" and current is not None:
            return Done({"path": str(path), "sha256": current})
        if mode == "changes" and current is not None and current != memo["initial"]:
            return Done({"path": str(path), "sha256": current})
        what = "to appear" if mode == "appears" else "to change"
        poll = ctx.params.get("poll", 60)
        if isinstance(poll, str):
            from certwright.engine.model.spec import parse_duration
            poll = parse_duration(poll)
        return Wait(description=f"file {path} {what}", correlations=(file_key(str(path)),),
                    watch=(str(path.parent),), poll=float(poll), memo=memo)


class WaitUntil(BaseStep):
    """Wait until an instant (ISO 8601, UTC if no zone)."""

    name: ClassVar[str] = "wait.until"
    description: ClassVar[str] = "Wait until an instant"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["at"],
        "properties": {"at": {"type": "string"}},
    }

    def run(self, ctx: StepContext) -> Done | Wait:
        try:
            at = parse_instant(str(ctx.params["at"]))
        except ValueError as exc:
            raise PermanentError(f"wait.until: {ctx.params['at']!r} is not an instant: "
                                 f"{exc}") from exc
        if ctx.clock.now() >= at:
            return Done({"at": format_instant(at)})
        return Wait(description=f"until {format_instant(at)}", until=at)
