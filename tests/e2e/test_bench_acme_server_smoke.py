"""``bench/acme_server.py`` still runs on a tiny N: two certificates from Pebble and two
from the built-in CA as processes of their own (``ca serve``, ``mail serve``), one JSON
object with every figure.

Only the shape is checked (exit status, keys, positive figures; the bench itself fails
unless the CA's store holds every certificate and its outbox sent every issuance mail);
the figures are for people to read, never asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pebble import find_pebble

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_acme_server_bench_prints_every_figure() -> None:
    if find_pebble() is None:
        pytest.skip("pebble is not installed (Debian package 'pebble')")
    done = subprocess.run([sys.executable, "bench/acme_server.py", "--json", "--n", "2",
                           "--parallel", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["n"] == 2
    for key in ("pebble_cpu_s_per_cert", "pebble_certs_per_s", "certwright_ca_cpu_s_per_cert",
                "certwright_ca_certs_per_s", "cpu_ratio_to_pebble"):
        assert figures[key] > 0, key
    assert figures["certwright_mail_cpu_s_per_cert"] >= 0
    assert len(figures["load_before"]) == len(figures["load_after"]) == 3
