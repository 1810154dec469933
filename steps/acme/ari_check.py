"""The daemon's re-check of ACME renewal windows (RFC 9773 section 4.3).

:func:`recheck_due` reads the renewalInfo again for each installed certificate whose
``ari.next_check`` has passed (the instant the CA's Retry-After gave), and writes the new
window into its inventory record, so a window the CA moves (an operator's
``ca renewal-window``, a revocation) moves the renewal. Bounded: at most ``limit``
certificates per call, each GET with the timeout of :mod:`.renewal`.

Errors never reach the schedule: a failed read is logged, counted in ``ari.failures`` and
tried again after ``min(MAX_RECHECK, BACKOFF * 2**(failures-1))`` (5 min, 10 min, 20 min
... capped at a week), while the window already known keeps deciding the renewal.

Hazard: it runs in the daemon's main loop, between pumps, so each GET holds the loop for
up to its timeout; ``limit`` bounds how long one call may take.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509

from certwright.clock import format_instant, parse_instant
from certwright.state.base import Store
from certwright.state.records import REVOKED, CertificateRecord
from certwright.steps.acme.renewal import MAX_RECHECK, AriError, fetch_renewal_info

log = structlog.get_logger("certwright.daemon.ari")

BACKOFF = 300.0  # seconds after the first failed read
LIMIT = 8  # certificates re-checked per call


def next_check(rec: CertificateRecord) -> datetime | None:
    """When ``rec``'s renewal window is to be read again; None: never (no ARI, revoked)."""
    ari = rec.ari or {}
    if rec.status == REVOKED or not ari.get("url") or not ari.get("next_check"):
        return None
    try:
        return parse_instant(str(ari["next_check"]))
    except ValueError:
        return None


def _read(rec: CertificateRecord, now: datetime) -> dict[str, Any]:
    ari = dict(rec.ari or {})
    try:
        cert = x509.load_pem_x509_certificates(Path(rec.paths["cert"]).read_bytes())[0]
    except (KeyError, OSError, ValueError, IndexError) as exc:
        raise AriError(f"cannot read the certificate of {rec.name}: {exc}") from exc
    bundle = rec.inputs.get("ca_bundle")
    base = str(ari["url"]).rsplit("/", 1)[0]
    fresh = fetch_renewal_info(base, cert, now, verify=str(bundle) if bundle else True)
    ari.pop("failures", None)
    ari.pop("error", None)
    return {**ari, **fresh}


def recheck_due(store: Store, now: datetime, limit: int = LIMIT) -> list[str]:
    """Read the renewal window again for certificates whose next check has passed, the
    most overdue first; returns the names whose record was updated. Never raises for a
    certificate (logged, backed off); a record replaced meanwhile (another serial) is
    left as it is."""
    due = sorted((when, rec.name) for rec in store.list_certificates()
                 if (when := next_check(rec)) is not None and when <= now)
    done = []
    for _when, name in due[:limit]:
        rec = store.find_certificate(name)
        if rec is None:
            continue
        try:
            ari = _read(rec, now)
            log.info("ari_checked", name=name, serial=rec.serial, **ari["suggestedWindow"],
                     next_check=ari["next_check"])
        except AriError as exc:
            failures = int((rec.ari or {}).get("failures") or 0) + 1
            wait = min(MAX_RECHECK, BACKOFF * 2 ** (failures - 1))
            ari = {**(rec.ari or {}), "failures": failures, "error": str(exc),
                   "next_check": format_instant(now + timedelta(seconds=wait))}
            log.warning("ari_check_failed", name=name, serial=rec.serial, error=str(exc),
                        failures=failures, next_check=ari["next_check"])
        with store.transaction() as tx:
            current = store.find_certificate(name)
            if current is None or current.serial != rec.serial:
                continue  # renewed meanwhile: the new record has its own window
            tx.put_certificate(dataclasses.replace(current, ari=ari))
        done.append(name)
    return done
