"""The CA's ``/metrics``: issuance, probes, the outbox and HTTP responses by status class,
read from the CA's store at scrape time, over loopback HTTP, parsed with prometheus_client's
parser; and ``ca serve --metrics-listen`` as a user starts it."""
from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from certwright.ca.metrics import serve_ca_metrics
from tests.fixtures.daemon.harness import env_for, free_port, spawn, wait_for
from tests.integration.test_ca_sign import sign
from tests.support.ca import (
    active_account,
    ca_server,
    fake_clock,
    http,
    make_csr,
    smtp_sink,
    verified_domain,
)

__all__ = ["ca_server", "fake_clock", "http", "smtp_sink"]  # fixtures, used by name


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_an_issuance_is_counted(ca_server, http, smtp_sink):
    """After one account, one probe and one certificate the CA's metrics say so, and the
    HTTP responses are counted by class (a 404 among them)."""
    metrics = serve_ca_metrics(ca_server, "127.0.0.1", 0)
    try:
        before = _scrape(metrics.url)
        assert before[("certwright_ca_certificates_issued_total", ())] == 0
        acct = active_account(http, smtp_sink)
        verified_domain(http, smtp_sink, acct, "shop.test")
        assert sign(http, acct, make_csr(["shop.test"])[0], "k1").status_code == 201
        assert http.get("/api/v1/nothing-here").status_code == 404
        after = _scrape(metrics.url)
    finally:
        metrics.stop()
    assert after[("certwright_ca_certificates_issued_total", ())] == 1
    assert after[("certwright_ca_certificates_valid", ())] == 1
    assert after[("certwright_ca_probes_total", ())] == 1
    assert after[("certwright_ca_events_total", (("event", "cert_issued"),))] == 1
    assert after[("certwright_ca_events_total", (("event", "probe_sent"),))] == 1
    # the account's confirmation, the probe and the issuance notice, through the outbox
    assert after[("certwright_ca_mail_total", (("status", "sent"),))] == 3
    assert after[("certwright_ca_mail_retries_total", ())] == 0
    assert after[("certwright_ca_http_responses_total", (("class", "2xx"),))] >= 5
    assert after[("certwright_ca_http_responses_total", (("class", "4xx"),))] == 1


def test_ca_serve_metrics_listen(tmp_path: Path):
    """`ca serve --metrics-listen` serves the CA's metrics on their own port; the CA's
    public address serves no /metrics."""
    ca_port, metrics_port = free_port(), free_port()
    env = env_for(tmp_path / "state")
    proc = spawn(["ca", "serve", "--dir", str(tmp_path / "ca"), "--listen",
                  f"127.0.0.1:{ca_port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"],
                 env, tmp_path / "ca.log")
    try:
        wait_for(lambda: "CA listening" in proc.text() or proc.popen.poll() is not None, 60,
                 "the CA")
        assert proc.popen.poll() is None, proc.text()
        assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in proc.text()
        got = _scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert got[("certwright_ca_certificates_issued_total", ())] == 0
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ca_port}/metrics", timeout=10)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 404
    finally:
        assert proc.stop(signal.SIGINT) == 0
