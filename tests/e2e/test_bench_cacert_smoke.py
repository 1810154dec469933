"""``bench/cacert.py`` still runs on a tiny size: the CA, the mail server and the daemon as
processes of their own, three domains end to end, one JSON object with every figure.

Only the shape is checked (exit status, keys, positive figures, each process's CPU
counted); the timings are for people to read, never asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_cacert_bench_prints_every_figure() -> None:
    done = subprocess.run([sys.executable, "bench/cacert.py", "--json", "--domains", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["domains"] == 3
    for key in ("certs_per_s", "raw_crypto_per_s", "ratio_to_raw", "seconds"):
        assert figures[key] > 0, key
    cpu = figures["cpu_s_per_cert"]
    assert set(cpu) == {"ca", "mail", "daemon", "bench", "total"}
    for key in ("ca", "daemon"):  # both did work for every certificate
        assert cpu[key] > 0, key
    assert len(figures["load_before"]) == len(figures["load_after"]) == 3
