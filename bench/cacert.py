"""cacert benchmark: many domains through the whole CAcert process in one process.

One account; for each domain a probe, a probe mail through SMTP into the Maildir, a
verification over HTTP, a signature and an install into a scratch folder — the pipeline
``cacert`` on the built-in CA and mail server (loopback), driven by one engine.

* ``certs_per_s``: domains installed per second, account creation included (the first
  domain runs alone and creates the account; the rest run concurrently and reuse it).
* ``raw_crypto_per_s``: a plain loop doing only the cryptography one certificate needs
  (EC P-256 key, CSR, certificate signed by an EC P-256 CA key), in this same script.
* ``ratio_to_raw`` = the first over the second (goal >= 0.02).

Usage: python bench/cacert.py [--json] [--domains N] [--workers N]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwright.engine.api import run_pipelines


def raw_crypto_per_s(seconds: float = 3.0) -> float:
    """Key generation, CSR, and signing by one CA key, in a loop: certificates per second."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    now = dt.datetime.now(dt.UTC)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"d{n}.bench.test"
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
               .sign(key, hashes.SHA256()))
        (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_name)
         .public_key(csr.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + dt.timedelta(days=180))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
         .sign(ca_key, hashes.SHA256()))
        n += 1
    return n / (time.perf_counter() - t0)


def certs_per_s(domains: int, workers: int, folder: Path) -> tuple[float, float]:
    inputs = [{"domain": f"d{i}.bench.test", "email": "admin@bench.test",
               "cert_dir": str(folder / "certs" / f"d{i}")} for i in range(domains)]
    (folder / "certs").mkdir(mode=0o755)
    t0 = time.perf_counter()
    first = run_pipelines("cacert", inputs[:1], folder, workers=workers, timeout=300)
    rest = run_pipelines("cacert", inputs[1:], folder, workers=workers, timeout=600)
    elapsed = time.perf_counter() - t0
    bad = [r for r in first + rest if r["state"] != "installed" or r["alarms"]
           or not r["vars"].get("notify_check", {}).get("matched")]
    if bad:
        raise SystemExit(f"{len(bad)} runs did not install cleanly (state, alarms, or the "
                         f"CA's issuance mail not matched): {bad[0]}")
    return domains / elapsed, elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--domains", type=int, default=200)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args(argv)
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    folder = Path(tempfile.mkdtemp(prefix="certwright-bench-cacert-"))
    try:
        rate, elapsed = certs_per_s(args.domains, args.workers, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    raw = raw_crypto_per_s()
    result = {"domains": args.domains, "workers": args.workers, "seconds": round(elapsed, 2),
              "certs_per_s": round(rate, 2), "raw_crypto_per_s": round(raw, 1),
              "ratio_to_raw": round(rate / raw, 4), "goal": {"ratio_to_raw": ">= 0.02"}}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>18}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
