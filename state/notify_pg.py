"""Wake-ups between daemons on one PostgreSQL store: ``pg_notify`` sent, ``LISTEN`` heard.

Several daemons serve one store under leases (:mod:`state.leases_pg`); a daemon learns of
work another process made from a notice on the store's wake channel
(:data:`state.names.PG_WAKE_CHANNEL`, one per schema) instead of waiting for its slow poll.

**Sending.** :func:`send` calls ``pg_notify`` on the connection of the transaction that
made the work, so PostgreSQL delivers the notice only when that transaction commits, and
never one for work rolled back. The payload is short JSON, :class:`Notice`: ``k`` the
kind, ``o`` the sender's owner id (a daemon ignores its own), and for ``recheck`` ``r``
the run and ``to`` the daemon meant. Kinds:

* ``run``: a running run no live lease covers (made by a process that is not a daemon, or
  whose lease a daemon released while it was running, as on a graceful stop): take free
  runs now;
* ``timer``: a process that is not a daemon added a timer: load new timers now;
* ``recheck``: an event (a mail routed, a file dropped) came to a daemon for a run that
  another daemon (``to``) holds: the holder re-checks the run's wait at once.

Notices without a run id are identical within a transaction, so PostgreSQL folds them
into one (a transaction making a thousand runs sends one). A payload stays far under
NOTIFY's 8000 bytes: run ids are at most 64 characters, owners a host name and two numbers.

**Hearing.** :class:`WakeListener` LISTENs on a connection of its own (not the pool's: a
pooled connection goes back to other work, and its LISTEN with it), in a thread that waits
in psycopg's ``notifies(timeout=...)`` (a ``select`` on the socket, no query: no busy
poll), and hands each notice to ``on_notice``. When the connection fails (the server
restarting) it reconnects with a back-off (0.5 s doubling to 30 s, each wait logged as
``wake_listener_down``) and, once listening again, calls ``on_listening`` (notices sent
while it was down are lost: the caller catches up, e.g. claims free runs once).

Hazards: a notice is a hint, never the record: what it points to is in the store, and the
daemons' slow poll (leases kept and free runs taken every third of a lease) finds it even
when every notice is lost (the listener down, a daemon started after the commit). TCP
keepalives let a listener whose server vanished without a word notice within a minute.
A pooler in transaction mode (PgBouncer's default) does not carry LISTEN: there the
daemons only poll; give them the server's own address for wake-ups.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from certwright.state import names as N

if TYPE_CHECKING:
    import psycopg

__all__ = ["KINDS", "Notice", "WakeListener", "send"]

log = structlog.get_logger("certwright.store")

KINDS = ("run", "timer", "recheck")
BACKOFF_FIRST = 0.5   # seconds after the listener's connection failed; doubled each time ...
BACKOFF_CAP = 30.0    # ... up to this, as the daemon's store_unavailable back-off
WAIT_S = 1.0          # seconds each wait for notices lasts before the stop flag is looked at
CONNECT_TIMEOUT = 5   # seconds to reach the server
_KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 20,
                              "keepalives_interval": 5, "keepalives_count": 3}


@dataclass(frozen=True)
class Notice:
    """One wake-up: ``kind`` (see the module), the sender's ``owner``, and for ``recheck``
    the ``run_id`` and the owner it is ``to``."""

    kind: str
    owner: str
    run_id: str | None = None
    to: str | None = None

    def payload(self) -> str:
        body = {"k": self.kind, "o": self.owner}
        if self.run_id is not None:
            body["r"] = self.run_id
        if self.to is not None:
            body["to"] = self.to
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def parse(cls, payload: str) -> Notice | None:
        """The notice in ``payload``, or None when it is not one of ours (logged)."""
        try:
            body = json.loads(payload)
            kind, owner = body["k"], body["o"]
            run_id, to = body.get("r"), body.get("to")
        except (ValueError, TypeError, KeyError):
            log.warning("wake_notice_unreadable", payload=payload[:200])
            return None
        if kind not in KINDS or not all(isinstance(v, str) or v is None
                                        for v in (owner, run_id, to)):
            log.warning("wake_notice_unreadable", payload=payload[:200])
            return None
        return cls(kind, owner, run_id, to)


def send(conn: psycopg.Connection[Any], notice: Notice) -> None:
    """Send ``notice`` in ``conn``'s open transaction (delivered when it commits)."""
    conn.execute(f"SELECT pg_notify({N.PG_WAKE_CHANNEL}, %s)", (notice.payload(),))


class WakeListener:
    """LISTENs on the wake channel of the store at ``url`` in a thread (see the module).

    ``on_notice(notice)`` and ``on_listening()`` are called in the listener's thread: they
    must be quick and thread-safe (hand the work to the loop). ``where`` names the store in
    logs (no password). :meth:`start` once, :meth:`stop` to end; the thread is a daemon
    thread, so a process that exits without stopping it is not held up."""

    def __init__(self, url: str, where: str, on_notice: Callable[[Notice], None],
                 on_listening: Callable[[], None]) -> None:
        self.url = url
        self.where = where
        self._on_notice = on_notice
        self._on_listening = on_listening
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="certwright-wake-listener",
                                        daemon=True)
        self.heard = 0      # notices handed on
        self.listening = threading.Event()  # set while LISTENing (tests wait for it)
        self.reconnects = 0  # times it listened again after its connection failed
        self._listened = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread (within about WAIT_S) and close its connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=WAIT_S + CONNECT_TIMEOUT + 1)

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.0
            except Exception as exc:  # noqa: BLE001 - a lost server must not end the thread
                self.listening.clear()
                backoff = min(BACKOFF_CAP, max(BACKOFF_FIRST, backoff * 2))
                log.warning("wake_listener_down", store=self.where, retry_in_s=backoff,
                            error=" ".join(f"{type(exc).__name__}: {exc}".split())[:300])
                self._stop.wait(backoff)

    def _listen(self) -> None:
        """Connect, LISTEN, and hand on notices until stopped or the connection fails."""
        import psycopg
        from psycopg import sql
        with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                             **_KEEPALIVE) as conn:
            row = conn.execute(f"SELECT {N.PG_WAKE_CHANNEL}").fetchone()
            if row is None:
                raise RuntimeError("the server named no wake channel")
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(str(row[0]))))
            if self._listened:
                self.reconnects += 1
            self._listened = True
            self.listening.set()
            log.info("wake_listening", store=self.where, reconnects=self.reconnects)
            self._on_listening()  # whatever was sent while nobody listened: catch up once
            while not self._stop.is_set():
                for item in conn.notifies(timeout=WAIT_S):
                    notice = Notice.parse(item.payload)
                    if notice is not None:
                        self.heard += 1
                        self._on_notice(notice)
