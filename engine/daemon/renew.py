"""Renewal: one schedule, from the certificate inventory, for the daemon and ``renew``.

When a certificate is due comes from its inventory record alone
(:func:`certwright.steps.inventory.renewal_instant`: the CA's ARI window when it suggested
one, else ``renew_at``, which the pipeline's ``renew: {fraction, jitter}`` gave when the
certificate was recorded). One row per certificate **name**, never one per file.

Renewing a certificate starts the **current** pipeline of its name with the inputs of the
run that made it (secret ones from that run's secrets) and the same certificate name, so
install puts the new version into the same folder (keeping the old one):
:func:`plan_renewal` builds that for the daemon's :class:`Renewer` and for
``certwright renew`` alike.

Beside the inventory the store keeps a :class:`~certwright.state.records.RenewalRecord` per
name while there is something to remember: the renewal run in flight, and the back-off
after failures. The n-th failure in a row waits ``min(retry_cap, retry * 2**(n-1))``
(default 1 h, 2 h, 4 h ... capped at 1 day) before the next attempt. A success (the
inventory's record of the name now comes from the renewal run) removes the row.

Crash safety: a renewal run is *claimed* (its row written, naming the new run id) in one
transaction that first re-reads the row, so two processes (the daemon and ``renew``)
never start two renewals of one name; the run itself is started right after. A crash
between the two leaves a row naming a run that never came: it settles as a failed
attempt (once :data:`CLAIM_GRACE` has passed: ``renew`` claims, then starts the run in
its next transaction, and a check in between must not count it failed).

Older versions kept ``<state_dir>/renewals.sqlite3``; it is no longer read, and left as it
is (a log line says so): the inventory knows every installed certificate.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from certwright.clock import Clock, format_instant, parse_instant
from certwright.engine.model.spec import PipelineSpec
from certwright.engine.run import secrets as secret_store
from certwright.engine.run.naming import new_run_id
from certwright.state.base import Store
from certwright.state.records import (
    CANCELLED,
    FAILED,
    FINISHED,
    REVOKED,
    SUCCEEDED,
    CertificateRecord,
    RenewalRecord,
)
from certwright.steps.acme.ari_check import BackgroundRechecks
from certwright.steps.acme.ari_check import next_check as ari_next_check
from certwright.steps.inventory import pending_records, policy_from, record, renewal_instant

log = structlog.get_logger("certwright.daemon.renew")

LEGACY_FILE = "renewals.sqlite3"  # the schedule of versions before the inventory
SCHEDULED, RENEWING, BACKING_OFF = "scheduled", "renewing", "backoff"
CLAIM_GRACE = timedelta(minutes=10)  # a claimed run not in the store after this never came
RETRY, RETRY_CAP = 3600.0, 86400.0  # the daemon's defaults (renew_retry, renew_retry_cap)

# (spec, inputs, run id, secret input names, host: the renewed run's, None for none)
StartRun = Callable[[PipelineSpec, dict[str, Any], str, list[str], str | None], str]


@dataclass(frozen=True)
class Renewal:
    """What renewing certificate ``name`` starts: ``spec`` with the given ``inputs`` (not
    coerced yet: services may still rewrite them), ``secret`` naming the secret ones."""

    name: str
    spec: PipelineSpec
    inputs: dict[str, Any]
    secret: list[str]
    renews: str  # the run that made the current certificate
    host: str | None = None  # its host: the renewal's host-bound steps run there too


def plan_renewal(store: Store, state_dir: Path, rec: CertificateRecord,
                 spec: PipelineSpec) -> Renewal:
    """The renewal of ``rec`` by ``spec``: the inputs of the run that made it, secret ones
    from that run's secrets, only those ``spec`` still takes, and ``cert_name`` set to the
    certificate's name (its folder). Reads only."""
    run = store.find_run(rec.run_id)
    old = dict(run.inputs) if run is not None else dict(rec.inputs)
    secrets = secret_store.load(store, Path(state_dir), rec.run_id)["inputs"]
    given = {k: v for k, v in {**old, **secrets}.items()
             if k in spec.inputs and v is not None and v != secret_store.REDACTED}
    if "cert_name" in spec.inputs:
        given["cert_name"] = rec.name
    if "replaces" in spec.inputs:  # RFC 9773: the order names the certificate it renews
        given["replaces"] = str((rec.ari or {}).get("cert_id") or "")
    return Renewal(rec.name, spec, given, [n for n, i in spec.inputs.items() if i.secret],
                   rec.run_id, (run.host if run is not None else "") or None)


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt after ``attempts`` failures in a row (>= 1)."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def claim(store: Store, name: str, run_id: str, renews: str, now: datetime) -> bool:
    """Record ``run_id`` as the renewal of ``name`` in flight, unless one already is
    (then False: start nothing). Re-reads inside the transaction, which holds the store's
    write lock, so of two processes claiming at once one wins."""
    with store.transaction() as tx:
        held = store.find_renewal(name)
        if held is not None and held.run_id:
            return False
        tx.put_renewal(RenewalRecord(
            name=name, attempts=held.attempts if held else 0,
            next_at=held.next_at if held else None,
            last_error=held.last_error if held else None, run_id=run_id, renews=renews,
            updated=format_instant(now)))
    return True


