"""Passphrase recovery against the live CA (real loopback HTTP and SMTP): the server picks
the question and binds it to a short-lived session, wrong answers lock the account's
recovery and mail its owner, an unknown email looks like a known one, and every reset is
mailed to the owner."""
from __future__ import annotations

from typing import Any

import httpx

from certwright.ca.passphrase import generate_passphrase
from certwright.clock import FakeClock
from tests.support.ca import (  # noqa: F401  (fixtures)
    Account,
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    http,
    questions,
    smtp_sink,
)

NAME = "Quentin Zyxwar"


def answer_of(question: str) -> str:
    return next(x["answer"] for x in questions() if x["question"] == question)


def start(http: httpx.Client, email: str) -> dict[str, str]:
    r = http.post("/api/v1/recovery", json={"email": email})
    assert r.status_code == 200, r.text
    return dict(r.json())


def answer(http: httpx.Client, session: dict[str, str], text: str,
           new: str | None = None) -> httpx.Response:
    return http.post("/api/v1/recovery/answer", json={
        "recovery_id": session["recovery_id"], "answer": text,
        "new_passphrase": new or generate_passphrase()})


def owner_mail(sink: SmtpSink, acct: Account, word: str) -> list[str]:
    return [m.body for m in sink.to(acct.email) if word in m.msg["Subject"].lower()]


def test_sixty_guesses_then_the_right_answer_fail(http: httpx.Client,
                                                  smtp_sink: SmtpSink) -> None:
    """The attack that took an account: 60 wrong answers, then the right one. Recovery
    locks after 5, the right answer no longer works, the owner's passphrase and token
    keep working, and the owner is mailed once, when it locks."""
    acct = active_account(http, smtp_sink, NAME)
    session = start(http, acct.email)
    codes = [answer(http, session, f"guess {i}").status_code for i in range(60)]
    assert codes[:5] == [403] * 5 and set(codes[5:]) == {429}, codes
    right = answer(http, session, answer_of(session["question"]))
    assert right.status_code == 429 and right.json()["error"] == "recovery_locked"
    assert int(right.headers["retry-after"]) > 0
    again = http.post("/api/v1/recovery", json={"email": acct.email})
    assert again.status_code == 429 and again.json()["error"] == "recovery_locked"
    assert http.get("/api/v1/domains", headers=acct.auth).status_code == 200
    assert http.post("/api/v1/login", json={"email": acct.email,
                                            "passphrase": acct.passphrase}).status_code == 200
    locked = owner_mail(smtp_sink, acct, "locked")
    assert len(locked) == 1 and "5 wrong answers" in locked[0]


def test_lock_ends_after_its_period(http: httpx.Client, smtp_sink: SmtpSink,
                                    fake_clock: FakeClock) -> None:
    """A locked recovery opens again once ``recovery_lock_hours`` have passed."""
    acct = active_account(http, smtp_sink, NAME)
    session = start(http, acct.email)
    for i in range(5):
        answer(http, session, f"guess {i}")
    assert http.post("/api/v1/recovery", json={"email": acct.email}).status_code == 429
    fake_clock.advance(hours=24, seconds=1)
    session = start(http, acct.email)
    assert answer(http, session, answer_of(session["question"])).status_code == 200


def test_caller_cannot_choose_the_question(http: httpx.Client, smtp_sink: SmtpSink) -> None:
    """The answer route takes no question (naming one is 422), and 30 starts of a recovery
    show a single question, not all five."""
    acct = active_account(http, smtp_sink, NAME)
    shown = {start(http, acct.email)["question"] for _ in range(30)}
    assert len(shown) == 1
    session = start(http, acct.email)
    other = next(q for q in questions() if q["question"] != session["question"])
    r = http.post("/api/v1/recovery/answer", json={
        "recovery_id": session["recovery_id"], "question": other["question"],
        "answer": other["answer"], "new_passphrase": generate_passphrase()})
    assert r.status_code == 422 and r.json()["error"] == "bad_request"
    assert "question" in r.json()["message"]
    old = http.post("/api/v1/recovery/answer", json={
        "email": acct.email, "question": other["question"], "answer": other["answer"],
        "new_passphrase": generate_passphrase()})
    assert old.status_code == 422


def test_unknown_email_looks_like_a_known_one(http: httpx.Client,
                                              smtp_sink: SmtpSink) -> None:
    """An email without an account gets the same status and body shape, a question that
    stays the same, and wrong answers count down and lock the same way; no mail is sent."""
    acct = active_account(http, smtp_sink, NAME)
    real = http.post("/api/v1/recovery", json={"email": acct.email})
    fake = http.post("/api/v1/recovery", json={"email": "nobody@mailhost.test"})
    assert real.status_code == fake.status_code == 200
    assert set(real.json()) == set(fake.json())
    assert fake.json()["question"] == start(http, "nobody@mailhost.test")["question"]
    sent = len(smtp_sink.messages)
    shapes = []
    for session in (real.json(), fake.json()):
        r = answer(http, session, "wrong")
        shapes.append((r.status_code, sorted(r.json()), r.json()["attempts_left"]))
    assert shapes[0] == shapes[1] == (403, ["attempts_left", "error", "message"], 4)
    for _ in range(4):
        answer(http, fake.json(), "wrong")
    assert http.post("/api/v1/recovery", json={"email": "nobody@mailhost.test"}) \
        .json()["error"] == "recovery_locked"
    assert len(smtp_sink.messages) == sent


