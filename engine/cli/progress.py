"""What ``run`` and ``resume`` show while they drive a run: :class:`Progress`, an engine
interceptor that turns the run's durable events into lines on a :class:`Screen`.

* a line for each state left (a tick, or a cross when it was left by an error or a
  timeout; the time taken; what a wait waited for) and for the final state;
* one live line for the current step (with a spinner) or what a wait waits for and the
  time left, redrawn in place on a terminal (:mod:`certwright.engine.cli.progress_live`,
  the only module that imports rich) and printed once per change elsewhere;
* a step's own output (a shell step's stdout and stderr, from its ``command_output`` log
  event): its last lines when it fails, all of it with ``-v``;
* the result, printed by the command when the drive ends.

:func:`open_screen` picks the screen: live on a terminal, plain lines (no redraw, no escape
byte) when the stream is not one or NO_COLOR or TERM=dumb is set, nothing with ``-q`` or
``--log-json``. Hooks run in the engine's core loop and must not raise: a screen that
cannot write (a closed pipe) drops what it could not show.
"""
from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TextIO

import structlog

from certwright.clock import parse_instant
from certwright.engine.model.spec import format_duration
from certwright.engine.run.foreground import describe_wait
from certwright.engine.run.interceptor import Interceptor, StepOutcome
from certwright.state.records import BACKOFF, CANCELLED, SUCCEEDED, WAITING, RunRecord

__all__ = ["PlainScreen", "Progress", "Screen", "open_screen"]

TAIL_LINES = 10  # lines of a failing step's output shown (all of them are in the log file)

log = structlog.get_logger("certwright.cli")


