"""Signing: accepted keys (verified with openssl and pkilint), every refusal with its
reason, idempotency, find, revocation and the CRL, the issuance mail."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from certwright.ca.issuing import br_max_days
from certwright.ca.server import CAServer
from certwright.clock import UTC, FakeClock
from tests.support.ca import (  # noqa: F401  (fixtures)
    Account,
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    fermat_weak_key,
    http,
    make_csr,
    roca_like_key,
    smtp_sink,
    verified_domain,
)

DOMAIN = "example.test"
BIN = Path(sys.executable).parent


@pytest.fixture
def fake_clock() -> FakeClock:
    """Real 'now', so that openssl and pkilint see certificates valid today."""
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def acct(http: httpx.Client, smtp_sink: SmtpSink) -> Account:
    account = active_account(http, smtp_sink)
    verified_domain(http, smtp_sink, account, DOMAIN)
    return account


def sign(http: httpx.Client, acct: Account, csr: str, key: str, **extra: object) -> httpx.Response:
    return http.post("/api/v1/certificates", json={"csr": csr, "idempotency_key": key, **extra},
                     headers=acct.auth)


def lint(tmp_path: Path, pem: str, name: str = "cert.pem") -> tuple[str, str]:
    """Run both pkilint linters at ERROR; returns (pkix findings, cabf findings)."""
    path = tmp_path / name
    path.write_text(pem)
    pkix = subprocess.run([str(BIN / "lint_pkix_cert"), "lint", "-s", "ERROR", str(path)],
                          capture_output=True, text=True, check=False)
    cabf = subprocess.run([str(BIN / "lint_cabf_serverauth_cert"), "lint", "-d", "-s", "ERROR",
                           str(path)], capture_output=True, text=True, check=False)
    return pkix.stdout.strip() + pkix.stderr.strip(), cabf.stdout + cabf.stderr


def cabf_findings(output: str) -> set[str]:
    return {line.split("(")[0].strip() for line in output.splitlines()
            if line.startswith("    ")}


def openssl_verify(tmp_path: Path, ca_dir: Path, pem: str) -> str:
    (tmp_path / "leaf.pem").write_text(pem)
    out = subprocess.run(["openssl", "verify", "-CAfile", str(ca_dir / "root.pem"),
                          "-untrusted", str(ca_dir / "intermediate.pem"),
                          str(tmp_path / "leaf.pem")], capture_output=True, text=True, check=False)
    return out.stdout + out.stderr


KEYS = {
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
    "rsa-4096": lambda: rsa.generate_private_key(65537, 4096),
}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_accepted_keys_verify_and_lint(kind: str, http: httpx.Client, acct: Account,
                                       ca_server: CAServer, tmp_path: Path) -> None:
    """EC P-256/P-384 and RSA 2048/4096 are signed; openssl verifies the chain and
    pkilint finds no error except internal names (.test and the loopback URLs)."""
    csr, key = make_csr([f"www.{DOMAIN}", DOMAIN], KEYS[kind]())
    r = sign(http, acct, csr, f"k-{kind}")
    assert r.status_code == 201, r.text
    body = r.json()
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert cert.serial_number.bit_length() >= 64
    assert format(cert.serial_number, "x") == body["serial"]
    assert body["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [f"www.{DOMAIN}", DOMAIN]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 179  # 180 d - 1 s
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == f"{ca_server.url}/ca/intermediate.crt"
    chain = x509.load_pem_x509_certificates(body["chain"].encode())
    assert [c.subject for c in chain] == [chain[0].subject, chain[1].issuer]
    assert "OK" in openssl_verify(tmp_path, ca_server.ca_dir, body["certificate"])
    pkix, cabf = lint(tmp_path, body["certificate"])
    assert pkix == ""
    assert cabf_findings(cabf) <= {"cabf.internal_domain_name"}, cabf


def test_intermediate_passes_pkix_lint(ca_server: CAServer, tmp_path: Path) -> None:
    """The intermediate (and the root) pass lint_pkix_cert at ERROR."""
    for name in ("intermediate.pem", "root.pem"):
        pkix, _ = lint(tmp_path, (ca_server.ca_dir / name).read_text(), name)
        assert pkix == "", (name, pkix)


def test_rsa_1024_refused(http: httpx.Client, acct: Account) -> None:
    """A 1024-bit RSA key is 422 weak_key naming the size."""
    csr, _ = make_csr([DOMAIN], rsa.generate_private_key(65537, 1024))
    r = sign(http, acct, csr, "k1")
    assert r.status_code == 422
    assert r.json() == {"error": "weak_key",
                        "message": "RSA key of 1024 bits; 2048 to 4096 accepted"}


def test_unverified_domain_refused(http: httpx.Client, acct: Account) -> None:
    """A name outside the verified domains is 422 unverified_domain naming it."""
    csr, _ = make_csr([DOMAIN, "example.org"])
    r = sign(http, acct, csr, "k1")
    assert r.status_code == 422
    assert r.json()["error"] == "unverified_domain" and r.json()["domain"] == "example.org"


def test_wildcard_needs_its_base(http: httpx.Client, smtp_sink: SmtpSink, acct: Account) -> None:
    """*.x needs x verified: a verified sub-domain alone is not enough."""
    verified_domain(http, smtp_sink, acct, "shop.other.test")
    r = sign(http, acct, make_csr(["*.other.test"])[0], "k1")
    assert r.status_code == 422 and r.json()["domain"] == "other.test"
    ok = sign(http, acct, make_csr([f"*.{DOMAIN}", "www.shop.other.test"])[0], "k2")
    assert ok.status_code == 201, ok.text
    # only whole labels count: x<domain> is not under <domain>
    r = sign(http, acct, make_csr([f"www.{DOMAIN}", f"x{DOMAIN}"])[0], "k3")
    assert r.status_code == 422 and r.json()["domain"] == f"x{DOMAIN}"


def test_bad_signature_refused(http: httpx.Client, acct: Account) -> None:
    """A CSR whose signature does not verify is 422 bad_csr."""
    csr, _ = make_csr([DOMAIN])
    der = bytearray(x509.load_pem_x509_csr(csr.encode()).public_bytes(Encoding.DER))
    at = der.find(DOMAIN.encode())
    der[at] = ord("x")  # the CN now reads xxample.test: still parses, signature breaks
    bad = x509.load_der_x509_csr(bytes(der)).public_bytes(Encoding.PEM).decode()
    r = sign(http, acct, bad, "k1")
    assert r.status_code == 422 and r.json()["error"] == "bad_csr"
    assert "signature" in r.json()["message"]
    garbage = sign(http, acct, "not a csr", "k2")
    assert garbage.status_code == 422 and garbage.json()["error"] == "bad_csr"


def test_fermat_weak_key_refused(http: httpx.Client, acct: Account) -> None:
    """An RSA key with adjacent primes is refused as Fermat-factorable."""
    r = sign(http, acct, make_csr([DOMAIN], fermat_weak_key())[0], "k1")
    assert r.status_code == 422 and r.json()["error"] == "weak_key"
    assert "Fermat" in r.json()["message"]


def test_roca_key_refused(http: httpx.Client, acct: Account) -> None:
    """An RSA key built like Infineon's (ROCA) is refused naming ROCA."""
    r = sign(http, acct, make_csr([DOMAIN], roca_like_key())[0], "k1")
    assert r.status_code == 422 and r.json()["error"] == "weak_key"
    assert "ROCA" in r.json()["message"]


