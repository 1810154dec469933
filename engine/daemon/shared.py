"""The daemon's pump on a store several daemons share (PostgreSQL): leases kept, faults lived.

:class:`Shared` wraps each ``engine.pump`` of the service loop:

* after it, the leases of runs that parked or finished are released; when a wake-up
  notice said so (:mod:`~certwright.engine.daemon.wakeups`, heard while the pump waited),
  free running runs are taken at once and new timers loaded; and every third of the lease
  period, the fallback, the held leases are renewed and free running runs (new ones, a
  dead daemon's) are taken and adopted
  (:class:`~certwright.engine.daemon.leasing.RunLeases`); and just after another daemon's
  earliest lease runs out (the pump waits no longer than that), free running runs are
  taken, so a dead daemon's runs are taken over as soon as its leases end;
* a pump refused by fencing (``FencingRefused``: a write for a run whose lease another
  daemon took over, say after this process was stopped past its lease) has been rolled
  back: the run is logged (``fencing_refused``) and forgotten, and the engine is started
  afresh from the store, since the rolled-back pump's other runs are no longer what the
  engine's memory says;
* a store fault (the server restarting, unreachable) waits a back-off (0.5 s doubling up to
  30 s, logged as ``store_unavailable`` with the wait), then starts the engine afresh; until
  the server answers again each try fails the same way and waits longer. The pool of
  connections replaces broken ones by itself.

Starting afresh is what a restart of the daemon does, without leaving: the old engine is
closed (it waits for its executing steps, whose results are dropped), a new one loads
timers and running runs, and a step that was in flight runs again with the same
idempotency key. Hazard: the new engine is bound to the same interceptors (the daemon's
hooks), which ``Engine`` binds anew when it is made.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Self

import structlog

from certwright.engine.daemon.leasing import RunLeases
from certwright.engine.daemon.wakeups import Wakeups
from certwright.engine.run.runner import Engine
from certwright.state.faults import StoreFault
from certwright.state.leases_pg import FencingRefused, PgLeases, daemon_owner

__all__ = ["Shared", "leases_for"]

log = structlog.get_logger("certwright.daemon")

BACKOFF_FIRST = 0.5  # seconds after the first failure; doubled each time ...
BACKOFF_CAP = 30.0   # ... up to this: a server back within a second costs half a second


def leases_for(store: Any, lease_s: float, host: str | None = None) -> RunLeases | None:
    """Leases for a store several daemons may share (PostgreSQL), set as its write fence;
    None for a SQLite store (run locks, one daemon). ``host``: the daemon's (it takes free
    runs waiting for no host or for this one)."""
    if not hasattr(store, "fence"):
        return None
    leases = PgLeases(store, daemon_owner(host), lease_s=lease_s, host=host)
    store.fence = leases
    log.info("daemon_leasing", owner=leases.owner, lease_s=lease_s)
    return RunLeases(leases)


class Shared:
    """The guarded pump (see the module). ``make()`` builds a new engine (and makes it the
    daemon's); ``engine`` is the one running now. A context manager: inside it the
    wake-up listener runs (leave it before the engine closes)."""

    def __init__(self, leases: RunLeases, make: Callable[[], Engine], engine: Engine) -> None:
        self.leases = leases
        self._make = make
        self.engine = engine
        self._backoff = 0.0
        self._stale = False  # the engine's memory may not match the store: start afresh
        self.restarts = 0
        store = leases.leases.store
        self.wakeups = Wakeups(store.url, store.path, leases.leases.owner, lambda: self.engine)

    def __enter__(self) -> Self:
        """Start listening for wake-ups (leaving stops it)."""
        self.wakeups.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wakeups.stop()

    def pump(self, wait: float, stop: threading.Event) -> None:
        """One pump and the leases' upkeep; returns normally whatever the store did."""
        try:
            if self._stale:
                self._restart()
            look = self.leases.look_in()  # another daemon's lease may end sooner
            self.engine.pump(timeout=wait if look is None else min(wait, look))
            self.leases.release_idle()
            self._upkeep()
            self._backoff = 0.0
        except FencingRefused as exc:
            self.leases.lost(exc.run_id, exc.token)
            self._stale = True
        except StoreFault as exc:
            self._backoff = min(BACKOFF_CAP, max(BACKOFF_FIRST, self._backoff * 2))
            log.warning("store_unavailable", error=str(exc), retry_in_s=self._backoff)
            self._stale = True
            stop.wait(self._backoff)

    def _upkeep(self) -> None:
        """Take free runs and load timers when a wake-up said so, and keep the leases
        (renew, take free runs) every third of a lease, the fallback for lost notices."""
        claim, timers = self.wakeups.take()  # lost if this fails: the restart catches up
        taken = bool(self.leases.claim_now()) if claim else False
        kept = self.leases.due() and bool(self.leases.keep())
        looked = bool(self.leases.look())  # just after another daemon's lease ran out
        if taken or kept or looked or timers:
            self.engine.sync(adopt=self.leases.adopt)

    def _restart(self) -> None:
        """Close the engine and start a new one from the store (timers, running runs)."""
        self.engine.close()
        self.engine = self._make()
        self.restarts += 1
        self.engine.open()
        self.leases.keep()
        self.engine.sync(adopt=self.leases.adopt)
        self._stale = False
        log.info("engine_restarted", restarts=self.restarts, leases=len(self.leases.held()))
