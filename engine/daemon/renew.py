"""Renewal: the daemon renews the certificates its runs installed.

A run that **succeeded** and has ``install.files`` outputs (``cert_path`` with its
``key_path``, ``fullchain_path`` and ``fingerprint_sha256``; not ``ca.sign``'s copy in the
run folder) starts a *lineage*, keyed by the installed ``cert_path`` and shown by the
certificate's ``name``. The
certificate on disk gives its lifetime; the pipeline's ``renew: {fraction, jitter}``
(default: a third of the lifetime left, jitter 0.05) gives the instant::

    renew_at = not_after - fraction * lifetime - U(0, jitter) * lifetime

(the jitter only ever moves it earlier, and is seeded by the certificate's fingerprint, so a
restart does not reshuffle it). When it is due, a renewal run starts: the **current**
pipeline of that name (``PipelineCatalog.find``), the same inputs (secret ones from the
old run's secrets file), a new run id; the log says ``renewal_started run_id=NEW
renews=OLD``. The cacert steps reuse the stored account (``ca.join``) and skip domains the
CA still counts as verified (``ca.probe``).

A renewal run that fails (or is cancelled) backs off: the n-th failure waits
``min(retry_cap, retry * 2**(n-1))`` (default 1 h, 2 h, 4 h ... capped at 1 day) before the
next attempt. A renewal that succeeds replaces the lineage's run and resets the count.

The schedule lives in ``<state_dir>/renewals.sqlite3`` (table ``renewals``), written only
by the daemon and readable by anyone: :func:`renewals_status` gives what ``certwright
status`` should show. After a crash: a renewal run already started is found again by its
row (``renewal_run``); one started but not yet recorded is at worst started again later
(the row is written in the same loop iteration, right after ``start_run`` commits).
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from certwright.clock import Clock, format_instant, parse_instant
from certwright.engine.model.spec import PipelineSpec
from certwright.engine.run import secrets as secret_store
from certwright.engine.run.naming import new_run_id
from certwright.errors import CertwrightError
from certwright.state.base import Store
from certwright.state.opening import open_reader
from certwright.state.records import CANCELLED, FAILED, SUCCEEDED, RunRecord
from certwright.steps.inventory import renew_instant

log = structlog.get_logger("certwright.daemon.renew")

DB_FILE = "renewals.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS renewals (
  cert_path TEXT PRIMARY KEY, pipeline TEXT NOT NULL, run_id TEXT NOT NULL,
  not_before TEXT, not_after TEXT, renew_at TEXT NOT NULL, next_at TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, renewal_run TEXT,
  last_error TEXT, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (run_id TEXT PRIMARY KEY);
"""
NAME_COLUMN = "ALTER TABLE renewals ADD COLUMN name TEXT"  # the certificate's name, later
SCHEDULED, RENEWING, BACKING_OFF, STALE = "scheduled", "renewing", "backoff", "no_certificate"


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    if "name" not in {row[1] for row in db.execute("PRAGMA table_info(renewals)")}:
        db.execute(NAME_COLUMN)
        # scheduled rows of earlier versions may be ca.sign's copy in a run folder (one
        # certificate twice): learn those again from the runs; renewing and backing-off
        # rows keep their state
        db.execute("DELETE FROM renewals WHERE status = ?", (SCHEDULED,))
        db.execute("DELETE FROM seen")
    return db


def renewals_status(state_dir: Path) -> list[dict[str, Any]]:
    """The renewal schedule, for ``certwright status`` (empty when the daemon never ran).

    Each item: name (the certificate's), cert_path, pipeline, run_id (the run that
    installed it), not_after, renew_at, next_at (the next attempt), attempts (failed ones
    in a row), status (scheduled | renewing | backoff | no_certificate), renewal_run,
    last_error.
    Read-only; safe while the daemon runs.
    """
    path = Path(state_dir) / DB_FILE
    if not path.exists():
        return []
    with closing(open_reader(str(path), sqlite3.connect)) as db:  # writes nothing
        db.row_factory = sqlite3.Row
        columns = {row[1] for row in db.execute("PRAGMA table_info(renewals)")}
        name = "name" if "name" in columns else "NULL AS name"
        rows = db.execute(f"SELECT {name}, cert_path, pipeline, run_id, not_after, renew_at, "
                          "next_at, attempts, status, renewal_run, last_error FROM renewals "
                          "ORDER BY next_at").fetchall()
    return [{**dict(r), "name": r["name"] or Path(r["cert_path"]).parent.name} for r in rows]


