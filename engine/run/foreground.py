"""Drive one run in the foreground: pump the engine, watch what the run waits for, show it.

Returns when the run finishes, or parks it (``--no-wait``, Ctrl-C, SIGTERM, SIGHUP): whatever
executes at that moment is left in flight in the journal and runs again, with the same idempotency
key, on ``resume``.
"""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from certwright.clock import parse_instant
from certwright.engine.model.spec import format_duration
from certwright.engine.run.runner import Engine
from certwright.engine.run.watch import WaitWatcher
from certwright.state.records import BACKOFF, FINISHED, WAITING, RunRecord

PARKED = "parked"


@dataclass
class Outcome:
    """How a foreground drive ended: the run's final record, or parked."""

    run: RunRecord
    parked: bool


def describe_wait(run: RunRecord, now: datetime) -> str:
    """One line: what the run waits for and how long is left."""
    parts = []
    if run.status == WAITING:
        parts.append(f"waiting for {run.waiting}")
    elif run.wants_host:  # running, its next step for a daemon of another host
        parts.append(f"waiting for host {run.wants_host}")
    elif run.status == BACKOFF:
        parts.append(f"retrying after: {run.error}")
        if run.wake_at:
            left = (parse_instant(run.wake_at) - now).total_seconds()
            parts.append(f"next attempt in {format_duration(max(left, 0))}")
    if run.deadline:
        left = (parse_instant(run.deadline) - now).total_seconds()
        parts.append(f"{format_duration(max(left, 0))} left (state {run.state!r} times out at "
                     f"{run.deadline[:19]}Z)")
    return "; ".join(parts)


class WaitView(Protocol):
    """What the drive shows while the run waits (the CLI's progress display)."""

    def wait(self, run: RunRecord, now: datetime | None) -> None: ...

    def close(self) -> None: ...


class PlainWait:
    """A wait's line on ``out`` each time what the run waits for changes (its text up to
    the first ``;``); no redraw, no escape byte."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown = ""

    def wait(self, run: RunRecord, now: datetime | None) -> None:
        line = describe_wait(run, now or datetime.now(UTC))
        if line.split(";")[0] != self._shown.split(";", maxsplit=1)[0]:
            self._out.write(line + "\n")
            self._out.flush()
        self._shown = line

    def close(self) -> None:
        """Nothing to clear."""


def drive(engine: Engine, run_id: str, watcher: WaitWatcher, *, no_wait: bool = False,
          out: TextIO | None = None, tick: float = 1.0,
          stop: Callable[[], bool] | None = None, view: WaitView | None = None) -> Outcome:
    """Pump until ``run_id`` finishes, or parks it (no_wait, Ctrl-C, ``stop()``).

    ``watcher`` is the engine's interceptor that watches what the run waits on; it is
    stopped when the drive ends. ``view`` is told, about once a second, what the waiting
    run waits for (default: a line on ``out``, stderr, when that changes) and closed at
    the end.
    """
    view = view or PlainWait(out or sys.stderr)
    restore = _park_on_termination()
    try:
        while True:
            engine.pump(timeout=tick)
            if not engine.idle():
                continue
            run = engine.store.load_run(run_id)
            if run.status in FINISHED:
                return Outcome(run, parked=False)
            if run.wants_host:  # a host-bound step for another host: not here, ever
                return Outcome(run, parked=True)
            if run.status in (WAITING, BACKOFF):
                if no_wait or (stop and stop()):
                    return Outcome(run, parked=True)
                if run.watch != watcher.watching(run_id):  # e.g. resumed already waiting
                    watcher.waiting(run_id, run.watch)
                view.wait(run, engine.clock.now())
    except KeyboardInterrupt:
        return Outcome(engine.store.load_run(run_id), parked=True)
    finally:
        restore()
        view.close()
        watcher.stop()


def _park_on_termination() -> Callable[[], None]:
    """SIGTERM and SIGHUP (``kill PID``, a closed terminal) park the run as Ctrl-C does,
    instead of ending the process where it stands: the exit then stops commands the run's
    steps started (they run in sessions of their own, out of the terminal's reach) and the
    journal keeps the step in flight for ``resume``. Returns what puts the old handlers
    back. Only the main thread may set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return restore
