"""tls-alpn-01 (RFC 8737) on the built-in CA's ACME server: the CA connects to the name
on ``acme_tlsalpn01_port`` offering acme-tls/1 and accepts a self-signed certificate for
exactly that name whose critical acmeIdentifier holds SHA-256 of the key authorization;
a wrong digest or a non-critical extension is incorrectResponse; lego --tls gets a
certificate."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from tests.support.acme_client import Client
from tests.support.acme_server import AcmeCA, peer_port, start_acme_ca  # noqa: F401
from tests.support.ca import SmtpSink, smtp_sink  # noqa: F401  (fixtures)
from tests.support.tlsalpn import TlsAlpnResponder, challenge_cert

URN = "urn:ietf:params:acme:error:"


@pytest.fixture
def ca(tmp_path: Path, smtp_sink: SmtpSink, peer_port: int) -> Iterator[AcmeCA]:
    yield from start_acme_ca(tmp_path, smtp_sink, settings={
        "acme_tlsalpn01_port": peer_port,
        "acme_challenges": ["http-01", "dns-01", "tls-alpn-01"]})


@pytest.fixture
def http() -> Any:
    with httpx.Client(timeout=30) as client:
        yield client


def answer(http: httpx.Client, ca: AcmeCA, port: int, **cert_options: Any) -> dict[str, Any]:
    """Order t.acme.test, serve a tls-alpn-01 certificate on ``port``, answer."""
    c = Client(http, ca.directory)
    c.register()
    placed = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns",
                                                          "value": "t.acme.test"}]}).json()
    authz = c.post(placed["authorizations"][0], None).json()
    chall = next(x for x in authz["challenges"] if x["type"] == "tls-alpn-01")
    key_auth = f"{chall['token']}.{c.thumbprint()}"
    responder = TlsAlpnResponder(*challenge_cert("t.acme.test", key_auth, **cert_options),
                                 port=port).start()
    try:
        result = c.post(chall["url"], {}).json()
    finally:
        responder.stop()
    assert responder.alpn_seen[:1] == ["acme-tls/1"]
    return result


def test_tls_alpn_01_validates(http: httpx.Client, ca: AcmeCA, peer_port: int) -> None:
    """The right certificate on the tls-alpn-01 port makes the challenge valid."""
    assert answer(http, ca, peer_port)["status"] == "valid"


def test_wrong_digest_or_non_critical_is_incorrect(http: httpx.Client, ca: AcmeCA,
                                                   peer_port: int) -> None:
    """A digest of something else, or the extension not critical, is incorrectResponse."""
    wrong = answer(http, ca, peer_port, digest=hashlib.sha256(b"other").digest())
    assert wrong["status"] == "invalid"
    assert wrong["error"]["type"] == URN + "incorrectResponse"
    lax = answer(http, ca, peer_port, critical=False)
    assert lax["error"]["type"] == URN + "incorrectResponse", lax


@pytest.mark.slow
def test_lego_tls_alpn(ca: AcmeCA, tmp_path: Path, peer_port: int) -> None:
    """lego --tls answers tls-alpn-01 on the CA's tls-alpn-01 port and gets a certificate."""
    lego = shutil.which("lego")
    assert lego, "lego is not installed (scripts/system-deps.sh)"
    proc = subprocess.run([lego, "--server", ca.directory, "--email", "admin@acme.test",
                           "--accept-tos", "--path", str(tmp_path / "lego"), "--tls",
                           "--tls.port", f"127.0.0.1:{peer_port}", "--domains",
                           "tls.acme.test", "run"], capture_output=True, text=True,
                          timeout=180, check=False, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    pem = (tmp_path / "lego" / "certificates" / "tls.acme.test.crt").read_bytes()
    leaf = x509.load_pem_x509_certificates(pem)[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == ["tls.acme.test"]
