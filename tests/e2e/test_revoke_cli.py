"""``certwright revoke NAME [--reason REASON]`` as a user runs it (a subprocess per
command): on the built-in CA served over real HTTP and on the embedded CA long after its
run ended, the CA's CRL (fetched over HTTP, parsed with cryptography) lists the serial with
its reason; ``certificates`` says revoked; the daemon's schedule never renews it; after
keyCompromise the key is never used again, by certwright or by the CA."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from certwright.ca.mailserver import MailServer
from certwright.ca.server import CAServer

ROOT = Path(__file__).resolve().parents[2]
TEST_SETTINGS: dict[str, Any] = {"rate_limits": "off"}


def cli(tmp: Path, *args: str, now: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CERTWRIGHT_CRASH_AFTER_COMMITS"}
    env.update(CERTWRIGHT_STATE_DIR=str(tmp / "state"), CERTWRIGHT_LIVE_DIR=str(tmp / "live"))
    if now:
        env["CERTWRIGHT_NOW"] = now
    return subprocess.run([sys.executable, "-m", "certwright", *args], env=env, cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=240, check=False)


def ok(done: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert done.returncode == code, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    return done.stdout


def row(tmp: Path, name: str) -> dict[str, Any]:
    doc = json.loads(ok(cli(tmp, "certificates", name, "--json")))
    found: dict[str, Any] = doc["certificates"][0]
    return found


def crl_entry(ca_url: str, serial: str) -> x509.RevokedCertificate | None:
    """The serial's entry in the CA's CRL, fetched over HTTP; the CRL's signature checked."""
    crl = x509.load_der_x509_crl(httpx.get(f"{ca_url}/ca/crl", timeout=10).content)
    inter = x509.load_der_x509_certificate(
        httpx.get(f"{ca_url}/ca/intermediate.crt", timeout=10).content)
    assert crl.is_signature_valid(inter.public_key())
    return crl.get_revoked_certificate_by_serial_number(int(serial, 16))


