"""The CA's outbox: mail written with what it announces, sent after commit, retried after
transient failures and after a restart, sent as one message (one Message-ID) however often
it is tried, failed at once with the MTA's words on a 5xx."""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from certwright.ca.outbox import BACKOFF, Outbox
from certwright.ca.outmail import Mailer
from certwright.ca.passphrase import generate_passphrase
from certwright.ca.server import CAServer
from certwright.ca.store import CAStore
from certwright.clock import UTC, FakeClock, parse_instant
from tests.support.ca import (  # noqa: F401  (fixtures)
    Account,
    SmtpSink,
    active_account,
    ca_server,
    http,
    make_csr,
    questions,
    smtp_sink,
    verified_domain,
)

DOMAIN = "example.test"


@pytest.fixture
def fake_clock() -> FakeClock:
    """Real 'now': certificates are signed valid today."""
    return FakeClock(datetime.now(UTC))


def outbox_of(server: CAServer, *, driven: bool = False) -> Outbox:
    """The server's outbox; ``driven``: its sender thread stopped, the test sends instead
    (so counts of what one send_due() did do not race the thread)."""
    service = server._server.config.app.state.service  # type: ignore[union-attr]
    if driven:
        service.sender.stop()
    return service.outbox  # type: ignore[no-any-return]


def join(http: httpx.Client, email: str) -> httpx.Response:
    name = "Queued Person"
    return http.post("/api/v1/accounts", json={
        "email": email, "name": name, "passphrase": generate_passphrase(name, email),
        "questions": questions()})


def sign(http: httpx.Client, acct: Account, key: str) -> httpx.Response:
    csr, _ = make_csr([DOMAIN])
    return http.post("/api/v1/certificates", json={"csr": csr, "idempotency_key": key},
                     headers=acct.auth)


def test_issuance_mail_survives_a_deferring_mta_and_a_restart(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock) -> None:
    """The issuance notice is a row committed with the certificate: while the MTA answers
    451 it stays queued (the certificate is issued all the same), a new CA process on the
    same folder sends it once the MTA takes mail again, and it arrives once."""
    ca_dir = tmp_path / "ca"
    with CAServer(ca_dir, smarthost=smtp_sink.smarthost, clock=fake_clock) as server, \
            httpx.Client(base_url=server.url, timeout=10) as http:
        acct = active_account(http, smtp_sink)
        verified_domain(http, smtp_sink, acct, DOMAIN)
        smtp_sink.defer.add(acct.email)
        r = sign(http, acct, "k1")
        assert r.status_code == 201, r.text
        serial = r.json()["serial"]
        rows = outbox_of(server).rows(kind="cert_issued")
        assert [(x["ref"], x["status"], x["attempts"]) for x in rows] == [(serial, "pending", 1)]
        assert "451" in rows[0]["last_error"]
    smtp_sink.defer.clear()
    fake_clock.advance(BACKOFF[0])
    with CAServer(ca_dir, smarthost=smtp_sink.smarthost, clock=fake_clock) as server:
        outbox = outbox_of(server)
        outbox.send_due()  # the new process's sender thread may be first: either sends it
        deadline = time.monotonic() + 10  # waits for the other thread, not for time
        while outbox.rows(kind="cert_issued")[0]["status"] != "sent" \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [x["status"] for x in outbox.rows(kind="cert_issued")] == ["sent"]
    notices = [m for m in smtp_sink.to(acct.email) if "serial" in str(m.msg["Subject"])]
    assert len(notices) == 1 and f"Serial: {serial}" in notices[0].body


def test_resend_after_lost_mark_keeps_message_id(tmp_path: Path, smtp_sink: SmtpSink,
                                                 fake_clock: FakeClock) -> None:
    """The same row delivered twice (its "sent" mark lost, as in a crash right after the
    MTA's 250) gives two copies with one Message-ID and one Date: receivers drop the copy."""
    store = CAStore(tmp_path / "ca.sqlite3", clock=fake_clock)
    mailer = Mailer(smarthost=smtp_sink.smarthost, mail_from="ca@ca.test", clock=fake_clock)
    outbox = Outbox(store=store, mailer=mailer, clock=fake_clock, key_path=tmp_path / "k")
    try:
        with store.transaction():
            row_id = outbox.enqueue("a@mailhost.test", "hello", "body\n", kind="test")
        body = outbox.row(row_id)["body"]  # type: ignore[index]
        assert outbox.deliver(row_id).status == "sent"
        fake_clock.advance(60)
        with store.transaction() as db:
            db.execute("UPDATE outbox SET status='pending', body=? WHERE id=?", (body, row_id))
        assert outbox.deliver(row_id).status == "sent"
    finally:
        mailer.close()
        store.close()
    copies = smtp_sink.to("a@mailhost.test")
    assert len(copies) == 2
    assert {m.msg["Message-ID"] for m in copies} == {f"<{row_id}@ca.test>"}
    assert len({m.msg["Date"] for m in copies}) == 1


