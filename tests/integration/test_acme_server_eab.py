"""External account binding (RFC 8555 section 7.3.4) on the built-in CA's ACME server:
a CA account makes an EAB key (``POST /acme/eab-keys`` with its bearer token), an ACME
account bound with it needs no new challenge for a domain that CA account verified by
the mail probe (while the verification lasts); a wrong MAC, a used key, or a payload of
another key is refused; ``acme_eab_required`` makes the binding mandatory."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.acme_client import Client, b64
from tests.support.acme_server import AcmeCA, start_acme_ca
from tests.support.ca import (  # noqa: F401  (fixtures)
    Account,
    SmtpSink,
    active_account,
    make_csr,
    smtp_sink,
    verified_domain,
)

URN = "urn:ietf:params:acme:error:"


@pytest.fixture
def ca(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[AcmeCA]:
    yield from start_acme_ca(tmp_path, smtp_sink)


def eab_key(ca: AcmeCA, acct: Account) -> dict[str, str]:
    r = httpx.post(ca.server.url + "/acme/eab-keys", headers=acct.auth, timeout=30)
    assert r.status_code == 201, r.text
    return dict(r.json())


def binding(c: Client, key: dict[str, str], *, jwk: dict[str, Any] | None = None,
            mac_key: bytes | None = None) -> dict[str, str]:
    """The externalAccountBinding JWS (HS256 over the account's JWK)."""
    header = b64(json.dumps({"alg": "HS256", "kid": key["kid"],
                             "url": c.dir["newAccount"]}).encode())
    payload = b64(json.dumps(jwk or c.jwk()).encode())
    secret = mac_key or base64.urlsafe_b64decode(key["hmac_key"] + "==")
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return {"protected": header, "payload": payload, "signature": b64(mac)}


def register(c: Client, eab: dict[str, str] | None) -> httpx.Response:
    body: dict[str, Any] = {"termsOfServiceAgreed": True, "contact": ["mailto:e@acme.test"]}
    if eab is not None:
        body["externalAccountBinding"] = eab
    r = c.post(c.dir["newAccount"], body, use_jwk=True)
    if r.status_code == 201:
        c.kid = r.headers["Location"]
    return r


def test_bound_account_needs_no_challenge_for_a_mail_verified_domain(
        ca: AcmeCA, smtp_sink: SmtpSink) -> None:
    """Bound to a CA account that verified ``mail.acme.test`` by the mail probe, an order
    for www.mail.acme.test is ready at once and issued; a domain it did not verify still
    needs a challenge."""
    with httpx.Client(base_url=ca.server.url, timeout=30) as api, \
            httpx.Client(timeout=30) as http:
        acct = active_account(api, smtp_sink)
        verified_domain(api, smtp_sink, acct, "mail.acme.test")
        c = Client(http, ca.directory)
        r = register(c, binding(c, eab_key(ca, acct)))
        assert r.status_code == 201, r.text
        placed = c.post(c.dir["newOrder"], {"identifiers": [
            {"type": "dns", "value": "www.mail.acme.test"}]})
        assert placed.json()["status"] == "ready", placed.text
        csr, _ = make_csr(["www.mail.acme.test"])
        der = b64(x509.load_pem_x509_csr(csr.encode()).public_bytes(Encoding.DER))
        assert c.post(placed.json()["finalize"], {"csr": der}).json()["status"] == "valid"
        other = c.post(c.dir["newOrder"], {"identifiers": [
            {"type": "dns", "value": "other.acme.test"}]})
        assert other.json()["status"] == "pending"


def test_bad_bindings_are_refused(ca: AcmeCA, smtp_sink: SmtpSink) -> None:
    """A MAC under another key is unauthorized; a binding of another JWK is malformed; a
    key already bound is unauthorized for the next account; an unknown kid too."""
    with httpx.Client(base_url=ca.server.url, timeout=30) as api, \
            httpx.Client(timeout=30) as http:
        acct = active_account(api, smtp_sink)
        key = eab_key(ca, acct)
        c = Client(http, ca.directory)
        bad_mac = register(c, binding(c, key, mac_key=b"\0" * 32))
        assert bad_mac.json()["type"] == URN + "unauthorized", bad_mac.text
        stranger = Client(http, ca.directory)
        wrong_jwk = register(c, binding(c, key, jwk=stranger.jwk()))
        assert wrong_jwk.json()["type"] == URN + "malformed", wrong_jwk.text
        assert register(c, binding(c, key)).status_code == 201
        reused = register(stranger, binding(stranger, key))
        assert reused.json()["type"] == URN + "unauthorized", reused.text
        unknown = register(stranger, binding(stranger, {**key, "kid": "eab_nothing"}))
        assert unknown.json()["type"] == URN + "unauthorized"


def test_eab_keys_need_a_ca_login(ca: AcmeCA) -> None:
    """POST /acme/eab-keys without a valid bearer token is 401 unauthorized."""
    r = httpx.post(ca.server.url + "/acme/eab-keys", timeout=30)
    assert r.status_code == 401
    assert r.json()["type"] == URN + "unauthorized"


def test_required_binding(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """With ``acme_eab_required`` the directory says so and a newAccount without a binding
    is externalAccountRequired."""
    for ca in start_acme_ca(tmp_path, smtp_sink, settings={"acme_eab_required": True}):
        with httpx.Client(timeout=30) as http:
            c = Client(http, ca.directory)
            assert c.dir["meta"]["externalAccountRequired"] is True
            assert register(c, None).json()["type"] == URN + "externalAccountRequired"
