"""Run leases on the PostgreSQL store: which daemon drives a run now, fenced by a token.

Several daemons may serve one PostgreSQL store; each run is driven by one of them at a time
under a lease (a row of ``leases``: run id, owner, fencing token, expiry). :class:`PgLeases`
is one daemon's side of it:

* :meth:`PgLeases.take` takes or renews a run's lease with one ``INSERT ... ON CONFLICT DO
  UPDATE ... WHERE`` the lease is this owner's or has expired, ``RETURNING`` its token. A
  new lease, or one taken over from an owner whose lease expired, gets a fresh token from
  the ``lease_tokens`` sequence, so a later holder's token is always larger; renewing one's
  own lease keeps its token. :meth:`PgLeases.take_many` does the same for many runs with
  one statement (the runs a daemon's pump takes on).
* :meth:`PgLeases.renew` extends every lease of this owner at once and returns the runs
  whose lease was lost (taken over after it expired); :meth:`PgLeases.release` deletes
  leases (a run parked or finished; all of them on a graceful stop).
* **Fencing.** :meth:`PgLeases.check` is what the store's transaction calls before its
  first write for a run (``PostgresStore.fence``): ``SELECT ... FOR SHARE`` of the lease
  with this owner and token, in the same transaction, so no other daemon can take the lease
  over before that transaction ends. A run not held is taken there (a new run, or one
  cancelled); when the lease is another's, :class:`FencingRefused` rolls the whole
  transaction back: a daemon that lost a lease (stopped, cut off past its expiry) commits
  nothing for that run.
* :meth:`PgLeases.claim_free` lists running runs with no live lease ``FOR UPDATE SKIP
  LOCKED`` and takes their leases in the same transaction, so daemons looking at once share
  them instead of fighting over them (failover: a dead daemon's runs).
* Wake-ups (:mod:`state.notify_pg`): :meth:`PgLeases.release` wakes the other daemons
  (a ``run`` notice, in its transaction) when a run it lets go of is still running;
  :meth:`PgLeases.recheck` asks the holder of a run's lease to re-check its wait.
* Every tenure is kept in ``lease_log`` (run, token, owner, taken_at, how: new|takeover;
  ended_at, ended: released|expired), from which a test asserts no run had two drivers.

Time is the server's, one clock for every host, so hosts' clocks may disagree: ``now()``
(the transaction's start) for expiries, ``clock_timestamp()`` (the statement's moment) in
the log, so a tenure logged as taken in a transaction that waited for a release starts
after that release ended.

Hazards: a lease expires on the server's clock while its owner may still be running: that
is why every write checks the token, not the expiry. A step that was executing on a daemon
that died (or lost its lease) runs again on the daemon that takes the run over, with the
same idempotency key (``run:entry:index``), which the CA and ACME sides already use to
answer a repeat with the first result.
"""
from __future__ import annotations

import os
import secrets
import socket
import threading
from typing import TYPE_CHECKING, Any

from certwright.errors import StoreError
from certwright.state import names as N
from certwright.state.notify_pg import Notice, send

if TYPE_CHECKING:
    import psycopg

    from certwright.state.postgres import PostgresStore

__all__ = ["LEASE_S", "FencingRefused", "PgLeases", "daemon_owner"]

LEASE_S = 15.0  # seconds a lease lasts unless renewed (renewed every third of that)

# Takes or renews one run's lease and logs its tenure, in one statement: a new lease or one
# taken over gets a fresh token and a row in the log (the expired holder's row ended at
# its expiry); renewing one's own keeps its token and logs nothing
_TAKE = f"""
    WITH prev AS (SELECT owner, token, expires_at FROM {N.T_LEASES} WHERE run_id = %(r)s),
    up AS (
        INSERT INTO {N.T_LEASES}(run_id, owner, token, expires_at)
        VALUES (%(r)s, %(o)s, nextval('{N.S_LEASE_TOKENS}'), now() + make_interval(secs => %(s)s))
        ON CONFLICT (run_id) DO UPDATE SET owner = EXCLUDED.owner,
            token = CASE WHEN {N.T_LEASES}.owner = EXCLUDED.owner THEN {N.T_LEASES}.token
                         ELSE EXCLUDED.token END,
            expires_at = EXCLUDED.expires_at
        WHERE {N.T_LEASES}.owner = EXCLUDED.owner OR {N.T_LEASES}.expires_at < now()
        RETURNING token),
    ended AS (
        UPDATE {N.T_LEASE_LOG} g SET ended_at = prev.expires_at, ended = 'expired'
        FROM prev, up WHERE prev.owner <> %(o)s AND g.run_id = %(r)s AND g.token = prev.token
        RETURNING 1),
    logged AS (
        INSERT INTO {N.T_LEASE_LOG}(run_id, token, owner, taken_at, how)
        SELECT %(r)s, up.token, %(o)s, clock_timestamp(),
               CASE WHEN prev.owner IS NULL THEN 'new' ELSE 'takeover' END
        FROM up LEFT JOIN prev ON true WHERE prev.owner IS DISTINCT FROM %(o)s
        ON CONFLICT DO NOTHING RETURNING 1)
    SELECT up.token, prev.owner FROM up LEFT JOIN prev ON true
"""

