"""``bench/cluster.py`` still runs on a tiny size: a durable PostgreSQL cluster of its own,
daemons as processes of their own driving a few runs of the 5-state pipeline and a few
probe mails, a failover of a few runs, one JSON object with every figure; so does
``bench/cluster_wake.py`` (runs made elsewhere, started by daemons woken by notices).

Only the shape is checked (exit status, keys, positive figures, every run's transitions
counted); the timings are for people to read, never asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import _bindir

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_cluster_bench_prints_every_figure() -> None:
    if _bindir() is None:
        pytest.fail("PostgreSQL is not installed (scripts/system-deps.sh installs it)")
    done = subprocess.run([sys.executable, "bench/cluster.py", "--json", "--runs", "20",
                           "--daemons", "1", "--mails", "5", "--failover-runs", "10",
                           "--lease", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["runs"] == 20
    assert figures["daemons"] == [1]
    assert figures["transitions_1"] == 20 * 4  # s2 to s5 of every run, by the daemon
    assert figures["mails"] == 5
    assert figures["failover_runs"] == 10 and figures["lease_s"] == 2
    assert figures["failover_s"] > 0
    assert figures["mail_to_transition_p99_ms"] >= figures["mail_to_transition_p50_ms"]
    for key in ("transitions_per_s_1", "pg_raw_commits_per_s", "ratio_to_raw_1",
                "pg_commits_per_transition_1", "pg_rows_per_transition_1",
                "pg_cpu_ms_per_transition_1", "daemon_cpu_ms_per_transition_1",
                "mail_to_transition_p50_ms", "mail_to_transition_p99_ms"):
        assert figures[key] > 0, key
    segments = figures["mail_segments_ms"]
    assert list(segments) == ["mail_taken", "verify_started", "verify_done", "entered"]
    # each mark comes after the one before it, and the state entered is the figure itself
    assert 0 < segments["mail_taken"]["p50"] <= segments["verify_started"]["p50"] \
        <= segments["verify_done"]["p50"] <= segments["entered"]["p50"]
    assert segments["entered"]["p99"] == figures["mail_to_transition_p99_ms"]
    slowest = figures["mail_to_transition_slowest"]
    assert sorted(i for i, _ in slowest) == list(range(5))  # all five, by delivery order
    assert abs(slowest[0][1] - figures["mail_to_transition_max_ms"]) <= 0.1
    assert figures["scaling_3_over_1"] is None  # three daemons were not asked for
    assert len(figures["load_average"]) == 3


def test_wake_bench_prints_its_figures() -> None:
    """``bench/cluster_wake.py`` on a few runs: every run was started by a daemon (else it
    exits non-zero) and its figures are there."""
    if _bindir() is None:
        pytest.fail("PostgreSQL is not installed (scripts/system-deps.sh installs it)")
    done = subprocess.run([sys.executable, "bench/cluster_wake.py", "--json", "--runs", "5",
                           "--gap", "0.05"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["runs"] == 5 and figures["fallback_poll_s"] == 30.0
    assert 0 < figures["run_to_step_p50_ms"] <= figures["run_to_step_p99_ms"]
    assert len(figures["load_average"]) == 3