def _never_raises(hook: Callable[..., None]) -> Callable[..., None]:
    """An engine hook that logs what went wrong instead of raising into the core loop
    (which would stop the run for a display's sake)."""
    @functools.wraps(hook)
    def guarded(*args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:  # noqa: BLE001 - the display must never stop the engine
            log.warning("progress_display_failed", hook=hook.__name__,
                        error=f"{type(exc).__name__}: {exc}")
    return guarded


class Screen(Protocol):
    """Where progress goes. ``line`` prints a lasting line; ``status`` sets the live line
    (None: none; ``wait``: it says what a wait waits for, which a plain screen prints
    when that changes); ``log`` prints a log line (``-v``) above the live line."""

    def line(self, text: str) -> None: ...

    def status(self, text: str | None, *, wait: bool = False) -> None: ...

    def log(self, text: str) -> None: ...

    def close(self) -> None: ...


def _symbols(stream: TextIO) -> tuple[str, str]:
    """A tick and a cross the stream's encoding can write."""
    try:
        "✓✗".encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "+", "x"
    return "✓", "✗"


class PlainScreen:
    """Lines only: no redraw, no escape byte (a pipe, a file, NO_COLOR, TERM=dumb).

    A wait's line is printed when what it waits for changes (its text up to the first
    ``;``), not each time the time left does."""

    live = False

    def __init__(self, stream: TextIO) -> None:
        self._out = stream
        self._shown = ""
        self._lock = threading.Lock()
        self.tick, self.cross = _symbols(stream)

    def _write(self, text: str) -> None:
        with self._lock:
            try:
                self._out.write(text + "\n")
                self._out.flush()
            except (OSError, ValueError):
                pass  # a closed pipe: the log file still has everything

    def line(self, text: str) -> None:
        self._write(text)

    def status(self, text: str | None, *, wait: bool = False) -> None:
        if not (wait and text):
            return
        what = text.split(";", maxsplit=1)[0]
        if what != self._shown:
            self._shown = what
            self._write(text)

    def log(self, text: str) -> None:
        self._write(text.rstrip("\n"))

    def close(self) -> None:
        """Nothing to clear."""


class NullScreen(PlainScreen):
    """Shows nothing (``-q``, ``--log-json``): the command prints the result alone."""

    def _write(self, text: str) -> None:
        return


def _live_capable(stream: TextIO) -> bool:
    """A terminal that can redraw (TERM set, not dumb), may get colour (no NO_COLOR) and
    takes UTF-8 (the spinner and the marks)."""
    return (stream.isatty() and os.environ.get("TERM", "") not in ("dumb", "")
            and not os.environ.get("NO_COLOR")
            and (stream.encoding or "").lower().replace("-", "") == "utf8")


def open_screen(stream: TextIO, *, quiet: bool = False, silent: bool = False) -> Screen:
    """The screen for ``stream``: nothing when ``quiet`` or ``silent`` (JSON logs own the
    stream), live on a capable terminal, plain lines otherwise."""
    if quiet or silent:
        return NullScreen(stream)
    if _live_capable(stream):
        from certwright.engine.cli.progress_live import LiveScreen
        return LiveScreen(stream)
    return PlainScreen(stream)


def took(seconds: float) -> str:
    """``0.04s``, ``3.2s``, ``2m5s``: how long something took."""
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    return format_duration(round(seconds))


class Progress(Interceptor):
    """The run's story on ``screen`` (see the module). ``verbose``: every step's output.
    ``monotonic`` measures the time each state took (wall time, not the run's clock)."""

    def __init__(self, run_id: str, screen: Screen, *, verbose: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.run_id = run_id
        self.screen = screen
        self._verbose = verbose
        self._now = monotonic
        self._state: str | None = None
        self._entered = monotonic()
        self._started = monotonic()
        self._waited: str | None = None
        self._failure: list[str] = []
        self.shown_error: str | None = None  # the step error the screen shows
        self._outputs: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self.tick, self.cross = _symbols_of(screen)

    # -- the log tap (worker threads) ---------------------------------------------------
    @_never_raises
    def log_event(self, event: dict[str, Any]) -> None:
        """A log event; a step's ``command_output`` is kept for when the step ends."""
        if event.get("event") != "command_output" or event.get("run_id") != self.run_id:
            return
        with self._lock:
            self._outputs[str(event.get("step"))] = (str(event.get("stdout") or ""),
                                                     str(event.get("stderr") or ""))

    # -- engine hooks (the core loop) ---------------------------------------------------
    @_never_raises
    def transitioned(self, run: RunRecord, from_state: str | None, to_state: str,
                     trigger: str) -> None:
        if run.id != self.run_id:
            return
        if from_state is not None and self._state == from_state:
            self._left(from_state, trigger)
        self._state, self._entered, self._waited = to_state, self._now(), None
        self.screen.status(f"{to_state}", wait=False)

    @_never_raises
    def step_started(self, run: RunRecord, step_id: str, attempt: int) -> None:
        if run.id != self.run_id:
            return
        self._adopt(run)
        again = f" (attempt {attempt})" if attempt > 1 else ""
        self.screen.status(f"{run.state} · {step_id}{again}")

    @_never_raises
    def step_finished(self, run: RunRecord, step_id: str, outcome: StepOutcome) -> None:
        if run.id != self.run_id:
            return
        self._adopt(run)
        with self._lock:
            output = self._outputs.pop(step_id, None)
        if outcome == "waiting":
            self._waited = run.waiting
            if getattr(self.screen, "live", False):  # a plain screen: the drive prints it
                self.wait(run, None)
        elif outcome == "failed" and run.status != BACKOFF:
            self._failure = [f"  {step_id}: {run.error}"]
            self.shown_error = run.error
            shown = _tail(output, None if self._verbose else TAIL_LINES)
            self._failure += [f"  │ {line}" for line in shown]
        elif self._verbose and output:
            for line in _tail(output, None):
                self.screen.line(f"  │ {line}")

    @_never_raises
    def run_finished(self, run: RunRecord) -> None:
        if run.id != self.run_id:
            return
        if self._state is not None and self._state != run.state:
            self._left(self._state, "error")
        mark = self.tick if run.status == SUCCEEDED else self.cross
        how = "  (cancelled)" if run.status == CANCELLED else ""
        self.screen.status(None)
        self.screen.line(f"{mark} {run.state}{how}")
        self._state = None

    # -- the foreground's wait ---------------------------------------------------------
    def wait(self, run: RunRecord, now: datetime | None) -> None:
        """The live line for a waiting or backing-off run (called by the drive)."""
        if run.status not in (WAITING, BACKOFF):
            return
        self._adopt(run)
        if now is None:
            from certwright.clock import clock_from_env
            now = clock_from_env().now()
        live = getattr(self.screen, "live", False)
        self.screen.status(live_wait(run, now) if live else describe_wait(run, now), wait=True)

    def waiting(self, run_id: str, paths: list[str]) -> None:
        """Nothing: the drive shows waits (this hook is the watcher's)."""

    def close(self) -> None:
        self.screen.status(None)

    # -- helpers -------------------------------------------------------------------------
    def _adopt(self, run: RunRecord) -> None:
        """A resumed run: its state was entered before this process started."""
        if self._state is None and run.state:
            self._state, self._entered = run.state, self._now()

    def _left(self, state: str, trigger: str) -> None:
        bad = trigger in ("error", "timeout")
        mark = self.cross if bad else self.tick
        extra = ""
        if self._waited:
            extra = f"  waited for {self._waited.removeprefix('waiting for ')}"
        if trigger == "timeout":
            extra += "  timed out"
        self.screen.status(None)
        self.screen.line(f"{mark} {state}  {took(self._now() - self._entered)}{extra}")
        for line in self._failure:
            self.screen.line(line)
        self._failure = []

    def failure_lines(self) -> list[str]:
        """Lines of a failure not shown yet (the run failed in the state it was in)."""
        lines, self._failure = self._failure, []
        return lines

    def elapsed(self) -> str:
        return took(self._now() - self._started)


def _symbols_of(screen: Screen) -> tuple[str, str]:
    return (getattr(screen, "tick", "✓"), getattr(screen, "cross", "✗"))


def _tail(output: tuple[str, str] | None, count: int | None) -> list[str]:
    """The last ``count`` lines (None: all) of a step's stdout then stderr."""
    if not output:
        return []
    lines = [ln for part in output for ln in part.rstrip("\n").splitlines() if part.strip()]
    return lines if count is None else lines[-count:]


def live_wait(run: RunRecord, now: datetime) -> str:
    """The live line of a wait: the state, the time left, then what it waits for (so that
    a line cut at the terminal's width keeps what matters); a retry's next attempt."""
    if run.status == BACKOFF:
        left = ""
        if run.wake_at:
            secs = max((parse_instant(run.wake_at) - now).total_seconds(), 0)
            left = f" · next attempt in {format_duration(secs)}"
        return f"{run.state}{left} · retrying after: {run.error}"
    text = describe_wait(run, now)
    if not run.deadline:
        return f"{run.state} · {text}"
    secs = max((parse_instant(run.deadline) - now).total_seconds(), 0)
    return (f"{run.state} · {format_duration(secs)} left · {run.waiting} "
            f"(times out at {run.deadline[:16]}Z)")
