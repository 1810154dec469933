"""Issuance through the built-in CA's ACME server, driven by a hand-written client: real
http-01 and dns-01 validation through the test DNS server, a certificate that openssl
verifies and pkilint passes, the issuance mail, the alternate chain, revocation by the
account and by the certificate's key with the CRL listing it, failed challenges, the
orders list and account deactivation."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.integration.test_ca_sign import cabf_findings, lint, openssl_verify
from tests.support.acme_client import Client, b64
from tests.support.acme_server import AcmeCA, acme_ca  # noqa: F401  (fixtures)
from tests.support.ca import SmtpSink, make_csr, smtp_sink  # noqa: F401  (fixtures)

URN = "urn:ietf:params:acme:error:"


@pytest.fixture
def http() -> Any:
    with httpx.Client(timeout=30) as client:
        yield client


def der(pem: str) -> str:
    return b64(x509.load_pem_x509_csr(pem.encode()).public_bytes(Encoding.DER))


def registered(http: httpx.Client, ca: AcmeCA) -> Client:
    c = Client(http, ca.directory)
    assert c.register("mailto:owner@acme.test").status_code == 201
    return c


def authorize(c: Client, ca: AcmeCA, authz_url: str, kind: str) -> dict[str, Any]:
    """Answer the authorization's challenge of ``kind``; returns the challenge answer."""
    authz = c.post(authz_url, None).json()
    chall = next(x for x in authz["challenges"] if x["type"] == kind)
    key_auth = f"{chall['token']}.{c.thumbprint()}"
    if kind == "http-01":
        ca.web.tokens[chall["token"]] = key_auth
    else:
        import base64
        import hashlib
        value = base64.urlsafe_b64encode(hashlib.sha256(key_auth.encode()).digest()) \
            .rstrip(b"=").decode()
        ca.dns.add(f"_acme-challenge.{authz['identifier']['value']}.", value)
    return c.post(chall["url"], {}).json()


def issue(c: Client, ca: AcmeCA, names: list[str], kind: str = "http-01"
          ) -> tuple[dict[str, Any], str, Any]:
    """Order, validate, finalize, download: (order, PEM chain, private key)."""
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": n}
                                                   for n in names]})
    assert r.status_code == 201, r.text
    placed, url = r.json(), r.headers["Location"]
    for authz_url in placed["authorizations"]:
        assert authorize(c, ca, authz_url, kind)["status"] == "valid"
    # The read that finds the order ready (answered on the event loop as committed) has
    # the writer store it so.
    stored = ca.server.app.state.acme.acme.store
    assert stored.find_order(url.rsplit("/", 1)[1])["status"] == "pending"
    assert c.post(url, None).json()["status"] == "ready"
    assert stored.find_order(url.rsplit("/", 1)[1])["status"] == "ready"
    csr, key = make_csr(names)
    done = c.post(placed["finalize"], {"csr": der(csr)})
    assert done.status_code == 200, done.text
    final = done.json()
    assert final["status"] == "valid"
    got = c.post(final["certificate"], None)
    assert got.headers["content-type"].startswith("application/pem-certificate-chain")
    assert 'rel="alternate"' in got.headers["Link"]
    return final, got.text, key


def crl_serials(http: httpx.Client, ca: AcmeCA) -> set[int]:
    crl = x509.load_der_x509_crl(http.get(ca.server.url + "/ca/crl").content)
    return {entry.serial_number for entry in crl}


def test_http01_issues_a_certificate_that_verifies_and_lints(
        http: httpx.Client, acme_ca: AcmeCA, smtp_sink: SmtpSink,
        tmp_path: Path) -> None:
    """http-01 through the test DNS server: openssl verifies the chain, pkilint finds no
    error but internal names, the contact gets the issuance mail, and the chain is the
    leaf and the intermediate (the alternate adds the root)."""
    c = registered(http, acme_ca)
    order, pem, _ = issue(c, acme_ca, ["www.acme.test", "acme.test"])
    certs = x509.load_pem_x509_certificates(pem.encode())
    assert len(certs) == 2
    leaf = certs[0].public_bytes(Encoding.PEM).decode()
    assert "OK" in openssl_verify(tmp_path, acme_ca.server.ca_dir, leaf)
    pkix, cabf = lint(tmp_path, leaf)
    assert pkix == ""
    assert cabf_findings(cabf) <= {"cabf.internal_domain_name"}, cabf
    serial = format(certs[0].serial_number, "x")
    mail = smtp_sink.last_to("owner@acme.test")
    assert serial in mail.msg["Subject"]
    alternate = c.post(order["certificate"] + "/1", None).text
    assert len(x509.load_pem_x509_certificates(alternate.encode())) == 3


