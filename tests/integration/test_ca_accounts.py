"""Joining the CA: passphrase rules over HTTP, the confirmation mail and link, login,
recovery, and the 48-hour purge of unconfirmed accounts (real loopback HTTP and SMTP)."""
from __future__ import annotations

import httpx
from structlog.testing import capture_logs

from certwright.ca.passphrase import generate_passphrase
from certwright.clock import FakeClock
from tests.support.ca import (  # noqa: F401  (fixtures)
    LINK_RE,
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    follow,
    http,
    questions,
    smtp_sink,
)

EMAIL = "qzyx@mailhost.test"
NAME = "Quentin Zyxwar"


def join(http: httpx.Client, passphrase: str, email: str = EMAIL) -> httpx.Response:
    return http.post("/api/v1/accounts", json={"email": email, "name": NAME,
                                               "passphrase": passphrase,
                                               "questions": questions()})


def test_weak_passphrase_reports_every_rule(http: httpx.Client) -> None:
    """A join with a bad passphrase is 422 passphrase_rejected listing all broken rules."""
    r = join(http, "quentin")
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "passphrase_rejected"
    assert {x["rule"] for x in body["rules"]} == {"name", "upper", "space", "symbol", "length"}
    assert "quentin" not in body["message"]


def test_join_confirm_login(http: httpx.Client, smtp_sink: SmtpSink) -> None:
    """join -> mail -> GET page changes nothing -> POST confirms -> login works."""
    phrase = generate_passphrase()
    r = join(http, phrase)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "pending" and body["account_id"].startswith("acct_")
    assert join(http, phrase).json()["account_id"] == body["account_id"]  # idempotent
    assert join(http, generate_passphrase()).status_code == 409

    mail = smtp_sink.last_to(EMAIL)
    assert len(smtp_sink.to(EMAIL)) == 1
    link = mail.link()
    assert "/account/confirm/" in link and LINK_RE.search(link)
    assert http.post("/api/v1/login", json={"email": EMAIL, "passphrase": phrase}) \
        .json()["error"] == "account_not_confirmed"

    page = http.get(link.split("://", 1)[1].split("/", 1)[1].join(["/", ""]))
    assert page.status_code == 200
    assert EMAIL in page.text and "Confirm my account" in page.text
    assert "I did not ask for this" in page.text
    r = http.post("/api/v1/login", json={"email": EMAIL, "passphrase": phrase})
    assert r.status_code == 403 and r.json()["error"] == "account_not_confirmed"

    done = follow(http, link)
    assert done.status_code == 200 and "active" in done.text
    r = http.post("/api/v1/login", json={"email": EMAIL, "passphrase": phrase})
    assert r.status_code == 200
    token = r.json()["token"]
    assert http.get("/api/v1/domains", headers={"Authorization": f"Bearer {token}"}).json() == []
    bad = http.post("/api/v1/login", json={"email": EMAIL, "passphrase": phrase + "x"})
    assert bad.status_code == 401 and bad.json()["error"] == "bad_credentials"
    assert http.get("/api/v1/domains").status_code == 401


def test_confirmation_replay_is_link_used(http: httpx.Client, smtp_sink: SmtpSink) -> None:
    """The API confirmation of a used link is 410 link_used with the earlier outcome."""
    join(http, generate_passphrase()).raise_for_status()
    link = smtp_sink.last_to(EMAIL).link()
    _, request_id, token = LINK_RE.search(link).groups()  # type: ignore[union-attr]
    first = http.post("/api/v1/confirmations", json={"request_id": request_id, "token": token})
    assert first.json() == {"kind": "account", "status": "verified"}
    again = http.post("/api/v1/confirmations", json={"request_id": request_id, "token": token})
    assert again.status_code == 410
    assert again.json()["error"] == "link_used" and again.json()["outcome"] == "verified"


def test_unconfirmed_account_dropped_after_48h(http: httpx.Client, smtp_sink: SmtpSink,
                                               fake_clock: FakeClock) -> None:
    """After 48 h unconfirmed, the account is gone: its link expired, the email free again."""
    phrase = generate_passphrase()
    first = join(http, phrase).json()["account_id"]
    link = smtp_sink.last_to(EMAIL).link()
    fake_clock.advance(hours=48, seconds=1)
    r = follow(http, link)
    assert r.status_code in (404, 410)
    r = http.post("/api/v1/login", json={"email": EMAIL, "passphrase": phrase})
    assert r.status_code == 401
    again = join(http, phrase)
    assert again.status_code == 201 and again.json()["account_id"] != first


