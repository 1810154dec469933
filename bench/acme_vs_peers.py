"""Benchmark: seconds per certificate from one Pebble for certbot, acme-tiny and certwright.

One Pebble on loopback (``PEBBLE_VA_NOSLEEP=1``, real http-01 validation against the port
each client serves in turn, names resolved by the test DNS server) issues the same number
of certificates (``--n``, default 20) to each client, one client after the other:

* certbot (Debian): one ``certbot certonly --standalone`` process per certificate, with its
  own config/work/logs folders (the account is registered by the first one and reused).
* acme-tiny (Debian): one process per certificate, challenge files served from its
  ``--acme-dir`` by a small static HTTP server; RSA account key made once.
* certwright: real runs of ``pipelines/acme.yaml`` (key, CSR, account, order, challenge,
  finalize, download, install, every transition journaled), all N started together in one
  engine (``engine.api.run_pipelines``) as the daemon serves them, ``--workers`` steps at
  a time; the account is registered once and reused through acme.account's stored key.

``--json`` prints one JSON object with ``certbot_s_per_cert``, ``acme_tiny_s_per_cert``,
``certwright_s_per_cert`` and ``speedup_vs_fastest_peer`` (the faster peer's s/cert over
certwright's); otherwise the figures are printed as a table.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The repository, appended for tests.support (the Pebble and DNS harnesses) alone:
# certwright itself always comes from the installed package, which precedes it.
sys.path.append(str(ROOT))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwright.engine.api import run_pipelines  # imported once, as a daemon has it
from certwright.steps.acme import responder as acme_responder
from tests.support.dns import TestDNS
from tests.support.pebble import Pebble

ZONE = "bench.acme.test"


def _write_key_and_csr(folder: Path, domain: str) -> Path:
    """A fresh P-256 key (0600) and a CSR for ``domain``; returns the CSR path."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = folder / "server.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
           .sign(key, hashes.SHA256()))
    path = folder / "server.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    done = fn()
    return time.perf_counter() - start, done


def run_certbot(pebble: Pebble, work: Path, domains: list[str]) -> int:
    """Issue each domain with its own certbot process; returns how many succeeded."""
    certbot = shutil.which("certbot")
    if certbot is None:
        raise RuntimeError("certbot is not installed (Debian package 'certbot')")
    env = dict(os.environ, REQUESTS_CA_BUNDLE=str(pebble.ca_bundle))
    ok = 0
    for domain in domains:
        proc = subprocess.run(
            [certbot, "certonly", "--standalone", "--http-01-port", str(pebble.http_port),
             "--http-01-address", "127.0.0.1", "--server", pebble.directory, "-d", domain,
             "--config-dir", str(work / "config"), "--work-dir", str(work / "work"),
             "--logs-dir", str(work / "logs"), "--non-interactive", "--agree-tos",
             "-m", f"admin@{ZONE}", "--no-eff-email", "--quiet"],
            env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"certbot failed for {domain}: {proc.stderr[-2000:]}")
        ok += 1
    return ok


def run_acme_tiny(pebble: Pebble, work: Path, domains: list[str]) -> int:
    """Issue each domain with its own acme-tiny process; returns how many succeeded."""
    tiny, openssl = shutil.which("acme-tiny"), shutil.which("openssl")
    if tiny is None or openssl is None:
        raise RuntimeError("acme-tiny and openssl are needed (Debian 'acme-tiny', 'openssl')")
    challenges = work / "challenges"
    challenges.mkdir(parents=True, exist_ok=True)
    account = work / "account.key"
    subprocess.run([openssl, "genrsa", "-out", str(account), "2048"], check=True,
                   capture_output=True)
    env = dict(os.environ, SSL_CERT_FILE=str(pebble.ca_bundle))
    server = acme_responder.Responder("127.0.0.1", pebble.http_port, folder=challenges).start()
    ok = 0
    try:
        for domain in domains:
            csr = _write_key_and_csr(work / domain, domain)
            proc = subprocess.run(
                [tiny, "--account-key", str(account), "--csr", str(csr), "--acme-dir",
                 str(challenges), "--directory-url", pebble.directory, "--disable-check",
                 "--quiet"], env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or "BEGIN CERTIFICATE" not in proc.stdout:
                raise RuntimeError(f"acme-tiny failed for {domain}: {proc.stderr[-2000:]}")
            (work / domain / "chain.pem").write_text(proc.stdout)
            ok += 1
    finally:
        server.stop()
    return ok


def run_certwright(pebble: Pebble, work: Path, domains: list[str], workers: int) -> int:
    """Real pipeline runs (``pipelines/acme.yaml``), all started together in one engine as
    the daemon serves them, ``workers`` steps at a time. The first acme.account step
    registers the account; the others wait for its lock and reuse the stored key. Returns
    how many runs reached ``installed``."""
    (work / "certs").mkdir(parents=True, exist_ok=True)
    common = {"directory": pebble.directory, "ca_bundle": str(pebble.ca_bundle),
              "contact": f"admin@{ZONE}", "http_address": f"127.0.0.1:{pebble.http_port}"}
    inputs = [{**common, "domain": d, "cert_dir": str(work / "certs" / d)} for d in domains]
    results = run_pipelines("acme", inputs, work / "state", workers=workers, timeout=600)
    failed = [f"{r['run']}: {r['error']}" for r in results if r["state"] != "installed"]
    if failed:
        raise RuntimeError("certwright runs failed: " + "; ".join(failed[:3]))
    return len(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="certificates per client (20)")
    parser.add_argument("--workers", type=int, default=8,
                        help="certificates certwright issues at once (8; 1 = sequential)")
    parser.add_argument("--only", choices=["certbot", "acme-tiny", "certwright"], action="append",
                        help="run only these clients (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    chosen = args.only or ["certbot", "acme-tiny", "certwright"]
    figures: dict[str, Any] = {"n": args.n, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="acme-bench-") as tmp:
        work = Path(tmp)
        dns = TestDNS(work / "records.json", zones=(ZONE,)).start()
        pebble = Pebble(work / "pebble", dns_server=dns.address)
        try:
            pebble.start()
            runners: dict[str, Callable[[list[str]], int]] = {
                "certbot": lambda ds: run_certbot(pebble, work / "certbot", ds),
                "acme-tiny": lambda ds: run_acme_tiny(pebble, work / "acme-tiny", ds),
                "certwright": lambda ds: run_certwright(pebble, work / "certwright", ds,
                                                        args.workers),
            }
            for name in chosen:
                domains = [f"{name.replace('-', '')}{i}.{ZONE}" for i in range(args.n)]
                seconds, done = _timed(functools.partial(runners[name], domains))
                if done != args.n:
                    raise RuntimeError(f"{name} issued {done} of {args.n} certificates")
                figures[f"{name.replace('-', '_')}_s_per_cert"] = round(seconds / args.n, 4)
        finally:
            pebble.stop()
            dns.stop()
    peers = [figures[k] for k in ("certbot_s_per_cert", "acme_tiny_s_per_cert") if k in figures]
    if peers and "certwright_s_per_cert" in figures:
        figures["speedup_vs_fastest_peer"] = round(min(peers) / figures["certwright_s_per_cert"], 2)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
