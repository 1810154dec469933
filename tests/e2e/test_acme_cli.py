"""``certwright run acme`` as a user runs it (a subprocess per command) against a real
Pebble with real http-01 and dns-01 validation: issuance with a verified chain, a SIGKILL
between order and finalize then ``resume``, failing challenges, rejected nonces."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certwright.clock import SystemClock
from certwright.engine.plugins.step import StepContext
from certwright.steps import acme
from tests.integration.test_acme import Env, _start
from tests.integration.test_acme_pipeline import verify_installed
from tests.support.pebble import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONTACT = "admin@acme.test"
STATES = [(None, "new"), ("new", "registered"), ("registered", "probed"),
          ("probed", "verified"), ("verified", "signed"), ("signed", "installed")]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


@pytest.fixture
def nonce_env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path, nonce_reject=50)


def cli(state: Path, *args: str, extra_env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CERTWRIGHT_CRASH_AFTER_COMMITS"}
    env.update({"CERTWRIGHT_STATE_DIR": str(state), **(extra_env or {})})
    return subprocess.run([sys.executable, "-m", "certwright", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def run_args(env: Env, domain: str, run_id: str, **inputs: str) -> list[str]:
    """``run acme --run-id RUN --set ...`` for ``domain``, installing into certs/RUN."""
    values = {"domain": domain, "directory": env.pebble.directory,
              "ca_bundle": str(env.pebble.ca_bundle), "contact": CONTACT,
              "http_address": env.http_address, "cert_dir": str(cert_dir(env, run_id)),
              **inputs}
    args = ["run", "acme", "--run-id", run_id]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


def cert_dir(env: Env, run_id: str) -> Path:
    (env.tmp / "certs").mkdir(exist_ok=True)
    return env.tmp / "certs" / run_id


def history(state: Path, run_id: str) -> list[dict[str, Any]]:
    done = cli(state, "history", run_id, "--json")
    assert done.returncode == 0, done.stderr
    events: list[dict[str, Any]] = json.loads(done.stdout)
    return events


def outputs(events: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    """The outputs of every ``step_done`` of ``step`` (a step id), in journal order."""
    return [e["data"]["outputs"] for e in events
            if e["kind"] == "step_done" and e["data"]["step"] == step]


def moves(events: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(e["data"]["from"], e["data"]["to"]) for e in events if e["kind"] == "entered"]


def status(state: Path, run_id: str) -> dict[str, Any]:
    done = cli(state, "status", run_id, "--json")
    assert done.returncode == 0, done.stderr
    run: dict[str, Any] = json.loads(done.stdout)["runs"][0]
    return run


def orders_at_pebble(env: Env, state: Path) -> list[str]:
    """The order URLs Pebble lists for the account stored in ``state``."""
    ctx = StepContext(run_id="probe", pipeline="acme", state="-", step_id="probe",
                      idempotency_key="probe", attempt=1,
                      params={"directory": env.pebble.directory, "contact": CONTACT,
                              "ca_bundle": str(env.pebble.ca_bundle)},
                      run_dir=env.tmp / "probe", state_dir=state, clock=SystemClock())
    return acme.list_orders(acme.open_session(ctx))


def test_http01_run_installs_a_certificate_that_chains_to_pebbles_root(env: Env) -> None:
    state = env.tmp / "state"
    done = cli(state, *run_args(env, "www.acme.test", "h1"))
    assert done.returncode == 0, done.stderr[-3000:]
    leaf = verify_installed(env, cert_dir(env, "h1"), "www.acme.test")
    events = history(state, "h1")
    assert moves(events) == STATES
    assert outputs(events, "acme_download")[0]["serial"] == format(leaf.serial_number, "x")
    assert status(state, "h1")["state"] == "installed"
    # the order's expiry is the deadline of probed and verified
    expires = outputs(events, "acme_order")[0]["expires"]
    deadlines = {e["data"]["to"]: e["data"]["deadline"] for e in events if e["kind"] == "entered"}
    assert expires and deadlines["probed"] == deadlines["verified"] == expires
    assert deadlines["registered"] is None


def test_dns01_run_through_the_hook_script(env: Env) -> None:
    state = env.tmp / "state"
    args = run_args(env, "dns.acme.test", "d1", challenge="dns-01",
                    dns_hook=" ".join(env.dns.hook_argv("add")),
                    dns_cleanup_hook=" ".join(env.dns.hook_argv("del")),
                    dns_resolver=env.dns.address, propagation_wait="10s")
    done = cli(state, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    verify_installed(env, cert_dir(env, "d1"), "dns.acme.test")
    assert ("_acme-challenge.dns.acme.test.", "TXT") in env.dns.resolver.queries
    assert json.loads(env.dns.records.read_text()) == {"_acme-challenge.dns.acme.test.": []}


def test_sigkill_between_order_and_finalize_resumes_with_the_same_order(env: Env) -> None:
    """Kill the CLI right after each commit in turn until the journal shows the order
    opened but not finalized; ``resume`` then finishes with that very order, and Pebble
    holds that one order for the account."""
    for commit in range(1, 40):
        state, run_id = env.tmp / f"state{commit}", f"k{commit}"
        killed = cli(state, *run_args(env, "resume.acme.test", run_id),
                     extra_env={"CERTWRIGHT_CRASH_AFTER_COMMITS": str(commit)})
        assert killed.returncode == -signal.SIGKILL, (commit, killed.stderr[-2000:])
        before = history(state, run_id)
        if outputs(before, "acme_order") and not outputs(before, "acme_finalize"):
            break
        assert not outputs(before, "acme_finalize"), "went past finalize without a stop"
    else:
        pytest.fail("no commit between the order and finalize was found")
    order_url = outputs(before, "acme_order")[0]["order_url"]
    assert status(state, run_id)["status"] not in ("succeeded", "failed")

    resumed = cli(state, "resume", run_id)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = history(state, run_id)
    assert [o["order_url"] for o in outputs(after, "acme_order")] == [order_url]
    assert [o["order_url"] for o in outputs(after, "acme_finalize")] == [order_url]
    assert moves(after) == STATES
    verify_installed(env, cert_dir(env, run_id), "resume.acme.test")
    assert orders_at_pebble(env, state) == [order_url]


@pytest.mark.parametrize("case", ["http-01 wrong port", "dns-01 missing TXT"])
def test_a_failing_challenge_fails_the_run_with_the_cas_problem(env: Env, case: str) -> None:
    """Pebble finds nothing (no responder on its http port / no TXT record): the run ends
    in `failed`, and its error carries the CA's problem and the identifier."""
    state = env.tmp / "state"
    if case.startswith("http-01"):
        domain = "noanswer.acme.test"
        args = run_args(env, domain, "f1", http_address=f"127.0.0.1:{free_port()}")
    else:
        domain = "notxt.acme.test"
        args = run_args(env, domain, "f1", challenge="dns-01", dns_hook="true {name} {value}",
                        propagation_wait="1s")
    done = cli(state, *args)
    assert done.returncode == 1, done.stderr[-3000:]
    run = status(state, "f1")
    assert run["state"] == "failed" and run["status"] == "failed"
    assert f"identifier {domain}" in run["error"]
    assert "urn:ietf:params:acme:error:" in run["error"] and "detail=" in run["error"]
    assert not (cert_dir(env, "f1") / "server.crt").exists()


def test_a_whole_run_survives_half_the_nonces_rejected(nonce_env: Env) -> None:
    """PEBBLE_WFE_NONCEREJECT=50: every signed request may be refused with badNonce; the
    run still goes from new to installed."""
    env, state = nonce_env, nonce_env.tmp / "state"
    assert "reject 50% of good nonces" in env.pebble.output()
    done = cli(state, *run_args(env, "nonce.acme.test", "n1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert moves(history(state, "n1")) == STATES
    verify_installed(env, cert_dir(env, "n1"), "nonce.acme.test")
