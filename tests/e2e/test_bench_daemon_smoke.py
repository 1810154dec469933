"""``bench/daemon.py`` still runs on a tiny size: the daemon (under the memory probe) is
started three times, and one JSON object with every figure comes out.

Only the shape is checked, and that the memory probe answered (collected-and-trimmed
readings of both daemons); the figures are for people to read, never asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_daemon_bench_prints_every_figure() -> None:
    done = subprocess.run([sys.executable, "bench/daemon.py", "--json", "--n", "3",
                           "--parked", "50", "--idle-seconds", "0.5"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["mails"] == 3 and figures["parked_runs"] == 50
    for key in ("rss_empty_bytes", "rss_parked_bytes", "anonymous_empty_bytes",
                "anonymous_parked_bytes", "store_bytes_per_parked_run"):
        assert figures[key] > 0, key
    for key in ("rss_bytes_per_parked_run", "anonymous_bytes_per_parked_run",
                "mail_to_transition_p50_ms", "mail_to_transition_p99_ms", "mail_to_taken_p50_ms",
                "mail_to_taken_p99_ms", "ca_verify_p50_ms", "ca_verify_p99_ms", "idle_cpu_percent",
                "idle_cpu_percent_at_50"):
        assert isinstance(figures[key], (int, float)), key
    assert len(figures["load_before"]) == len(figures["load_after"]) == 3