def test_reset_mails_the_owner_and_ends_the_session(http: httpx.Client,
                                                    smtp_sink: SmtpSink) -> None:
    """The right answer with a good passphrase sets it, ends every API session, mails
    the owner, and the recovery session cannot be used again; a weak passphrase is 422
    and keeps the session."""
    acct = active_account(http, smtp_sink, NAME)
    session = start(http, acct.email)
    right = answer_of(session["question"])
    weak = answer(http, session, right.upper(), new="x")
    assert weak.status_code == 422 and weak.json()["error"] == "passphrase_rejected"
    new = generate_passphrase()
    ok = answer(http, session, f"  {right.upper()} ", new=new)
    assert ok.status_code == 200, ok.text
    assert http.get("/api/v1/domains", headers=acct.auth).status_code == 401
    assert http.post("/api/v1/login", json={"email": acct.email,
                                            "passphrase": new}).status_code == 200
    reset = owner_mail(smtp_sink, acct, "reset")
    assert len(reset) == 1 and "127.0.0.1" in reset[0] and new not in reset[0]
    used = answer(http, session, right)
    assert used.status_code == 410 and used.json()["error"] == "recovery_expired"


def test_session_expires(http: httpx.Client, smtp_sink: SmtpSink,
                         fake_clock: FakeClock) -> None:
    """A recovery session lives ``recovery_minutes`` (15): after that it is 410."""
    acct = active_account(http, smtp_sink, NAME)
    session = start(http, acct.email)
    fake_clock.advance(minutes=15, seconds=1)
    r = answer(http, session, answer_of(session["question"]))
    assert r.status_code == 410 and r.json()["error"] == "recovery_expired"
    assert http.post("/api/v1/login", json={"email": acct.email,
                                            "passphrase": acct.passphrase}).status_code == 200


def test_client_recovers_a_passphrase(http: httpx.Client, smtp_sink: SmtpSink) -> None:
    """The CA's client starts a recovery and answers it; a wrong answer is a permanent
    CAError bad_answer with the attempts left."""
    import pytest

    from certwright.ca.client import CAClient, CAError

    acct = active_account(http, smtp_sink, NAME)
    with CAClient(str(http.base_url)) as client:
        session = client.start_recovery(acct.email)
        assert set(session) == {"recovery_id", "question", "expires_at"}
        with pytest.raises(CAError) as wrong:
            client.answer_recovery(session["recovery_id"], "nope", generate_passphrase())
        assert wrong.value.code == "bad_answer" and not wrong.value.retryable
        assert wrong.value.body["attempts_left"] == 4
        new = generate_passphrase()
        client.answer_recovery(session["recovery_id"], answer_of(session["question"]), new)
        assert client.login(acct.email, new)


def test_decoy_question_gives_way_to_a_new_account(http: httpx.Client,
                                                   smtp_sink: SmtpSink) -> None:
    """An email asked about before it had an account gets one of its own questions once
    the account exists, not the decoy's."""
    from tests.support.ca import follow

    email = "later@mailhost.test"
    assert start(http, email)["question"] not in {q["question"] for q in questions()}
    phrase = generate_passphrase(NAME, email)
    http.post("/api/v1/accounts", json={"email": email, "name": NAME, "passphrase": phrase,
                                        "questions": questions()}).raise_for_status()
    follow(http, smtp_sink.last_to(email).link()).raise_for_status()
    session = start(http, email)
    assert session["question"] in {q["question"] for q in questions()}
    assert answer(http, session, answer_of(session["question"])).status_code == 200


def test_recovery_keeps_its_secrets(http: httpx.Client, smtp_sink: SmtpSink,
                                    ca_server: Any) -> None:
    """Neither the logs, nor the mails, nor the CA's database hold a recovery id, an
    answer or the new passphrase in clear."""
    from structlog.testing import capture_logs

    acct = active_account(http, smtp_sink, NAME)
    new = generate_passphrase()
    with capture_logs() as logs:
        session = start(http, acct.email)
        answer(http, session, "a wrong guess")
        right = answer_of(session["question"])
        assert answer(http, session, right, new=new).status_code == 200
    db = (ca_server.ca_dir / "ca.sqlite3").read_bytes()
    for path in ca_server.ca_dir.glob("ca.sqlite3*"):
        db += path.read_bytes()
    mails = "".join(m.body for m in smtp_sink.messages)
    for secret in (session["recovery_id"], right, "a wrong guess", new):
        assert secret not in repr(logs) and secret not in mails
        assert secret.encode() not in db
