"""The CA and the mail steps against a real Postfix on loopback delivering into a Maildir:
transient failures (Postfix stopped, answering 451) retried by the CA's outbox, a 5xx
reported at once with Postfix's words, and a postmaster mailbox shared with people."""
from __future__ import annotations

import re
import smtplib
import time
from datetime import datetime
from email import message_from_bytes
from pathlib import Path

import httpx
import pytest

from certwright.ca.outbox import BACKOFF, Outbox
from certwright.ca.passphrase import generate_passphrase
from certwright.ca.server import CAServer
from certwright.clock import UTC, FakeClock, SystemClock
from certwright.engine.model.inputs import coerce_inputs
from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
from certwright.engine.plugins.step import Done, StepContext, Wait
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.state.sqlite import SQLiteStore
from certwright.steps.mail import WaitMail
from tests.support.ca import LINK_RE, questions
from tests.support.engine import pump_until
from tests.support.mail import person_mail
from tests.support.postfix import RECIPE, Postfix, postfix  # noqa: F401  (fixture)

README = Path(__file__).resolve().parents[2] / "README.md"
DOMAIN = "example.test"


def outbox_of(server: CAServer) -> Outbox:
    return server._server.config.app.state.service.outbox  # type: ignore[union-attr,no-any-return]


def mail_to(pf: Postfix, address: str, *, timeout: float = 30, count: int = 1) -> list[bytes]:
    """Messages delivered for ``address`` (by To), waiting up to ``timeout`` for ``count``
    (Postfix delivers after its queue manager's turn, not when smtpd answered)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [p.read_bytes() for p in pf.delivered()]
        found = [raw for raw in found
                 if address.lower() in str(message_from_bytes(raw)["To"]).lower()]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def link_in(raw: bytes) -> str:
    text = message_from_bytes(raw).get_payload(decode=True).decode()  # type: ignore[union-attr]
    match = LINK_RE.search(text)
    assert match, text
    return match.group(1)


def join(http: httpx.Client, email: str) -> tuple[httpx.Response, str]:
    """POST /api/v1/accounts; (the response, the passphrase)."""
    name = "Pat Postmaster"
    passphrase = generate_passphrase(name, email)
    return http.post("/api/v1/accounts", json={
        "email": email, "name": name, "passphrase": passphrase,
        "questions": questions()}), passphrase


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


def test_the_readme_recipe_is_the_tested_one() -> None:
    """Every main.cf setting of the test's virtual mailbox recipe is in the README's."""
    readme = README.read_text()
    for line in RECIPE.splitlines():
        key = re.escape(line.split("=")[0].strip())
        assert re.search(rf"^\s+{key} = ", readme, re.MULTILINE), line


def test_a_stopped_or_deferring_postfix_delays_mail_but_fails_nothing(
        tmp_path: Path, postfix: Postfix, clock: FakeClock) -> None:
    """Postfix stopped during a join, then answering 451 during a probe: both requests
    answer 201 at once, the CA's outbox retries on its schedule, and each mail arrives once
    Postfix takes mail again."""
    with CAServer(tmp_path / "ca", smarthost=postfix.smarthost, clock=clock) as ca, \
            httpx.Client(base_url=ca.url, timeout=30) as http:
        outbox = outbox_of(ca)
        postfix.stop()
        r, passphrase = join(http, f"admin@{DOMAIN}")
        assert r.status_code == 201, r.text
        row = outbox.rows(kind="account_confirm")[-1]
        assert row["status"] == "pending" and "refused" in row["last_error"].lower()
        postfix.start()
        clock.advance(BACKOFF[0])
        outbox.send_due()
        confirm = mail_to(postfix, f"admin@{DOMAIN}")
        assert len(confirm) == 1
        link = link_in(confirm[0])
        token = link.split("token=")[1]
        http.post("/" + link.split("://", 1)[1].split("/", 1)[1].split("?")[0],
                  data={"token": token, "action": "verify"}).raise_for_status()
        login = http.post("/api/v1/login", json={"email": f"admin@{DOMAIN}",
                                                 "passphrase": passphrase})
        auth = {"Authorization": f"Bearer {login.json()['token']}"}
        http.post("/api/v1/domains", json={"domain": DOMAIN}, headers=auth).raise_for_status()
        postfix.defer(True)
        outbox.mailer.close()  # a kept session still talks to an smtpd from before the reload
        probe = http.post(f"/api/v1/domains/{DOMAIN}/probes",
                          json={"local_part": "postmaster"}, headers=auth)
        assert probe.status_code == 201, probe.text
        row = outbox.rows(kind="domain_probe")[-1]
        assert row["status"] == "pending" and "451" in row["last_error"]
        postfix.defer(False)
        outbox.mailer.close()
        clock.advance(BACKOFF[0])
        outbox.send_due()
        assert len(mail_to(postfix, f"postmaster@{DOMAIN}")) == 1
        assert [r["status"] for r in outbox.rows()] == ["sent", "sent"]


def test_a_recipient_postfix_refuses_is_a_502_with_its_words(
        tmp_path: Path, postfix: Postfix, clock: FakeClock) -> None:
    """A 5xx is permanent: the join answers 502 at once, saying what Postfix said."""
    with CAServer(tmp_path / "ca", smarthost=postfix.smarthost, clock=clock) as ca, \
            httpx.Client(base_url=ca.url, timeout=30) as http:
        r, _ = join(http, f"nobody-here@{DOMAIN}")
        assert r.status_code == 502, r.text
        assert "550" in r.json()["reason"] and "User unknown" in r.json()["reason"]
        assert outbox_of(ca).rows()[-1]["status"] == "failed"


def test_a_postmaster_mailbox_shared_with_people_is_left_as_it_is(
        tmp_path: Path, postfix: Postfix, clock: FakeClock) -> None:
    """People's mail to postmaster@ delivered by Postfix next to the CA's probe: the step
    takes the CA's link; every other message stays in new/, unread; the Maildir holds
    nothing of certwright's."""
    with smtplib.SMTP(*postfix.smarthost) as smtp:
        for body in ("no link here\n", "see http://wiki.people.example/page\n"):
            smtp.sendmail("alice@people.example", [f"postmaster@{DOMAIN}"],
                          person_mail(to=f"postmaster@{DOMAIN}", body=body))
    with CAServer(tmp_path / "ca", smarthost=postfix.smarthost, clock=clock) as ca:
        outbox = outbox_of(ca)
        with outbox.store.transaction():
            row = outbox.enqueue(f"postmaster@{DOMAIN}", f"Verify {DOMAIN}",
                                 f"open {ca.url}/domains/verify/probe_1?token=t\n",
                                 kind="domain_probe")
        assert outbox.deliver(row).status == "sent"
        assert len(mail_to(postfix, f"postmaster@{DOMAIN}", count=3)) == 3
        people = sorted(p.name for p in (postfix.maildir / "new").iterdir())
        ctx = StepContext(run_id="r", pipeline="p", state="probed", step_id="w",
                          idempotency_key="r:1:0", attempt=1, params={
                              "maildir": str(postfix.maildir), "to": f"postmaster@{DOMAIN}",
                              "link_base": ca.url, "link_path": "/domains/verify/probe_1"},
                          run_dir=tmp_path / "run", state_dir=tmp_path / "state",
                          clock=SystemClock())
        done = WaitMail().run(ctx)
    assert isinstance(done, Done), done
    assert done.marks and done.after is not None
    done.after()  # what the engine does once the take's marks are committed: the move
    assert done.outputs["link"].startswith(f"{ca.url}/domains/verify/probe_1")
    left = sorted(p.name for p in (postfix.maildir / "new").iterdir())
    assert len(left) == 2 and set(left) < set(people)
    assert sorted(p.name for p in postfix.maildir.iterdir()) == ["cur", "new", "tmp"]
    assert not isinstance(done, Wait)