def reason_of(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason


def public_key_der(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, None)
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[CAServer]:
    """The built-in CA served on loopback, its mail delivered by our SMTP server into a
    Maildir that the runs read."""
    mail = MailServer("127.0.0.1", 0, domains=["served.test"], maildir=tmp_path / "Maildir",
                      also_accept=lambda domain: domain.endswith(".served.test"))
    mail.start()
    ca = CAServer(tmp_path / "ca", smarthost=("127.0.0.1", mail.port), settings=TEST_SETTINGS)
    ca.start()
    try:
        yield ca
    finally:
        ca.stop()
        mail.stop()


def run_served(tmp: Path, ca: CAServer, domain: str, run_id: str) -> None:
    ok(cli(tmp, "run", "cacert", "-d", domain, "--run-id", run_id, "--set", f"ca={ca.url}",
           "--set", f"maildir={tmp / 'Maildir'}", "--set", "email=hostmaster@served.test"))


def test_revoke_on_a_served_ca_lists_the_serial_and_reason_in_its_crl(
        tmp_path: Path, served: CAServer) -> None:
    run_served(tmp_path, served, "www.served.test", "r1")
    serial = row(tmp_path, "www.served.test")["serial"]
    assert crl_entry(served.url, serial) is None
    out = ok(cli(tmp_path, "revoke", "www.served.test", "--reason", "cessationofoperation"))
    assert f"revoked www.served.test (serial {serial})" in out
    assert "cessationOfOperation" in out and str(tmp_path / "live" / "www.served.test") in out
    entry = crl_entry(served.url, serial)
    assert entry is not None and reason_of(entry) == x509.ReasonFlags.cessation_of_operation
    shown = row(tmp_path, "www.served.test")
    assert shown["state"] == "revoked" and shown["revoke_reason"] == "cessationOfOperation"
    assert shown["revoked_at"] and shown["next_renewal"] is None
    assert (tmp_path / "live" / "www.served.test" / "server.crt").exists()  # files kept
    table = ok(cli(tmp_path, "certificates"))
    assert [line.split()[1] for line in table.splitlines()
            if line.startswith("www.served.test ")] == ["revoked"]
    assert (f"www.served.test: revoked on {shown['revoked_at']} (cessationOfOperation), "
            "never renewed") in table
    again = ok(cli(tmp_path, "revoke", "www.served.test", "--reason", "superseded"))
    assert f"already revoked on {shown['revoked_at']}" in again
    assert "(cessationOfOperation)" in again
    # the inventory lost it (an older backup put back): the CA tells the first revocation
    from certwright.state.sqlite import SQLiteStore
    store = SQLiteStore(tmp_path / "state" / "certwright.sqlite")
    try:
        rec = store.find_certificate("www.served.test")
        assert rec is not None
        with store.transaction() as tx:
            tx.put_certificate(dataclasses.replace(rec, status="installed", revoked_at=None,
                                                   revoke_reason=None))
    finally:
        store.close()
    told = ok(cli(tmp_path, "revoke", "www.served.test", "--reason", "superseded"))
    assert f"already revoked on {shown['revoked_at']} (cessationOfOperation)" in told
    assert row(tmp_path, "www.served.test")["revoke_reason"] == "cessationOfOperation"


def test_revoke_on_the_embedded_ca_after_its_run_ended(tmp_path: Path) -> None:
    """The embedded CA is started on its own state for the revocation."""
    ok(cli(tmp_path, "run", "cacert", "-d", "old.example.test", "--run-id", "old"))
    shown = row(tmp_path, "old.example.test")
    assert refuses_connections(shown["issuer"])  # nothing serves the embedded CA now
    # a month later, as a user would come back to it
    later = shown["not_before"][:8] + "28T12:00:00Z"
    out = ok(cli(tmp_path, "revoke", "old.example.test", "--reason", "Superseded", now=later))
    assert f"revoked old.example.test (serial {shown['serial']})" in out
    assert refuses_connections(shown["issuer"])  # and stopped again
    with CAServer(tmp_path / "state" / "embedded" / "ca", settings=TEST_SETTINGS) as ca:
        entry = crl_entry(ca.url, shown["serial"])
    assert entry is not None and reason_of(entry) == x509.ReasonFlags.superseded
    assert row(tmp_path, "old.example.test")["state"] == "revoked"


def test_revoke_while_the_embedded_ca_is_served_uses_that_one(tmp_path: Path) -> None:
    """As under ``daemon --embedded``: the CA on the recorded port is ours (its
    intermediate says so), so revoke asks it instead of starting another."""
    from contextlib import ExitStack

    from certwright.ca.embedded import start

    ok(cli(tmp_path, "run", "cacert", "-d", "busy.example.test", "--run-id", "busy"))
    serial = row(tmp_path, "busy.example.test")["serial"]
    with ExitStack() as stack:
        emb = start(tmp_path / "state", [], stack)
        ok(cli(tmp_path, "revoke", "busy.example.test", "--reason", "affiliationChanged"))
        entry = crl_entry(emb.ca_url, serial)
    assert entry is not None and reason_of(entry) == x509.ReasonFlags.affiliation_changed


def test_key_compromise_marks_the_key_and_neither_certwright_nor_the_ca_use_it_again(
        tmp_path: Path, served: CAServer) -> None:
    folder = tmp_path / "live" / "key.served.test"
    run_served(tmp_path, served, "key.served.test", "k1")
    old_key = (folder / "server.key").read_bytes()
    serial = row(tmp_path, "key.served.test")["serial"]
    out = ok(cli(tmp_path, "revoke", "key.served.test", "--reason", "keycompromise"))
    assert "never use" in out and "new key" in out
    entry = crl_entry(served.url, serial)
    assert entry is not None and reason_of(entry) == x509.ReasonFlags.key_compromise
    note = folder / "server.key.compromised.txt"
    assert "keyCompromise" in note.read_text() and serial in note.read_text()
    assert (folder / "server.key").read_bytes() == old_key  # kept for the server until then
    # the next run for the name makes a new key
    run_served(tmp_path, served, "key.served.test", "k2")
    assert public_key_der((folder / "server.key").read_bytes()) != public_key_der(old_key)
    assert row(tmp_path, "key.served.test")["state"] == "valid"
    # a CSR with the old key: refused by certwright's own steps ...
    csr_file = tmp_path / "old.csr"
    old = serialization.load_pem_private_key(old_key, None)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "key.served.test")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("key.served.test")]),
                          critical=False)
           .sign(old, hashes.SHA256()))  # type: ignore[arg-type]
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    refused = cli(tmp_path, "run", "cacert", "-d", "key.served.test", "--run-id", "k3",
                  "--set", f"ca={served.url}", "--set", f"maildir={tmp_path / 'Maildir'}",
                  "--set", "email=hostmaster@served.test", "--set", f"csr={csr_file}")
    assert refused.returncode == 1 and "revoked for keyCompromise" in refused.stderr + \
        refused.stdout
    # ... and by the CA, for any account that asks
    creds = json.loads(next((tmp_path / "state" / "accounts").glob("*.json")).read_text())
    with httpx.Client(base_url=served.url, timeout=10) as http:
        token = http.post("/api/v1/login", json={"email": creds["email"],
                                                 "passphrase": creds["passphrase"]}).json()
        answer = http.post("/api/v1/certificates", headers={
            "Authorization": f"Bearer {token['token']}"}, json={
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
            "idempotency_key": "old-key"})
    assert answer.status_code == 422 and answer.json()["error"] == "key_compromised"
    assert serial in answer.json()["message"]