def test_same_key_same_certificate(http: httpx.Client, acct: Account,
                                   ca_server: CAServer) -> None:
    """The same idempotency key returns the same certificate (200) and one row only;
    a different CSR under it is 409; find_certificate answers by key."""
    csr, _ = make_csr([DOMAIN])
    a, b = sign(http, acct, csr, "run1:5:0"), sign(http, acct, csr, "run1:5:0")
    assert (a.status_code, b.status_code) == (201, 200)
    assert a.json()["serial"] == b.json()["serial"]
    svc = ca_server._server.config.app.state.service  # type: ignore[union-attr]
    assert svc.store.count_certificates() == 1
    other = sign(http, acct, make_csr([DOMAIN])[0], "run1:5:0")
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    found = http.get("/api/v1/certificates", params={"idempotency_key": "run1:5:0"},
                     headers=acct.auth)
    assert found.status_code == 200 and found.json()["serial"] == a.json()["serial"]
    missing = http.get("/api/v1/certificates", params={"idempotency_key": "nope"},
                       headers=acct.auth)
    assert missing.status_code == 404


def test_revoke_lists_serial_in_crl(http: httpx.Client, acct: Account,
                                    ca_server: CAServer) -> None:
    """A revoked serial appears in the DER CRL, signed by the intermediate, with reason."""
    serial = sign(http, acct, make_csr([DOMAIN])[0], "k1").json()["serial"]
    r = http.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"},
                  headers=acct.auth)
    assert r.status_code == 200 and r.json()["reason"] == "keyCompromise"
    crl = x509.load_der_x509_crl(http.get("/ca/crl").content)
    inter = x509.load_der_x509_certificate(http.get("/ca/intermediate.crt").content)
    assert crl.is_signature_valid(inter.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason \
        == x509.ReasonFlags.key_compromise
    assert crl.next_update_utc is not None
    bad = http.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "bored"},
                    headers=acct.auth)
    assert bad.status_code == 422 and bad.json()["error"] == "bad_reason"
    root = x509.load_pem_x509_certificate(http.get("/ca/root.crt").content)
    assert inter.issuer == root.subject


