"""The acme pipeline for several names and wildcards, against a real Pebble on loopback with
the test DNS server: one order for every name, a wildcard by dns-01, a wildcard by http-01
refused before any order is placed."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.engine.api import run_pipeline
from certwright.steps import acme
from tests.integration.test_acme import Env, _start
from tests.integration.test_acme_pipeline import acme_inputs, need_openssl

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def _dns(env: Env) -> dict[str, Any]:
    return {"challenge": "dns-01", "dns_hook": " ".join(env.dns.hook_argv("add")),
            "dns_cleanup_hook": " ".join(env.dns.hook_argv("del")),
            "dns_resolver": env.dns.address, "propagation_wait": "10s"}


def _verified_sans(env: Env, cert_dir: Path) -> list[str]:
    """``openssl verify`` the installed server.crt against Pebble's issuing root (chain.pem
    untrusted); returns its SAN's DNS names, sorted."""
    root = cert_dir.parent / f"{cert_dir.name}-pebble-root.pem"
    root.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                              for c in env.pebble.issuing_roots()))
    done = subprocess.run([need_openssl(), "verify", "-CAfile", str(root), "-untrusted",
                           str(cert_dir / "chain.pem"), str(cert_dir / "server.crt")],
                          capture_output=True, text=True, check=False)
    assert done.stdout.strip().endswith(": OK"), done.stdout + done.stderr
    leaf = x509.load_pem_x509_certificate((cert_dir / "server.crt").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(sans.get_values_for_type(x509.DNSName))


def test_a_name_and_its_wildcard_by_dns01_in_one_certificate(env: Env) -> None:
    """`domains` with a wildcard, dns-01 through the hooks: one order for both names, one
    certificate whose SAN lists both, which verifies against Pebble's root."""
    cert_dir = env.tmp / "wild"
    inputs = {**acme_inputs(env, "", cert_dir), **_dns(env)}
    del inputs["domain"]
    inputs["domains"] = "wild.acme.test,*.wild.acme.test"
    result = run_pipeline("acme", inputs, env.tmp / "state", timeout=300)
    assert result["state"] == "installed", result["error"]
    assert len(result["vars"]["acme_order"]["authorizations"]) == 2
    assert _verified_sans(env, cert_dir) == ["*.wild.acme.test", "wild.acme.test"]


def test_a_wildcard_by_http01_is_refused_before_any_order(env: Env) -> None:
    """http-01 cannot validate a wildcard: the run fails saying so and what to use instead,
    and Pebble holds no order of the account."""
    inputs = acme_inputs(env, "*.nohttp.acme.test", env.tmp / "nohttp")
    result = run_pipeline("acme", inputs, env.tmp / "state", timeout=120)
    assert result["state"] == "failed"
    error = str(result["error"])
    assert "*.nohttp.acme.test: a wildcard cannot be validated by http-01" in error
    assert "dns-01" in error and "dns_hook" in error
    assert "acme_order" not in result["vars"]
    ctx = env.ctx("acme.order", domains=["x.acme.test"])
    ctx.state_dir = env.tmp / "state"
    assert acme.list_orders(acme.open_session(ctx)) == []


def test_cli_d_names_go_into_one_order(env: Env) -> None:
    """`run acme -d a -d b` as a user types it: one certificate for both names."""
    cert_dir = env.tmp / "cli"
    given = acme_inputs(env, "", cert_dir)
    del given["domain"]
    sets = [a for k, v in given.items() for a in ("--set", f"{k}={v}")]
    done = subprocess.run(
        [sys.executable, "-m", "certwright", "--state-dir", str(env.tmp / "cli-state"), "run",
         "acme", "-d", "one.acme.test", "-d", "two.acme.test", *sets],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _verified_sans(env, cert_dir) == ["one.acme.test", "two.acme.test"]