def test_not_my_account_cancels(http: httpx.Client, smtp_sink: SmtpSink) -> None:
    """'I did not ask for this' on a confirmation cancels the account; login stays refused."""
    phrase = generate_passphrase()
    join(http, phrase).raise_for_status()
    r = follow(http, smtp_sink.last_to(EMAIL).link(), action="reject")
    assert r.status_code == 200 and "cancelled" in r.text
    assert http.post("/api/v1/login", json={"email": EMAIL, "passphrase": phrase}) \
        .status_code == 403
    assert join(http, generate_passphrase()).status_code == 201  # the email is free again


def test_recovery(http: httpx.Client, smtp_sink: SmtpSink) -> None:
    """Recovery asks one of the five questions; the right answer sets a new passphrase."""
    acct = active_account(http, smtp_sink, NAME)
    q = http.post("/api/v1/recovery", json={"email": acct.email}).json()["question"]
    assert q in {x["question"] for x in questions()}
    answer = next(x["answer"] for x in questions() if x["question"] == q)
    new = generate_passphrase()
    wrong = http.post("/api/v1/recovery/answer", json={
        "email": acct.email, "question": q, "answer": "nope", "new_passphrase": new})
    assert wrong.status_code == 403 and wrong.json()["error"] == "bad_answer"
    weak = http.post("/api/v1/recovery/answer", json={
        "email": acct.email, "question": q, "answer": answer.upper(), "new_passphrase": "x"})
    assert weak.status_code == 422 and weak.json()["error"] == "passphrase_rejected"
    ok = http.post("/api/v1/recovery/answer", json={
        "email": acct.email, "question": q, "answer": answer.upper(), "new_passphrase": new})
    assert ok.status_code == 200
    assert http.get("/api/v1/domains", headers=acct.auth).status_code == 401  # sessions ended
    assert http.post("/api/v1/login", json={"email": acct.email, "passphrase": new}) \
        .status_code == 200


def test_validation_errors_are_json_without_input(http: httpx.Client) -> None:
    """A malformed body is 422 bad_request naming the field, never echoing the input."""
    r = http.post("/api/v1/accounts", json={"email": EMAIL, "passphrase": "S3cret Thing!!x"})
    assert r.status_code == 422 and r.json()["error"] == "bad_request"
    assert "name" in r.json()["message"] and "S3cret" not in r.text


def test_logs_hold_no_secrets(http: httpx.Client, smtp_sink: SmtpSink) -> None:
    """Join, confirm and login are logged, but never the passphrase, token or answers."""
    phrase = generate_passphrase()
    with capture_logs() as logs:
        join(http, phrase).raise_for_status()
        link = smtp_sink.last_to(EMAIL).link()
        follow(http, link).raise_for_status()
        token = http.post("/api/v1/login", json={"email": EMAIL, "passphrase": phrase}) \
            .json()["token"]
    events = {e["event"] for e in logs}
    assert {"account_joined", "link_verified", "login", "http_request"} <= events
    text = repr(logs)
    link_token = LINK_RE.search(link).group(3)  # type: ignore[union-attr]
    for secret in (phrase, token, link_token, "answer 1"):
        assert secret not in text


def test_request_id_echoed_and_logged(http: httpx.Client) -> None:
    """Every answer carries X-Request-Id: the client's (cut to 64 characters) or a random
    one; each request is logged once with method, path (no query) and status."""
    with capture_logs() as logs:
        mine = http.get("/api/v1/domains", headers={"X-Request-Id": "r" * 80})
        other = http.get("/nowhere", params={"token": "sekrit"})
    assert mine.status_code == 401 and mine.headers["x-request-id"] == "r" * 64
    assert other.status_code == 404 and len(other.headers["x-request-id"]) == 12
    assert other.json()["error"] == "not_found"
    lines = [(e["method"], e["path"], e["status"]) for e in logs if e["event"] == "http_request"]
    assert lines == [("GET", "/api/v1/domains", 401), ("GET", "/nowhere", 404)]
    assert "sekrit" not in repr(logs)
