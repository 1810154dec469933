"""The daemon's re-check of ACME renewal windows (RFC 9773 section 4.3).

:func:`recheck_due` reads the renewalInfo again for each installed certificate whose
``ari.next_check`` has passed (the instant the CA's Retry-After gave), and writes the new
window into its inventory record, so a window the CA moves (an operator's
``ca renewal-window``, a revocation) moves the renewal. Bounded: at most ``limit``
certificates per call, each GET with the timeout of :mod:`.renewal`.

Errors never reach the schedule: a failed read is logged, counted in ``ari.failures`` and
tried again after ``min(MAX_RECHECK, BACKOFF * 2**(failures-1))`` (5 min, 10 min, 20 min
... capped at a week), while the window already known keeps deciding the renewal.

The daemon uses :class:`BackgroundRechecks`: the GETs run in a thread of their own and
only the writes of their results happen in the main loop, so a slow or silent CA never
holds up mail, timers or transitions (``recheck_due`` does it all in the caller's thread,
for tools and tests). Bounded: at most ``limit`` reads per batch, one batch at a time.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
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


def due(store: Store, now: datetime, limit: int = LIMIT) -> list[CertificateRecord]:
    """The records whose window is to be read again, the most overdue first."""
    ranked = sorted((when, rec.name, rec) for rec in store.list_certificates()
                    if (when := next_check(rec)) is not None and when <= now)
    return [rec for _when, _name, rec in ranked[:limit]]


def read_window(rec: CertificateRecord, now: datetime) -> dict[str, Any]:
    """``rec``'s new ``ari`` field: the window read, or the old one with the failure
    counted and the next try backed off. Network and files only, no store: safe in any
    thread. Never raises for the CA's or the file's failures (logged)."""
    try:
        ari = _read(rec, now)
        log.info("ari_checked", name=rec.name, serial=rec.serial, **ari["suggestedWindow"],
                 next_check=ari["next_check"])
    except AriError as exc:
        failures = int((rec.ari or {}).get("failures") or 0) + 1
        wait = min(MAX_RECHECK, BACKOFF * 2 ** (failures - 1))
        ari = {**(rec.ari or {}), "failures": failures, "error": str(exc),
               "next_check": format_instant(now + timedelta(seconds=wait))}
        log.warning("ari_check_failed", name=rec.name, serial=rec.serial, error=str(exc),
                    failures=failures, next_check=ari["next_check"])
    return ari


def apply_window(store: Store, rec: CertificateRecord, ari: dict[str, Any]) -> bool:
    """Write ``ari`` into ``rec``'s inventory record; False (nothing written) when the
    certificate was renewed or removed meanwhile: the new record has its own window."""
    with store.transaction() as tx:
        current = store.find_certificate(rec.name)
        if current is None or current.serial != rec.serial:
            return False
        tx.put_certificate(dataclasses.replace(current, ari=ari))
    return True


def recheck_due(store: Store, now: datetime, limit: int = LIMIT) -> list[str]:
    """Read the renewal window again for certificates whose next check has passed, the
    most overdue first, in the caller's thread; returns the names whose record was
    updated. Never raises for a certificate (logged, backed off); a record replaced
    meanwhile (another serial) is left as it is."""
    return [rec.name for rec in due(store, now, limit)
            if apply_window(store, rec, read_window(rec, now))]


class BackgroundRechecks:
    """The daemon's re-checks: :meth:`poll` (main loop) writes the results of the batch
    that finished and starts the next one; the reads run in one worker thread."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._pool: ThreadPoolExecutor | None = None
        self._batch: Future[list[tuple[CertificateRecord, dict[str, Any]]]] | None = None

    def poll(self, store: Store, now: datetime) -> list[str]:
        """Write what the last batch read (the names updated) and, when none is in
        flight, start reading the certificates due now. Never blocks on the network."""
        done: list[str] = []
        if self._batch is not None:
            if not self._batch.done():
                return done
            batch, self._batch = self._batch, None
            try:
                results = batch.result()
            except Exception as exc:  # noqa: BLE001 - a bug in a read must not stop the loop
                log.error("ari_batch_failed", error=f"{type(exc).__name__}: {exc}")
                results = []
            done = [rec.name for rec, ari in results if apply_window(store, rec, ari)]
        todo = due(store, now, self.limit)
        if todo:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ari")
            self._batch = self._pool.submit(
                lambda: [(rec, read_window(rec, now)) for rec in todo])
        return done

    def busy(self) -> bool:
        """Whether a batch is being read (the loop then looks again soon)."""
        return self._batch is not None

    def close(self) -> None:
        """Stop the worker; a batch in flight is dropped (read again next start)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
