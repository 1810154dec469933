"""A tls-alpn-01 responder (RFC 8737) for tests: a TLS server on 127.0.0.1 that answers
the ``acme-tls/1`` protocol with a self-signed certificate for one name carrying the
critical acmeIdentifier extension (SHA-256 of the key authorization)."""
from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def challenge_cert(name: str, key_auth: str, *, digest: bytes | None = None,
                   critical: bool = True) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for tls-alpn-01 of ``name``; ``digest`` overrides the
    extension's value (a wrong answer)."""
    key = ec.generate_private_key(ec.SECP256R1())
    value = digest if digest is not None else hashlib.sha256(key_auth.encode()).digest()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER,
                                                      b"\x04\x20" + value), critical=critical)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class TlsAlpnResponder:
    """Serves one challenge certificate on ``port`` to clients that offer acme-tls/1."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, port: int = 0) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.set_alpn_protocols(["acme-tls/1"])
        with tempfile.TemporaryDirectory() as folder:
            cert, key = Path(folder) / "c.pem", Path(folder) / "k.pem"
            cert.write_bytes(cert_pem)
            key.write_bytes(key_pem)
            self.context.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.alpn_seen: list[str | None] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> TlsAlpnResponder:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    self.alpn_seen.append(tls.selected_alpn_protocol())
            except (OSError, ssl.SSLError):
                conn.close()

    def stop(self) -> None:
        # shutdown wakes the thread blocked in accept (close alone would not, and the
        # port would stay bound)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self.sock.close()