def test_join_with_a_deferring_mta_is_queued_not_failed(
        http: httpx.Client, smtp_sink: SmtpSink, ca_server: CAServer,
        fake_clock: FakeClock) -> None:
    """A 451 on the confirmation mail: the join answers 201 (the account stands), the mail
    is retried on the backoff schedule and arrives once the MTA takes it."""
    smtp_sink.defer.add("late@mailhost.test")
    outbox = outbox_of(ca_server, driven=True)
    r = join(http, "late@mailhost.test")
    assert r.status_code == 201, r.text
    fake_clock.advance(BACKOFF[0])
    outbox.send_due()  # still 451: rescheduled, not failed
    row = outbox.rows(kind="account_confirm")[-1]
    assert (row["status"], row["attempts"]) == ("pending", 2)
    smtp_sink.defer.clear()
    assert outbox.send_due() == 0  # not due yet: the second delay is longer
    fake_clock.advance(BACKOFF[1])
    assert outbox.send_due() == 1
    assert len(smtp_sink.to("late@mailhost.test")) == 1


def test_permanent_refusal_fails_at_once_with_the_mtas_words(
        http: httpx.Client, smtp_sink: SmtpSink, ca_server: CAServer) -> None:
    """A 550 marks the row failed with the MTA's reply and the probe is 502 saying it."""
    acct = active_account(http, smtp_sink)
    http.post("/api/v1/domains", json={"domain": DOMAIN}, headers=acct.auth).raise_for_status()
    smtp_sink.refuse.add(f"admin@{DOMAIN}")
    r = http.post(f"/api/v1/domains/{DOMAIN}/probes", json={"local_part": "admin"},
                  headers=acct.auth)
    assert r.status_code == 502 and "550 5.1.1 no such mailbox here" in r.json()["reason"]
    row = outbox_of(ca_server).rows(kind="domain_probe")[-1]
    assert row["status"] == "failed" and "550 5.1.1" in row["last_error"]


def test_no_link_token_in_clear_in_the_store(http: httpx.Client, smtp_sink: SmtpSink,
                                             ca_server: CAServer) -> None:
    """Queued bodies are encrypted and sent ones dropped: the database never holds a link
    token, and the key file is 0600."""
    smtp_sink.defer.add("queued@mailhost.test")
    assert join(http, "queued@mailhost.test").status_code == 201
    acct = active_account(http, smtp_sink)
    token = smtp_sink.last_to(acct.email).link().split("token=")[1]
    ca_dir = ca_server.ca_dir
    raw = b"".join(p.read_bytes() for p in ca_dir.glob("*.sqlite*") if p.is_file())
    raw += b"".join(p.read_bytes() for p in ca_dir.glob("*.db*") if p.is_file())
    assert raw and token.encode() not in raw
    assert b"Someone, hopefully you" not in raw
    assert (ca_dir / "outbox.key").stat().st_mode & 0o777 == 0o600


def test_a_transient_failure_for_days_gives_up_with_the_last_reason(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock) -> None:
    """451 on every attempt: the delays grow to 15 minutes and stay there; five days after
    the row was written it is failed, saying how often it was tried and the MTA's words."""
    store = CAStore(tmp_path / "ca.sqlite3", clock=fake_clock)
    mailer = Mailer(smarthost=smtp_sink.smarthost, mail_from="ca@ca.test", clock=fake_clock)
    outbox = Outbox(store=store, mailer=mailer, clock=fake_clock, key_path=tmp_path / "k")
    smtp_sink.defer.add("far@mailhost.test")
    try:
        with store.transaction():
            row_id = outbox.enqueue("far@mailhost.test", "hello", "body\n", kind="test")
        delays = []
        while (delivery := outbox.deliver(row_id)).status == "queued":
            row = outbox.row(row_id)
            assert row is not None
            wait = (parse_instant(row["next_at"]) - fake_clock.now()).total_seconds()
            delays.append(wait)
            fake_clock.advance(wait)
    finally:
        mailer.close()
        store.close()
    assert delays[:3] == [15, 30, 60] and max(delays) == 900 == delays[-1]
    assert delivery.status == "failed" and "gave up after" in (delivery.reason or "")
    assert "451 4.3.0 try again later" in (delivery.reason or "")
