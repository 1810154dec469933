"""contrib/grafana-dashboard.json: every query names metrics the exporters really expose.

The names come from the real registries, not a list kept by hand: the daemon's on a
scratch SQLite store holding a waiting run, certificates past the label bound, a daemon's
heartbeat and mail counts, with its engine hook fed one transition, step and finished run;
the CA's on a CA folder made by ``init_ca`` with an audit event, and an HTTP count.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from certwright.ca.metrics import ca_registry
from certwright.ca.setup import CAPaths, init_ca
from certwright.ca.store import CAStore
from certwright.clock import FakeClock, format_instant
from certwright.engine.daemon.metrics import daemon_registry, metric_names
from certwright.state.contract import run
from certwright.state.contract_daemons import daemon
from certwright.state.records import SUCCEEDED, CertificateRecord
from certwright.state.sqlite import SQLiteStore

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana-dashboard.json"
NAME = re.compile(r"\b(?:certwright|process)_[a-zA-Z0-9_]+")


def _exposed(tmp_path: Path) -> set[str]:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "certwright.sqlite")
    try:
        with store.transaction() as tx:
            tx.put_run(run("r1"))
            tx.put_daemon(daemon("host-a:1", heartbeat=format_instant(clock.now())))
            for i in range(3):
                tx.put_certificate(CertificateRecord(
                    name=f"c{i}.test", run_id="r0", not_before="2026-01-01T00:00:00Z",
                    not_after="2027-01-01T00:00:00Z", renew_at="2026-09-01T00:00:00Z"))
        registry, hook = daemon_registry(store, clock, cert_labels=2,
                                         mail_counts=lambda: {"routed": 1})
        done = run("r1", status=SUCCEEDED)
        hook.transitioned(done, "asking", "answered", "next")
        hook.step_started(done, "ask", 1)
        hook.step_finished(done, "ask", "done")
        hook.run_finished(done)
        names = metric_names(registry)
    finally:
        store.close()
    init_ca(tmp_path / "ca", clock=clock)
    ca_store = CAStore(CAPaths(tmp_path / "ca").db, clock=clock)
    try:
        ca_store.record("cert_issued", None, "01")  # an audit event, so that family shows
    finally:
        ca_store.close()
    names |= metric_names(ca_registry(CAPaths(tmp_path / "ca").db, clock,
                                      lambda: {"2xx": 1}))
    return names


def _expressions() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def test_every_expression_names_an_exposed_metric(tmp_path: Path) -> None:
    exposed = _exposed(tmp_path)
    exprs = _expressions()
    assert len(exprs) >= 20
    for title, expr in exprs:
        used = set(NAME.findall(expr))
        assert used, f"panel {title!r}: {expr!r} names no certwright metric"
        assert used <= exposed, f"panel {title!r}: {sorted(used - exposed)} not exposed"


def test_the_dashboard_covers_each_family(tmp_path: Path) -> None:
    """Each metric family the exporters define appears in some panel (a new metric
    without a panel fails here)."""
    used = {n for _, e in _expressions() for n in NAME.findall(e)}
    families = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in used}
    exposed = {n for n in _exposed(tmp_path) if n.startswith("certwright_")
               and not n.endswith("_created")}
    missing = {n for n in exposed
               if re.sub(r"_(bucket|count|sum|total)$", "", n) not in families}
    assert not missing, f"no panel shows {sorted(missing)}"
