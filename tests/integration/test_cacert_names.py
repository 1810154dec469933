"""The cacert pipeline for several names and wildcards: the built-in CA over loopback HTTP,
its mail over loopback SMTP into a real Maildir, the engine on a real SQLite store.

One probe goes out for each base domain that no verified domain covers (``www.a`` and
``*.a`` are covered by ``a``), all of them from one step; one state waits for every probe
mail; one CSR carries every name.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certwright.ca.mailserver import MailServer
from certwright.ca.server import CAServer
from certwright.clock import FakeClock, SystemClock
from certwright.engine.model.inputs import coerce_inputs
from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.errors import InputError
from certwright.mail.maildir import Maildir
from certwright.mail.parse import parse_message
from certwright.state.records import RunRecord
from certwright.state.sqlite import SQLiteStore
from tests.support.engine import pump_until

MAIL_DOMAINS = ["example.test", "other.test", "new.test"]
ACCOUNT = "webmaster@example.test"  # one account for every run: its verifications carry over


class World:
    """A CA and a mail server sharing a fake clock with an engine. The run reads its own
    Maildir: the test hands it the mail the CA sent (as the user's mail system would)."""

    def __init__(self, tmp: Path, clock: FakeClock, ca: CAServer, engine: Engine) -> None:
        self.tmp, self.clock, self.ca, self.engine = tmp, clock, ca, engine
        self.sent = Maildir(tmp / "delivered")
        self.inbox = Maildir(tmp / "inbox")
        self.spec = load_pipeline(resolve_pipeline_path("cacert"))

    def start(self, run_id: str, **given: Any) -> str:
        inputs = coerce_inputs(self.spec, {"ca": self.ca.url, "maildir": str(self.inbox.path),
                                           "cert_dir": str(self.tmp / run_id),
                                           "email": ACCOUNT, **given})
        return self.engine.start_run(self.spec, inputs, run_id=run_id)

    def hand_over(self, only: Callable[[str], bool] = lambda to: True) -> list[str]:
        """Move the mail the CA sent (to addresses ``only`` accepts) into the run's
        Maildir; returns the recipients."""
        moved = []
        for name in self.sent.list_new():
            raw = self.sent.read(name)
            to = parse_message(raw).to_addrs[0].lower()
            if only(to):
                self.inbox.deliver(raw)
                os.unlink(self.sent.path / "new" / name)
                moved.append(to)
        return moved

    def probes_waiting(self) -> list[str]:
        """Recipients of the probe mails the CA sent and nobody has taken yet."""
        out = []
        for name in self.sent.list_new():
            mail = parse_message(self.sent.read(name))
            if mail.subject.startswith("Verify "):
                out.append(mail.to_addrs[0].lower())
        return sorted(out)

    def until(self, run_id: str, what: Callable[[RunRecord], bool]) -> RunRecord:
        self.engine.wake(run_id)
        return pump_until(self.engine, run_id, what)

    def finish(self, run_id: str) -> RunRecord:
        """From a run waiting for its issuance mail to its end."""
        self.hand_over()
        return self.until(run_id, lambda r: r.status in ("succeeded", "failed"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = FakeClock(SystemClock().now())
    mail = MailServer("127.0.0.1", 0, domains=MAIL_DOMAINS, maildir=tmp_path / "delivered")
    mail.start()
    ca = CAServer(tmp_path / "ca", smarthost=("127.0.0.1", mail.port), clock=clock)
    ca.start()
    state = tmp_path / "state"
    engine = Engine(SQLiteStore(state / "certwright.sqlite"), state, clock=clock,
                    options=EngineOptions(workers=4))
    engine.open()
    w = World(tmp_path, clock, ca, engine)
    w.sent.ensure()
    w.inbox.ensure()
    try:
        yield w
    finally:
        engine.close()
        ca.stop()
        mail.stop()


def _joined(w: World, run_id: str) -> RunRecord:
    """Past the account's confirmation mail, to the first wait after it."""
    pump_until(w.engine, run_id, lambda r: r.status == "waiting" and r.state == "new")
    assert w.hand_over() == [ACCOUNT]
    return w.until(run_id, lambda r: r.status == "waiting" and r.state != "new")


def _sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return sorted(cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))


def test_a_name_its_www_and_its_wildcard_need_one_probe_and_get_one_certificate(world: World):
    """example.test, www.example.test, *.example.test: one probe mail (to the base domain),
    then one certificate whose SAN lists all three, which openssl verifies."""
    rid = world.start("three", domains="example.test,www.example.test,*.example.test")
    run = _joined(world, rid)
    assert run.state == "probed"
    assert world.probes_waiting() == ["postmaster@example.test"]
    world.hand_over()
    run = world.until(rid, lambda r: r.state == "signed" and r.status == "waiting")
    run = world.finish(rid)
    assert run.status == "succeeded" and run.state == "installed", run.error
    cert = world.tmp / "three" / "server.crt"
    assert _sans(cert) == ["*.example.test", "example.test", "www.example.test"]
    signed = run.vars["ca_sign"]
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", signed["root_path"], "-untrusted",
         signed["chain_path"], str(cert)], capture_output=True, text=True, check=False)
    assert verified.stdout.strip() == f"{cert}: OK", verified.stderr
    assert "*.example.test" in run.vars["summary"]["report"]


