"""The CA's ``/metrics``: what its store holds, read at each scrape, and its HTTP responses.

:class:`CACollector` opens the CA's SQLite file read-only for each scrape (so the values
are the store's, committed, whichever process serves the folder) and exports:

* ``certwright_ca_certificates_issued_total``, ``..._revoked_total`` and
  ``certwright_ca_certificates_valid`` (not revoked, not expired), from its certificates;
* ``certwright_ca_probes_total`` (domain probe links made) and
  ``certwright_ca_events_total{event}`` (the audit trail: account_joined, probe_sent,
  link_verified, cert_issued, recovery_refused, ...: a fixed set of event names);
* the outbox: ``certwright_ca_mail_total{status}`` (pending, sent, failed),
  ``certwright_ca_mail_retries_total`` (attempts after the first) and
  ``certwright_ca_mail_oldest_pending_seconds``;
* ``certwright_ca_http_responses_total{class}`` (1xx-5xx, none), counted in-process by
  :mod:`ca.httpcounts` since this process started.

Served by :func:`serve_ca_metrics` on a listener of its own (``ca serve --metrics-listen``),
never on the CA's public app: its address is meant for loopback or a monitoring network.

Hazard: imports prometheus_client (the CLI imports this module only for
``--metrics-listen``). A scrape that cannot read the store answers
``certwright_ca_store_readable 0`` and logs why (the next one tries again).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from certwright.ca.httpcounts import CLASSES
from certwright.clock import Clock, SystemClock, format_instant, parse_instant
from certwright.metrics_http import MetricsServer, serve_metrics

__all__ = ["CACollector", "ca_registry", "serve_ca_metrics"]

log = structlog.get_logger("ca.metrics")

MAIL_STATUSES = ("pending", "sent", "failed")


class CACollector(Collector):
    """The CA's metrics (see the module) from the store at ``db``; ``http_counts`` gives
    the responses by class so far (None: not counted here)."""

    def __init__(self, db: Path, clock: Clock | None = None,
                 http_counts: Callable[[], dict[str, int]] | None = None) -> None:
        self.db = Path(db)
        self.clock = clock or SystemClock()
        self.http_counts = http_counts

    def _read(self) -> dict[str, Any]:
        now = format_instant(self.clock.now())
        uri = f"file:{self.db}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE "
                                               "type='table'")}

            def one(sql: str, *args: Any) -> Any:
                return db.execute(sql, args).fetchone()[0] or 0
            got: dict[str, Any] = {
                "issued": one("SELECT COUNT(*) FROM certificates"),
                "revoked": one("SELECT COUNT(*) FROM certificates WHERE revoked_at IS NOT NULL"),
                "valid": one("SELECT COUNT(*) FROM certificates WHERE revoked_at IS NULL "
                             "AND not_after > ?", now),
                "probes": one("SELECT COUNT(*) FROM links WHERE kind='domain'"),
                "events": db.execute("SELECT event, COUNT(*) FROM audit GROUP BY event "
                                     "ORDER BY event").fetchall(),
                "mail": {}, "retries": 0, "oldest": None}
            if "outbox" in tables:  # made when the CA first serves (ca.outbox)
                got["mail"] = dict(db.execute("SELECT status, COUNT(*) FROM outbox "
                                              "GROUP BY status").fetchall())
                got["retries"] = one("SELECT SUM(MAX(attempts - 1, 0)) FROM outbox")
                got["oldest"] = db.execute("SELECT MIN(created_at) FROM outbox WHERE "
                                           "status='pending'").fetchone()[0]
            return got

    def collect(self) -> Iterator[Metric]:
        """Every family, read now; a store that cannot be read gives
        ``certwright_ca_store_readable 0`` (and a log line) and the HTTP counts only."""
        try:
            got = self._read()
        except sqlite3.Error as exc:
            log.warning("metrics_store_unreadable", db=str(self.db), error=str(exc))
            yield GaugeMetricFamily("certwright_ca_store_readable", "1 when this scrape "
                                    "could read the CA's store", value=0)
            yield from self._http()
            return
        yield GaugeMetricFamily("certwright_ca_store_readable", "1 when this scrape could "
                                "read the CA's store", value=1)
        yield from self._store_families(got)
        yield from self._http()

    def _store_families(self, got: dict[str, Any]) -> Iterator[Metric]:
        yield CounterMetricFamily("certwright_ca_certificates_issued",
                                  "Certificates the CA issued", value=got["issued"])
        yield CounterMetricFamily("certwright_ca_certificates_revoked",
                                  "Certificates the CA revoked", value=got["revoked"])
        yield GaugeMetricFamily("certwright_ca_certificates_valid",
                                "Issued certificates neither revoked nor expired",
                                value=got["valid"])
        yield CounterMetricFamily("certwright_ca_probes", "Domain probes the CA made "
                                  "(a mail with a link each)", value=got["probes"])
        events = CounterMetricFamily("certwright_ca_events", "The CA's audit trail by event",
                                     labels=["event"])
        for event, n in got["events"]:
            events.add_metric([event], n)
        yield events
        mail = CounterMetricFamily("certwright_ca_mail", "The outbox's messages by status "
                                   "(pending: to be sent or retried)", labels=["status"])
        for status in sorted({*MAIL_STATUSES, *got["mail"]}):
            mail.add_metric([status], got["mail"].get(status, 0))
        yield mail
        yield CounterMetricFamily("certwright_ca_mail_retries", "Delivery attempts after a "
                                  "message's first", value=got["retries"])
        oldest = 0.0
        if got["oldest"]:
            oldest = max(0.0, (self.clock.now() - parse_instant(got["oldest"])).total_seconds())
        yield GaugeMetricFamily("certwright_ca_mail_oldest_pending_seconds", "Age of the "
                                "oldest message still to be sent (0: none)", value=oldest)

    def _http(self) -> Iterator[Metric]:
        if self.http_counts is not None:
            counts = self.http_counts()
            http = CounterMetricFamily("certwright_ca_http_responses", "HTTP responses by "
                                       "status class", labels=["class"])
            for cls in CLASSES:
                http.add_metric([cls], counts.get(cls, 0))
            yield http


def ca_registry(db: Path, clock: Clock | None = None,
                http_counts: Callable[[], dict[str, int]] | None = None) -> CollectorRegistry:
    """A registry with the CA's collector and the process' own metrics."""
    from prometheus_client import PlatformCollector, ProcessCollector
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(CACollector(db, clock, http_counts))
    return registry


def serve_ca_metrics(server: Any, host: str, port: int) -> MetricsServer:
    """Serve the metrics of a started :class:`ca.server.CAServer` on ``host:port``;
    OSError when it cannot listen there."""
    from certwright.ca.setup import CAPaths
    counts = getattr(server.app.state, "http_status_counts", None)
    registry = ca_registry(CAPaths(server.ca_dir).db, server.clock,
                           counts.snapshot if counts is not None else None)
    return serve_metrics(registry, host, port)