def test_dns01_issues_a_wildcard(http: httpx.Client, acme_ca: AcmeCA) -> None:
    """A wildcard's authorization offers dns-01 only; a TXT record in the test DNS server
    validates it."""
    c = registered(http, acme_ca)
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "*.w.acme.test"}]})
    authz = c.post(r.json()["authorizations"][0], None).json()
    assert [x["type"] for x in authz["challenges"]] == ["dns-01"]
    assert authz["wildcard"] is True
    _, pem, _ = issue(c, acme_ca, ["*.w.acme.test"], kind="dns-01")
    san = x509.load_pem_x509_certificates(pem.encode())[0].extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.w.acme.test"]


def test_wrong_http01_answer_invalidates_authorization_and_order(
        http: httpx.Client, acme_ca: AcmeCA) -> None:
    """A wrong body at the challenge URL is incorrectResponse with the name in a
    subproblem; the authorization and the order become invalid; finalize is
    orderNotReady."""
    c = registered(http, acme_ca)
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "bad.acme.test"}]})
    placed, url = r.json(), r.headers["Location"]
    authz_url = placed["authorizations"][0]
    chall = next(x for x in c.post(authz_url, None).json()["challenges"]
                 if x["type"] == "http-01")
    acme_ca.web.tokens[chall["token"]] = "not the key authorization"
    answered = c.post(chall["url"], {}).json()
    assert answered["status"] == "invalid"
    assert answered["error"]["type"] == URN + "incorrectResponse"
    assert answered["error"]["subproblems"][0]["identifier"]["value"] == "bad.acme.test"
    assert c.post(authz_url, None).json()["status"] == "invalid"
    assert c.post(url, None).json()["status"] == "invalid"
    csr, _ = make_csr(["bad.acme.test"])
    assert c.post(placed["finalize"], {"csr": der(csr)}).json()["type"] == URN + "orderNotReady"


def test_revoke_by_account_and_by_certificate_key_lists_in_crl(
        http: httpx.Client, acme_ca: AcmeCA) -> None:
    """revokeCert signed by the account, then (another certificate) by the certificate's
    own key: both are in the CRL; a second revocation is alreadyRevoked; another
    account may not revoke."""
    c = registered(http, acme_ca)
    _, pem1, _ = issue(c, acme_ca, ["r1.acme.test"])
    _, pem2, key2 = issue(c, acme_ca, ["r2.acme.test"])
    cert1, cert2 = (x509.load_pem_x509_certificates(p.encode())[0] for p in (pem1, pem2))
    other = registered(http, acme_ca)
    body1 = {"certificate": b64(cert1.public_bytes(Encoding.DER)), "reason": 4}
    assert other.post(c.dir["revokeCert"], body1).json()["type"] == URN + "unauthorized"
    assert c.post(c.dir["revokeCert"], body1).status_code == 200
    assert c.post(c.dir["revokeCert"], body1).json()["type"] == URN + "alreadyRevoked"
    import josepy as jose
    holder = Client(http, acme_ca.directory, key=jose.JWKEC(key=key2))
    body2 = {"certificate": b64(cert2.public_bytes(Encoding.DER)), "reason": 1}
    r = holder.post(c.dir["revokeCert"], body2, use_jwk=True)
    assert r.status_code == 200, r.text
    assert {cert1.serial_number, cert2.serial_number} <= crl_serials(http, acme_ca)
    # keyCompromise: that key is never certified again
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "r2.acme.test"}]})
    csr, _ = make_csr(["r2.acme.test"], key2)
    refused = c.post(r.json()["finalize"], {"csr": der(csr)}).json()
    assert refused["type"] == URN + "badPublicKey", refused


def test_orders_list_reuse_and_deactivation(http: httpx.Client,
                                            acme_ca: AcmeCA) -> None:
    """The account's orders list names its orders; a second order for a validated name
    reuses the valid authorization (ready at once); a deactivated account is refused."""
    c = registered(http, acme_ca)
    issue(c, acme_ca, ["o.acme.test"])
    again = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "o.acme.test"}]})
    assert again.json()["status"] == "ready"
    account = c.post(c.kid or "", None).json()
    orders = c.post(account["orders"], None).json()["orders"]
    assert again.headers["Location"] in orders
    assert len(orders) == 2
    gone = c.post(c.kid or "", {"status": "deactivated"}).json()
    assert gone["status"] == "deactivated"
    assert c.post(c.kid or "", None).json()["type"] == URN + "unauthorized"


