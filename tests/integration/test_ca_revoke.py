"""Revocation at the built-in CA over real HTTP: a repeat keeps the first date and reason,
and a key revoked for keyCompromise is never certified again."""
from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from certwright.clock import UTC, FakeClock
from tests.support.ca import (  # noqa: F401  (fixtures)
    Account,
    SmtpSink,
    active_account,
    ca_server,
    http,
    make_csr,
    smtp_sink,
    verified_domain,
)

DOMAIN = "example.test"


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def acct(http: httpx.Client, smtp_sink: SmtpSink) -> Account:
    account = active_account(http, smtp_sink)
    verified_domain(http, smtp_sink, account, DOMAIN)
    return account


def _sign(http: httpx.Client, acct: Account, csr: str, key: str) -> httpx.Response:
    return http.post("/api/v1/certificates", json={"csr": csr, "idempotency_key": key},
                     headers=acct.auth)


def _revoke(http: httpx.Client, acct: Account, serial: str, reason: str) -> httpx.Response:
    return http.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": reason},
                     headers=acct.auth)


def test_a_repeated_revoke_keeps_the_first_date_and_reason(
        http: httpx.Client, acct: Account, fake_clock: FakeClock) -> None:
    """The second revoke changes nothing and says when and why it was revoked."""
    serial = _sign(http, acct, make_csr([DOMAIN])[0], "k1").json()["serial"]
    first = _revoke(http, acct, serial, "superseded")
    assert first.status_code == 200, first.text
    assert first.json()["already"] is False and first.json()["reason"] == "superseded"
    fake_clock.advance(60)
    again = _revoke(http, acct, serial, "keyCompromise")
    assert again.status_code == 200
    assert again.json()["already"] is True
    assert again.json()["reason"] == "superseded"
    assert again.json()["revoked_at"] == first.json()["revoked_at"]


def test_a_key_revoked_for_key_compromise_is_refused_in_a_new_csr(
        http: httpx.Client, acct: Account) -> None:
    """422 key_compromised naming the revoked certificate; another key is signed."""
    csr, key = make_csr([DOMAIN])
    serial = _sign(http, acct, csr, "k1").json()["serial"]
    assert _revoke(http, acct, serial, "keycompromise").status_code == 200
    again, _ = make_csr([f"www.{DOMAIN}"], key=key)
    refused = _sign(http, acct, again, "k2")
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "key_compromised"
    assert serial in body["message"] and "keyCompromise" in body["message"]
    assert body["serial"] == serial
    assert _sign(http, acct, make_csr([DOMAIN])[0], "k3").status_code == 201


def test_a_key_revoked_for_another_reason_may_be_certified_again(
        http: httpx.Client, acct: Account) -> None:
    """superseded says nothing about the key: the same key is signed again."""
    csr, key = make_csr([DOMAIN])
    serial = _sign(http, acct, csr, "k1").json()["serial"]
    assert _revoke(http, acct, serial, "superseded").status_code == 200
    assert _sign(http, acct, make_csr([DOMAIN], key=key)[0], "k2").status_code == 201
