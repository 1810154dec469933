"""The peers against the CA's ACME server over HTTPS, as behind a TLS reverse proxy:
certbot trusts the proxy's root through REQUESTS_CA_BUNDLE, lego through
LEGO_CA_CERTIFICATES, and uacme, which trusts only the system's store, runs in a mount
namespace of its own (``unshare -m``) with the bundle bind-mounted over the system's,
changing nothing on the machine. Each gets a certificate with real http-01 and revokes
it; the CRL lists it."""
from __future__ import annotations

import functools
import shutil
import ssl
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.e2e.test_acme_server_peers import QuietFiles, certbot, lego, need, run
from tests.integration.test_ca_sign import openssl_verify
from tests.support.acme_server import AcmeCA, peer_port, start_acme_ca  # noqa: F401
from tests.support.ca import SmtpSink, smtp_sink  # noqa: F401  (fixtures)
from tests.support.tlsproxy import TlsProxy

pytestmark = pytest.mark.slow
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[TlsProxy]:
    front = TlsProxy(tmp_path / "tls")
    yield front
    front.stop()


@pytest.fixture
def ca(tmp_path: Path, smtp_sink: SmtpSink, peer_port: int,
       proxy: TlsProxy) -> Iterator[AcmeCA]:
    for started in start_acme_ca(tmp_path, smtp_sink, http01_port=peer_port,
                                 public_url=proxy.url):
        proxy.upstream = ("127.0.0.1", started.server.port)
        proxy.start()
        yield started


def trusted(proxy: TlsProxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proxy.bundle))


def verified_leaf(ca: AcmeCA, pem_file: Path, tmp_path: Path) -> x509.Certificate:
    """The leaf in ``pem_file``, after openssl verified its chain to the CA's root."""
    pem = pem_file.read_text().split("-----END CERTIFICATE-----")[0] + \
        "-----END CERTIFICATE-----\n"
    assert "OK" in openssl_verify(tmp_path, ca.server.ca_dir, pem)
    return x509.load_pem_x509_certificate(pem.encode())


def in_crl(proxy: TlsProxy, leaf: x509.Certificate) -> bool:
    """Whether the CRL, fetched over HTTPS, lists ``leaf``."""
    crl = x509.load_der_x509_crl(httpx.get(f"{proxy.url}/ca/crl",
                                           verify=trusted(proxy)).content)
    return crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None


def test_directory_is_https(ca: AcmeCA, proxy: TlsProxy) -> None:
    """The directory's URLs are the proxy's https ones."""
    got = httpx.get(ca.directory, verify=trusted(proxy)).json()
    assert got["newOrder"] == f"{proxy.url}/acme/new-order"


def test_certbot_over_https(ca: AcmeCA, proxy: TlsProxy, tmp_path: Path) -> None:
    """certbot --standalone with REQUESTS_CA_BUNDLE, then certbot revoke."""
    work, env = tmp_path / "certbot", {"REQUESTS_CA_BUNDLE": str(proxy.bundle)}
    run(certbot(ca, work, "certonly", "--standalone", "--http-01-address", "127.0.0.1",
                "--http-01-port", str(ca.http01_port), "-d", "tls-cb.acme.test",
                "--agree-tos", "-m", "admin@acme.test", "--no-eff-email"), env)
    live = work / "config" / "live" / "tls-cb.acme.test"
    leaf = verified_leaf(ca, live / "fullchain.pem", tmp_path)
    run(certbot(ca, work, "revoke", "--cert-path", str(live / "cert.pem"),
                "--no-delete-after-revoke"), env)
    assert in_crl(proxy, leaf)


def test_lego_over_https(ca: AcmeCA, proxy: TlsProxy, tmp_path: Path) -> None:
    """lego --http with LEGO_CA_CERTIFICATES, then lego revoke."""
    path, env = tmp_path / "lego", {"LEGO_CA_CERTIFICATES": str(proxy.bundle)}
    common = ["--http", "--http.port", f"127.0.0.1:{ca.http01_port}", "--domains",
              "tls-lego.acme.test"]
    run(lego(ca, path, *common, "run"), env)
    leaf = verified_leaf(ca, path / "certificates" / "tls-lego.acme.test.crt", tmp_path)
    run(lego(ca, path, *common, "revoke"), env)  # (lego archives the files it revoked)
    assert in_crl(proxy, leaf)


def test_uacme_over_https_in_a_mount_namespace(ca: AcmeCA, proxy: TlsProxy,
                                               tmp_path: Path) -> None:
    """uacme under ``unshare -m`` with the proxy's root bind-mounted over the system
    bundle (only inside that namespace): issued with a hook, then revoked."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is missing"
    webroot = tmp_path / "www"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\n# uacme's hook: METHOD TYPE IDENT TOKEN AUTH\n"
                    '[ "$2" = http-01 ] || exit 1\n'
                    f'f={webroot}/.well-known/acme-challenge/"$4"\n'
                    'case "$1" in begin) printf %s "$5" > "$f";; *) rm -f "$f";; esac\n')
    hook.chmod(0o755)
    conf = tmp_path / "uacme"
    uacme = need("uacme")

    def isolated(*args: str) -> list[str]:
        # the bind mount lives and dies with this namespace: the machine's bundle is
        # never touched
        script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        return [unshare, "-m", "sh", "-c", script, "sh", str(proxy.bundle),
                str(SYSTEM_BUNDLE), uacme, "-v", "-c", str(conf), "-a", ca.directory, *args]

    before = SYSTEM_BUNDLE.read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", ca.http01_port),
                                 functools.partial(QuietFiles, directory=str(webroot)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run(isolated("-y", "new", "admin@acme.test"))
        run(isolated("-h", str(hook), "issue", "tls-uacme.acme.test"))
    finally:
        server.shutdown()
        server.server_close()
    cert = conf / "tls-uacme.acme.test" / "cert.pem"
    leaf = verified_leaf(ca, cert, tmp_path)
    run(isolated("revoke", str(cert)))
    assert in_crl(proxy, leaf)
    assert SYSTEM_BUNDLE.read_bytes() == before
