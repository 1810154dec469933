"""The daemon's row in the store: who serves it, since when, and that it is alive.

:class:`Heartbeat` writes a :class:`~certwright.state.records.DaemonRecord` at start, every
``interval`` seconds from the service loop (real seconds, measured on a monotonic clock;
the instant written comes from the daemon's injected clock), and deletes it on a graceful
stop. ``status`` reads the rows: one older than 3 intervals is stale (the process hangs or
is stopped), and a row whose pid is not running on this host is gone (killed, so it could
not say goodbye). The id is ``host:pid``, so several daemons (on the PostgreSQL store,
several hosts) each have a row.

Hazard: the row is written through the engine's own store, from the thread that pumps the
engine, between pumps (the engine is the store's only writer in this process). A failed
write is logged and tried again at the next beat: a heartbeat must never stop the service.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import structlog

from certwright import __version__
from certwright.clock import Clock, format_instant
from certwright.errors import CertwrightError
from certwright.state.base import Store
from certwright.state.records import BACKOFF, RUNNING, WAITING, DaemonRecord

log = structlog.get_logger("certwright.daemon")

class Heartbeat:
    """This daemon's row (see the module). ``metrics``: where it serves ``/metrics``."""

    def __init__(self, store: Store, clock: Clock, *, interval: float = 10.0,
                 metrics: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self.metrics = metrics
        self._mono = monotonic
        self.host = socket.gethostname()
        self.id = f"{self.host}:{os.getpid()}"
        self.started = format_instant(clock.now())
        self._last: float | None = None

    def due(self) -> bool:
        return self._last is None or self._mono() - self._last >= self.interval

    def beat(self) -> None:
        """Write the row now (the runs driven counted from the store)."""
        self._last = self._mono()
        try:
            runs = len(self.store.run_ids((RUNNING, WAITING, BACKOFF)))
            row = DaemonRecord(id=self.id, host=self.host, pid=os.getpid(),
                               started=self.started, heartbeat=format_instant(self.clock.now()),
                               interval=self.interval, runs=runs, leases=0,
                               metrics=self.metrics, version=__version__)
            with self.store.transaction() as tx:
                tx.put_daemon(row)
        except CertwrightError as exc:
            log.warning("daemon_heartbeat_failed", error=str(exc))

    def goodbye(self) -> None:
        """Delete the row (a graceful stop); a failure is logged, the row goes stale."""
        try:
            with self.store.transaction() as tx:
                tx.delete_daemon(self.id)
        except CertwrightError as exc:
            log.warning("daemon_heartbeat_failed", error=str(exc))
