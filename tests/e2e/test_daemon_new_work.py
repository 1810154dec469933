"""The zero-setup daemon (`daemon --embedded`) handles work it did not know at start: an
inbox request for ca=embedded is pointed at the embedded CA (not the word 'embedded' as a
URL), the embedded mail server takes mail for the domains of runs started later, and a
`wait.file` run goes on from inotify, not its poll."""
from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.daemon.harness import (
    Proc,
    cli,
    drop_request,
    env_for,
    spawn,
    statuses,
    wait_for,
)

WAIT_FILE = """
pipeline: waitfile
version: 1
inputs:
  path: {type: string, required: true}
initial: waiting
states:
  waiting:
    run:
      - step: wait.file
        with: {path: "${path}", poll: 1h}
    next: done
  done: {final: true}
"""


def _daemon(tmp_path: Path, config: str) -> tuple[Path, Proc]:
    state = tmp_path / "state"
    (tmp_path / "config.yaml").write_text(config)
    daemon = spawn(["--state-dir", str(state), "--log-json", "daemon", "--config",
                    str(tmp_path / "config.yaml")], env_for(state), tmp_path / "daemon.log")
    wait_for(lambda: any(e.get("event") == "daemon_ready" for e in daemon.events())
             or daemon.popen.poll() is not None, 60, "the daemon to be ready")
    assert daemon.popen.poll() is None, daemon.text()[-3000:]
    return state, daemon


def test_runs_for_domains_the_daemon_did_not_know_complete(tmp_path: Path):
    """A `run --no-wait` for a new domain and an inbox request with ca=embedded (the
    default) both reach installed through the daemon's embedded CA and mail server."""
    inbox = tmp_path / "inbox"
    state, daemon = _daemon(tmp_path, f"daemon:\n  embedded: true\n  embedded_domains: "
                                      f"[first.test]\n  inbox: {inbox}\n")
    try:
        certs = tmp_path / "certs"
        certs.mkdir()
        started = cli(state, "run", "cacert", "--no-wait", "--run-id", "late",
                      "--set", "domain=late.test", "--set", f"cert_dir={certs / 'late'}")
        assert started.returncode in (0, 3), started.stderr[-2000:]
        drop_request(inbox, "req.json", "cacert",
                     {"domain": "inbox.test", "cert_dir": str(certs / "inbox")},
                     run_id="from-inbox")
        for rid in ("late", "from-inbox"):
            wait_for(lambda rid=rid: statuses(state).get(rid, ("", ""))[1]
                     in ("succeeded", "failed"), 120, f"run {rid} to finish")
        assert statuses(state)["late"] == ("installed", "succeeded"), daemon.text()[-3000:]
        assert statuses(state)["from-inbox"] == ("installed", "succeeded"), \
            daemon.text()[-3000:]
        assert (certs / "late" / "server.crt").exists()
        assert (certs / "inbox" / "server.crt").exists()
        refused = [e for e in daemon.events() if e.get("event") == "mail_rcpt_refused"]
        assert not refused, refused
        shown = json.loads(cli(state, "history", "from-inbox", "--json").stdout)
        created = next(e for e in shown if e["kind"] == "created")
        assert created["data"]["inputs"]["ca"].startswith("http://127.0.0.1:")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]


def test_the_mail_server_still_refuses_domains_no_run_names(tmp_path: Path):
    import smtplib
    state, daemon = _daemon(tmp_path, "daemon:\n  embedded: true\n  embedded_domains: "
                                      "[first.test]\n")
    try:
        ports = json.loads((state / "embedded" / "ports.json").read_text())
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as smtp:
            smtp.ehlo()
            smtp.mail("a@first.test")
            code, _ = smtp.rcpt("postmaster@nobody.test")
            assert code == 550
            code, _ = smtp.rcpt("postmaster@first.test")
            assert code == 250
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]


def test_a_file_wait_goes_on_from_inotify_not_its_poll(tmp_path: Path):
    """Runs waiting on files (poll 1h, far beyond this test's timeouts) finish once the
    files appear: one the daemon started from its inbox, one parked by `run --no-wait`
    before its folder even existed."""
    inbox = tmp_path / "inbox"
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "waitfile.yaml").write_text(WAIT_FILE)
    state, daemon = _daemon(tmp_path, f"daemon:\n  inbox: {inbox}\n  pipelines: {pipelines}\n")
    try:
        drop_request(inbox, "w.json", "waitfile", {"path": str(tmp_path / "a" / "flag")},
                     run_id="from-inbox")
        (tmp_path / "a").mkdir()
        parked = cli(state, "run", str(pipelines / "waitfile.yaml"), "--no-wait", "--run-id",
                     "parked", "--set", f"path={tmp_path / 'b' / 'deeper' / 'flag'}")
        assert parked.returncode == 3, parked.stderr
        wait_for(lambda: statuses(state).get("from-inbox") == ("waiting", "waiting"), 30,
                 "the inbox run to wait")
        wait_for(lambda: any(e.get("event") == "file_wait_adopted"
                             and e.get("run_id") == "parked" for e in daemon.events()),
                 30, "the daemon to watch the parked run's folder")
        (tmp_path / "a" / "flag").write_text("go")
        (tmp_path / "b" / "deeper").mkdir(parents=True)
        (tmp_path / "b" / "deeper" / "flag").write_text("go")
        for rid in ("from-inbox", "parked"):
            wait_for(lambda rid=rid: statuses(state).get(rid) == ("done", "succeeded"), 30,
                     f"run {rid} to go on from the file's event")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]


def test_a_dropped_csr_is_signed_as_it_is_and_its_key_stays_with_its_owner(tmp_path: Path):
    """A CSR dropped in the inbox gets a certificate for that CSR's key, placed beside
    the kept CSR; the run makes no key of its own."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    inbox = tmp_path / "inbox"
    state, daemon = _daemon(tmp_path, f"daemon:\n  embedded: true\n  inbox: {inbox}\n")
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "own.test")]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("own.test")]),
                              critical=False)
               .sign(key, hashes.SHA256()))
        tmp = tmp_path / ".req.csr.tmp"
        tmp.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        tmp.replace(inbox / "req.csr")
        wait_for(lambda: any(s[1] in ("succeeded", "failed")
                             for s in statuses(state).values()), 120, "the CSR's run to end")
        [(rid, result)] = statuses(state).items()
        assert result == ("installed", "succeeded"), daemon.text()[-3000:]
        placed = inbox / "done" / f"{rid}-req.crt"
        cert = x509.load_pem_x509_certificate(placed.read_bytes())
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        assert cert.public_key().public_bytes(der, spki) == \
            key.public_key().public_bytes(der, spki)
        assert (inbox / "done" / f"{rid}-req.chain.pem").read_bytes().startswith(b"-----BEGIN")
        assert not list((state / "runs" / rid).rglob("*.key")), "the run made a key"
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
