"""Fetch the certificate a TLS server presents, for ``install.check``.

The handshake does not verify the chain or the name: the check compares the presented leaf
with the expected one byte for byte (SHA-256 of the DER), which is stricter than
verification and works with private CAs and self-signed test certificates.
"""
from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509

from certwright.errors import PermanentError


@dataclass(frozen=True)
class Presented:
    """What a server presented: DER fingerprint, subject and serial (hex)."""

    fingerprint_sha256: str
    subject: str
    serial: str

    def describe(self) -> str:
        return (f"subject {self.subject!r}, serial {self.serial}, "
                f"SHA-256 {self.fingerprint_sha256}")


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); PermanentError when malformed."""
    text = address.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        ok = bool(sep and port_text)
    else:
        host, _, port_text = text.rpartition(":")
        ok = bool(host) and ":" not in host
    try:
        port = int(port_text)
    except ValueError:
        ok = False
        port = 0
    if not ok or not 0 < port < 65536:
        raise PermanentError(f"install.check: address {address!r} is not host:port "
                             "(use [addr]:port for IPv6)")
    return host, port


def default_server_name(host: str) -> str | None:
    """The SNI to send when none is configured: the host, unless it is an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def fetch_certificate(host: str, port: int, server_name: str | None,
                      timeout: float = 10.0) -> Presented:
    """Handshake with ``host:port`` sending SNI ``server_name``; describe its leaf.

    Raises OSError (including ssl.SSLError and timeouts) when no handshake completes.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # compared by fingerprint below, not verified
    with (socket.create_connection((host, port), timeout=timeout) as raw,
          ctx.wrap_socket(raw, server_hostname=server_name) as tls):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{host}:{port} completed a handshake but presented no certificate")
    fp = hashlib.sha256(der).hexdigest()
    try:
        cert = x509.load_der_x509_certificate(der)
        return Presented(fp, cert.subject.rfc4514_string(), format(cert.serial_number, "x"))
    except ValueError:
        return Presented(fp, "<unparsable>", "?")
