"""An ACME run moves to another host mid-order and finishes there: its account and its
order are kept in the store (sealed), so the other host signs with the same account and
goes on with the same order, and the CA sees one account, one order, one certificate.

Two hosts are two state folders on one store file with one store key, as in
test_kept_in_store.py; the CA is the built-in one's ACME server over HTTP on loopback.
Host alpha registers the account and opens the order, then the run waits for a file; it
is moved to beta, which has none of alpha's files, and beta answers the challenge,
finalizes, downloads and installs. Without a store key beta cannot: it says the account
is not there.

A third host with none of the files revokes the certificate: the certificate and the
account come from the store."""
from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.fixtures.daemon.harness import cli, env_for
from tests.support.acme_server import AcmeCA, peer_port, start_acme_ca  # noqa: F401
from tests.support.ca import SmtpSink, smtp_sink  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
NAME = "moved.acme.test"
ACME = 'directory: "${directory}", contact: "${contact}", allow_insecure: "${allow_insecure}"'
PIPELINE = f"""
pipeline: acme-moving
version: 1
inputs:
  domain: {{type: hostname, required: true}}
  directory: {{type: string, required: true}}
  contact: {{type: email, default: "admin@${{domain}}"}}
  allow_insecure: {{type: bool, default: true}}
  http_address: {{type: string, required: true}}
  go: {{type: string, required: true}}
  cert_dir: {{type: string, required: true}}
initial: new
states:
  new:
    run:
      - step: key.generate
      - step: csr.generate
        with: {{key: "${{steps.key_generate.path}}", domains: ["${{domain}}"]}}
      - step: acme.account
        with: {{{ACME}}}
      - step: acme.order
        with: {{{ACME}, domains: ["${{domain}}"], challenge: http-01}}
    next: ordered
  ordered:
    run:
      - step: wait.file
        with: {{path: "${{go}}"}}
      - step: acme.challenge
        with: {{{ACME}, type: http-01, http_address: "${{http_address}}", wait: true,
                timeout: 60}}
      - step: acme.finalize
        with: {{{ACME}, csr: "${{steps.csr_generate.path}}"}}
      - step: acme.download
        with: {{{ACME}}}
      - step: install.files
        with:
          cert: "${{steps.acme_download.cert_path}}"
          chain: "${{steps.acme_download.chain_path}}"
          key: "${{steps.key_generate.path}}"
          dir: "${{cert_dir}}"
    next: installed
  installed: {{final: success}}
"""


@pytest.fixture
def ca(tmp_path: Path, smtp_sink: SmtpSink, peer_port: int) -> Iterator[AcmeCA]:
    yield from start_acme_ca(tmp_path, smtp_sink, http01_port=peer_port)


def _hosts(tmp_path: Path, key: Path | None):  # type: ignore[no-untyped-def]
    (tmp_path / "moving.yaml").write_text(PIPELINE)
    store = tmp_path / "shared" / "certwright.sqlite"
    store.parent.mkdir(mode=0o700)

    def on(host: str, *args: str):  # type: ignore[no-untyped-def]
        state = tmp_path / host
        extra = {"CERTWRIGHT_HOST": host}
        if key is not None:
            extra["CERTWRIGHT_STORE_KEY"] = str(key)
        return cli(state, "--state-dir", str(state), "--store", f"sqlite://{store}", *args,
                   env=env_for(state, extra), timeout=180)
    return on


def _order_on_alpha(tmp_path: Path, on, ca: AcmeCA) -> None:  # type: ignore[no-untyped-def]
    values = {"domain": NAME, "directory": ca.directory, "go": str(tmp_path / "go"),
              "http_address": f"127.0.0.1:{ca.http01_port}",
              "cert_dir": str(tmp_path / "installed")}
    parked = on("alpha", "run", str(tmp_path / "moving.yaml"), "--run-id", "a1", "--no-wait",
                *[a for k, v in values.items() for a in ("--set", f"{k}={v}")])
    assert parked.returncode == 3, parked.stderr[-3000:]
    assert (tmp_path / "alpha" / "runs" / "a1" / "acme-order.json").exists()
    # alpha's disk is not beta's: its run folder and its ACME accounts are not seen there
    shutil.rmtree(tmp_path / "alpha")


def _ca_counts(ca: AcmeCA) -> tuple[int, int, int]:
    with sqlite3.connect(next(ca.server.ca_dir.glob("*.sqlite*"))) as db:
        return tuple(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # type: ignore[return-value]
                     for t in ("acme_accounts", "acme_orders", "certificates"))


def test_an_acme_run_moved_mid_order_finishes_on_the_other_host(
        tmp_path: Path, ca: AcmeCA) -> None:
    key = tmp_path / "store.key"
    assert cli(tmp_path, "store", "keygen", str(key)).returncode == 0
    on = _hosts(tmp_path, key)
    _order_on_alpha(tmp_path, on, ca)
    assert _ca_counts(ca) == (1, 1, 0)

    assert on("beta", "move", "a1", "--host", "beta").returncode == 0
    (tmp_path / "go").write_text("go\n")
    done = on("beta", "--log-json", "resume", "a1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"acme_account_restored"' in done.stderr
    assert '"artefact_restored"' in done.stderr and "acme-order.json" in done.stderr
    assert "PRIVATE KEY" not in done.stderr
    # the same account and order: the CA made no second of either
    assert _ca_counts(ca) == (1, 1, 1)
    cert = x509.load_pem_x509_certificate((tmp_path / "installed" / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [NAME]
    account_key = next((tmp_path / "beta" / "acme" / "accounts").glob("*/account.key"))
    assert oct(account_key.stat().st_mode & 0o777) == "0o600"

    # A third host, with none of the files (not even the installed ones), revokes it:
    # the certificate and the account come from the store.
    (row,) = json.loads(on("gamma", "certificates", "--json").stdout)["certificates"]
    shutil.rmtree(tmp_path / "installed")
    revoked = on("gamma", "revoke", row["name"], "--reason", "superseded", "--yes")
    assert revoked.returncode == 0, revoked.stderr[-3000:]
    assert "revoked it (signed with the account)" in revoked.stdout
    assert "acme_account_restored" in revoked.stderr
    with sqlite3.connect(next(ca.server.ca_dir.glob("*.sqlite*"))) as db:
        assert db.execute("SELECT revoke_reason FROM certificates").fetchall() == [
            ("superseded",)]


def test_without_a_store_key_the_other_host_says_the_account_stayed_behind(
        tmp_path: Path, ca: AcmeCA) -> None:
    on = _hosts(tmp_path, None)
    _order_on_alpha(tmp_path, on, ca)
    assert on("beta", "move", "a1", "--host", "beta").returncode == 0
    (tmp_path / "go").write_text("go\n")
    done = on("beta", "resume", "a1")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "no ACME account" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
