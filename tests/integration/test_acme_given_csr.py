"""``pipelines/acme.yaml`` with a given CSR against a real Pebble: the order is finalized
with that CSR as it is, no key is made, and the certificate lands beside the CSR."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwright.engine.api import run_pipeline
from tests.integration.test_acme import Env, _start

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _start(tmp_path)


def test_a_given_csr_is_finalized_as_it_is(env: Env) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "given.acme.test")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("given.acme.test")]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    path = env.tmp / "given.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    state = env.tmp / "state"
    result = run_pipeline("acme", {
        "domain": "given.acme.test", "directory": env.pebble.directory,
        "ca_bundle": str(env.pebble.ca_bundle), "contact": "admin@acme.test",
        "http_address": env.http_address, "cert_dir": str(env.tmp / "unused"),
        "csr": str(path)}, state, timeout=300)
    assert result["state"] == "installed", result["error"]
    cert = x509.load_pem_x509_certificate((env.tmp / "given.crt").read_bytes())
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert (env.tmp / "given.chain.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    assert not (env.tmp / "unused").exists()
    assert not list(state.rglob("server.key")), "the run made a key"
