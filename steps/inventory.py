"""The certificate inventory, projected from what ``install.files`` reported.

``install.files`` outputs describe the certificate it installed (name, names, serial,
validity, issuer, folder and paths); the engine records them in the run's journal in the
transaction that ends the step, as it does every step's outputs, and knows nothing of
certificates. This module turns a succeeded run's outputs into
:class:`~certwright.state.records.CertificateRecord` rows:

* :class:`InventoryHook`, an engine interceptor, writes them when a run succeeds (``run``,
  ``resume`` and the daemon plug it in);
* :func:`pending_records` finds succeeded runs whose certificate the inventory lacks (a
  process that died between the run's last commit and the hook's), so a reader shows them
  all the same: nothing is lost to a crash.

A record replaces the one of the same name only when it is not older (by ``not_before``,
then when its run ended, then run id), so a late hook of an old run never hides a renewal.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog

from certwright.clock import format_instant, parse_instant
from certwright.engine.run.interceptor import Interceptor
from certwright.errors import CertwrightError
from certwright.state.base import Store
from certwright.state.records import REVOKED, SUCCEEDED, CertificateRecord, RunRecord

log = structlog.get_logger("certwright.inventory")

ROLES = ("cert", "key", "chain", "fullchain")
DEFAULT_RENEW = (1 / 3, 0.05)  # the fraction of the lifetime left, and its jitter

RenewPolicy = Callable[[RunRecord], tuple[float, float]]


def renew_instant(not_before: datetime, not_after: datetime, fingerprint: str,
                  fraction: float, jitter: float) -> datetime:
    """When to renew: ``not_after - (fraction + U(0, jitter)) * lifetime``; the random part
    is seeded by the fingerprint, so a restart does not reshuffle the schedule."""
    life = (not_after - not_before).total_seconds()
    spread = random.Random(fingerprint).uniform(0, jitter)
    return not_after - timedelta(seconds=life * (fraction + spread))


def _ari_window(ari: dict[str, Any] | None) -> tuple[datetime, datetime] | None:
    window = ari.get("suggestedWindow", ari) if isinstance(ari, dict) else None
    if not isinstance(window, dict):
        return None
    try:
        start, end = parse_instant(str(window["start"])), parse_instant(str(window["end"]))
    except (KeyError, ValueError):
        return None
    return (start, end) if end >= start else None


def renewal_instant(rec: CertificateRecord) -> datetime | None:
    """When certificate ``rec`` is due for renewal: the one place that decides it.

    An ACME renewal window the CA suggested (RFC 9773 ARI, in ``rec.ari`` as the
    renewalInfo's ``{"suggestedWindow": {"start", "end"}}``, or that window itself) wins
    over the computed ``renew_at``: an instant inside it, seeded by the fingerprint (RFC
    9773 section 4.2 asks for a random one, so that clients spread out; seeded, so every
    read gives the same). An unusable window is ignored. None: no schedule (no dates, or
    revoked).
    """
    if rec.status == REVOKED:
        return None  # a revoked certificate is never renewed; a new run may replace it
    window = _ari_window(rec.ari)
    if window is not None:
        start, end = window
        return start + (end - start) * random.Random(rec.fingerprint_sha256 or rec.serial).random()
    try:
        return parse_instant(rec.renew_at) if rec.renew_at else None
    except ValueError:
        return None


def policy_from(find: Callable[[str], Any]) -> RenewPolicy:
    """The renewal policy of each run's pipeline (``find(name)`` gives its spec, whose
    ``renew`` may be None); :data:`DEFAULT_RENEW` when it has none or cannot be found."""
    def policy(run: RunRecord) -> tuple[float, float]:
        try:
            renew = find(run.pipeline).renew
        except CertwrightError:
            return DEFAULT_RENEW
        return (renew.fraction, renew.jitter) if renew is not None else DEFAULT_RENEW
    return policy


def _issuer(run: RunRecord) -> str:
    for key in ("directory", "ca"):
        value = run.inputs.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _ari_of(run: RunRecord, serial: str) -> dict[str, Any] | None:
    """What the run's steps said of ACME renewal for the certificate ``serial``: the
    renewalInfo an ``ari`` output gave for that serial (``acme.download``), and under
    ``replaces`` the certificate the order said it replaced (``acme.order``'s
    ``replaces``/``replaced_serial``/``replaces_accepted``). None when neither is there."""
    ari: dict[str, Any] = {}
    for value in run.vars.values():
        if not isinstance(value, dict):
            continue
        found = value.get("ari")
        if isinstance(found, dict) and str(found.get("serial") or serial) == serial:
            ari.update({k: v for k, v in found.items() if k != "serial"})
        if value.get("replaces"):
            ari["replaces"] = {"cert_id": str(value["replaces"]),
                               "serial": str(value.get("replaced_serial") or ""),
                               "accepted": bool(value.get("replaces_accepted"))}
    return ari or None


def records_of(run: RunRecord, policy: RenewPolicy | None = None) -> list[CertificateRecord]:
    """The certificates a succeeded run installed (outputs with a name and a serial)."""
    if run.status != SUCCEEDED:
        return []
    out: list[CertificateRecord] = []
    for value in run.vars.values():
        if not (isinstance(value, dict) and value.get("name") and value.get("serial")
                and value.get("cert_path") and value.get("not_after")):
            continue
        paths = {r: str(value[f"{r}_path"]) for r in ROLES if value.get(f"{r}_path")}
        fraction, jitter = (policy or (lambda _r: DEFAULT_RENEW))(run)
        try:
            renew_at: str | None = format_instant(renew_instant(
                parse_instant(str(value["not_before"])), parse_instant(str(value["not_after"])),
                str(value.get("fingerprint_sha256") or value["serial"]), fraction, jitter))
        except ValueError:
            renew_at = None
        out.append(CertificateRecord(
            name=str(value["name"]), run_id=run.id, pipeline=run.pipeline,
            names=[str(n) for n in value.get("names") or []], issuer=_issuer(run),
            issuer_dn=str(value.get("issuer") or ""), serial=str(value["serial"]),
            fingerprint_sha256=str(value.get("fingerprint_sha256") or ""),
            not_before=str(value.get("not_before") or ""), not_after=str(value["not_after"]),
            dir=str(value.get("dir") or ""), paths=paths, inputs=dict(run.inputs),
            renew_at=renew_at, ari=_ari_of(run, str(value["serial"])), updated=run.updated))
    return out


def _newer(new: CertificateRecord, old: CertificateRecord | None) -> bool:
    # ties on not_before (issued within one second) go to the run that ended later; the
    # run id only breaks a tie of both
    return old is None or ((new.not_before, new.updated, new.run_id)
                           >= (old.not_before, old.updated, old.run_id))


def pending_records(store: Store, policy: RenewPolicy | None = None) -> list[CertificateRecord]:
    """Records of succeeded runs that the inventory lacks or holds older (reads only)."""
    current = {c.name: c for c in store.list_certificates()}
    found: dict[str, CertificateRecord] = {}
    for run in store.list_runs([SUCCEEDED]):
        for rec in records_of(run, policy):
            best = found.get(rec.name) or current.get(rec.name)
            if _newer(rec, best) and (rec.name not in current
                                      or current[rec.name].run_id != rec.run_id):
                found[rec.name] = rec
    return list(found.values())


def record(store: Store, records: Iterable[CertificateRecord]) -> list[str]:
    """Put each record unless the inventory holds a newer one of its name; the names put.
    No records (a run that installed no certificate): no transaction at all."""
    put: list[str] = []
    records = list(records)
    if not records:
        return put
    with store.transaction() as tx:
        for rec in records:
            if _newer(rec, store.find_certificate(rec.name)):
                tx.put_certificate(rec)
                put.append(rec.name)
    for name in put:
        log.info("certificate_recorded", name=name)
    return put


class InventoryHook(Interceptor):
    """Records the certificates of each run that succeeds.

    Runs after the engine's commit, in its core loop; a failure to write is logged and
    never raised into the engine: readers still see the certificate
    (:func:`pending_records`).
    """

    def __init__(self, store: Store, policy: RenewPolicy | None = None) -> None:
        self._store = store
        self._policy = policy

    def run_finished(self, run: RunRecord) -> None:
        if run.status != SUCCEEDED:
            return
        try:
            record(self._store, records_of(run, self._policy))
        except Exception as exc:  # noqa: BLE001 - the inventory must never stop the engine
            log.warning("certificate_record_failed", run_id=run.id,
                        error=f"{type(exc).__name__}: {exc}")


def as_dict(rec: CertificateRecord) -> dict[str, Any]:
    """A record as plain data (for JSON)."""
    return dict(vars(rec))
