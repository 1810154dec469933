"""The daemon serving acme runs against a real Pebble: an inbox request, then its renewal.
(Issuance, crashes and failures through the CLI are in test_acme_cli.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_acme import Env, _start

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def _cli(state: Path, *args: str, extra_env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(state), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "certwright", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _history(state: Path, run_id: str) -> list[dict[str, Any]]:
    return json.loads(_cli(state, "history", run_id, "--json").stdout)


def _outputs(history: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [e["data"]["outputs"] for e in history
            if e["kind"] == "step_done" and e["data"]["step"] == step]


def test_the_daemon_serves_an_acme_request_and_renews_it_a_third_before_expiry(env: Env):
    """An ACME run dropped into the daemon's inbox installs; with the clock moved to a third
    of the certificate's lifetime before it expires, the daemon renews it (same pipeline,
    same inputs, a new order at Pebble)."""
    from datetime import timedelta

    from cryptography import x509

    from certwright.clock import format_instant
    from tests.fixtures.daemon.harness import drop_request, env_for, spawn, statuses, wait_for

    state, inbox = env.tmp / "state", env.tmp / "inbox"
    inbox.mkdir()
    (env.tmp / "certs").mkdir()
    config = env.tmp / "daemon.yaml"
    config.write_text(f"inbox: {inbox}\nrenew_check: 1s\n")

    def daemon(now=None, n=0):
        extra = {"CERTWRIGHT_NOW": format_instant(now)} if now else None
        proc = spawn(["--state-dir", str(state), "--log-json", "daemon", "--config",
                      str(config)], env_for(state, extra), env.tmp / f"daemon{n}.log")
        wait_for(lambda: "daemon_ready" in proc.text() or proc.popen.poll() is not None, 60,
                 "the daemon to be ready")
        assert proc.popen.poll() is None, proc.text()[-3000:]
        return proc

    inputs = {"domain": "renew.acme.test", "directory": env.pebble.directory,
              "ca_bundle": str(env.pebble.ca_bundle), "contact": "admin@acme.test",
              "http_address": env.http_address, "cert_dir": str(env.tmp / "certs" / "renew")}
    first = daemon()
    try:
        drop_request(inbox, "renew.json", "acme", inputs, run_id="orig")
        wait_for(lambda: statuses(state).get("orig") == ("installed", "succeeded"), 120,
                 "the ACME run to install")
    finally:
        assert first.stop() == 0
    cert = x509.load_pem_x509_certificate((env.tmp / "certs" / "renew" / "server.crt")
                                          .read_bytes())
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    later = cert.not_valid_after_utc - life / 3 + timedelta(hours=1)
    second = daemon(now=later, n=1)
    try:
        started = wait_for(lambda: [e for e in second.events()
                                    if e.get("event") == "renewal_started"], 60,
                           "the renewal to start")
        assert started[0]["renews"] == "orig"
        new_id = started[0]["run_id"]
        wait_for(lambda: statuses(state).get(new_id) == ("installed", "succeeded"), 120,
                 "the renewal to install")
    finally:
        assert second.stop() == 0
    renewed = x509.load_pem_x509_certificate((env.tmp / "certs" / "renew" / "server.crt")
                                             .read_bytes())
    assert renewed.serial_number != cert.serial_number
    orders = [_outputs(_history(state, rid), "acme_order")[0]["order_url"]
              for rid in ("orig", new_id)]
    assert orders[0] != orders[1]
