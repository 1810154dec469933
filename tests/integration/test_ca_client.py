"""The CA client's HTTP plumbing: keep-alive connections shared by threads, connections the
server closed while idle, answers that are not JSON, TLS verification (loopback servers)."""
from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certwright.ca.client import CAClient, CAError


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        sent = json.loads(self.rfile.read(length) or b"null")
        self.count = getattr(self, "count", 0) + 1  # requests on this connection
        if self.count in self.server.hang_up_on:  # close without an answer
            self.close_connection = True
            return
        with self.server.lock:
            self.server.seen.append((self.command, self.path, dict(self.headers), sent))
            self.server.ports.add(self.client_address[1])
        status, body = self.server.answer(self.path)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.server.close_after:  # no "Connection: close": as a keep-alive timeout does
            self.close_connection = True

    do_GET = do_POST


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()  # type: ignore[attr-defined]
    srv.seen = []  # type: ignore[attr-defined]
    srv.ports = set()  # type: ignore[attr-defined]
    srv.close_after = False  # type: ignore[attr-defined]
    srv.hang_up_on = ()  # type: ignore[attr-defined]
    srv.answer = lambda path: (200, b'{"ok": true}')  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def url(srv: ThreadingHTTPServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{srv.server_address[1]}"


def test_requests_as_sent(server: Any) -> None:
    """JSON body, bearer token, query string, escaped path and a path prefix."""
    with CAClient(url(server) + "/prefix/") as client:
        client.token = "tok"
        assert client.probe("example.test", "postmaster", "key 1") == {"ok": True}
        server.answer = lambda path: (404, b'{"error": "not_found", "message": "none"}')
        assert client.find_certificate("a b&c") is None
    (m1, p1, h1, b1), (m2, p2, _h2, b2) = server.seen
    assert (m1, p1, b1) == ("POST", "/prefix/api/v1/domains/example.test/probes",
                            {"local_part": "postmaster"})
    assert h1["Authorization"] == "Bearer tok" and h1["Idempotency-Key"] == "key 1"
    assert h1["Content-Type"] == "application/json"
    assert (m2, p2, b2) == ("GET", "/prefix/api/v1/certificates?idempotency_key=a+b%26c", None)


def test_error_answers(server: Any) -> None:
    """A JSON error names method, URL, status, code and message; a non-JSON one quotes it."""
    with CAClient(url(server)) as client:
        server.answer = lambda path: (422, (b'{"error": "passphrase_rejected", "message": '
                                           b'"2 rule(s)", "rules": [{"message": "a"}, '
                                           b'{"message": "b"}]}'))
        with pytest.raises(CAError) as err:
            client.login("a@b.test", "x")
        assert str(err.value) == (f"POST {url(server)}/api/v1/login: 422 passphrase_rejected:"
                                  " 2 rule(s): a; b")
        assert err.value.retryable is False and err.value.code == "passphrase_rejected"
        server.answer = lambda path: (502, b"<html>\nbad gateway</html>")
        with pytest.raises(CAError) as err:
            client.domains()
        assert str(err.value) == (f"GET {url(server)}/api/v1/domains: 502 (not JSON: "
                                  "'<html> bad gateway</html>')")
        assert err.value.retryable is True and err.value.status == 502


def test_shared_pool_from_threads(server: Any) -> None:
    """Threads share a CA's pool: every request answered, a connection per thread at most."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            client = CAClient(url(server), shared=True)
            for _ in range(25):
                assert client.add_domain("example.test") == {"ok": True}
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(server.seen) == 200
    assert len(server.ports) <= 8


def test_connection_closed_while_idle(server: Any) -> None:
    """The server closing a kept connection (keep-alive timeout) costs no failed request."""
    server.close_after = True
    with CAClient(url(server)) as client:
        for _ in range(5):
            assert client.add_domain("example.test") == {"ok": True}
    assert len(server.seen) == 5 and len(server.ports) == 5


def test_kept_connection_closed_at_the_next_request(server: Any) -> None:
    """A kept connection that closes when the next request arrives (the race with the
    keep-alive timeout): the request goes once more on a new connection."""
    server.hang_up_on = (2,)
    with CAClient(url(server)) as client:
        for _ in range(3):
            assert client.add_domain("example.test") == {"ok": True}
    # A answers #1 and hangs up on #2, which B answers; B hangs up on #3, which C answers
    assert len(server.seen) == 3 and len(server.ports) == 3


def test_new_connection_closed_is_an_error(server: Any) -> None:
    """A new connection closed without an answer is a retryable error, not a loop."""
    server.hang_up_on = (1,)
    with CAClient(url(server)) as client, pytest.raises(CAError) as err:
        client.add_domain("example.test")
    assert str(err.value).endswith(": the connection was cut") and err.value.retryable is True
    assert server.seen == []


def test_connection_refused_is_retryable() -> None:
    """No server: a retryable CAError naming the request."""
    with CAClient("http://127.0.0.1:1", timeout=2) as client, pytest.raises(CAError) as err:
        client.domains()
    assert err.value.retryable is True and err.value.status is None
    assert str(err.value).startswith("GET http://127.0.0.1:1/api/v1/domains: ")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_is_verified(server: Any, tmp_path: Path) -> None:
    """An untrusted certificate is refused (retryable network error); verify=False
    accepts it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_self_signed(tmp_path))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with CAClient(url(server, "https"), timeout=5) as client, pytest.raises(CAError) as err:
        client.domains()
    assert "its TLS certificate is not trusted (self-signed certificate)" in str(err.value)
    assert err.value.retryable is True
    with CAClient(url(server, "https"), timeout=5, verify=False) as client:
        assert client.add_domain("example.test") == {"ok": True}


def test_environment_proxy_goes_through_httpx(server: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With HTTP_PROXY set, httpx carries the requests (it honours the proxy settings;
    here NO_PROXY exempts the CA), with the same answers and errors."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with CAClient(url(server)) as client:
        assert type(client._http).__name__ == "_Proxied"
        client.token = "tok"
        assert client.add_domain("example.test") == {"ok": True}
        server.answer = lambda path: (409, (b'{"error": "idempotency_key_reused", '
                                           b'"message": "different CSR"}'))
        with pytest.raises(CAError) as err:
            client.sign("csr", "k1")
    assert str(err.value) == (f"POST {url(server)}/api/v1/certificates: 409 "
                              "idempotency_key_reused: different CSR")
    (_, path, headers, body), _ = server.seen
    assert path == "/api/v1/domains" and headers["Authorization"] == "Bearer tok"
    assert body == {"domain": "example.test"}


def test_a_permanent_mail_refusal_is_not_retried(server: Any) -> None:
    """502 mail_undeliverable is the CA saying the MTA refused for good (a 5xx; a 4xx is
    retried by the CA's outbox and never answered so): not retryable, the MTA's words kept."""
    with CAClient(url(server)) as client:
        server.answer = lambda path: (502, (b'{"error": "mail_undeliverable", "message": '
                                           b'"mail to a@b.test not delivered: 127.0.0.1:25 '
                                           b'refused the recipient: 550 5.1.1 User unknown",'
                                           b' "reason": "550 5.1.1 User unknown"}'))
        with pytest.raises(CAError) as err:
            client.domains()
        assert err.value.retryable is False and err.value.code == "mail_undeliverable"
        assert "550 5.1.1 User unknown" in str(err.value)