def settle(store: Store, name: str, now: datetime, *, retry: float = RETRY,
           retry_cap: float = RETRY_CAP) -> str | None:
    """Look at the renewal of ``name`` in flight: None while it runs (or none is), else
    ``"renewed"`` (the row is removed) or ``"failed"`` (the row backs off)."""
    held = store.find_renewal(name)
    if held is None or not held.run_id:
        return None
    run = store.find_run(held.run_id)
    if run is not None and run.status == SUCCEEDED:
        cert = store.find_certificate(name)
        if cert is None or cert.run_id != run.id:  # the hook may not have run (a crash)
            record(store, [r for r in pending_records(store) if r.run_id == run.id])
            cert = store.find_certificate(name)
        if cert is not None and cert.run_id == run.id:
            with store.transaction() as tx:
                tx.delete_renewal(name)
            log.info("renewal_succeeded", name=name, run_id=run.id, serial=cert.serial)
            return "renewed"
        error = f"renewal run {run.id} succeeded but installed no certificate named {name!r}"
    elif run is None and now - parse_instant(held.updated) < CLAIM_GRACE:
        return None  # claimed by `renew`, which starts it in its next transaction
    elif run is None or run.status in (FAILED, CANCELLED):
        error = (f"renewal run {held.run_id} {run.status}: {run.error}" if run is not None
                 else f"renewal run {held.run_id} was never started (a crash?)")
    else:
        return None
    failed(store, held, error, now, retry=retry, retry_cap=retry_cap)
    return "failed"


def failed(store: Store, held: RenewalRecord, error: str, now: datetime, *,
           retry: float = RETRY, retry_cap: float = RETRY_CAP) -> None:
    """Count a failed renewal attempt of ``held.name`` and back off (see the module)."""
    n = held.attempts + 1
    next_at = now + timedelta(seconds=backoff(n, retry, retry_cap))
    with store.transaction() as tx:
        tx.put_renewal(RenewalRecord(name=held.name, attempts=n,
                                     next_at=format_instant(next_at), last_error=error[:500],
                                     run_id=None, renews=held.renews,
                                     updated=format_instant(now)))
    log.warning("renewal_failed", name=held.name, attempts=n, error=error[:300],
                next_attempt=format_instant(next_at))


def next_attempt(rec: CertificateRecord, held: RenewalRecord | None) -> datetime | None:
    """When the daemon renews ``rec`` next: its renewal instant, or the end of its
    back-off when later; None while a renewal is in flight or no instant is known."""
    if held is not None and held.run_id:
        return None
    when = renewal_instant(rec)
    if when is not None and held is not None and held.next_at:
        when = max(when, parse_instant(held.next_at))
    return when


def schedule(store: Store) -> list[dict[str, Any]]:
    """The renewal schedule, one item per certificate name, earliest first.

    Each item: name, cert_path, pipeline, run_id (the run that made the current
    certificate), not_after, renew_at (the effective renewal instant), next_at (the next
    attempt: renew_at, or the back-off's end), attempts (failed in a row), status
    (scheduled | renewing | backoff | revoked: never renewed), renewal_run (in flight),
    last_error. Reads only.
    """
    held = {r.name: r for r in store.list_renewals()}
    certs = {c.name: c for c in store.list_certificates()}
    certs.update({c.name: c for c in pending_records(store)})
    items = []
    for name, rec in certs.items():
        h = held.get(name)
        due = renewal_instant(rec)
        nxt = next_attempt(rec, h)
        status = (REVOKED if rec.status == REVOKED else RENEWING if h and h.run_id
                  else BACKING_OFF if h and h.attempts else SCHEDULED)
        items.append({
            "name": name, "cert_path": rec.paths.get("cert", ""), "pipeline": rec.pipeline,
            "run_id": rec.run_id, "not_after": rec.not_after,
            "renew_at": format_instant(due) if due else None,
            "next_at": format_instant(nxt) if nxt else None,
            "attempts": h.attempts if h else 0, "status": status,
            "renewal_run": h.run_id if h else None, "last_error": h.last_error if h else None})
    return sorted(items, key=lambda i: (i["next_at"] or "~", i["name"]))


