"""The acme pipeline through the CLI, against a real Pebble with real http-01 and dns-01
validation: issuance, a crash between order and finalize, a failing challenge."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from tests.integration.test_acme import Env, _start

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def _cli(state: Path, *args: str, extra_env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(state), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _run_args(env: Env, domain: str, run_id: str, **inputs: str) -> list[str]:
    values = {"domain": domain, "directory": env.pebble.directory,
              "ca_bundle": str(env.pebble.ca_bundle), "contact": "admin@acme.test",
              "http_address": env.http_address, "cert_dir": str(env.tmp / "certs" / run_id),
              **inputs}
    args = ["run", "acme", "--run-id", run_id]
    for k, v in values.items():
        args += ["--set", f"{k}={v}"]
    return args


def _history(state: Path, run_id: str) -> list[dict[str, Any]]:
    return json.loads(_cli(state, "history", run_id, "--json").stdout)


def _outputs(history: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [e["data"]["outputs"] for e in history
            if e["kind"] == "step_done" and e["data"]["step"] == step]


def _verify(env: Env, cert_dir: Path) -> None:
    root = env.tmp / "pebble-root.pem"
    root.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                              for c in env.pebble.issuing_roots()))
    done = subprocess.run(["openssl", "verify", "-CAfile", str(root), "-untrusted",
                           str(cert_dir / "chain.pem"), str(cert_dir / "server.crt")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_http01_run_installs_a_certificate_that_chains_to_pebbles_root(env: Env):
    state = env.tmp / "state"
    (env.tmp / "certs").mkdir()
    done = _cli(state, *_run_args(env, "www.acme.test", "h1"))
    assert done.returncode == 0, done.stderr[-3000:]
    _verify(env, env.tmp / "certs" / "h1")
    moves = [(e["data"]["from"], e["data"]["to"]) for e in _history(state, "h1")
             if e["kind"] == "entered"]
    assert moves == [(None, "new"), ("new", "registered"), ("registered", "probed"),
                     ("probed", "verified"), ("verified", "signed"), ("signed", "installed")]


def test_dns01_run_through_the_hook_script(env: Env):
    state = env.tmp / "state"
    (env.tmp / "certs").mkdir()
    hook = " ".join(env.dns.hook_argv("add"))
    cleanup = " ".join(env.dns.hook_argv("remove"))
    done = _cli(state, *_run_args(env, "dns.acme.test", "d1", challenge="dns-01",
                                  dns_hook=hook, dns_cleanup_hook=cleanup,
                                  dns_resolver=env.dns.address, propagation_wait="10s"))
    assert done.returncode == 0, done.stderr[-3000:]
    _verify(env, env.tmp / "certs" / "d1")


def test_sigkill_between_order_and_finalize_resumes_the_same_order(env: Env):
    """Kill the run right after one of the commits between the order and finalize; the
    resumed run finishes with the order it had (never a second one)."""
    (env.tmp / "certs").mkdir()
    for commit in range(6, 10):
        state = env.tmp / f"state{commit}"
        run_id = f"k{commit}"
        killed = _cli(state, *_run_args(env, "resume.acme.test", run_id),
                      extra_env={"CERTWRIGHT_CRASH_AFTER_COMMITS": str(commit)})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        before = _history(state, run_id)
        if _outputs(before, "acme_order") and not _outputs(before, "acme_finalize"):
            break
    else:
        pytest.fail("no commit between the order and finalize was found")
    order_url = _outputs(before, "acme_order")[0]["order_url"]
    resumed = _cli(state, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _history(state, run_id)
    assert [o["order_url"] for o in _outputs(after, "acme_order")] == [order_url]
    assert _outputs(after, "acme_finalize")[0]["order_url"] == order_url
    assert any(e["kind"] == "step_started" and e["data"]["recovering"] for e in after)
    _verify(env, env.tmp / "certs" / run_id)


def test_a_failing_challenge_fails_the_run_with_the_cas_problem(env: Env):
    state = env.tmp / "state"
    (env.tmp / "certs").mkdir()
    hook = "true {name} {value}"  # never publishes the TXT record
    done = _cli(state, *_run_args(env, "nodns.acme.test", "f1", challenge="dns-01",
                                  dns_hook=hook, propagation_wait="1s"))
    assert done.returncode == 1
    status = json.loads(_cli(state, "status", "f1", "--json").stdout)["runs"][0]
    assert status["state"] == "failed"
    assert "nodns.acme.test" in status["error"]
    assert "urn:ietf:params:acme:error" in status["error"]


def test_the_daemon_serves_an_acme_request_and_renews_it_a_third_before_expiry(env: Env):
    """An ACME run dropped into the daemon's inbox installs; with the clock moved to a third
    of the certificate's lifetime before it expires, the daemon renews it (same pipeline,
    same inputs, a new order at Pebble)."""
    from datetime import timedelta

    from cryptography import x509

    from engine.clock import format_instant
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
