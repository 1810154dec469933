"""The daemon's ``/metrics``: what the store holds, read at scrape time, and what the engine did.

Two sources, so every value is true to something durable:

* :class:`StoreCollector`, a prometheus_client custom collector, reads the store on each
  scrape (through a read connection of its own): runs by pipeline, state and status, waits
  by kind, timers and the due ones, certificates and the seconds each has left, the
  renewal schedule, the daemons' heartbeats and leases. Gauges, never cached.
* :class:`EngineMetrics`, an engine interceptor (as the inventory hook and the terminal
  display are), counts what the engine committed since this daemon started: transitions,
  step durations by step and outcome, finished runs; and the mail router's own counts.
  Counters and a histogram, reset when the daemon restarts (Prometheus' ``rate`` and
  ``increase`` expect that).

Label bound: ``certwright_certificate_seconds_left`` has one series per certificate name
for the :data:`CERT_LABELS` (default 100; the daemon's ``metrics_certificates``) soonest to
expire; the others are counted in ``certwright_certificates_unlabelled`` and the soonest of
them is ``certwright_certificates_unlabelled_seconds_left_min``, so an alert on the minimum
still fires for a certificate past the bound, and a store of 100,000 certificates makes
100 series, not 100,000. Every other label comes from pipelines (names, states, step ids)
or from fixed sets (statuses, outcomes, kinds), so their number is bounded by the
pipelines loaded.

Leases: ``certwright_leases_held`` and ``certwright_leases_taken_over_total`` are defined
now and are 0 with SQLite, where one daemon serves a store under a file lock; the
PostgreSQL store's run leases fill them (the heartbeat row's ``leases``).

Hazards: this module imports prometheus_client, so the daemon imports it only when
metrics are enabled. Hooks run in the engine's core loop: they only count (a dict
update under prometheus_client's lock) and never raise; a scrape that cannot read the
store gives ``certwright_store_readable 0`` and a log line (the next one tries again).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from certwright.clock import Clock, parse_instant
from certwright.engine.run.interceptor import Interceptor, StepOutcome
from certwright.errors import CertwrightError
from certwright.state.base import Store
from certwright.state.records import REVOKED, STALE_BEATS, WAITING, RunRecord

__all__ = ["CERT_LABELS", "EngineMetrics", "StoreCollector", "daemon_registry",
           "metric_names"]

log = structlog.get_logger("certwright.daemon.metrics")

CERT_LABELS = 100  # certificate names with a series of their own (the soonest to expire)

# Step durations: from a no-op step (milliseconds) to a CA call or a reload (seconds) to a
# wait that parks a run for days (its "waiting" outcome), in one set of buckets.
STEP_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0, 86400.0)

# what the mail router counted -> moved aside into the quarantine (mail.maildir.move_aside)
QUARANTINED = ("hostile", "duplicate", "unmatched")


def _wait_kind(run: RunRecord, keys: list[str]) -> str:
    """What a waiting run waits for: mail (a correlation key), a file, or an instant."""
    if any(k.startswith("mail:") for k in keys):
        return "mail"
    if run.watch:
        return "file"
    if run.wake_at:
        return "time"
    return "other"


class EngineMetrics(Interceptor):
    """Counts the engine's committed events into ``registry`` (see the module)."""

    def __init__(self, registry: CollectorRegistry, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._now = monotonic
        self._lock = threading.Lock()
        self._started: dict[tuple[str, str], float] = {}
        self.transitions = Counter(
            "certwright_transitions", "State transitions the engine committed",
            ["pipeline", "from_state", "to_state"], registry=registry)
        self.steps = Histogram(
            "certwright_step_duration_seconds",
            "Time from a step's start to its outcome (done, waiting, failed)",
            ["pipeline", "step", "outcome"], buckets=STEP_BUCKETS, registry=registry)
        self.finished = Counter(
            "certwright_runs_finished", "Runs that reached succeeded, failed or cancelled",
            ["pipeline", "status"], registry=registry)

    def transitioned(self, run: RunRecord, from_state: str | None, to_state: str,
                     trigger: str) -> None:
        self.transitions.labels(run.pipeline, from_state or "", to_state).inc()

    def step_started(self, run: RunRecord, step_id: str, attempt: int) -> None:
        with self._lock:
            self._started[(run.id, step_id)] = self._now()

    def step_finished(self, run: RunRecord, step_id: str, outcome: StepOutcome) -> None:
        with self._lock:
            began = self._started.pop((run.id, step_id), None)
        if began is not None:  # a step started before this daemon did has no start here
            self.steps.labels(run.pipeline, step_id, outcome).observe(
                max(0.0, self._now() - began))

    def run_finished(self, run: RunRecord) -> None:
        self.finished.labels(run.pipeline, run.status).inc()
        with self._lock:  # a step left open by a cancel: forget it
            for key in [k for k in self._started if k[0] == run.id]:
                del self._started[key]


class StoreCollector(Collector):
    """Gauges read from ``store`` at each scrape (see the module).

    ``mail_counts``: the mail router's counts so far (outcome -> messages), None when the
    daemon routes no mail; ``cert_labels``: the label bound of the certificates' series.
    """

    def __init__(self, store: Store, clock: Clock, *, cert_labels: int = CERT_LABELS,
                 mail_counts: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.cert_labels = max(0, cert_labels)
        self.mail_counts = mail_counts

    def collect(self) -> Iterator[Metric]:
        """Every family, read now. A store that cannot be read (a StoreFault: the disk,
        a damaged file) gives ``certwright_store_readable 0`` and the mail counts, and
        is logged, rather than a failed scrape with a traceback."""
        now = self.clock.now()
        try:
            families = [*self._runs(), *self._timers(now), *self._certificates(now),
                        *self._renewals(now), *self._daemons(now)]
        except CertwrightError as exc:
            log.warning("metrics_store_unreadable", error=str(exc))
            families = []
        yield GaugeMetricFamily("certwright_store_readable", "1 when this scrape could read "
                                "the store (0: its gauges are missing; the log says why)",
                                value=float(bool(families)))
        yield from families
        yield from self._mail()

    def _runs(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily("certwright_runs", "Runs in the store by pipeline, state and "
                                 "status", labels=["pipeline", "state", "status"])
        waits = GaugeMetricFamily("certwright_waits", "Runs parked waiting, by what they wait "
                                  "for (mail, file, time)", labels=["kind"])
        for pipeline, state, status, n in self.store.run_counts():
            runs.add_metric([pipeline, state, status], n)
        kinds = dict.fromkeys(("mail", "file", "time", "other"), 0)
        for run in self.store.list_runs([WAITING]):
            kinds[_wait_kind(run, self.store.correlations(run.id))] += 1
        for kind, n in kinds.items():
            waits.add_metric([kind], n)
        yield runs
        yield waits

    def _timers(self, now: datetime) -> Iterator[Metric]:
        timers = GaugeMetricFamily("certwright_timers", "Durable timers by kind (timeout, "
                                   "retry, wake)", labels=["kind"])
        due = GaugeMetricFamily("certwright_timers_due", "Timers whose instant has passed "
                                "(to fire on the next pump)", labels=["kind"])
        total: dict[str, int] = dict.fromkeys(("timeout", "retry", "wake"), 0)
        passed = dict(total)
        for t in self.store.timers():
            total[t.kind] = total.get(t.kind, 0) + 1
            passed.setdefault(t.kind, 0)
            if parse_instant(t.due) <= now:
                passed[t.kind] += 1
        for kind in sorted(total):
            timers.add_metric([kind], total[kind])
            due.add_metric([kind], passed[kind])
        yield timers
        yield due

    def _certificates(self, now: datetime) -> Iterator[Metric]:
        left = GaugeMetricFamily(
            "certwright_certificate_seconds_left", "Seconds until the certificate's not "
            "after, for the soonest to expire up to the label bound", labels=["name"])
        states = GaugeMetricFamily("certwright_certificates", "Certificates of the inventory "
                                   "by state", labels=["state"])
        counted = dict.fromkeys(("valid", "expired", "revoked"), 0)
        lives: list[tuple[float, str]] = []
        for rec in self.store.list_certificates():
            if rec.status == REVOKED:
                counted["revoked"] += 1
                continue
            try:
                seconds = (parse_instant(rec.not_after) - now).total_seconds()
            except ValueError:
                continue  # a record without dates (a failed install) has no lifetime
            counted["valid" if seconds > 0 else "expired"] += 1
            lives.append((seconds, rec.name))
        lives.sort()
        for seconds, name in lives[:self.cert_labels]:
            left.add_metric([name], seconds)
        rest = lives[self.cert_labels:]
        for state, n in counted.items():
            states.add_metric([state], n)
        yield left
        yield states
        yield GaugeMetricFamily("certwright_certificates_unlabelled", "Certificates past the "
                                "label bound (no seconds_left series of their own)",
                                value=len(rest))
        if rest:
            yield GaugeMetricFamily("certwright_certificates_unlabelled_seconds_left_min",
                                    "Seconds left of the soonest to expire past the bound",
                                    value=rest[0][0])

    def _renewals(self, now: datetime) -> Iterator[Metric]:
        from certwright.engine.daemon.renew import schedule
        family = GaugeMetricFamily(
            "certwright_renewals", "The renewal schedule by status: scheduled, due (its "
            "instant passed), renewing, backoff, revoked", labels=["status"])
        counts = dict.fromkeys(("scheduled", "due", "renewing", "backoff", "revoked"), 0)
        soonest: float | None = None
        for item in schedule(self.store):
            status = item["status"]
            nxt = parse_instant(item["next_at"]) if item["next_at"] else None
            if status == "scheduled" and nxt is not None and nxt <= now:
                status = "due"
            counts[status] = counts.get(status, 0) + 1
            if nxt is not None and status != "revoked":
                stamp = nxt.timestamp()
                soonest = stamp if soonest is None else min(soonest, stamp)
        for status, n in counts.items():
            family.add_metric([status], n)
        yield family
        if soonest is not None:
            yield GaugeMetricFamily("certwright_renewal_next_timestamp_seconds",
                                    "When the next renewal attempt is due (Unix time)",
                                    value=soonest)

    def _daemons(self, now: datetime) -> Iterator[Metric]:
        beat = GaugeMetricFamily("certwright_daemon_heartbeat_timestamp_seconds", "Each "
                                 "daemon's last heartbeat (Unix time)", labels=["daemon"])
        stale = GaugeMetricFamily("certwright_daemon_stale", "1 when a daemon's heartbeat is "
                                  f"older than {STALE_BEATS} intervals", labels=["daemon"])
        held = GaugeMetricFamily("certwright_leases_held", "Run leases each daemon holds (0 "
                                 "with SQLite: one daemon per store)", labels=["daemon"])
        driven = GaugeMetricFamily("certwright_daemon_runs", "Unfinished runs each daemon "
                                   "drove at its last heartbeat", labels=["daemon"])
        for d in self.store.list_daemons():
            at = parse_instant(d.heartbeat)
            beat.add_metric([d.id], at.timestamp())
            stale.add_metric([d.id], float(d.is_stale((now - at).total_seconds())))
            held.add_metric([d.id], d.leases)
            driven.add_metric([d.id], d.runs)
        yield beat
        yield stale
        yield held
        yield driven
        yield CounterMetricFamily("certwright_leases_taken_over", "Run leases taken over from "
                                  "a daemon whose lease expired (PostgreSQL store)", value=0)

    def _mail(self) -> Iterator[Metric]:
        if self.mail_counts is None:
            return
        counts = dict(self.mail_counts())
        family = CounterMetricFamily("certwright_mail", "Messages the daemon's mail router "
                                     "handled, by outcome", labels=["outcome"])
        for outcome in sorted({"routed", "pending", "foreign", *QUARANTINED, *counts}):
            family.add_metric([outcome], counts.get(outcome, 0))
        yield family
        yield CounterMetricFamily("certwright_mail_routed", "Messages offered to waiting "
                                  "runs", value=counts.get("routed", 0))
        yield CounterMetricFamily("certwright_mail_quarantined", "Messages moved aside "
                                  "(hostile, duplicate, unmatched)",
                                  value=sum(counts.get(k, 0) for k in QUARANTINED))


def daemon_registry(store: Store, clock: Clock, *, cert_labels: int = CERT_LABELS,
                    mail_counts: Callable[[], Mapping[str, int]] | None = None,
                    ) -> tuple[CollectorRegistry, EngineMetrics]:
    """A registry with the store's gauges, the engine's counters (the interceptor to give
    the engine is returned) and the process' own (CPU, memory, open files)."""
    from prometheus_client import PlatformCollector, ProcessCollector
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(StoreCollector(store, clock, cert_labels=cert_labels,
                                     mail_counts=mail_counts))
    return registry, EngineMetrics(registry)


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``registry`` exposes now (for the dashboard's test)."""
    return {s.name for family in registry.collect() for s in family.samples}