def test_probes_for_two_base_domains_go_out_together_and_one_state_waits_for_both(
        world: World):
    """Two base domains: two probes from one step; the run stays in `probed` until both
    mails are in; a later run probes only the base domain no verification covers."""
    rid = world.start("two", domains=["example.test", "other.test", "*.other.test"])
    run = _joined(world, rid)
    assert run.state == "probed"
    assert world.probes_waiting() == ["postmaster@example.test", "postmaster@other.test"]
    assert "postmaster@example.test" in run.waiting and "postmaster@other.test" in run.waiting

    world.hand_over(lambda to: to == "postmaster@example.test")
    run = world.until(rid, lambda r: r.status == "waiting")
    assert run.state == "probed" and "(1 of 2 in)" in run.waiting
    assert "postmaster@other.test" in run.waiting and "example.test," not in run.waiting

    world.hand_over(lambda to: to == "postmaster@other.test")
    world.until(rid, lambda r: r.state == "signed" and r.status == "waiting")
    run = world.finish(rid)
    assert run.status == "succeeded", run.error
    assert _sans(world.tmp / "two" / "server.crt") == [
        "*.other.test", "example.test", "other.test"]

    # example.test is verified: www under it needs no probe; new.test does.
    again = world.start("again", domains="www.example.test,new.test")
    run = world.until(again, lambda r: r.status == "waiting")
    assert run.state == "probed" and world.probes_waiting() == ["postmaster@new.test"]
    world.hand_over()
    world.until(again, lambda r: r.state == "signed" and r.status == "waiting")
    assert world.finish(again).status == "succeeded"

    # Every base domain verified: no probe at all, straight from registered to verified.
    third = world.start("third", domain="*.other.test")
    run = world.until(third, lambda r: r.status == "waiting" and r.state == "signed")
    assert world.probes_waiting() == []
    moves = [(e.data["from"], e.data["to"]) for e in world.engine.store.journal(third)
             if e.kind == "entered"]
    assert ("registered", "verified") in moves and ("registered", "probed") not in moves
    assert world.finish(third).status == "succeeded"
    assert _sans(world.tmp / "third" / "server.crt") == ["*.other.test"]


def test_the_probes_deadline_probes_every_domain_not_followed_again(world: World):
    """Neither probe mail is taken within 48 hours: the state times out, and `registered`
    probes both again (the links lived 48 hours from being sent together)."""
    rid = world.start("late", domains="example.test,other.test")
    run = _joined(world, rid)
    assert run.state == "probed" and run.deadline
    first = world.probes_waiting()
    for name in world.sent.list_new():
        os.unlink(world.sent.path / "new" / name)
    world.clock.advance(days=2, seconds=1)
    run = world.until(rid, lambda r: r.status == "waiting" and r.counters.get("expired") == 1)
    assert run.state == "probed" and world.probes_waiting() == first


def test_a_wildcard_on_a_public_suffix_never_reaches_the_ca(world: World):
    """`*.co.uk` is refused with the inputs, naming the name and the suffix (the CA would
    refuse it too: one check, certwright.domains)."""
    with pytest.raises(InputError) as info:
        world.start("suffix", domains="example.test,*.co.uk")
    assert "item 2 ('*.co.uk')" in str(info.value) and "public suffix co.uk" in str(info.value)


def test_the_built_in_ca_takes_d_names_of_two_base_domains(tmp_path: Path):
    """`run cacert -d a.test -d '*.b.test'` with nothing set up: the embedded mail server
    takes the account's and both probes' mail, and the certificate names both."""
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "certwright", "-v", "run", "cacert", "-d", "a.test",
         "-d", "*.b.test",
         "--set", f"cert_dir={tmp_path / 'certs'}"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _sans(tmp_path / "certs" / "server.crt") == ["*.b.test", "a.test"]
    probed = [line for line in done.stderr.splitlines() if "ca_probe_sent" in line]
    assert len(probed) == 2, probed
