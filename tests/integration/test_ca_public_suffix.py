"""Public suffixes over real HTTP: nobody adds or verifies ``co.uk``, and no certificate
names a public suffix or a wildcard directly on one (``*.co.uk``), even for an account
whose store says it verified the suffix (a CA upgraded from before this check)."""
from __future__ import annotations

import httpx
import pytest

from certwright.ca.server import CAServer
from tests.support.ca import (  # noqa: F401  (fixtures)
    Account,
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    http,
    make_csr,
    smtp_sink,
    verified_domain,
)


@pytest.fixture
def acct(http: httpx.Client, smtp_sink: SmtpSink) -> Account:
    return active_account(http, smtp_sink)


def sign(http: httpx.Client, acct: Account, names: list[str], key: str) -> httpx.Response:
    return http.post("/api/v1/certificates", json={"csr": make_csr(names)[0],
                                                   "idempotency_key": key}, headers=acct.auth)


@pytest.mark.parametrize("suffix", ["co.uk", "github.io", "CO.UK."])
def test_public_suffix_cannot_be_added(suffix: str, http: httpx.Client,
                                       acct: Account) -> None:
    """POST /api/v1/domains with a public suffix is 422 public_suffix naming it; nothing
    is stored, so it can never be probed."""
    r = http.post("/api/v1/domains", json={"domain": suffix}, headers=acct.auth)
    assert r.status_code == 422, r.text
    name = suffix.lower().rstrip(".")
    assert r.json()["error"] == "public_suffix"
    assert r.json()["suffix"] == name and name in r.json()["message"]
    assert http.get("/api/v1/domains", headers=acct.auth).json() == []


def test_domain_under_a_suffix_is_added(http: httpx.Client, acct: Account) -> None:
    """example.co.uk (registrable, under co.uk) is an ordinary domain."""
    r = http.post("/api/v1/domains", json={"domain": "example.co.uk"}, headers=acct.auth)
    assert r.status_code == 201, r.text


def test_wildcard_on_a_verified_suffix_is_refused(http: httpx.Client, smtp_sink: SmtpSink,
                                                  acct: Account,
                                                  ca_server: CAServer) -> None:
    """With co.uk verified in the store (as an older CA let it be), ``*.co.uk`` and
    ``co.uk`` are 422 public_suffix naming co.uk; ``*.example.co.uk`` after verifying
    example.co.uk by its postmaster is issued."""
    svc = ca_server._server.config.app.state.service  # type: ignore[union-attr]
    svc.store.add_domain(acct.account_id, "co.uk")
    svc.store.verify_domain(acct.account_id, "co.uk", "probe_from_an_older_ca")
    for names in (["*.co.uk"], ["co.uk"], ["www.example.co.uk", "*.co.uk"]):
        r = sign(http, acct, names, "k-" + names[-1])
        assert r.status_code == 422, (names, r.text)
        assert r.json()["error"] == "public_suffix" and r.json()["suffix"] == "co.uk"
        assert "co.uk" in r.json()["message"]
    verified_domain(http, smtp_sink, acct, "example.co.uk")
    ok = sign(http, acct, ["*.example.co.uk", "example.co.uk"], "k-ok")
    assert ok.status_code == 201, ok.text


def test_no_probe_for_a_suffix_already_in_the_store(http: httpx.Client, smtp_sink: SmtpSink,
                                                    acct: Account,
                                                    ca_server: CAServer) -> None:
    """A public suffix an older CA let onto the account is not probed (422
    public_suffix, no mail), so it can never become verified."""
    svc = ca_server._server.config.app.state.service  # type: ignore[union-attr]
    svc.store.add_domain(acct.account_id, "co.uk")
    r = http.post("/api/v1/domains/co.uk/probes", json={"local_part": "postmaster"},
                  headers=acct.auth)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "public_suffix" and r.json()["suffix"] == "co.uk"
    assert smtp_sink.to("postmaster@co.uk") == []