def renewals_status(state_dir: Path) -> list[dict[str, Any]]:
    """:func:`schedule` of the store in ``state_dir``, for ``status`` and ``certificates``
    (empty when there is no store). Read-only; safe while the daemon runs."""
    from certwright.state import names as N
    from certwright.state.sqlite import SQLiteStore
    path = Path(state_dir) / N.DB_FILE
    if not path.exists():
        return []
    store = SQLiteStore(path, readonly=True)
    try:
        if store.outdated:
            return []  # before the inventory: nothing scheduled from it yet
        return schedule(store)
    finally:
        store.close()


class Renewer:
    """The daemon's renewals: finds due certificates in the inventory and starts their
    renewal runs (main loop only; between pumps, as the engine's own writes are)."""

    def __init__(self, state_dir: Path, store: Store, clock: Clock,
                 find_pipeline: Callable[[str], PipelineSpec], start: StartRun, *,
                 retry: float = RETRY, retry_cap: float = RETRY_CAP) -> None:
        self.state_dir = Path(state_dir)
        self.store = store
        self.clock = clock
        self._find = find_pipeline
        self._start = start
        self.retry, self.retry_cap = retry, retry_cap
        self._next: datetime | None = None  # the earliest attempt the last check saw
        self._recovered = False  # succeeded runs the inventory lacks, recorded once
        self._ari = BackgroundRechecks()  # renewalInfo reads, off the main loop
        legacy = self.state_dir / LEGACY_FILE
        if legacy.exists():
            log.info("renewals_file_ignored", file=str(legacy),
                     reason="the renewal schedule now comes from the certificate inventory "
                            "in the store; this file of an older version is no longer read "
                            "(remove it when you like)")

    def close(self) -> None:
        """Stop the renewalInfo reader (the store is the caller's)."""
        self._ari.close()

    def check(self) -> list[str]:
        """Record certificates the inventory lacks (the first time: runs that succeeded
        while no hook recorded them), settle finished renewals, start due ones.

        Returns the ids of the renewal runs started. Never raises for one certificate: a
        problem is logged and counted as a failed attempt."""
        if not self._recovered:  # the daemon's own hook records its runs from now on
            record(self.store, pending_records(self.store, policy_from(self._find)))
            self._recovered = True
        now = self.clock.now()
        self._ari.poll(self.store, now)  # windows read meanwhile; the next batch started
        for row in self.store.list_renewals():
            settle(self.store, row.name, now, retry=self.retry, retry_cap=self.retry_cap)
        held = {r.name: r for r in self.store.list_renewals()}
        started = []
        upcoming: list[datetime] = []
        for rec in self.store.list_certificates():
            check = ari_next_check(rec)  # wake for the next renewalInfo read too
            if check is not None:
                upcoming.append(check)
            when = next_attempt(rec, held.get(rec.name))
            if when is None or when > now:
                if when is not None:
                    upcoming.append(when)
                continue
            try:
                new_id = self._renew(rec, now)
            except Exception as exc:  # noqa: BLE001 - counted as a failed attempt
                failed(self.store, held.get(rec.name) or RenewalRecord(rec.name),
                       f"{type(exc).__name__}: {exc}", now, retry=self.retry,
                       retry_cap=self.retry_cap)
                continue
            if new_id:
                started.append(new_id)
        self._next = min(upcoming) if upcoming else None
        return started

    def _renew(self, rec: CertificateRecord, now: datetime) -> str | None:
        plan = plan_renewal(self.store, self.state_dir, rec, self._find(rec.pipeline))
        from certwright.engine.model.inputs import coerce_inputs
        values = coerce_inputs(plan.spec, plan.inputs)
        new_id = new_run_id(plan.spec.name)
        if not claim(self.store, rec.name, new_id, rec.run_id, now):
            return None  # `renew` started one meanwhile
        self._start(plan.spec, values, new_id, plan.secret, plan.host)
        log.info("renewal_started", run_id=new_id, renews=rec.run_id, name=rec.name,
                 pipeline=plan.spec.name, version=plan.spec.hash[:12])
        return new_id

    def next_due(self) -> datetime | None:
        """The earliest pending attempt as the last :meth:`check` saw it (None: none, or
        no check yet); now when a renewal run in flight has finished, so that it is
        settled at once, or while renewal windows are being read (written at the next
        check). Cheap (the loop asks every second): it reads only the renewals in
        flight, not the inventory (a certificate recorded since the last check is seen
        at the next periodic one; renewal instants are weeks away)."""
        if self._ari.busy():  # windows being read: write them once they are in
            return self.clock.now()
        for row in self.store.list_renewals():
            run = self.store.find_run(row.run_id) if row.run_id else None
            if run is not None and run.status in FINISHED:
                return self.clock.now()
        return self._next
