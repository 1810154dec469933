"""The daemon's hold on runs of a shared (PostgreSQL) store: leases instead of run locks.

:class:`RunLeases` is :class:`~certwright.engine.daemon.locking.RunLocks`' counterpart when
several daemons serve one store; the same interceptor interface, over
:class:`~certwright.state.leases_pg.PgLeases`:

* ``claim_ahead(run_ids)``, before a pump advances its ready runs, takes the free leases
  of those runs at once (one statement for all), so a daemon taking on thousands of runs
  does not take them one statement each; ``claim`` then finds them held.
* ``claim(run_id)`` is free while this daemon holds the run's lease; otherwise it takes it
  (``INSERT ... ON CONFLICT ... WHERE`` expired or ours ``RETURNING token``). Refused while
  another daemon's lease is live: the engine leaves the run alone (a timer is tried again
  a second later). An event for it (a mail routed, a file dropped) is not lost:
  :meth:`RunLeases.event_refused` sends the holder a ``recheck`` notice in the pump's
  transaction, and the holder re-checks the run's wait at once (the mail stays in its
  Maildir, the file in its folder, until the wait takes it). A run newly claimed is dropped
  from the engine's memory, so it is re-read from the store (lease, reload, re-check).
* :meth:`RunLeases.release_idle`, between pumps, releases the leases of runs that parked or
  finished, so any daemon may take them at their next event or timer.
* :meth:`RunLeases.keep`, from the loop, renews every lease each ``lease_s / 3`` and takes
  running runs no live lease covers (new ones, a dead daemon's) ``FOR UPDATE SKIP LOCKED``;
  their ids go to ``engine.sync(adopt=leases.adopt)``. A lease found lost is logged
  (``lease_lost``) and the run dropped from the engine's memory.
* :meth:`RunLeases.look`, from the loop, takes free running runs just after the earliest
  live lease of another daemon runs out (read from the store at each ``keep`` and each
  look: :meth:`RunLeases.look_in` says how long the loop may wait). A daemon that died
  just after renewing is taken over ``lease_s`` after that renewal, not up to a
  ``keep`` period (a third of the lease) or a sync later.
* :meth:`RunLeases.claim_now` takes free running runs at once, when a wake-up notice
  (:mod:`~certwright.engine.daemon.wakeups`) says another process made some; ``keep`` is
  the fallback that finds them when notices were lost.
* :meth:`RunLeases.close` (a graceful stop, after the engine's close) releases every lease
  at once, with a ``run`` notice when a run let go is still running, so other daemons
  take the runs at once, not after the expiry.

The store checks each write against the lease (``PostgresStore.fence``): a transaction
with a write for a run whose lease was lost rolls back (FencingRefused); the daemon logs
``fencing_refused`` and starts its engine afresh from the store.

Failover: a daemon that dies stops renewing; within one lease period its leases expire and
the next ``look`` of another daemon takes its running runs (``keep`` and the loop's sync
are the fallbacks). A step that was executing on the dead daemon has its ``step_started``
in the journal and no outcome: the new holder runs it again with the same idempotency key
(``run:entry:index``), which the CA and ACME sides answer with the first result, so a
certificate is issued once.

Hazards: ``claim`` runs inside the engine's transaction, so a lease it takes commits (or
rolls back) with it. Leases expire on the server's clock, renewals are paced on this
host's monotonic clock.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from certwright.engine.run.interceptor import EngineView, Interceptor
from certwright.events import Event
from certwright.state.leases_pg import PgLeases

__all__ = ["RunLeases"]

log = structlog.get_logger("certwright.daemon")

CLAIM_BATCH = 200  # running runs taken per keep(): a dead daemon's are shared out
LOOK_SLACK = 0.1  # seconds after another daemon's earliest expiry before looking: its
# leases are past their expiry on the server by then


class RunLeases(Interceptor):
    """Holds leases while the engine drives runs (see the module)."""

    def __init__(self, leases: PgLeases, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.leases = leases
        self._mono = monotonic
        self._engine: EngineView | None = None
        self._last_keep: float | None = None
        self._look_at: float | None = None  # monotonic: when another daemon's lease ends
        self._adoptable: set[str] = set()

    def bind(self, engine: EngineView) -> None:
        self._engine = engine

    def claim(self, run_id: str) -> bool:
        """Whether this daemon holds ``run_id``'s lease now (taking it if free)."""
        if self.leases.token(run_id) is not None:
            return True
        if self.leases.take(run_id) is None:
            log.debug("run_leased_elsewhere", run_id=run_id)
            return False
        if self._engine is not None:
            self._engine.forget(run_id)
        return True

    def claim_ahead(self, run_ids: list[str]) -> None:
        """Take the free leases of the runs the engine is about to claim, all in one go
        (in its transaction), so that each ``claim`` finds its run held; a run another
        daemon holds is left to ``claim``, which asks again."""
        wanted = [rid for rid in dict.fromkeys(run_ids) if self.leases.token(rid) is None]
        if len(wanted) < 2:
            return  # claim() takes one lease as cheaply
        for rid in self.leases.take_many(wanted):
            if self._engine is not None:
                self._engine.forget(rid)

    def event_refused(self, run_id: str, event: Event) -> None:
        """An event (a mail, a file) for a run another daemon holds: ask that daemon, by a
        notice in this pump's transaction, to re-check the run's wait now, instead of at
        its own poll. A wake (a timer, or such a notice) asks nobody: two daemons that
        both lack the lease must not wake each other in turn."""
        if event.kind in ("wake", "tick"):
            return
        if self.leases.recheck(run_id):
            log.info("run_recheck_asked", run_id=run_id, kind=event.kind)

    def adopt(self, run_id: str) -> bool:
        """For ``engine.sync(adopt=...)``: a running run taken by the last :meth:`keep`,
        or one whose lease is free now."""
        if run_id in self._adoptable:
            self._adoptable.discard(run_id)
            return True
        return self.claim(run_id)

    def release_idle(self) -> int:
        """Release the leases of runs no longer active in the engine; how many. Between
        pumps only."""
        if self._engine is None:
            return 0
        idle = [rid for rid in self.leases.held() if not self._engine.is_active(rid)]
        return self.leases.release(idle) if idle else 0

    def due(self) -> bool:
        """Whether :meth:`keep` should run (a third of the lease period passed)."""
        return (self._last_keep is None
                or self._mono() - self._last_keep >= self.leases.lease_s / 3)

    def keep(self) -> list[str]:
        """Renew this daemon's leases, then take free running runs; their ids (to adopt).
        ServerFault when the server fails (the caller backs off)."""
        self._last_keep = self._mono()
        for rid in self.leases.renew():
            log.warning("lease_lost", run_id=rid, owner=self.leases.owner)
            if self._engine is not None:
                self._engine.forget(rid)
        taken = self._take_free("poll")
        self._plan_look()
        return taken

    def look_in(self) -> float | None:
        """Seconds until :meth:`look` has something to do (None: no other daemon holds a
        live lease), for the loop's wait."""
        return None if self._look_at is None else max(0.0, self._look_at - self._mono())

    def look(self) -> list[str]:
        """Once another daemon's earliest lease has run out: take free running runs (its
        own, if it died; none if it renewed), then plan the next look; their ids, to
        adopt. Before that moment, nothing (no query). ServerFault when the server fails."""
        if self._look_at is None or self._mono() < self._look_at:
            return []
        self._look_at = None
        taken = self._take_free("expiry")
        self._plan_look()
        return taken

    def _plan_look(self) -> None:
        left = self.leases.next_expiry_s()
        self._look_at = None if left is None else self._mono() + left + LOOK_SLACK

    def claim_now(self) -> list[str]:
        """Take free running runs now (a wake-up said there are some): their ids, to
        adopt. The renewal stays on its own pace (:meth:`keep`)."""
        return self._take_free("notice")

    def _take_free(self, why: str) -> list[str]:
        """Take free running runs, to adopt. ``why`` (logged): ``notice`` (a wake-up said
        there are some), ``poll`` (the keep's fallback) or ``expiry`` (another daemon's
        lease just ran out)."""
        taken = self.leases.claim_free(CLAIM_BATCH)
        for rid in taken:
            if self._engine is not None:
                self._engine.forget(rid)
        self._adoptable.update(taken)
        if taken:
            log.info("runs_leased", count=len(taken), owner=self.leases.owner, why=why)
        return taken

    def lost(self, run_id: str, token: int | None) -> None:
        """A write for ``run_id`` was refused by the fence: log it, forget the run."""
        log.warning("fencing_refused", run_id=run_id, token=token, owner=self.leases.owner)
        self.leases.drop(run_id)
        if self._engine is not None:
            self._engine.forget(run_id)

    def held(self) -> set[str]:
        """Run ids whose lease is held now."""
        return set(self.leases.held())

    def close(self) -> None:
        """Release every lease (a graceful stop, after the engine has stopped)."""
        self.leases.release()