# _TAKE for several runs at once: the runs taken, with their tokens and previous holders
_TAKE_MANY = f"""
    WITH want AS (SELECT DISTINCT unnest(%(r)s::text[]) AS run_id),
    prev AS (SELECT l.run_id, l.owner, l.token, l.expires_at
             FROM {N.T_LEASES} l JOIN want USING (run_id)),
    up AS (
        INSERT INTO {N.T_LEASES}(run_id, owner, token, expires_at)
        SELECT run_id, %(o)s, nextval('{N.S_LEASE_TOKENS}'),
               now() + make_interval(secs => %(s)s) FROM want
        ON CONFLICT (run_id) DO UPDATE SET owner = EXCLUDED.owner,
            token = CASE WHEN {N.T_LEASES}.owner = EXCLUDED.owner THEN {N.T_LEASES}.token
                         ELSE EXCLUDED.token END,
            expires_at = EXCLUDED.expires_at
        WHERE {N.T_LEASES}.owner = EXCLUDED.owner OR {N.T_LEASES}.expires_at < now()
        RETURNING run_id, token)
    SELECT up.run_id, up.token, prev.owner, prev.token, prev.expires_at
    FROM up LEFT JOIN prev USING (run_id)
"""

# Deletes this owner's leases (all of them, or those of some runs), ends their tenures in
# the log, and, in the same transaction, wakes the other daemons when a run released is
# still running (a graceful stop with steps in flight): they take it at once. Releasing
# parked and finished runs sends nothing: no daemon has to drive them until an event or a
# timer comes, and that daemon takes the free lease then.
_RELEASE = f"""
    WITH gone AS (DELETE FROM {N.T_LEASES} WHERE owner = %(o)s AND
                  (%(all)s OR run_id = ANY(%(ids)s)) RETURNING run_id, token),
    ended AS (UPDATE {N.T_LEASE_LOG} g SET ended_at = clock_timestamp(), ended = 'released'
              FROM gone WHERE g.run_id = gone.run_id AND g.token = gone.token
              RETURNING g.run_id),
    wake AS (SELECT pg_notify({N.PG_WAKE_CHANNEL}, %(wake)s) FROM {N.T_RUNS} r
             WHERE r.id IN (SELECT run_id FROM gone) AND r.status = 'running' LIMIT 1)
    SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM wake)
"""