def test_issuance_mail_names_serial_and_fingerprint(http: httpx.Client, smtp_sink: SmtpSink,
                                                    acct: Account) -> None:
    """After signing, the account address gets a mail with serial and SHA-256 fingerprint."""
    body = sign(http, acct, make_csr([f"www.{DOMAIN}"])[0], "k1").json()
    mail = smtp_sink.last_to(acct.email)
    assert mail.msg["Subject"] == f"Your certificate for www.{DOMAIN} (serial {body['serial']})"
    assert f"Serial: {body['serial']}" in mail.body
    assert f"SHA256 Fingerprint: {body['fingerprint_sha256']}" in mail.body
    assert f"/certificates/{body['serial']}" in mail.body


def test_days_bounds(http: httpx.Client, acct: Account, fake_clock: FakeClock) -> None:
    """days up to the BR maximum of the day (398 before SC-081) is honoured; one more is
    refused naming the limit."""
    cap = br_max_days(fake_clock.now())
    ok = sign(http, acct, make_csr([DOMAIN])[0], "k1", days=cap)
    assert ok.status_code == 201
    cert = x509.load_pem_x509_certificate(ok.json()["certificate"].encode())
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == cap - 1
    bad = sign(http, acct, make_csr([DOMAIN])[0], "k2", days=cap + 1)
    assert bad.status_code == 422 and f"1 to {cap}" in bad.json()["message"]


def test_br_schedule() -> None:
    """398 days before 2026-03-15, then 200, 100 and 47 (ballot SC-081)."""
    assert [br_max_days(datetime(y, m, 1, tzinfo=UTC)) for y, m in
            ((2026, 1), (2026, 4), (2027, 4), (2029, 4))] == [398, 200, 100, 47]


def test_signing_requires_login(http: httpx.Client) -> None:
    """Without a bearer token the API is 401 unauthorized."""
    r = http.post("/api/v1/certificates", json={"csr": "x", "idempotency_key": "k"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