def test_public_suffix_and_bad_names_are_rejected_identifiers(
        http: httpx.Client, acme_ca: AcmeCA) -> None:
    """newOrder for a public suffix or a non-name is rejectedIdentifier naming it; an IP
    identifier is unsupportedIdentifier."""
    c = registered(http, acme_ca)
    for value in ("co.uk", "not_a_name.test"):
        r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": value}]})
        body = r.json()
        assert body["type"] == URN + "rejectedIdentifier", body
        assert body["subproblems"][0]["identifier"]["value"] == value
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})
    assert r.json()["type"] == URN + "unsupportedIdentifier"


def test_pending_resources_say_retry_after_and_authz_deactivation(
        http: httpx.Client, acme_ca: AcmeCA) -> None:
    """A pending order and authorization carry Retry-After; a deactivated authorization
    makes its order invalid and cannot be deactivated twice."""
    c = registered(http, acme_ca)
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "d.acme.test"}]})
    url, authz_url = r.headers["Location"], r.json()["authorizations"][0]
    assert int(c.post(url, None).headers["Retry-After"]) >= 1
    assert int(c.post(authz_url, None).headers["Retry-After"]) >= 1
    gone = c.post(authz_url, {"status": "deactivated"})
    assert gone.json()["status"] == "deactivated"
    assert "Retry-After" not in gone.headers
    assert c.post(url, None).json()["status"] == "invalid"
    again = c.post(authz_url, {"status": "deactivated"}).json()
    assert again["type"] == URN + "malformed"


def test_terms_of_service_must_be_agreed(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """With ``acme_terms_of_service`` the directory's meta names it, and a newAccount
    without ``termsOfServiceAgreed`` is userActionRequired; with it, created."""
    from tests.support.acme_server import start_acme_ca

    terms = "https://ca.example.test/terms"
    for ca in start_acme_ca(tmp_path, smtp_sink, settings={"acme_terms_of_service": terms,
                                                           "acme_caa_identities": ["x.test"]}):
        with httpx.Client(timeout=30) as http:
            c = Client(http, ca.directory)
            assert c.dir["meta"]["termsOfService"] == terms
            assert c.dir["meta"]["caaIdentities"] == ["x.test"]
            refused = c.post(c.dir["newAccount"], {"contact": []}, use_jwk=True).json()
            assert refused["type"] == URN + "userActionRequired"
            assert c.register().status_code == 201


def test_wildcard_without_dns01_is_rejected(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """When the CA offers no dns-01 (``acme_challenges``), a wildcard identifier is
    rejectedIdentifier naming it, not an authorization nobody can answer."""
    from tests.support.acme_server import start_acme_ca

    for ca in start_acme_ca(tmp_path, smtp_sink, settings={"acme_challenges": ["http-01"]}):
        with httpx.Client(timeout=30) as http:
            c = registered(http, ca)
            r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns",
                                                             "value": "*.x.acme.test"}]})
            assert r.json()["type"] == URN + "rejectedIdentifier", r.text
            assert r.json()["subproblems"][0]["identifier"]["value"] == "*.x.acme.test"


def test_concurrent_finalizes_issue_once(http: httpx.Client, acme_ca: AcmeCA) -> None:
    """Four finalizes of one order at once (a client retrying) make one certificate: the
    others answer the same order (valid, same certificate) or orderNotReady."""
    from concurrent.futures import ThreadPoolExecutor

    c = registered(http, acme_ca)
    r = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "once.acme.test"}]})
    placed = r.json()
    assert authorize(c, acme_ca, placed["authorizations"][0], "http-01")["status"] == "valid"
    csr, _ = make_csr(["once.acme.test"])
    body = {"csr": der(csr)}
    before = acme_ca.server.ca_dir / "ca.sqlite3"
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: c.post(placed["finalize"], body).json(), range(4)))
    certs = {a.get("certificate") for a in answers if a.get("status") == "valid"}
    assert len(certs) == 1, answers
    assert all(a.get("status") == "valid" or a["type"] == URN + "orderNotReady"
               for a in answers), answers
    import sqlite3
    with sqlite3.connect(before) as db:
        issued = db.execute("SELECT count(*) FROM certificates WHERE names='once.acme.test'")
        assert issued.fetchone()[0] == 1
