"""Mail in the daemon's ``/metrics``: a real Maildir and SQLite store, the daemon in a thread
of this process with its metrics listener on a free loopback port; a hostile message is
counted as quarantined, a probe taken by its run as routed, and the wait and the
transition it caused show."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import structlog
from prometheus_client.parser import text_string_to_metric_families

from certwright.engine.daemon.config import DaemonConfig
from certwright.mail.maildir import Maildir
from tests.fixtures.daemon.harness import wait_for
from tests.integration.test_daemon_mail import TO, Running, aside, park, run_state
from tests.support.mail import CA_BASE, PROBE_PATH, probe_mail, truncated_mime


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_mail_routed_and_quarantined_are_counted(tmp_path: Path) -> None:
    state, md = tmp_path / "state", Maildir(tmp_path / "Maildir")
    md.ensure()
    park(state, md.path, TO, "r1")
    cfg = DaemonConfig(maildirs=(md.path,), metrics_listen=("127.0.0.1", 0))
    with structlog.testing.capture_logs():
        running = Running(state, cfg)
        try:
            url = running.daemon.metrics_url
            assert url is not None
            before = _scrape(url)
            assert before[("certwright_waits", (("kind", "mail"),))] == 1
            assert before[("certwright_mail_routed_total", ())] == 0
            bad = md.deliver(truncated_mime(TO))
            wait_for((aside(md) / "new" / bad).exists, 10, "quarantine")
            md.deliver(probe_mail(to=TO, link=f"{CA_BASE}{PROBE_PATH}?token=t0k3n"))
            wait_for(lambda: run_state(state, "r1") == "verified", 10, "the run to take it")
            after = _scrape(url)
        finally:
            running.stop()
    assert after[("certwright_mail_quarantined_total", ())] == 1
    assert after[("certwright_mail_total", (("outcome", "hostile"),))] == 1
    assert after[("certwright_mail_routed_total", ())] == 1
    assert after[("certwright_waits", (("kind", "mail"),))] == 0
    assert after[("certwright_transitions_total", (
        ("from_state", "probed"), ("pipeline", "waitmail"), ("to_state", "verified")))] == 1
    assert after[("certwright_runs", (
        ("pipeline", "waitmail"), ("state", "verified"), ("status", "succeeded")))] == 1