def test_the_daemons_schedule_never_renews_a_revoked_certificate(
        tmp_path: Path, served: CAServer) -> None:
    from certwright.clock import FakeClock, parse_instant
    from certwright.engine.daemon.renew import Renewer
    from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
    from certwright.state.sqlite import SQLiteStore

    run_served(tmp_path, served, "sched.served.test", "s1")
    shown = row(tmp_path, "sched.served.test")
    ok(cli(tmp_path, "revoke", "sched.served.test"))
    started: list[str] = []
    state = tmp_path / "state"
    store = SQLiteStore(state / "certwright.sqlite")
    renewer = Renewer(state, store, FakeClock(parse_instant(shown["not_after"])),
                      lambda name: load_pipeline(resolve_pipeline_path(name)),
                      lambda *a: started.append(a[2]) or a[2])
    try:
        assert renewer.check() == [] and started == []
    finally:
        renewer.close()
        store.close()
    # a new run for the name is possible, and its certificate is scheduled as usual
    run_served(tmp_path, served, "sched.served.test", "s2")
    renewed = row(tmp_path, "sched.served.test")
    assert renewed["state"] == "valid" and renewed["next_renewal"] == renewed["renew_at"]
    store = SQLiteStore(state / "certwright.sqlite")
    renewer = Renewer(state, store, FakeClock(parse_instant(renewed["not_after"])),
                      lambda name: load_pipeline(resolve_pipeline_path(name)),
                      lambda *a: started.append(a[2]) or a[2])
    try:
        assert len(renewer.check()) == 1 and len(started) == 1
    finally:
        renewer.close()
        store.close()


def test_an_unknown_name_or_reason_is_a_usage_error(tmp_path: Path) -> None:
    ok(cli(tmp_path, "run", "cacert", "-d", "known.example.test", "--run-id", "k"))
    unknown = cli(tmp_path, "revoke", "nothing.example.test")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "no certificate named 'nothing.example.test'" in unknown.stderr
    assert "known.example.test" in unknown.stderr
    for reason in ("bored", "certificateHold"):
        bad = cli(tmp_path, "revoke", "known.example.test", "--reason", reason)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert "keyCompromise" in bad.stderr and "cessationOfOperation" in bad.stderr
    assert row(tmp_path, "known.example.test")["state"] == "valid"


def test_an_unreachable_ca_or_a_missing_account_is_a_sentence(
        tmp_path: Path, served: CAServer) -> None:
    run_served(tmp_path, served, "gone.served.test", "g1")
    for creds in (tmp_path / "state" / "accounts").glob("*.json"):
        creds.rename(creds.with_suffix(".away"))
    missing = cli(tmp_path, "revoke", "gone.served.test")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "no CA account" in missing.stderr and "hostmaster@served.test" in missing.stderr
    for creds in (tmp_path / "state" / "accounts").glob("*.away"):
        creds.rename(creds.with_suffix(".json"))
    served.stop()
    down = cli(tmp_path, "revoke", "gone.served.test")
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "cannot be reached" in down.stderr and served.url in down.stderr
    assert row(tmp_path, "gone.served.test")["state"] == "valid"


def test_a_revoke_that_died_after_the_cas_answer_is_finished_by_the_next(
        tmp_path: Path, served: CAServer) -> None:
    """The inventory says revoked (keyCompromise) but the schedule and the key were not
    seen to yet: the next revoke marks the key, and the daemon renews nothing."""
    from certwright.clock import FakeClock, parse_instant
    from certwright.engine.daemon.renew import Renewer
    from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
    from certwright.state.records import REVOKED
    from certwright.state.sqlite import SQLiteStore

    run_served(tmp_path, served, "half.served.test", "h1")
    state = tmp_path / "state"
    store = SQLiteStore(state / "certwright.sqlite")
    try:
        rec = store.find_certificate("half.served.test")
        assert rec is not None
        with store.transaction() as tx:
            tx.put_certificate(dataclasses.replace(
                rec, status=REVOKED, revoked_at="2026-12-01T00:00:00Z",
                revoke_reason="keyCompromise", renew_at=None))
    finally:
        store.close()
    out = ok(cli(tmp_path, "revoke", "half.served.test"))
    assert "already revoked on 2026-12-01T00:00:00Z (keyCompromise)" in out
    assert "never use it again" in out
    assert (tmp_path / "live" / "half.served.test" / "server.key.compromised.txt").exists()
    started: list[str] = []
    store = SQLiteStore(state / "certwright.sqlite")
    renewer = Renewer(state, store, FakeClock(parse_instant(rec.not_after)),
                      lambda name: load_pipeline(resolve_pipeline_path(name)),
                      lambda *a: started.append(a[2]) or a[2])
    try:
        assert renewer.check() == [] and started == []
    finally:
        renewer.close()
        store.close()


def test_on_a_terminal_it_asks_first_and_no_means_nothing_revoked(tmp_path: Path) -> None:
    ok(cli(tmp_path, "run", "cacert", "-d", "ask.example.test", "--run-id", "ask"))
    leader, follower = os.openpty()
    env = {**os.environ, "CERTWRIGHT_STATE_DIR": str(tmp_path / "state"),
           "CERTWRIGHT_LIVE_DIR": str(tmp_path / "live")}
    try:
        os.write(leader, b"n\n")
        done = subprocess.run([sys.executable, "-m", "certwright", "revoke",
                               "ask.example.test"], env=env, cwd=ROOT, stdin=follower,
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 0, done.stderr
    assert "Revoke certificate ask.example.test" in done.stdout
    assert "nothing revoked" in done.stdout
    assert row(tmp_path, "ask.example.test")["state"] == "valid"