def _write_lock(conn: psycopg.Connection[Any]) -> None:
    """Take the store's write lock for this transaction, as every write transaction of
    the engine does first. Lease changes of many rows (claiming, renewing, releasing)
    otherwise lock runs and leases rows in another order than an engine transaction
    (fence ``FOR SHARE``, then the run's row) and deadlock with it: PostgreSQL aborted one
    of two daemons that way, at 5,000 runs. One lock first, for every writer, is no
    cycle. Re-entrant: inside the store's transaction it is already held.

    A lease taken outside the store's transaction (a sync adopting a run) takes it too:
    without it, the take's snapshot could still see a lease another daemon is releasing
    that moment, wait for that release, insert its own, and log the release it waited
    for as a takeover from a holder whose lease seemed to run on past the new one."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))",
                 (N.PG_LOCK_WRITE,))


def daemon_owner(host: str | None = None) -> str:
    """A daemon's owner id: host (default the machine's), pid and a start nonce (a
    restarted pid is another owner)."""
    return f"{host or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class FencingRefused(StoreError):
    """A write for a run whose lease this daemon no longer holds (its transaction rolled
    back). ``run_id`` and ``token`` (None: it held none) say which."""

    def __init__(self, run_id: str, token: int | None, where: str) -> None:
        held = f"its lease token {token}" if token is not None else "no lease"
        super().__init__(f"refused a write for run {run_id!r} in {where}: this daemon holds "
                         f"{held} and another daemon drives the run now (fencing)")
        self.run_id = run_id
        self.token = token


class PgLeases:
    """One owner's leases on ``store`` (see the module). Thread-safe."""

    def __init__(self, store: PostgresStore, owner: str | None = None, *,
                 lease_s: float = LEASE_S, host: str | None = None) -> None:
        self.store = store
        self.owner = owner or daemon_owner(host)
        self.host = host  # free runs waiting for another host are left to its daemons
        self.lease_s = float(lease_s)
        self._held: dict[str, int] = {}  # run id -> token
        self._lock = threading.Lock()
        self.taken_over = 0  # leases this owner took from an expired owner

    # -- what this owner holds -----------------------------------------------------------
    def token(self, run_id: str) -> int | None:
        with self._lock:
            return self._held.get(run_id)

    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held)

    def drop(self, run_id: str) -> None:
        """Forget a lease locally (it was lost; the row is another's now)."""
        with self._lock:
            self._held.pop(run_id, None)

    # -- taking ---------------------------------------------------------------------------
    def _take_on(self, conn: psycopg.Connection[Any], run_id: str, *,
                 lock: bool = False) -> int | None:
        """:data:`_TAKE` on ``conn`` (``lock``: in a transaction of its own, under the
        write lock, for a caller outside the store's transaction)."""
        args = {"r": run_id, "o": self.owner, "s": self.lease_s}
        if lock:
            with conn.transaction():
                _write_lock(conn)
                row = conn.execute(_TAKE, args).fetchone()
        else:
            row = conn.execute(_TAKE, args).fetchone()
        if row is None:
            return None
        token, prev_owner = row
        if prev_owner is not None and prev_owner != self.owner:
            self.taken_over += 1
        with self._lock:
            self._held[run_id] = int(token)
        return int(token)

    def take(self, run_id: str) -> int | None:
        """Take or renew ``run_id``'s lease: its token, or None while another owner's
        lease on it is live. In the store's open transaction when the calling thread is
        in one (then it is undone with it); ServerFault when the server fails."""
        with self.store.connection("taking a lease in", N.T_LEASES) as conn:
            return self._take_on(conn, run_id, lock=not self.store.in_transaction())

    def take_many(self, run_ids: list[str]) -> dict[str, int]:
        """:meth:`take` for several runs with one statement (and one for their tenures in
        the log): the tokens of those taken; a run another owner's live lease holds is
        left out. In the store's open transaction when the calling thread is in one."""
        with self.store.connection("taking leases in", N.T_LEASES) as conn, \
                conn.transaction():
            if not self.store.in_transaction():
                _write_lock(conn)
            rows = conn.execute(_TAKE_MANY, {"r": run_ids, "o": self.owner,
                                             "s": self.lease_s}).fetchall()
            tenures = []
            for run_id, token, prev_owner, prev_token, prev_expires in rows:
                if prev_owner is not None and prev_owner != self.owner:
                    conn.execute(f"UPDATE {N.T_LEASE_LOG} SET ended_at = %s, ended = "
                                 f"'expired' WHERE run_id = %s AND token = %s",
                                 (prev_expires, run_id, prev_token))
                    self.taken_over += 1
                if prev_owner != self.owner:
                    tenures.append((run_id, token, "new" if prev_owner is None else "takeover"))
            if tenures:
                ids, tokens, hows = (list(column) for column in zip(*tenures, strict=True))
                conn.execute(
                    f"INSERT INTO {N.T_LEASE_LOG}(run_id, token, owner, taken_at, how) "
                    f"SELECT run_id, token, %s, clock_timestamp(), how FROM "
                    f"unnest(%s::text[], %s::bigint[], %s::text[]) AS t(run_id, token, how) "
                    f"ON CONFLICT DO NOTHING", (self.owner, ids, tokens, hows))
        taken = {str(r[0]): int(r[1]) for r in rows}
        with self._lock:
            self._held.update(taken)
        return taken

    def claim_free(self, limit: int = 100) -> list[str]:
        """Take the leases of up to ``limit`` running runs no live lease covers (new runs,
        a dead daemon's), skipping rows other daemons are claiming now; their ids. Runs
        waiting for another host than this owner's (``wants_host``) are left alone."""
        out: list[str] = []
        with self.store.connection("claiming runs in") as conn, conn.transaction():
            _write_lock(conn)
            rows = conn.execute(
                f"SELECT r.id FROM {N.T_RUNS} r LEFT JOIN {N.T_LEASES} l ON l.run_id = r.id "
                f"WHERE r.status = 'running' AND (l.run_id IS NULL OR l.expires_at < now()) "
                f"AND (r.wants_host IS NULL OR r.wants_host = %s::text OR %s::text IS NULL) "
                f"ORDER BY r.updated LIMIT %s FOR UPDATE OF r SKIP LOCKED",
                (self.host, self.host, limit)).fetchall()
            for (rid,) in rows:
                if self._take_on(conn, rid) is not None:
                    out.append(rid)
        return out

    def next_expiry_s(self) -> float | None:
        """Seconds (on the server's clock) until the earliest live lease of another owner
        runs out, or None when no other owner holds a live one: the first moment a dead
        daemon's runs can be free. Reads only; no lock."""
        with self.store.connection("reading leases in") as conn:
            row = conn.execute(
                f"SELECT extract(epoch FROM min(expires_at) - now()) FROM {N.T_LEASES} "
                f"WHERE owner <> %s AND expires_at > now()", (self.owner,)).fetchone()
        return None if row is None or row[0] is None else max(0.0, float(row[0]))

    # -- keeping and letting go -----------------------------------------------------------
    def renew(self) -> list[str]:
        """Extend every lease of this owner; the runs whose lease was lost (dropped here)."""
        with self.store.connection("renewing leases in") as conn, conn.transaction():
            _write_lock(conn)
            rows = conn.execute(
                f"UPDATE {N.T_LEASES} SET expires_at = now() + make_interval(secs => %s) "
                f"WHERE owner = %s RETURNING run_id, token",
                (self.lease_s, self.owner)).fetchall()
        now = {r[0]: int(r[1]) for r in rows}
        with self._lock:
            lost = [rid for rid, tok in self._held.items() if now.get(rid) != tok]
            for rid in lost:
                del self._held[rid]
        return lost

    def release(self, run_ids: list[str] | None = None) -> int:
        """Delete these leases of this owner (None: all of them); how many went."""
        with self._lock:
            ids = list(self._held) if run_ids is None else list(run_ids)
            for rid in ids:
                self._held.pop(rid, None)
        if not ids and run_ids is not None:
            return 0
        with self.store.connection("releasing leases in") as conn, conn.transaction():
            _write_lock(conn)
            row = conn.execute(_RELEASE, {"o": self.owner, "all": run_ids is None, "ids": ids,
                                          "wake": Notice("run", self.owner).payload()}
                               ).fetchone()
        return int(row[0]) if row else 0

    def holder(self, run_id: str) -> str | None:
        """The owner of ``run_id``'s live lease, or None (in the open transaction, if any)."""
        with self.store.connection("reading leases in") as conn:
            row = conn.execute(f"SELECT owner FROM {N.T_LEASES} WHERE run_id = %s AND "
                               f"expires_at >= now()", (run_id,)).fetchone()
        return str(row[0]) if row else None

    def expires_in(self, run_id: str) -> float | None:
        """Seconds (server's clock) until ``run_id``'s lease runs out; None: no live one."""
        with self.store.connection("reading leases in") as conn:
            row = conn.execute(f"SELECT extract(epoch FROM expires_at - now()) FROM "
                               f"{N.T_LEASES} WHERE run_id = %s AND expires_at >= now()",
                               (run_id,)).fetchone()
        return None if row is None or row[0] is None else max(0.0, float(row[0]))

    def recheck(self, run_id: str) -> bool:
        """Ask the daemon holding ``run_id``'s lease to re-check the run's wait (an event
        came here for it), with a notice sent in the open transaction; False when no other
        daemon holds it."""
        holder = self.holder(run_id)
        if holder is None or holder == self.owner:
            return False
        with self.store.connection("waking a daemon of") as conn:
            send(conn, Notice("recheck", self.owner, run_id, holder))
        return True

    # -- fencing (called by the store's transaction) ----------------------------------------
    def check(self, conn: psycopg.Connection[Any], run_id: str) -> None:
        """Raise FencingRefused unless this owner holds ``run_id``'s lease with its token
        (locked FOR SHARE until the transaction ends). A run not held is taken here."""
        token = self.token(run_id)
        if token is None:
            if self._take_on(conn, run_id) is None:
                raise FencingRefused(run_id, None, self.store.path)
            return
        self.check_held(conn, [run_id])

    def check_held(self, conn: psycopg.Connection[Any], run_ids: list[str]) -> None:
        """:meth:`check` for runs whose lease this owner holds, in one statement: what the
        store's transaction does just before it commits, for every run it wrote. Every
        run found lost is dropped; FencingRefused names the first."""
        with self._lock:
            tokens = [self._held.get(rid) for rid in run_ids]
        rows = conn.execute(
            f"SELECT l.run_id FROM {N.T_LEASES} l JOIN unnest(%s::text[], %s::bigint[]) "
            f"AS h(run_id, token) ON l.run_id = h.run_id AND l.token = h.token "
            f"WHERE l.owner = %s FOR SHARE OF l", (run_ids, tokens, self.owner)).fetchall()
        kept = {row[0] for row in rows}
        lost = [(rid, tok) for rid, tok in zip(run_ids, tokens, strict=True)
                if rid not in kept]
        for rid, _ in lost:
            self.drop(rid)
        if lost:
            raise FencingRefused(lost[0][0], lost[0][1], self.store.path)
