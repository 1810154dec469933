"""Logging through structlog: readable on a terminal, JSON lines with ``--log-json``.

Every event is a snake_case fact (``step_started``, ``transitioned``) with key=value
context; the same key names everywhere (run_id, state, step, trigger). A processor masks
values of keys that name secrets, as a last line of defence: steps must not log them.
"""
from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"pass(word|phrase)?|secret|token|private|hmac|answer|^key_pem$",
                         re.IGNORECASE)


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        if k != "event" and _SECRET_KEY.search(k) and event[k] not in (None, "", False):
            event[k] = "<secret>"
    return event


# The secret values of the run whose step this thread executes (set by the runner), masked
# wherever they appear in a log event: a step may log a command line that contains one.
SECRET_VALUES: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "certwright_secret_values", default=())


def _mask_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    values = SECRET_VALUES.get()
    if not values:
        return event
    for k, v in event.items():
        if isinstance(v, str):
            masked = v
            for secret in values:
                if secret in masked:
                    masked = masked.replace(secret, "<secret>")
            event[k] = masked
        elif isinstance(v, (list, tuple, dict)):
            text = repr(v)
            if any(secret in text for secret in values):
                event[k] = "<secret>"
    return event


def configure(json_lines: bool = False, level: str = "info", stream: Any = None, *,
              cache: bool = False) -> None:
    """Set up structlog (and stdlib logging, for libraries) once per process.

    ``cache``: each logger binds its configuration on first use and keeps it (structlog's
    ``cache_logger_on_first_use``; saves a rebind on every log call). For a process that
    configures once before it logs (the CLI, the daemon); not for tests, which swap
    processors (``structlog.testing.capture_logs``)."""
    out = stream or sys.stderr
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=out, format="%(message)s")
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
        _mask_values,
    ]
    if json_lines:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(processors=processors,
                        wrapper_class=structlog.make_filtering_bound_logger(lvl),
                        logger_factory=structlog.PrintLoggerFactory(out),
                        cache_logger_on_first_use=cache)