def installed_certs(run: RunRecord) -> list[dict[str, Any]]:
    """``install.files``-like outputs of a run: a cert_path with its key_path, fullchain_path
    and fingerprint (not ``ca.sign``'s copy in the run folder, which has no key_path)."""
    return [dict(v) for v in run.vars.values()
            if isinstance(v, dict) and v.get("cert_path") and v.get("fingerprint_sha256")
            and v.get("key_path") and v.get("fullchain_path")]


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt after ``attempts`` failures in a row (>= 1)."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


class Renewer:
    """Keeps the renewal schedule and starts renewal runs when due (main loop only)."""

    def __init__(self, state_dir: Path, store: Store, clock: Clock,
                 find_pipeline: Callable[[str], PipelineSpec],
                 start: Callable[[PipelineSpec, dict[str, Any], str, list[str]], str], *,
                 retry: float = 3600.0, retry_cap: float = 86400.0) -> None:
        self.state_dir = Path(state_dir)
        self.store = store
        self.clock = clock
        self._find = find_pipeline
        self._start = start
        self.retry, self.retry_cap = retry, retry_cap
        self._db = _connect(self.state_dir / DB_FILE)
        self._lock = threading.Lock()
        self._seen = {r[0] for r in self._db.execute("SELECT run_id FROM seen")}

    def close(self) -> None:
        self._db.close()

    def check(self) -> list[str]:
        """Record newly succeeded runs, settle finished renewals, start due ones.

        Returns the ids of renewal runs started. Never raises for one lineage: a problem
        is logged and counted as a failed attempt.
        """
        self._learn(rid for rid, _ in self.store.run_ids([SUCCEEDED]) if rid not in self._seen)
        self._settle()
        return self._start_due()

    # -- schedule -----------------------------------------------------------------------
    def _learn(self, run_ids: Iterable[str]) -> None:
        for rid in run_ids:
            run = self.store.find_run(rid)
            if run is None:
                continue
            for out in installed_certs(run):
                try:
                    self._schedule(run, out)
                except Exception as exc:  # noqa: BLE001 - one bad cert must not stop renewals
                    log.warning("renewal_unschedulable", run_id=rid, cert=out["cert_path"],
                                error=f"{type(exc).__name__}: {exc}")
            self._db.execute("INSERT OR IGNORE INTO seen(run_id) VALUES(?)", (rid,))
            self._seen.add(rid)

    def _schedule(self, run: RunRecord, out: dict[str, Any]) -> None:
        from cryptography import x509
        cert = x509.load_pem_x509_certificate(Path(out["cert_path"]).read_bytes())
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        fraction, jitter = 1 / 3, 0.05
        try:
            spec = self._find(run.pipeline)
            if spec.renew is not None:
                fraction, jitter = spec.renew.fraction, spec.renew.jitter
        except CertwrightError:
            pass
        renew_at = renew_instant(nb, na, out["fingerprint_sha256"], fraction, jitter)
        row = self._db.execute("SELECT run_id, renewal_run FROM renewals WHERE cert_path=?",
                               (out["cert_path"],)).fetchone()
        if row and row[0] != run.id and row[1] != run.id and self._newer(row[0], run):
            return  # an older run succeeded late; the lineage already moved on
        now = format_instant(self.clock.now())
        self._db.execute(
            "INSERT OR REPLACE INTO renewals(cert_path, pipeline, run_id, not_before, "
            "not_after, renew_at, next_at, attempts, status, renewal_run, last_error, updated,"
            " name) VALUES(?,?,?,?,?,?,?,0,?,NULL,NULL,?,?)",
            (out["cert_path"], run.pipeline, run.id, format_instant(nb), format_instant(na),
             format_instant(renew_at), format_instant(renew_at), SCHEDULED, now,
             str(out.get("name") or Path(out["cert_path"]).parent.name)))
        log.info("renewal_scheduled", run_id=run.id, cert=out["cert_path"],
                 not_after=format_instant(na), renew_at=format_instant(renew_at),
                 renewed=bool(row and row[1] == run.id))

    def _newer(self, other_id: str, run: RunRecord) -> bool:
        other = self.store.find_run(other_id)
        return other is not None and other.updated > run.updated

    def _settle(self) -> None:
        rows = self._db.execute("SELECT cert_path, renewal_run, attempts FROM renewals "
                                "WHERE status=?", (RENEWING,)).fetchall()
        for cert_path, rid, attempts in rows:
            run = self.store.find_run(rid) if rid else None
            if run is not None and run.status == SUCCEEDED:
                if rid not in self._seen:
                    self._learn([rid])
                still = self._db.execute("SELECT status FROM renewals WHERE cert_path=?",
                                         (cert_path,)).fetchone()
                if still and still[0] == RENEWING:  # succeeded without installing here
                    self._failed(cert_path, attempts, f"renewal run {rid} succeeded but "
                                 f"installed no certificate at {cert_path}")
            elif run is None or run.status in (FAILED, CANCELLED):
                self._failed(cert_path, attempts, f"renewal run {rid} "
                             f"{run.status if run else 'vanished'}: {run.error if run else ''}")

    def _failed(self, cert_path: str, attempts: int, error: str) -> None:
        n = attempts + 1
        next_at = self.clock.now() + timedelta(seconds=backoff(n, self.retry, self.retry_cap))
        self._db.execute("UPDATE renewals SET status=?, attempts=?, next_at=?, last_error=?, "
                         "updated=? WHERE cert_path=?",
                         (BACKING_OFF, n, format_instant(next_at), error[:500],
                          format_instant(self.clock.now()), cert_path))
        log.warning("renewal_failed", cert=cert_path, attempts=n, error=error[:300],
                    next_attempt=format_instant(next_at))

    def _start_due(self) -> list[str]:
        now = self.clock.now()
        rows = self._db.execute(
            "SELECT cert_path, pipeline, run_id, attempts FROM renewals WHERE status IN (?,?) "
            "AND next_at <= ?", (SCHEDULED, BACKING_OFF, format_instant(now))).fetchall()
        started = []
        for cert_path, pipeline, old_id, attempts in rows:
            try:
                new_id = self._renew(pipeline, old_id)
            except Exception as exc:  # noqa: BLE001 - counted as a failed attempt
                self._failed(cert_path, attempts, f"{type(exc).__name__}: {exc}")
                continue
            self._db.execute("UPDATE renewals SET status=?, renewal_run=?, updated=? "
                             "WHERE cert_path=?", (RENEWING, new_id, format_instant(now),
                                                   cert_path))
            started.append(new_id)
        return started

    def _renew(self, pipeline: str, old_id: str) -> str:
        old = self.store.load_run(old_id)
        spec = self._find(pipeline)
        secrets = secret_store.load(self.store, self.state_dir, old_id)["inputs"]
        given = {k: v for k, v in {**old.inputs, **secrets}.items()
                 if k in spec.inputs and v is not None and v != secret_store.REDACTED}
        from certwright.engine.model.inputs import coerce_inputs
        values = coerce_inputs(spec, given)
        new_id = new_run_id(spec.name)
        self._start(spec, values, new_id, [n for n, i in spec.inputs.items() if i.secret])
        log.info("renewal_started", run_id=new_id, renews=old_id, pipeline=spec.name,
                 version=spec.hash[:12])
        return new_id

    def next_due(self) -> datetime | None:
        """The earliest pending attempt, or None."""
        row = self._db.execute("SELECT MIN(next_at) FROM renewals WHERE status IN (?,?)",
                               (SCHEDULED, BACKING_OFF)).fetchone()
        return parse_instant(row[0]) if row and row[0] else None
