"""The cacert pipeline end to end: the engine, the built-in CA over loopback HTTP, the mail
server over loopback SMTP, a real Maildir, and (for the install) a real Apache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage

import pytest

from certwright.ca.client import CAClient, CAError
from certwright.ca.mailserver import MailServer
from certwright.ca.server import CAServer
from certwright.clock import FakeClock, SystemClock
from certwright.engine.model.inputs import coerce_inputs
from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.mail.books import books_dir
from certwright.mail.maildir import Maildir
from certwright.mail.parse import parse_message
from certwright.state.sqlite import SQLiteStore
from tests.support.apache import apache  # noqa: F401  (fixture)
from tests.support.engine import pump_until

DOMAIN = "example.test"


def _move_all(src: Maildir, dst: Maildir, only: Callable[[bytes], bool] = lambda raw: True):
    """Hand delivered mail to the run's Maildir (the test plays the user's mail system)."""
    moved = []
    for name in src.list_new():
        raw = src.read(name)
        if only(raw):
            dst.deliver(raw)
            os.unlink(src.path / "new" / name)
            moved.append(raw)
    return moved


def _link_of(raw: bytes) -> str:
    return parse_message(raw).links[0]


@pytest.fixture
def world(tmp_path):
    """A CA and a mail server sharing one fake clock with an engine; the run reads its own
    Maildir, so the test decides which mail the run gets to see, and when."""
    clock = FakeClock(SystemClock().now())
    server_md = Maildir(tmp_path / "delivered")
    server_md.ensure()
    inbox = Maildir(tmp_path / "inbox")
    inbox.ensure()
    mail = MailServer("127.0.0.1", 0, domains=[DOMAIN], maildir=server_md.path)
    mail.start()
    ca = CAServer(tmp_path / "ca", smarthost=("127.0.0.1", mail.port), clock=clock)
    ca.start()
    state = tmp_path / "state"
    engine = Engine(SQLiteStore(state / "certwright.sqlite"), state, clock=clock,
                    options=EngineOptions(workers=4))
    engine.open()
    try:
        yield clock, ca, server_md, inbox, engine, tmp_path
    finally:
        engine.close()
        ca.stop()
        mail.stop()


def test_expired_probe_link_is_refused_and_the_run_probes_again(world):
    clock, ca, server_md, inbox, engine, tmp = world
    spec = load_pipeline(resolve_pipeline_path("cacert"))
    inputs = coerce_inputs(spec, {"domain": DOMAIN, "ca": ca.url, "maildir": str(inbox.path),
                                  "cert_dir": str(tmp / "certs")})
    rid = engine.start_run(spec, inputs, run_id="exp")
    pump_until(engine, rid, lambda r: r.status == "waiting" and r.state == "new")
    assert len(_move_all(server_md, inbox)) == 1  # the account confirmation
    engine.wake(rid)
    run = pump_until(engine, rid, lambda r: r.status == "waiting" and r.state == "probed")
    assert run.deadline and "postmaster@example.test" in run.waiting

    # The user never follows the first probe's link; two days pass.
    first_probe = server_md.read(server_md.list_new()[0])
    os.unlink(server_md.path / "new" / server_md.list_new()[0])
    clock.advance(days=2, seconds=1)
    run = pump_until(engine, rid, lambda r: r.status == "waiting" and r.state == "probed"
                     and r.counters.get("expired") == 1)
    assert run.counters["probed"] == 2

    # The old link is refused by the CA: expired.
    with CAClient(ca.url) as client:
        _kind, request_id, token = client.parse_link(_link_of(first_probe))
        with pytest.raises(CAError) as refused:
            client.confirm(request_id, token)
    assert refused.value.code == "link_expired"

    # A look-alike mail with the right path on another port arrives first: never followed.
    second = server_md.read(server_md.list_new()[0])
    evil_link = _link_of(second).replace(ca.url, "http://127.0.0.1:9")  # right token, wrong port
    evil = EmailMessage()
    evil["From"], evil["To"] = "ca@certwright.invalid", f"postmaster@{DOMAIN}"
    evil["Subject"], evil["Message-ID"] = "Verify example.test", "<evil@attacker.invalid>"
    evil.set_content(f"Please confirm: {evil_link}\n")
    inbox.deliver(evil.as_bytes())
    _move_all(server_md, inbox)
    engine.wake(rid)
    run = pump_until(engine, rid, lambda r: r.state == "signed" and r.status == "waiting")
    aside = books_dir(tmp / "state", inbox.path) / ".quarantine" / "new"
    quarantined = list(aside.iterdir())
    assert any(b"127.0.0.1:9" in p.read_bytes() for p in quarantined if p.is_file())

    _move_all(server_md, inbox)  # the issuance mail, which notify.check compares
    engine.wake(rid)
    run = pump_until(engine, rid, lambda r: r.status == "succeeded")
    assert run.state == "installed" and not run.alarms
    transitions = [(e.data["from"], e.data["to"]) for e in engine.store.journal(rid)
                   if e.kind == "entered"]
    assert ("probed", "expired") in transitions and ("expired", "registered") in transitions


def test_cli_run_on_the_built_in_ca_installs_a_certificate_openssl_verifies(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(state)}
    args = [sys.executable, "-m", "certwright", "run", "cacert", "--set", f"domain={DOMAIN}",
            "--set", f"cert_dir={tmp_path / 'certs'}", "--run-id", "first"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    command = next(line.strip() for line in done.stdout.splitlines() if "openssl verify" in line)
    verified = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    assert verified.stdout.strip().endswith(": OK"), verified.stderr
    key = tmp_path / "certs" / "server.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"

    # A second run reuses the account and the verification: no probe, straight to verified.
    again = subprocess.run([*args[:-1], "second"], env=env, capture_output=True, text=True,
                           check=False, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    history = json.loads(subprocess.run(
        [sys.executable, "-m", "certwright", "history", "second", "--json"], env=env,
        capture_output=True, text=True, check=False).stdout)
    moves = [(e["data"]["from"], e["data"]["to"]) for e in history if e["kind"] == "entered"]
    assert ("registered", "verified") in moves and ("registered", "probed") not in moves
    assert any(e["kind"] == "step_done" and e["data"]["step"] == "ca_join"
               and e["data"]["outputs"]["reused"] for e in history)
    journal = json.dumps(history)
    passphrase_file = next((state / "accounts").glob("*.json"))
    assert json.loads(passphrase_file.read_text())["passphrase"] not in journal


def test_install_into_a_real_apache_reloads_and_serves_the_new_certificate(tmp_path, apache):
    before = apache.fingerprint()
    state = tmp_path / "state"
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(state)}
    args = [sys.executable, "-m", "certwright", "run", "cacert", "--set", f"domain={DOMAIN}",
            "--set", f"cert_dir={apache.cert_dir}",
            "--set", "reload_test=" + " ".join(apache.test_argv),
            "--set", "reload=" + " ".join(apache.reload_argv),
            "--set", f"check={apache.address}", "--run-id", "web"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "certwright", "status", "web", "--json"], env=env,
        capture_output=True, text=True, check=False).stdout)["runs"][0]
    assert status["state"] == "installed"
    history = json.loads(subprocess.run(
        [sys.executable, "-m", "certwright", "history", "web", "--json"], env=env,
        capture_output=True, text=True, check=False).stdout)
    checked = next(e for e in history if e["kind"] == "step_done"
               and e["data"]["step"] == "install_check")["data"]["outputs"]
    served = apache.fingerprint()
    assert served != before
    assert checked["fingerprint_sha256"].replace(":", "").lower() == served.replace(":", "").lower()
