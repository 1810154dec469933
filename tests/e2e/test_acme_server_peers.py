"""Peer ACME clients (Debian's certbot and lego) get certificates from the built-in CA's
ACME server with real http-01 (certbot --standalone and --webroot, lego --http) and
dns-01 (lego's exec provider against the test DNS server), then revoke them: the CRL
fetched over HTTP lists each, and openssl verifies each chain."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.integration.test_ca_sign import openssl_verify
from tests.support.acme_server import AcmeCA, peer_port, start_acme_ca  # noqa: F401
from tests.support.ca import SmtpSink, smtp_sink  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
DNS_HOOK = Path(__file__).resolve().parents[1] / "support" / "dns.py"


@pytest.fixture
def ca(tmp_path: Path, smtp_sink: SmtpSink, peer_port: int) -> Iterator[AcmeCA]:
    """The CA, its http-01 going to ``peer_port`` (where the peer serves)."""
    yield from start_acme_ca(tmp_path, smtp_sink, http01_port=peer_port)


def need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"{tool} is not installed (scripts/system-deps.sh installs it)")
    return found


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{argv[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def check_issued_then_revoked(ca: AcmeCA, tmp_path: Path, pem_file: Path,
                              revoke: list[str]) -> None:
    """openssl verifies the leaf; after ``revoke`` the CRL over HTTP lists it."""
    leaf = x509.load_pem_x509_certificates(pem_file.read_bytes())[0]
    pem = pem_file.read_text().split("-----END CERTIFICATE-----")[0] + \
        "-----END CERTIFICATE-----\n"
    assert "OK" in openssl_verify(tmp_path, ca.server.ca_dir, pem)
    crl = x509.load_der_x509_crl(httpx.get(ca.server.url + "/ca/crl").content)
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is None
    run(revoke)
    crl = x509.load_der_x509_crl(httpx.get(ca.server.url + "/ca/crl").content)
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None


class QuietFiles(SimpleHTTPRequestHandler):
    """A static web server's handler that logs nothing."""

    def log_message(self, *args: object) -> None:
        return


def certbot(ca: AcmeCA, work: Path, *args: str) -> list[str]:
    return [need("certbot"), *args, "--server", ca.directory, "--config-dir",
            str(work / "config"), "--work-dir", str(work / "work"), "--logs-dir",
            str(work / "logs"), "--non-interactive"]


def test_certbot_standalone(ca: AcmeCA, tmp_path: Path) -> None:
    """certbot certonly --standalone, then certbot revoke --reason superseded."""
    work = tmp_path / "certbot"
    run(certbot(ca, work, "certonly", "--standalone", "--http-01-address", "127.0.0.1",
                "--http-01-port", str(ca.http01_port), "-d", "standalone.acme.test",
                "--agree-tos", "-m", "admin@acme.test", "--no-eff-email"))
    live = work / "config" / "live" / "standalone.acme.test"
    check_issued_then_revoked(ca, tmp_path, live / "fullchain.pem", certbot(
        ca, work, "revoke", "--cert-path", str(live / "cert.pem"), "--reason", "superseded",
        "--no-delete-after-revoke"))


