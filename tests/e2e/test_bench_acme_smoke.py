"""``bench/acme_vs_peers.py`` still runs: one certificate per client and mode against a
real Pebble, every client that is installed here, one JSON object with every figure.

Only the shape is checked (exit status, keys, positive figures); the timings are for people
to read, never asserted.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pebble import find_pebble

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PEERS = {"certbot": "certbot", "acme-tiny": "acme-tiny", "lego": "lego", "uacme": "uacme"}


def test_acme_vs_peers_prints_every_figure() -> None:
    if find_pebble() is None:
        pytest.skip("pebble is not installed (Debian package 'pebble')")
    peers = [name for name, binary in PEERS.items() if shutil.which(binary)]
    chosen = [*peers, "certwright-process", "certwright-engine"]
    args = [arg for name in chosen for arg in ("--only", name)]
    done = subprocess.run([sys.executable, "bench/acme_vs_peers.py", "--json", "--n", "1",
                           "--parallel", "2", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    for name in chosen:
        for mode in ("seq", "conc"):
            key = f"{name.replace('-', '_')}_{mode}"
            assert figures[f"{key}_s_per_cert"] > 0
            assert figures[f"{key}_requests_per_cert"] >= 5  # order, authz, chall, finalize, cert
            assert f"{key}_cpu_s_per_cert" in figures
            assert f"{key}_pebble_cpu_s_per_cert" in figures
    expected = {"speedup_process_seq", "speedup_process_conc", "speedup_engine_seq",
                "speedup_engine_conc", "cpu_ratio_to_lowest_peer"} if peers else set()
    assert expected <= figures.keys()
    assert len(figures["load_before"]) == 3