def _retry_mail(ca: CAServer, clock: FakeClock, pf: Postfix, to: str, count: int) -> None:
    """Let the CA's outbox try again (its backoff passed) until ``count`` mails reached ``to``."""
    outbox = outbox_of(ca)
    outbox.mailer.close()  # kept sessions predate the MTA's restart or reload
    deadline = time.monotonic() + 30
    while len(mail_to(pf, to, timeout=0)) < count:
        assert time.monotonic() < deadline, f"no mail to {to}: {outbox.rows()[-1]}"
        clock.advance(BACKOFF[-1])
        outbox.send_due()
        time.sleep(0.1)


def test_a_cacert_run_survives_postfix_stopped_then_deferring(
        tmp_path: Path, postfix: Postfix, clock: FakeClock) -> None:
    """A cacert run whose mail goes through Postfix: Postfix is stopped when the run joins
    (its Maildir does not even exist yet) and answers 451 when the run probes; the run
    waits instead of failing, and reaches installed once Postfix takes mail again."""
    postfix.stop()
    state = tmp_path / "state"
    with CAServer(tmp_path / "ca", smarthost=postfix.smarthost, clock=clock) as ca:
        engine = Engine(SQLiteStore(state / "certwright.sqlite"), state, clock=clock,
                        options=EngineOptions(workers=4))
        engine.open()
        try:
            spec = load_pipeline(resolve_pipeline_path("cacert"))
            inputs = coerce_inputs(spec, {
                "domain": DOMAIN, "email": f"admin@{DOMAIN}", "ca": ca.url,
                "maildir": str(postfix.maildir), "cert_dir": str(tmp_path / "certs")})
            rid = engine.start_run(spec, inputs, run_id="via-postfix")
            run = pump_until(engine, rid, lambda r: r.status == "waiting")
            assert (run.state, run.status) == ("new", "waiting"), run.error
            postfix.start()
            _retry_mail(ca, clock, postfix, f"admin@{DOMAIN}", 1)
            postfix.defer(True)
            outbox_of(ca).mailer.close()
            engine.wake(rid)
            run = pump_until(engine, rid, lambda r: r.state == "probed"
                             and r.status == "waiting")
            assert "451" in outbox_of(ca).rows(kind="domain_probe")[-1]["last_error"]
            postfix.defer(False)
            _retry_mail(ca, clock, postfix, f"postmaster@{DOMAIN}", 1)
            engine.wake(rid)
            run = pump_until(engine, rid, lambda r: r.status in ("succeeded", "failed")
                             or (r.state == "signed" and r.status == "waiting"))
            deadline = time.monotonic() + 30
            while run.status != "succeeded" and time.monotonic() < deadline:
                engine.wake(rid)  # the issuance mail lands in the Maildir shortly
                run = pump_until(engine, rid, lambda r: r.status != "running")
                time.sleep(0.1)
        finally:
            engine.close()
    assert (run.state, run.status, run.alarms) == ("installed", "succeeded", []), run.error
