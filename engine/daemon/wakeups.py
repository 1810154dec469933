"""Wake-ups for a daemon on a shared (PostgreSQL) store: notices from other processes, to
the loop.

Other daemons and commands send notices on the store's wake channel in the transactions
that make work (:mod:`certwright.state.notify_pg`). :class:`Wakeups` owns the daemon's
:class:`~certwright.state.notify_pg.WakeListener` (a thread on a connection of its own)
and turns each notice into work for the service loop, thread-safely:

* ``run`` (a run no daemon drives: made by a command, or released while running by a
  daemon that stopped): a flag, and the loop is woken (``engine.submit`` of a tick); the
  next pump's upkeep takes free runs at once (``RunLeases.claim_now``) and adopts them,
  instead of at the next ``keep`` a third of a lease later;
* ``timer`` (a command added one): a flag; the upkeep loads new timers (``engine.sync``)
  instead of at the next ``sync_interval``;
* ``recheck`` addressed to this daemon: ``engine.wake(run)``, so the run's waiting step
  re-checks now (its mail is in the Maildir, its file in the folder); one addressed to
  another daemon is ignored;
* notices this daemon sent itself (the payload's owner) are ignored.

Many notices before the loop gets to them fold into one pass. When the listener
(re)connects, both flags are set once: notices sent while it was down are lost, so the
loop catches up as if one of each had come.

The fallback: the slow poll stays (leases renewed and free runs taken every third of a
lease, timers synced every ``sync_interval``), so a listener that is down, or a notice
lost, delays work by at most that poll and loses nothing. The listener reconnects by
itself with a back-off (``wake_listener_down``).

Hazard: the callbacks run in the listener's thread; they only set flags under a lock and
call the engine's thread-safe ``submit``/``wake``. The engine is looked up at each call,
since the daemon replaces it after a store fault.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from certwright.engine.run.runner import Engine
from certwright.events import Event
from certwright.state.notify_pg import Notice, WakeListener

__all__ = ["Wakeups"]

log = structlog.get_logger("certwright.daemon")


class Wakeups:
    """The daemon's ear on the wake channel (see the module): :meth:`start` once,
    :meth:`stop` before the engine closes."""

    def __init__(self, url: str, where: str, owner: str,
                 engine: Callable[[], Engine | None]) -> None:
        self.owner = owner
        self._engine = engine
        self._lock = threading.Lock()
        self._claim = False
        self._timers = False
        self.rechecks = 0  # recheck notices acted on
        self.listener = WakeListener(url, where, self._notice, self._listening)

    def start(self) -> None:
        self.listener.start()

    def stop(self) -> None:
        self.listener.stop()

    # -- the listener's thread ------------------------------------------------------------
    def _notice(self, notice: Notice) -> None:
        if notice.owner == self.owner:
            return  # our own: we know already
        if notice.kind == "recheck":
            if notice.to == self.owner and notice.run_id:
                engine = self._engine()
                if engine is not None:
                    self.rechecks += 1
                    log.debug("run_recheck_woken", run_id=notice.run_id, by=notice.owner)
                    engine.wake(notice.run_id)
            return
        with self._lock:
            if notice.kind == "run":
                self._claim = True
            else:
                self._timers = True
        self._poke()

    def _listening(self) -> None:
        with self._lock:
            self._claim = self._timers = True
        self._poke()

    def _poke(self) -> None:
        engine = self._engine()
        if engine is not None:
            engine.submit(Event(kind="tick"))  # ends the loop's wait in pump

    # -- the loop's thread -------------------------------------------------------------------
    def take(self) -> tuple[bool, bool]:
        """(free runs to take, timers to load) since the last call; clears both."""
        with self._lock:
            out = (self._claim, self._timers)
            self._claim = self._timers = False
        return out
