"""Domains and mail probes: the probe mail, the link page, verify, replay, expiry, wrong
tokens, "I did not ask for this", the local-part policy, undeliverable mail."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from certwright.ca.server import CAServer
from certwright.clock import FakeClock
from tests.support.ca import (  # noqa: F401  (fixtures)
    LINK_RE,
    Account,
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    follow,
    http,
    smtp_sink,
)

DOMAIN = "example.test"


@pytest.fixture
def acct(http: httpx.Client, smtp_sink: SmtpSink) -> Account:
    return active_account(http, smtp_sink)


def probe(http: httpx.Client, acct: Account, local: str = "postmaster",
          domain: str = DOMAIN) -> httpx.Response:
    http.post("/api/v1/domains", json={"domain": domain}, headers=acct.auth).raise_for_status()
    return http.post(f"/api/v1/domains/{domain}/probes", json={"local_part": local},
                     headers=acct.auth)


def status(http: httpx.Client, acct: Account, domain: str = DOMAIN) -> str:
    rows = {d["domain"]: d for d in http.get("/api/v1/domains", headers=acct.auth).json()}
    return str(rows[domain]["status"])


def path_of(link: str) -> str:
    return "/" + link.split("://", 1)[1].split("/", 1)[1]


def test_add_domain_is_idempotent(http: httpx.Client, acct: Account) -> None:
    """Adding twice: 201 then 200, one row; delete removes it."""
    a = http.post("/api/v1/domains", json={"domain": "Example.Test"}, headers=acct.auth)
    b = http.post("/api/v1/domains", json={"domain": DOMAIN}, headers=acct.auth)
    assert (a.status_code, b.status_code) == (201, 200)
    rows = http.get("/api/v1/domains", headers=acct.auth).json()
    assert rows == [{"domain": DOMAIN, "status": "pending", "verified_at": None,
                     "verification_expires": None}]
    assert http.delete(f"/api/v1/domains/{DOMAIN}", headers=acct.auth).status_code == 204
    assert http.get("/api/v1/domains", headers=acct.auth).json() == []


def test_one_domain_is_looked_up_by_name(http: httpx.Client, smtp_sink: SmtpSink,
                                         acct: Account) -> None:
    """GET /api/v1/domains/{domain}: the one row (any case), 404 unknown_domain when it was
    never added, and verified once its probe link is followed."""
    missing = http.get(f"/api/v1/domains/{DOMAIN}", headers=acct.auth)
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_domain"
    http.post("/api/v1/domains", json={"domain": DOMAIN}, headers=acct.auth)
    http.post("/api/v1/domains", json={"domain": "other.test"}, headers=acct.auth)
    one = http.get("/api/v1/domains/Example.Test", headers=acct.auth)
    assert one.status_code == 200 and one.json() == {
        "domain": DOMAIN, "status": "pending", "verified_at": None,
        "verification_expires": None}
    probe(http, acct)
    follow(http, smtp_sink.last_to(f"postmaster@{DOMAIN}").link()).raise_for_status()
    assert http.get(f"/api/v1/domains/{DOMAIN}", headers=acct.auth).json()["status"] == "verified"
    assert http.get(f"/api/v1/domains/{DOMAIN}").status_code == 401


def test_probe_get_verifies_nothing_post_does(http: httpx.Client, smtp_sink: SmtpSink,
                                             acct: Account) -> None:
    """Probe mail to postmaster@; the GET page shows the domain and both choices and
    verifies nothing; the POST verifies; a replay is 410 link_used."""
    r = probe(http, acct)
    assert r.status_code == 201, r.text
    assert r.json()["address"] == f"postmaster@{DOMAIN}"
    mail = smtp_sink.last_to(f"postmaster@{DOMAIN}")
    link = mail.link()
    assert link.startswith(f"{http.base_url}/domains/verify/{r.json()['probe_id']}?token=")
    page = http.get(path_of(link))
    assert page.status_code == 200
    assert DOMAIN in page.text and "Verify this domain" in page.text
    assert "I did not ask for this" in page.text
    http.get(path_of(link))
    assert status(http, acct) == "pending"
    done = follow(http, link)
    assert done.status_code == 200 and "verified" in done.text
    row = http.get("/api/v1/domains", headers=acct.auth).json()[0]
    assert row["status"] == "verified" and row["verification_expires"] > row["verified_at"]
    replay = follow(http, link)
    assert replay.status_code == 410 and "used" in replay.text
    assert http.get(path_of(link)).status_code == 410


def test_second_probe_reports_already_verified(http: httpx.Client, smtp_sink: SmtpSink,
                                               acct: Account) -> None:
    """A fresh link for a domain verified meanwhile answers already_verified (200)."""
    probe(http, acct)
    first = smtp_sink.last_to(f"postmaster@{DOMAIN}").link()
    probe(http, acct, "webmaster")
    second = smtp_sink.last_to(f"webmaster@{DOMAIN}").link()
    follow(http, first).raise_for_status()
    _, rid, token = LINK_RE.search(second).groups()  # type: ignore[union-attr]
    r = http.post("/api/v1/confirmations", json={"request_id": rid, "token": token})
    assert r.status_code == 200
    assert r.json() == {"kind": "domain", "domain": DOMAIN, "status": "already_verified"}


def test_expired_link_refused(http: httpx.Client, smtp_sink: SmtpSink, acct: Account,
                              fake_clock: FakeClock) -> None:
    """48 h after the probe the link is 410 link_expired and nothing is verified."""
    probe(http, acct)
    link = smtp_sink.last_to(f"postmaster@{DOMAIN}").link()
    fake_clock.advance(hours=48)
    r = http.post("/api/v1/login", json={"email": acct.email, "passphrase": acct.passphrase})
    acct.token = r.json()["token"]
    _, rid, token = LINK_RE.search(link).groups()  # type: ignore[union-attr]
    r = http.post("/api/v1/confirmations", json={"request_id": rid, "token": token})
    assert r.status_code == 410 and r.json()["error"] == "link_expired"
    assert http.get(path_of(link)).status_code == 410
    assert status(http, acct) == "pending"


def test_six_wrong_tokens_cancel(http: httpx.Client, smtp_sink: SmtpSink,
                                 acct: Account) -> None:
    """Each wrong token is 403 with attempts_left; the sixth cancels the request."""
    probe(http, acct)
    _, rid, token = LINK_RE.search(smtp_sink.last_to(f"postmaster@{DOMAIN}").link()).groups()  # type: ignore[union-attr]
    left = []
    for i in range(6):
        r = http.post("/api/v1/confirmations", json={"request_id": rid, "token": f"wrong{i}"})
        assert r.status_code == 403 and r.json()["error"] == "bad_token"
        left.append(r.json()["attempts_left"])
    assert left == [5, 4, 3, 2, 1, 0]
    r = http.post("/api/v1/confirmations", json={"request_id": rid, "token": token})
    assert r.status_code == 410 and r.json()["error"] == "link_cancelled"
    assert status(http, acct) == "pending"


def test_not_asked_for_cancels_and_records(http: httpx.Client, smtp_sink: SmtpSink,
                                           acct: Account, ca_server: CAServer) -> None:
    """'I did not ask for this' cancels the probe, is recorded, and verifies nothing."""
    probe(http, acct)
    link = smtp_sink.last_to(f"postmaster@{DOMAIN}").link()
    r = follow(http, link, action="reject")
    assert r.status_code == 200 and "cancelled" in r.text
    assert status(http, acct) == "pending"
    assert follow(http, link).status_code == 410
    svc = ca_server._server.config.app.state.service  # type: ignore[union-attr]
    rejected = svc.store.audit("link_rejected")
    assert [(x["account_id"], x["detail"]) for x in rejected] == [(acct.account_id, DOMAIN)]


def test_bad_local_part_refused(http: httpx.Client, smtp_sink: SmtpSink, acct: Account) -> None:
    """A local part outside the policy is 422 naming the allowed ones; no mail is sent."""
    r = probe(http, acct, "info")
    assert r.status_code == 422 and r.json()["error"] == "bad_local_part"
    assert r.json()["allowed"] == ["root", "hostmaster", "postmaster", "admin", "webmaster"]
    assert smtp_sink.to(f"info@{DOMAIN}") == []


def test_cabf_policy_refuses_root(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """Under the cabf policy root@ is refused and administrator@ allowed."""
    with CAServer(tmp_path / "ca2", smarthost=smtp_sink.smarthost, policy="cabf") as server, \
            httpx.Client(base_url=server.url) as client:
        acct = active_account(client, smtp_sink)
        assert probe(client, acct, "root").status_code == 422
        assert probe(client, acct, "administrator").status_code == 201


def test_probe_idempotency_key(http: httpx.Client, smtp_sink: SmtpSink, acct: Account) -> None:
    """The same Idempotency-Key returns the same probe and sends no second mail."""
    http.post("/api/v1/domains", json={"domain": DOMAIN}, headers=acct.auth)
    headers = {**acct.auth, "Idempotency-Key": "run1:2:1"}
    a = http.post(f"/api/v1/domains/{DOMAIN}/probes", json={"local_part": "admin"},
                  headers=headers)
    b = http.post(f"/api/v1/domains/{DOMAIN}/probes", json={"local_part": "admin"},
                  headers=headers)
    assert (a.status_code, b.status_code) == (201, 200)
    assert a.json() == b.json()
    assert len(smtp_sink.to(f"admin@{DOMAIN}")) == 1


def test_undeliverable_probe_is_502(http: httpx.Client, smtp_sink: SmtpSink,
                                    acct: Account) -> None:
    """When the mail server refuses the recipient the API says 502 with the SMTP reason."""
    smtp_sink.refuse.add(f"hostmaster@{DOMAIN}")
    r = probe(http, acct, "hostmaster")
    assert r.status_code == 502 and r.json()["error"] == "mail_undeliverable"
    assert "550" in r.json()["reason"]


def test_probe_unknown_domain(http: httpx.Client, acct: Account) -> None:
    """Probing a domain not on the account is 404 unknown_domain."""
    r = http.post("/api/v1/domains/other.test/probes", json={"local_part": "admin"},
                  headers=acct.auth)
    assert r.status_code == 404 and r.json()["error"] == "unknown_domain"
