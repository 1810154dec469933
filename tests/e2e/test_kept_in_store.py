"""A run moves to another host without its files: what it made is kept in the store.

Two hosts are two state folders (each its own runs folder and certificates root) on one
store file (``--store sqlite:///...``), as two machines on one PostgreSQL store are. Host
alpha makes the key and the CSR, joins the built-in CA, follows its probe and gets the
certificate signed; the run then waits; it is moved to beta, which has none of alpha's
files, and beta installs it: the key, certificate and chain come back from the store,
sealed with the store key at rest. Without a store key beta says why it cannot.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.fixtures.daemon.harness import cli, env_for

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

PIPELINE = """
pipeline: moving
version: 1
inputs:
  domain: {type: hostname, required: true}
  email: {type: email, default: "webmaster@${domain}"}
  ca: {type: string, default: embedded}
  maildir: {type: string, default: embedded}
  go: {type: string, required: true}
  cert_dir: {type: string, required: true}
initial: new
states:
  new:
    run:
      - step: key.generate
      - step: csr.generate
        with: {key: "${steps.key_generate.path}", domains: ["${domain}"]}
      - step: ca.join
        with: {ca: "${ca}", email: "${email}", name: certwright operator}
      - step: wait.mail
        id: account_mail
        with: {maildir: "${maildir}", to: "${email}", link_base: "${ca}",
               link_path: /account/confirm/}
      - step: ca.activate
        with: {ca: "${ca}", email: "${email}", link: "${steps.account_mail.link}"}
    next: registered
  registered:
    run:
      - step: ca.probe
        with: {ca: "${ca}", email: "${email}", domains: ["${domain}"], local_part: postmaster}
    next: probed
  probed:
    run:
      - step: wait.mails
        id: probe_mails
        with: {maildir: "${maildir}", expect: "${steps.ca_probe.mails}", link_base: "${ca}"}
      - step: ca.verify
        with: {ca: "${ca}", links: "${steps.probe_mails.links}"}
      - step: ca.sign
        with: {ca: "${ca}", email: "${email}", csr: "${steps.csr_generate.path}"}
    next: signed
  signed:
    run:
      - step: wait.file
        with: {path: "${go}"}
      - step: install.files
        with:
          cert: "${steps.ca_sign.cert_path}"
          chain: "${steps.ca_sign.chain_path}"
          key: "${steps.key_generate.path}"
          dir: "${cert_dir}"
    next: installed
  installed: {final: success}
