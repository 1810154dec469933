"""ACME Renewal Information (RFC 9773) on the built-in CA: the certID of the RFC's own
example, ``renewalInfo`` in the directory, the suggested window (the last third of the
lifetime; in the past once revoked; the operator's when set with
``certwright ca renewal-window``), Retry-After, and ``replaces`` in newOrder."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certwright.ca.acme.renewal import cert_id, parse_cert_id
from certwright.clock import parse_instant
from tests.integration.test_acme_server_issue import issue, registered
from tests.support.acme_client import b64
from tests.support.acme_server import AcmeCA, acme_ca  # noqa: F401  (fixtures)
from tests.support.ca import smtp_sink  # noqa: F401  (fixtures)

URN = "urn:ietf:params:acme:error:"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def http() -> Any:
    with httpx.Client(timeout=30) as client:
        yield client


def test_cert_id_of_the_rfc_example() -> None:
    """RFC 9773 section 4.1: keyIdentifier 69:88:5B:...:C8:D4 and serial 0x87654321 make
    ``aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE`` (the serial's DER bytes keep their leading
    zero); parsing it gives both back."""
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(0x87654321)
            .not_valid_before(datetime(2025, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2025, 4, 1, tzinfo=UTC))
            .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
            .sign(key, hashes.SHA256()))
    assert cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert parse_cert_id("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE") == (aki, 0x87654321)


def window(http: httpx.Client, ca: AcmeCA, ident: str) -> tuple[datetime, datetime, int]:
    r = http.get(http.get(ca.directory).json()["renewalInfo"] + "/" + ident)
    assert r.status_code == 200, r.text
    got = r.json()["suggestedWindow"]
    return parse_instant(got["start"]), parse_instant(got["end"]), int(r.headers["Retry-After"])


def test_window_is_in_the_last_third_and_moves_when_revoked(
        http: httpx.Client, acme_ca: AcmeCA) -> None:
    """A fresh certificate's window lies inside the last third of its lifetime, with
    Retry-After; after revocation the window has ended (renew now)."""
    c = registered(http, acme_ca)
    _, pem, _ = issue(c, acme_ca, ["ari.acme.test"])
    cert = x509.load_pem_x509_certificates(pem.encode())[0]
    ident = cert_id(cert)
    start, end, retry = window(http, acme_ca, ident)
    born, dies = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert born + (dies - born) * 2 / 3 <= start < end <= dies
    assert retry > 0
    c.post(c.dir["revokeCert"], {"certificate": b64(cert.public_bytes(Encoding.DER))})
    start, end, _ = window(http, acme_ca, ident)
    assert start < end <= datetime.now(UTC)


def test_operator_sets_the_window(http: httpx.Client, acme_ca: AcmeCA) -> None:
    """``certwright ca renewal-window SERIAL --start T --end T`` makes the CA suggest
    that window; an end before the start is a usage error (2) naming both."""
    c = registered(http, acme_ca)
    _, pem, _ = issue(c, acme_ca, ["op.acme.test"])
    cert = x509.load_pem_x509_certificates(pem.encode())[0]
    serial = format(cert.serial_number, "x")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    end = start + timedelta(days=2)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "certwright", "ca", "renewal-window",
                               serial, "--dir", str(acme_ca.server.ca_dir), *args],
                              capture_output=True, text=True, cwd=ROOT, check=False,
                              env={**os.environ, "CERTWRIGHT_STATE_DIR": str(ROOT / "x")})

    bad = cli("--start", end.isoformat(), "--end", start.isoformat())
    assert bad.returncode == 2, bad.stderr
    assert "--end" in bad.stderr
    done = cli("--start", start.isoformat(), "--end", end.isoformat())
    assert done.returncode == 0, done.stderr
    assert window(http, acme_ca, cert_id(cert))[:2] == (start, end)


def test_unknown_and_malformed_cert_ids(http: httpx.Client, acme_ca: AcmeCA) -> None:
    """A certID of no certificate of this CA is 404; one that is not two base64url parts
    is malformed."""
    base = http.get(acme_ca.directory).json()["renewalInfo"]
    r = http.get(base + "/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
    assert r.status_code == 404
    assert r.json()["type"] == URN + "malformed"
    r = http.get(base + "/not-a-cert-id")
    assert r.status_code == 400
    assert r.json()["type"] == URN + "malformed"


def test_replaces_is_recorded_once(http: httpx.Client, acme_ca: AcmeCA) -> None:
    """newOrder with ``replaces`` (the account's own certificate) records it in the order;
    a second order replacing the same certificate is alreadyReplaced; another account's
    certificate is unauthorized; a certID of nothing here is malformed."""
    c = registered(http, acme_ca)
    _, pem, _ = issue(c, acme_ca, ["rep.acme.test"])
    ident = cert_id(x509.load_pem_x509_certificates(pem.encode())[0])
    names = {"identifiers": [{"type": "dns", "value": "rep.acme.test"}]}
    first = c.post(c.dir["newOrder"], {**names, "replaces": ident})
    assert first.status_code == 201, first.text
    assert first.json()["replaces"] == ident
    again = c.post(c.dir["newOrder"], {**names, "replaces": ident})
    assert again.json()["type"] == URN + "alreadyReplaced", again.text
    other = registered(http, acme_ca)
    stolen = other.post(other.dir["newOrder"], {**names, "replaces": ident})
    assert stolen.json()["type"] == URN + "unauthorized"
    nothing = c.post(c.dir["newOrder"], {**names, "replaces": "AAAA.AQ"})
    assert nothing.json()["type"] == URN + "malformed"
