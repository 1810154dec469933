"""``pipelines/acme.yaml`` through the engine (``engine.api``) against a real Pebble on
loopback: many runs in one engine sharing one account, and installing into a real Apache
with config test, reload and TLS check (and the check's rollback when the server does not
pick the new certificate up)."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.engine.api import run_pipeline, run_pipelines
from tests.integration.test_acme import Env, _start
from tests.support.apache import ApacheServer, apache, pem_fingerprint  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def acme_inputs(env: Env, domain: str, cert_dir: Path, **extra: Any) -> dict[str, Any]:
    """Inputs of one acme run against the Pebble of ``env``, http-01 on its http port."""
    return {"domain": domain, "directory": env.pebble.directory,
            "ca_bundle": str(env.pebble.ca_bundle), "contact": "admin@acme.test",
            "http_address": env.http_address, "cert_dir": str(cert_dir), **extra}


def need_openssl() -> str:
    """The openssl binary; fails under CI when it is missing, skips otherwise."""
    found = shutil.which("openssl")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is not installed (Debian package 'openssl') and CI is set")
        pytest.skip("openssl is not installed")
    return found


def verify_installed(env: Env, cert_dir: Path, domain: str) -> x509.Certificate:
    """``openssl verify`` the installed server.crt against Pebble's issuing root, with the
    installed chain.pem as untrusted intermediates; returns the leaf."""
    openssl = need_openssl()
    root = cert_dir.parent / f"{cert_dir.name}-pebble-root.pem"
    root.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                              for c in env.pebble.issuing_roots()))
    done = subprocess.run([openssl, "verify", "-CAfile", str(root), "-untrusted",
                           str(cert_dir / "chain.pem"), str(cert_dir / "server.crt")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    leaf = x509.load_pem_x509_certificate((cert_dir / "server.crt").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [domain]
    return leaf


def test_runs_in_one_engine_share_one_account_and_all_install(env: Env) -> None:
    """Six runs started together in one engine register one account (the stored key),
    open one order each and install six certificates that chain to Pebble's root."""
    state = env.tmp / "state"
    domains = [f"many{i}.acme.test" for i in range(6)]
    (env.tmp / "certs").mkdir()
    results = run_pipelines("acme", [acme_inputs(env, d, env.tmp / "certs" / d)
                                     for d in domains], state, workers=6, timeout=300)
    assert [r["state"] for r in results] == ["installed"] * 6, [r["error"] for r in results]
    accounts = {r["vars"]["acme_account"]["account_url"] for r in results}
    assert len(accounts) == 1
    assert sorted(r["vars"]["acme_account"]["reused"] for r in results) == [False] + [True] * 5
    assert len(list((state / "acme" / "accounts").glob("*/account.key"))) == 1
    orders = {r["vars"]["acme_order"]["order_url"] for r in results}
    assert len(orders) == 6
    for d in domains:
        verify_installed(env, env.tmp / "certs" / d, d)


def _apache_inputs(env: Env, apache: ApacheServer, **extra: Any) -> dict[str, Any]:
    server = {"reload_test": shlex.join(apache.test_argv),
              "reload": shlex.join(apache.reload_argv), "check": apache.address}
    return acme_inputs(env, "www.acme.test", apache.cert_dir, **{**server, **extra})


def test_installs_into_apache_with_config_test_reload_and_check(
        env: Env, apache: ApacheServer) -> None:
    """The run writes Apache's key and certificate, tests the config, reloads Apache, and
    its TLS check sees the new certificate; Apache serves it afterwards."""
    before = apache.fingerprint()
    result = run_pipeline("acme", _apache_inputs(env, apache), env.tmp / "state", timeout=300)
    assert result["state"] == "installed", result["error"]
    leaf = verify_installed(env, apache.cert_dir, "www.acme.test")
    served = pem_fingerprint(leaf.public_bytes(serialization.Encoding.PEM))
    assert served != before
    assert apache.wait_for_fingerprint(served) == served
    out = result["vars"]
    assert out["install_check"]["fingerprint_sha256"] == served
    reload = out["install_reload"]
    assert reload["skipped"] is False and reload["returncode"] == 0
    assert "Syntax OK" in reload["test_stderr"] + reload["test_stdout"]


def test_a_failed_check_rolls_apache_back_and_fails_the_run(
        env: Env, apache: ApacheServer) -> None:
    """When the reload does not make Apache serve the new certificate (here: the reload
    command does nothing), install.check restores the previous files, reloads, and the run
    ends in `failed` saying what was restored; Apache keeps serving the old certificate."""
    before = apache.fingerprint()
    old_cert = (apache.cert_dir / "server.crt").read_bytes()
    result = run_pipeline("acme", _apache_inputs(env, apache, reload="true"),
                          env.tmp / "state", timeout=300)
    assert result["state"] == "failed"
    assert "install.check" in result["error"] and "restored" in result["error"]
    assert (apache.cert_dir / "server.crt").read_bytes() == old_cert
    assert apache.fingerprint() == before
