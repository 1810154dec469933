"""The daemon's row in the store: who serves it, since when, and that it is alive.

:class:`Heartbeat` writes a :class:`~certwright.state.records.DaemonRecord` at start, every
``interval`` seconds from the service loop (real seconds, measured on a monotonic clock;
the instant written comes from the daemon's injected clock), and deletes it on a graceful
stop. ``status`` reads the rows: one older than 3 intervals is stale (the process hangs or
is stopped), and a row whose pid is not running on this host is gone (killed, so it could
not say goodbye). The id is ``host:pid``, so several daemons (on the PostgreSQL store,
several hosts) each have a row.

The runs driven are counted from the store at the first beat, then again only when the
engine committed since (this is its interceptor: ``committed``), a run parked in the
store since (``Store.waits_after``), or ``RECOUNT`` beats passed: an idle daemon's beat
reads no run rows, however many are parked (counting 100,000 took 0.2-0.5 s a beat).

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
from certwright.engine.run.interceptor import Interceptor
from certwright.errors import CertwrightError
from certwright.state.base import Store
from certwright.state.records import BACKOFF, RUNNING, WAITING, DaemonRecord

log = structlog.get_logger("certwright.daemon")

RECOUNT = 30  # beats between counts of an idle store's runs (runs another process ended)

class Heartbeat(Interceptor):
    """This daemon's row (see the module). ``metrics``: where it serves ``/metrics``."""

    def __init__(self, store: Store, clock: Clock, *, interval: float = 10.0,
                 metrics: str | None = None, host: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self.metrics = metrics
        self._mono = monotonic
        self.machine = socket.gethostname()
        self.host = host or self.machine  # the daemon's host (engine.run.hosts)
        self.id = f"{self.host}:{os.getpid()}"
        self.started = format_instant(clock.now())
        self._last: float | None = None
        self._runs: int | None = None  # the runs counted at the last count; None: count
        self._mark = 0  # the journal seq of the last park seen (waits_after)
        self._beats = 0  # beats since the last count

    def due(self) -> bool:
        return self._last is None or self._mono() - self._last >= self.interval

    def beat(self) -> None:
        """Write the row now (the runs driven counted from the store)."""
        self._last = self._mono()
        try:
            runs = self._count()
            row = DaemonRecord(id=self.id, host=self.host, pid=os.getpid(),
                               started=self.started, heartbeat=format_instant(self.clock.now()),
                               interval=self.interval, runs=runs, leases=0,
                               metrics=self.metrics, version=__version__,
                               machine=self.machine)
            with self.store.transaction() as tx:
                tx.put_daemon(row)
        except CertwrightError as exc:
            log.warning("daemon_heartbeat_failed", error=str(exc))

    def committed(self, count: int) -> None:
        """The engine committed: its runs may have changed, count them at the next beat."""
        self._runs = None

    def _count(self) -> int:
        """The runs driven: counted again only when something may have changed them."""
        parked = self.store.waits_after(self._mark)
        if parked:
            self._mark, self._runs = parked[-1][0], None
        self._beats += 1
        if self._runs is None or self._beats >= RECOUNT:
            self._runs, self._beats = len(self.store.run_ids((RUNNING, WAITING, BACKOFF))), 0
        return self._runs

    def goodbye(self) -> None:
        """Delete the row (a graceful stop); a failure is logged, the row goes stale."""
        try:
            with self.store.transaction() as tx:
                tx.delete_daemon(self.id)
        except CertwrightError as exc:
            log.warning("daemon_heartbeat_failed", error=str(exc))
