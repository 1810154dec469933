"""The daemon's ``/metrics`` and heartbeat as a user meets them: a real daemon on a scratch
state with parked runs and certificates in the inventory, scraped over loopback HTTP and
parsed with prometheus_client's own parser; ``status`` showing the daemon, and stale once it
is stopped."""
from __future__ import annotations

import os
import signal
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certwright.clock import format_instant, parse_instant
from certwright.state.records import CertificateRecord
from certwright.state.sqlite import SQLiteStore
from tests.fixtures.daemon.harness import cli, env_for, free_port, spawn, wait_for

BOUND = 5


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name -> [(labels, value)] of one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _value(samples, name: str, **labels: str) -> float | None:
    for got, value in samples.get(name, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    return None


def _certificates(state: Path, now: datetime, count: int) -> list[CertificateRecord]:
    """``count`` certificates in the inventory, the i-th expiring i+1 days from ``now``."""
    store = SQLiteStore(state / "certwright.sqlite")
    recs = []
    try:
        with store.transaction() as tx:
            for i in range(count):
                rec = CertificateRecord(
                    name=f"c{i}.test", run_id=f"made-{i}", pipeline="cacert",
                    names=[f"c{i}.test"], serial=f"{i:04x}",
                    not_before=format_instant(now - timedelta(days=30)),
                    not_after=format_instant(now + timedelta(days=count - i)),
                    renew_at=format_instant(now + timedelta(days=count - i, hours=-12)))
                tx.put_certificate(rec)
                recs.append(rec)
    finally:
        store.close()
    return recs


@pytest.fixture
def served(tmp_path: Path):
    """A daemon with two parked hello runs and BOUND + 2 certificates, metrics on."""
    state = tmp_path / "state"
    env = env_for(state)
    for rid in ("hello-1", "hello-2"):
        r = cli(state, "run", "hello", "--no-wait", "--run-id", rid, env=env)
        assert r.returncode == 3, r.stderr
    now = datetime.now(UTC)
    certs = _certificates(state, now, BOUND + 2)
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"daemon:\n  metrics_certificates: {BOUND}\n  heartbeat: 1s\n")
    daemon = spawn(["--state-dir", str(state), "--config", str(config), "--log-json",
                    "daemon", "--metrics-listen", f"127.0.0.1:{port}"], env,
                   tmp_path / "daemon.log")
    try:
        wait_for(lambda: "daemon_ready" in daemon.text() or daemon.popen.poll() is not None,
                 60, "the daemon to be ready")
        assert daemon.popen.poll() is None, daemon.text()[-3000:]
        yield state, port, daemon, certs
    finally:
        if daemon.popen.poll() is None:
            os.kill(daemon.popen.pid, signal.SIGCONT)
        daemon.stop()


def test_metrics_agree_with_the_store(served):
    """Runs by pipeline, state and status, timers and the seconds each certificate has
    left (from its not_after) are what the store says; the bound holds."""
    state, port, _, certs = served
    samples = _scrape(port)
    store = SQLiteStore(state / "certwright.sqlite", readonly=True)
    try:
        runs = store.list_runs()
        timers = store.timers()
    finally:
        store.close()
    assert {r.status for r in runs} == {"waiting"}
    assert _value(samples, "certwright_runs", pipeline="hello", state="waiting",
                  status="waiting") == len(runs) == 2
    assert _value(samples, "certwright_waits", kind="file") == 2
    assert _value(samples, "certwright_timers", kind="timeout") == sum(
        t.kind == "timeout" for t in timers) == 2
    assert _value(samples, "certwright_timers_due", kind="timeout") == 0
    # the label bound: the BOUND soonest to expire, the rest counted
    labelled = {labels["name"]: v for labels, v in
                samples["certwright_certificate_seconds_left"]}
    soonest = sorted(certs, key=lambda c: c.not_after)[:BOUND]
    assert set(labelled) == {c.name for c in soonest}
    for c in soonest:
        left = (parse_instant(c.not_after) - datetime.now(UTC)).total_seconds()
        assert abs(labelled[c.name] - left) < 60
    assert _value(samples, "certwright_certificates_unlabelled") == 2
    assert _value(samples, "certwright_certificates", state="valid") == len(certs)
    assert _value(samples, "certwright_renewals", status="scheduled") == len(certs)
    assert _value(samples, "certwright_leases_held") == 0
    assert _value(samples, "certwright_leases_taken_over_total") == 0


def test_a_transition_is_counted_once_the_run_moves(served):
    """Touching the file a run waits for moves it; the counter and the step histogram say
    so, and the run gauge follows the store."""
    state, port, _, _ = served
    before = _scrape(port)
    assert _value(before, "certwright_transitions_total", pipeline="hello",
                  from_state="waiting", to_state="approved") is None
    (state / "runs" / "hello-1" / "approved").touch()
    wait_for(lambda: _value(_scrape(port), "certwright_runs", pipeline="hello",
                            state="finished", status="succeeded") == 1, 30,
             "hello-1 to finish")
    after = _scrape(port)
    assert _value(after, "certwright_transitions_total", pipeline="hello",
                  from_state="waiting", to_state="approved") == 1
    assert _value(after, "certwright_transitions_total", pipeline="hello",
                  from_state="approved", to_state="finished") == 1
    assert _value(after, "certwright_runs_finished_total", pipeline="hello",
                  status="succeeded") == 1
    assert _value(after, "certwright_step_duration_seconds_count", pipeline="hello",
                  step="done", outcome="done") == 1
    assert _value(after, "certwright_runs", pipeline="hello", state="waiting",
                  status="waiting") == 1


def test_a_metrics_address_in_use_is_refused(tmp_path: Path):
    """--metrics-listen on a port that is taken: exit 2, naming the port and the option."""
    import socket
    state = tmp_path / "state"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli(state, "daemon", "--metrics-listen", f"127.0.0.1:{port}", timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"port {port}" in r.stderr and "--metrics-listen" in r.stderr
    assert "Traceback" not in r.stderr