"""


def _hosts(tmp_path: Path, key: Path | None) -> tuple:  # type: ignore[type-arg]
    (tmp_path / "moving.yaml").write_text(PIPELINE)
    store = tmp_path / "shared" / "certwright.sqlite"
    store.parent.mkdir(mode=0o700)

    def on(host: str, *args: str):  # type: ignore[no-untyped-def]
        state = tmp_path / host
        extra = {"CERTWRIGHT_HOST": host, "CERTWRIGHT_LIVE_DIR": str(tmp_path / host / "live")}
        if key is not None:
            extra["CERTWRIGHT_STORE_KEY"] = str(key)
        return cli(state, "--state-dir", str(state), "--store", f"sqlite://{store}", *args,
                   env=env_for(state, extra), timeout=180)
    return on, store


def _start_on_alpha(tmp_path: Path, on) -> None:  # type: ignore[no-untyped-def]
    parked = on("alpha", "run", str(tmp_path / "moving.yaml"), "--run-id", "m1", "--no-wait",
                "--set", "domain=moved.example.test", "--set", f"go={tmp_path / 'go'}",
                "--set", f"cert_dir={tmp_path / 'installed'}")
    assert parked.returncode == 3, parked.stderr[-3000:]
    shown = on("alpha", "history", "m1").stdout
    assert "ca_sign" in shown or "ca.sign" in shown, shown


def test_a_run_moved_to_another_host_installs_what_it_made_from_the_store(
        tmp_path: Path) -> None:
    key = tmp_path / "store.key"
    made = cli(tmp_path, "store", "keygen", str(key))
    assert made.returncode == 0, made.stderr
    on, store = _hosts(tmp_path, key)
    _start_on_alpha(tmp_path, on)
    alpha_run = tmp_path / "alpha" / "runs" / "m1"
    alpha_key = (alpha_run / "server.key").read_bytes()
    alpha_cert = (alpha_run / "cert.pem").read_bytes()

    # At rest the store holds the key sealed: neither the PEM nor its base64 is there.
    conn = sqlite3.connect(store)
    rows = conn.execute("SELECT name, body FROM artefacts WHERE run_id='m1'").fetchall()
    conn.close()
    assert {Path(n).name for n, _ in rows} >= {"server.key", "server.csr", "cert.pem",
                                                "chain.pem"}
    raw = store.read_bytes() + Path(f"{store}-wal").read_bytes() \
        if Path(f"{store}-wal").exists() else store.read_bytes()
    assert b"PRIVATE KEY" not in raw and all("cw-sealed:v1:" in b for _, b in rows)

    shutil.rmtree(alpha_run)  # alpha's disk is not beta's: nothing of it is seen there
    moved = on("beta", "move", "m1", "--host", "beta")
    assert moved.returncode == 0, moved.stderr
    (tmp_path / "go").write_text("go\n")
    done = on("beta", "--log-json", "resume", "m1")
    assert done.returncode == 0, done.stderr[-3000:]

    beta_run = tmp_path / "beta" / "runs" / "m1"
    assert (beta_run / "server.key").read_bytes() == alpha_key
    assert stat.S_IMODE((beta_run / "server.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(beta_run.stat().st_mode) == 0o700
    assert (beta_run / "cert.pem").read_bytes() == alpha_cert
    installed = tmp_path / "installed"
    assert (installed / "server.key").read_bytes() == alpha_key
    cert = x509.load_pem_x509_certificate((installed / "server.crt").read_bytes())
    key_obj = serialization.load_pem_private_key(alpha_key, None)
    assert cert.public_key().public_bytes(*_SPKI) == key_obj.public_key().public_bytes(*_SPKI)
    assert '"artefact_restored"' in done.stderr and "PRIVATE KEY" not in done.stderr
    history = on("beta", "history", "m1").stdout
    assert "host alpha -> beta" in history

    # `certificates` answers on either host: beta checks its files, alpha the store's copy.
    (row,) = json.loads(on("beta", "certificates", "--json").stdout)["certificates"]
    assert (row["host"], row["kept"], row["problems"]) == (None, None, [])
    assert set(row["files"].values()) == {"ok"}
    (row,) = json.loads(on("alpha", "certificates", "--json").stdout)["certificates"]
    assert (row["host"], row["kept"], row["problems"]) == ("beta", True, [])
    assert set(row["files"].values()) == {"on beta"}
    table = on("alpha", "certificates").stdout
    assert "moved.example.test: installed on host beta" in table
    assert "its certificate is kept in the store" in table


def test_without_a_store_key_the_other_host_says_the_key_stayed_behind(
        tmp_path: Path) -> None:
    on, store = _hosts(tmp_path, None)
    _start_on_alpha(tmp_path, on)
    conn = sqlite3.connect(store)
    kinds = sorted(r[0] for r in conn.execute(
        "SELECT json_extract(body, '$.kind') FROM artefacts WHERE run_id='m1'"))
    conn.close()
    assert "key" not in kinds and "cert" in kinds  # certificates are kept in clear; keys not
    assert on("beta", "move", "m1", "--host", "beta").returncode == 0
    (tmp_path / "go").write_text("go\n")
    shutil.rmtree(tmp_path / "alpha" / "runs")  # alpha's disk is not beta's
    failed = on("beta", "resume", "m1")
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "is not on this host: without a store key" in failed.stderr
    assert not (tmp_path / "installed").exists()


def test_the_store_key_comes_from_the_configuration_and_an_unsafe_one_is_refused(
        tmp_path: Path) -> None:
    """``store_key:`` in the configuration (relative to its file) seals the store; a key
    file open to others, or a missing one, is a usage error naming where it was named."""
    state = tmp_path / "state"
    conf = tmp_path / "etc" / "config.yaml"
    conf.parent.mkdir()
    assert cli(tmp_path, "store", "keygen", str(conf.parent / "store.key")).returncode == 0
    conf.write_text("store_key: store.key\n")
    (tmp_path / "p.yaml").write_text(
        "pipeline: p\nversion: 1\ninitial: a\nstates:\n"
        "  a: {run: [{step: key.generate}], next: done}\n  done: {final: success}\n")

    def run(*args: str):  # type: ignore[no-untyped-def]
        return cli(state, "--state-dir", str(state), "--config", str(conf), *args,
                   env=env_for(state))
    done = run("run", str(tmp_path / "p.yaml"), "--run-id", "c1")
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(state / "certwright.sqlite")
    (body,) = [r[0] for r in conn.execute("SELECT body FROM artefacts WHERE run_id='c1'")]
    conn.close()
    assert json.loads(body)["kind"] == "key" and "cw-sealed:v1:" in body

    (conf.parent / "store.key").chmod(0o644)
    refused = run("run", str(tmp_path / "p.yaml"), "--run-id", "c2")
    assert refused.returncode == 2, refused.stderr
    assert f"store_key ({conf}:1" in refused.stderr and "chmod 600" in refused.stderr
    missing = cli(state, "--state-dir", str(state), "--store-key", str(tmp_path / "none"),
                  "status", env=env_for(state))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in refused.stderr + missing.stderr
