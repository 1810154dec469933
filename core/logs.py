"""Logging through structlog, routed to sinks: stderr (readable, or JSON lines with
``--log-json``), a run's log file, and taps (a display listening for a step's output).

Every event is a snake_case fact (``step_started``, ``transitioned``) with key=value
context; the same key names everywhere (run_id, state, step, trigger). A processor masks
values of keys that name secrets, as a last line of defence: steps must not log them.

:func:`configure` sets structlog up once per process and returns the :class:`LogRouter`
every event ends in; its sinks can be changed afterwards (a command that draws progress on
a terminal moves the log off stderr into a file), also for loggers already cached.
Libraries that log through stdlib ``logging`` (uvicorn, asyncio) reach the same sinks.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

_SECRET_KEY = re.compile(r"pass(word|phrase)?|secret|token|private|hmac|answer|^key_pem$",
                         re.IGNORECASE)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}
# how many events a router keeps while no file is attached yet (the services a run needs
# start before its folder exists); older ones are dropped first
_PENDING_MAX = 5000


# key -> whether it names a secret; keys are the code's own names, so this stays small
# (it is cleared past a bound in case something logs keys made from data)
_SECRET_KEYS: dict[str, bool] = {}


def _names_secret(key: str) -> bool:
    known = _SECRET_KEYS.get(key)
    if known is None:
        if len(_SECRET_KEYS) > 4096:
            _SECRET_KEYS.clear()
        known = _SECRET_KEYS[key] = key != "event" and bool(_SECRET_KEY.search(key))
    return known


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        if _names_secret(k) and event[k] not in (None, "", False):
            event[k] = "<secret>"
    return event


def _unknown_to_json(obj: Any) -> Any:
    """What a log value the json module cannot write becomes (as structlog's renderer)."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


_JSON = json.JSONEncoder(default=_unknown_to_json)  # built once: json.dumps(default=...)


def _json_line(event: Any, **_: Any) -> str:  # builds an encoder for every call
    return _JSON.encode(event)


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


def level_number(level: str) -> int:
    """``"info"`` -> ``logging.INFO``; an unknown name is INFO."""
    return _LEVELS.get(level.lower(), logging.INFO)


Renderer = Callable[[Any, str, MutableMapping[str, Any]], Any]
Tap = Callable[[dict[str, Any]], None]


class _Sink:
    """One destination: a renderer, a minimum level and a write function."""

    def __init__(self, write: Callable[[str], None], level: int, renderer: Renderer) -> None:
        self.write, self.level, self.renderer = write, level, renderer

    def emit(self, method: str, event: dict[str, Any]) -> None:
        if level_number(str(event.get("level", method))) < self.level:
            return
        self.write(str(self.renderer(None, method, dict(event))).rstrip("\n") + "\n")


def _stream_writer(stream: TextIO) -> Callable[[str], None]:
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()
    return write


class LogRouter:
    """The last processor of the chain: hands each event to every sink, then drops it.

    Sinks: ``stderr`` (or any stream; None for none), one log ``file`` (attached later;
    events logged before are kept in memory, at most a few thousand, and written first),
    and taps that see every event as a dict (they must be quick and must not raise).
    Thread-safe: steps log from worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._stream: _Sink | None = None
        self._file: _Sink | None = None
        self._fh: TextIO | None = None
        self._pending: list[tuple[str, dict[str, Any]]] | None = None
        self._taps: list[Tap] = []
        self.file_path: Path | None = None
        self.floor = logging.CRITICAL  # min_level as of the last change (read unlocked)

    # -- configuration --------------------------------------------------------------------
    def to_stream(self, stream: TextIO | None, *, json_lines: bool = False,
                  level: str = "info", colors: bool | None = None,
                  write: Callable[[str], None] | None = None) -> None:
        """Log to ``stream`` (None: to no stream). ``write`` replaces the stream's own write
        (a display that must clear its live line first); ``colors`` defaults to whether the
        stream is a terminal and NO_COLOR is unset."""
        with self._lock:
            if stream is None and write is None:
                self._stream = None
                self._changed()
                return
            if colors is None:
                colors = bool(stream is not None and stream.isatty()
                              and not os.environ.get("NO_COLOR")
                              and os.environ.get("TERM") != "dumb")
            renderer: Renderer = (structlog.processors.JSONRenderer(serializer=_json_line)
                                  if json_lines
                                  else structlog.dev.ConsoleRenderer(colors=colors))
            out = write or _stream_writer(stream)  # type: ignore[arg-type]
            self._stream = _Sink(out, level_number(level), renderer)
            self._changed()

    def hold_for_file(self) -> None:
        """Keep events in memory until :meth:`to_file` (nothing written to a file yet)."""
        with self._lock:
            if self._file is None and self._pending is None:
                self._pending = []
            self._changed()

    def to_file(self, path: Path, level: str = "debug") -> Path:
        """Append every event to ``path`` (made 0600, its folder must exist), those held
        since :meth:`hold_for_file` first. Returns the path; OSError when it cannot be
        opened (then nothing changes)."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fh = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        with self._lock:
            pending = self._pending or []
            self.close_file()
            self._fh, self.file_path = fh, path
            self._file = _Sink(_stream_writer(fh), level_number(level),
                               structlog.dev.ConsoleRenderer(colors=False))
            for method, event in pending:
                self._file.emit(method, event)
            self._changed()
        return path

    def close_file(self) -> None:
        """Close the log file (and drop what was held for one never attached)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
            self._fh, self._file, self._pending = None, None, None
            self._changed()

    def tap(self, fn: Tap) -> Callable[[], None]:
        """Call ``fn(event)`` for every event from now on; returns what removes it."""
        with self._lock:
            self._taps.append(fn)
            self._changed()

        def remove() -> None:
            with self._lock:
                if fn in self._taps:
                    self._taps.remove(fn)
                self._changed()
        return remove

    @property
    def min_level(self) -> int:
        """The lowest level any sink takes (what the loggers must let through)."""
        levels = [s.level for s in (self._stream, self._file) if s is not None]
        if self._pending is not None or self._taps:
            levels.append(logging.DEBUG)
        return min(levels, default=logging.CRITICAL)

    def _changed(self) -> None:
        """Note the sinks' new lowest level (under the lock, after each change)."""
        self.floor = self.min_level

    # -- the processor ----------------------------------------------------------------------
    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        record = dict(event)
        with self._lock:
            try:
                if self._stream is not None:
                    self._stream.emit(method, record)
                if self._file is not None:
                    self._file.emit(method, record)
                elif self._pending is not None:
                    self._pending.append((method, record))
                    del self._pending[:-_PENDING_MAX]
            except (OSError, ValueError):
                pass  # a closed or full stream must not stop what logs (e.g. a pipe closed)
            for fn in list(self._taps):
                fn(record)
        raise structlog.DropEvent


class _ToRouter(logging.Handler):
    """stdlib logging (libraries) into the router, as events named by the message."""

    def __init__(self, router: LogRouter) -> None:
        super().__init__()
        self._router = router

    def emit(self, record: logging.LogRecord) -> None:
        event: dict[str, Any] = {"event": record.getMessage(), "logger": record.name,
                                 "level": record.levelname.lower()}
        if record.exc_info and record.exc_info[1] is not None:
            event["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        with contextlib.suppress(structlog.DropEvent):
            self._router(None, record.levelname.lower(), event)


class _LevelFilter:
    """Lets through what the router's sinks take, whatever they are now."""

    def __init__(self, router: LogRouter) -> None:
        self._router = router

    def __call__(self, _: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if level_number(method if method in _LEVELS else "info") < self._router.floor:
            raise structlog.DropEvent
        return event


def _quick_logger_class(router: LogRouter, gate: _LevelFilter) -> type[Any]:
    """structlog's logger that lets every level through, whose ``debug`` and ``info``
    return at once while no sink of ``router`` takes their level and the first processor
    is still ``gate`` (``structlog.testing.capture_logs`` swaps the processors): what the
    gate would drop anyway, before it, and before the copy of the context that precedes
    it. A daemon calls ``info`` for every step and transition, thousands of times a
    second, usually with only warnings shown."""
    base: type[Any] = structlog.make_filtering_bound_logger(logging.DEBUG)

    def quick(level: int, slow: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: Any, event: str, *args: Any, **kw: Any) -> Any:
            if level < router.floor and self._processors and self._processors[0] is gate:
                return None
            return slow(self, event, *args, **kw)
        return method
    return type("RoutedBoundLogger", (base,), {"debug": quick(logging.DEBUG, base.debug),
                                              "info": quick(logging.INFO, base.info)})


def configure(json_lines: bool = False, level: str = "info", stream: Any = None, *,
              cache: bool = False) -> LogRouter:
    """Set up structlog (and stdlib logging, for libraries) once per process: every event
    at ``level`` or above to ``stream`` (stderr), JSON lines when ``json_lines``. Returns
    the router, whose sinks the caller may change later.

    ``cache``: each logger binds its configuration on first use and keeps it (structlog's
    ``cache_logger_on_first_use``; saves a rebind on every log call). For a process that
    configures once before it logs (the CLI, the daemon); not for tests, which swap
    processors (``structlog.testing.capture_logs``)."""
    router = LogRouter()
    router.to_stream(stream or sys.stderr, json_lines=json_lines, level=level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ToRouter):
            root.removeHandler(handler)
    root.addHandler(_ToRouter(router))
    # libraries' own chatter (uvicorn's per-request lines, asyncio) at warning and above
    root.setLevel(max(level_number(level), logging.WARNING))
    gate = _LevelFilter(router)
    processors: list[Any] = [
        gate,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
        _mask_values,
        structlog.processors.format_exc_info,
        router,
    ]
    structlog.configure(processors=processors,
                        wrapper_class=_quick_logger_class(router, gate),
                        logger_factory=structlog.ReturnLoggerFactory(),
                        cache_logger_on_first_use=cache)
    return router