def test_certbot_webroot(ca: AcmeCA, tmp_path: Path) -> None:
    """certbot certonly --webroot into a folder a web server on the http-01 port serves;
    then revoked by the certificate's key (certbot revoke --key-path)."""
    webroot = tmp_path / "www"
    webroot.mkdir()
    handler = functools.partial(QuietFiles, directory=str(webroot))
    server = ThreadingHTTPServer(("127.0.0.1", ca.http01_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tmp_path / "certbot"
    try:
        run(certbot(ca, work, "certonly", "--webroot", "-w", str(webroot), "-d",
                    "webroot.acme.test", "--agree-tos", "-m", "admin@acme.test",
                    "--no-eff-email"))
    finally:
        server.shutdown()
        server.server_close()
    live = work / "config" / "live" / "webroot.acme.test"
    check_issued_then_revoked(ca, tmp_path, live / "fullchain.pem", certbot(
        ca, work, "revoke", "--cert-path", str(live / "cert.pem"), "--key-path",
        str(live / "privkey.pem"), "--no-delete-after-revoke"))


def lego(ca: AcmeCA, path: Path, *args: str) -> list[str]:
    return [need("lego"), "--server", ca.directory, "--email", "admin@acme.test",
            "--accept-tos", "--path", str(path), *args]


def test_lego_http01(ca: AcmeCA, tmp_path: Path) -> None:
    """lego --http on the http-01 port, then lego revoke."""
    path = tmp_path / "lego"
    common = ["--http", "--http.port", f"127.0.0.1:{ca.http01_port}", "--domains",
              "lego.acme.test"]
    run(lego(ca, path, *common, "run"))
    check_issued_then_revoked(ca, tmp_path, path / "certificates" / "lego.acme.test.crt",
                              lego(ca, path, *common, "revoke"))


def test_lego_dns01_exec(ca: AcmeCA, tmp_path: Path) -> None:
    """lego --dns exec with a hook that writes the test DNS server's records, asking that
    server (--dns.resolvers) and skipping propagation checks; then lego revoke."""
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\n# lego's exec provider: present|cleanup FQDN VALUE\n"
                    f'case "$1" in present) a=add;; cleanup) a=del;; *) exit 0;; esac\n'
                    f'exec {sys.executable} {DNS_HOOK} {ca.dns.records} "$a" "$2" "$3"\n')
    hook.chmod(0o755)
    path = tmp_path / "lego"
    common = ["--dns", "exec", "--dns.resolvers", ca.dns.address, "--dns.disable-cp",
              "--domains", "*.dns.acme.test"]
    env = {"EXEC_PATH": str(hook)}
    run(lego(ca, path, *common, "run"), env)
    check_issued_then_revoked(ca, tmp_path, path / "certificates" / "_.dns.acme.test.crt",
                              lego(ca, path, *common, "revoke"))


def test_uacme_http01_hook(ca: AcmeCA, tmp_path: Path) -> None:
    """uacme with a hook script that writes the http-01 file into a served folder; then
    uacme revoke."""
    webroot = tmp_path / "www"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    hook = tmp_path / "uacme-hook.sh"
    hook.write_text("#!/bin/sh\n# uacme's hook: METHOD TYPE IDENT TOKEN AUTH\n"
                    '[ "$2" = http-01 ] || exit 1\n'
                    f'f={webroot}/.well-known/acme-challenge/"$4"\n'
                    'case "$1" in begin) printf %s "$5" > "$f";; *) rm -f "$f";; esac\n')
    hook.chmod(0o755)
    handler = functools.partial(QuietFiles, directory=str(webroot))
    server = ThreadingHTTPServer(("127.0.0.1", ca.http01_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conf = tmp_path / "uacme"
    base = [need("uacme"), "-v", "-c", str(conf), "-a", ca.directory]
    try:
        run([*base, "-y", "new", "admin@acme.test"])
        run([*base, "-h", str(hook), "issue", "uacme.acme.test"])
    finally:
        server.shutdown()
        server.server_close()
    cert = conf / "uacme.acme.test" / "cert.pem"
    check_issued_then_revoked(ca, tmp_path, cert, [*base, "revoke", str(cert)])


def test_certbot_bound_to_a_ca_account_needs_no_challenge(ca: AcmeCA, smtp_sink: SmtpSink,
                                                          tmp_path: Path) -> None:
    """certbot with --eab-kid/--eab-hmac-key of a CA account that verified the domain by
    the mail probe gets a certificate with no challenge answered (nothing listens on the
    http-01 port)."""
    from tests.support.ca import active_account, verified_domain

    with httpx.Client(base_url=ca.server.url, timeout=30) as api:
        acct = active_account(api, smtp_sink)
        verified_domain(api, smtp_sink, acct, "bound.acme.test")
        key = api.post("/acme/eab-keys", headers=acct.auth).json()
    work = tmp_path / "certbot"
    run(certbot(ca, work, "certonly", "--standalone", "--http-01-address", "127.0.0.1",
                "--http-01-port", "1", "-d", "www.bound.acme.test", "--agree-tos", "-m",
                "admin@acme.test", "--no-eff-email", f"--eab-kid={key['kid']}",
                # '=': a base64url key may begin with '-', which argparse takes for an option
                f"--eab-hmac-key={key['hmac_key']}"))
    live = work / "config" / "live" / "www.bound.acme.test"
    assert (live / "fullchain.pem").exists()
