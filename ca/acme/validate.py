"""Validating ACME challenges for real: http-01 (RFC 8555 section 8.3), dns-01
(section 8.4) and tls-alpn-01 (RFC 8737), through a configurable resolver.

Settings (CA config, docs/ca-limits.md): ``acme_resolver`` is ``"system"`` (the
machine's resolver, ``/etc/hosts`` included) or ``"HOST:PORT"`` of a DNS server asked
directly (tests point it at their own); ``acme_http01_port`` is the port http-01 GETs go
to (80), ``acme_tlsalpn01_port`` the one tls-alpn-01 handshakes go to (443). A
validation answers None when it passed, else the :class:`AcmeProblem` that says what was
found (``dns``, ``connection``, ``tls``, ``incorrectResponse``, ``unauthorized``).

Hazards: the name is the client's, so the address it resolves to is too (the CA connects
where an applicant's DNS says, as every ACME CA does; run it where that is acceptable).
Redirects are not followed; a body is read up to 8 KiB; each step has a timeout.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import ssl
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dns.exception
import dns.resolver
from cryptography import x509

from certwright.ca.acme.problems import AcmeProblem
from certwright.ca.errors import SettingError

TIMEOUT = 10.0
MAX_BODY = 8192
CAA_CACHE = 10_000  # CAA answers kept (each for its TTL)


@dataclass(frozen=True)
class Resolver:
    """Where names are resolved: the system (``server`` None) or one DNS server."""

    server: tuple[str, int] | None = None

    @classmethod
    def from_setting(cls, value: Any) -> Resolver:
        """The resolver of the ``acme_resolver`` setting; SettingError naming it."""
        if value in (None, "", "system"):
            return cls()
        host, _, port = str(value).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingError(f'acme_resolver {value!r}: expected "system" or HOST:PORT '
                               "of a DNS server")
        return cls((host.strip("[]"), int(port)))

    def _resolver(self, *, cache: bool) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=self.server is None)
        if self.server is not None:
            resolver.nameservers = [self.server[0]]
            resolver.port = self.server[1]
        resolver.lifetime = TIMEOUT
        if cache:
            resolver.cache = dns.resolver.LRUCache(CAA_CACHE)
        return resolver

    @cached_property
    def _dns(self) -> dns.resolver.Resolver:
        """One dnspython resolver for the validation lookups (made once: configuring one
        reads the system's resolv.conf; its queries share nothing else, so threads may
        share it). Never cached: a client provisions its answer just before it asks for
        validation."""
        return self._resolver(cache=False)

    @cached_property
    def _caa_dns(self) -> dns.resolver.Resolver:
        """The resolver of CAA lookups, with a cache that keeps each answer for its TTL
        (dnspython's LRU cache, thread-safe): the parents of the names a CA issues for,
        which RFC 8659's tree climbing asks each time, are the same for many
        certificates, and the Baseline Requirements (3.2.2.8) let a CA rely on a CAA
        answer within its TTL."""
        return self._resolver(cache=True)

    def addresses(self, name: str) -> list[str]:
        """The IPv4 and IPv6 addresses of ``name``; AcmeProblem(dns) when it has none."""
        if self.server is None:
            try:
                infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise AcmeProblem("dns", f"{name} does not resolve: {exc}",
                                  identifier=name) from None
            return list(dict.fromkeys(str(info[4][0]) for info in infos))
        found: list[str] = []
        for rtype in ("A", "AAAA"):
            try:
                found += [r.to_text() for r in self._dns.resolve(name, rtype)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                raise AcmeProblem("dns", f"looking up {rtype} of {name} failed: {exc}",
                                  identifier=name) from None
        if not found:
            raise AcmeProblem("dns", f"{name} has no A or AAAA record", identifier=name)
        return found

    def txt(self, name: str) -> list[str]:
        """The TXT strings at ``name`` (each record's strings joined); [] when none."""
        try:
            answer = self._dns.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise AcmeProblem("dns", f"looking up TXT of {name} failed: {exc}",
                              identifier=name.removeprefix("_acme-challenge.")) from None
        return [b"".join(r.strings).decode(errors="replace") for r in answer]


    def caa(self, name: str) -> list[tuple[int, str, str]]:
        """The CAA records at ``name`` as (flags, tag, value); [] when none (the name or
        the record missing); AcmeProblem(dns) when the lookup fails."""
        try:
            answer = self._caa_dns.resolve(name, "CAA")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise AcmeProblem("dns", f"looking up CAA of {name} failed: {exc}; the CA "
                              "issues only when CAA can be checked", identifier=name) from None
        return [(int(r.flags), r.tag.decode(errors="replace"),
                 r.value.decode(errors="replace")) for r in answer]


def key_authorization(token: str, thumbprint: str) -> str:
    """RFC 8555 section 8.1: ``token || '.' || base64url(JWK thumbprint)``."""
    return f"{token}.{thumbprint}"


def dns01_value(key_auth: str) -> str:
    """The TXT value of dns-01: base64url(SHA-256(key authorization))."""
    return base64.urlsafe_b64encode(hashlib.sha256(key_auth.encode()).digest()) \
        .rstrip(b"=").decode()


def validate_http01(name: str, token: str, key_auth: str, *, resolver: Resolver,
                    port: int) -> AcmeProblem | None:
    """GET http://NAME:PORT/.well-known/acme-challenge/TOKEN at each address of the name
    until one answers; None when its body (trailing whitespace stripped) is the key
    authorization."""
    path = f"/.well-known/acme-challenge/{token}"
    problem: AcmeProblem | None = None
    for address in resolver.addresses(name):
        try:
            status, body = _get(address, port, path, name)
        except (OSError, http.client.HTTPException) as exc:
            problem = AcmeProblem("connection", f"http-01: fetching http://{name}{path} "
                                  f"from {address}:{port} failed: {exc or type(exc).__name__}",
                                  identifier=name)
            continue
        if status != 200:
            return AcmeProblem("unauthorized", f"http-01: http://{name}{path} answered "
                               f"{status} from {address}:{port}", identifier=name)
        got = body.decode(errors="replace").rstrip()
        if got != key_auth:
            return AcmeProblem("incorrectResponse", f"http-01: http://{name}{path} answered "
                               f"{got[:100]!r}, not the key authorization", identifier=name)
        return None
    return problem


def _get(address: str, port: int, path: str, name: str) -> tuple[int, bytes]:
    """(status, the first MAX_BODY bytes of the body) of one plain HTTP/1.1 GET of
    ``path`` at ``address``, with ``name`` as its Host; no redirect followed, every
    connect and read within TIMEOUT. The standard library's client: a GET is all it takes,
    and a richer client costs several times its CPU per validation."""
    conn = http.client.HTTPConnection(address, port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers={
            "Host": name if port == 80 else f"{name}:{port}",
            "User-Agent": "certwright-ca-validation", "Accept": "*/*",
            "Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read(MAX_BODY)
    finally:
        conn.close()


def validate_dns01(name: str, key_auth: str, *, resolver: Resolver) -> AcmeProblem | None:
    """None when a TXT record at ``_acme-challenge.NAME`` holds the dns-01 value."""
    record = f"_acme-challenge.{name}"
    values = resolver.txt(record)
    if dns01_value(key_auth) in values:
        return None
    if not values:
        return AcmeProblem("unauthorized", f"dns-01: no TXT record at {record}",
                           identifier=name)
    return AcmeProblem("incorrectResponse", f"dns-01: the TXT records at {record} "
                       f"({len(values)}) hold no value of this challenge", identifier=name)


#: id-pe-acmeIdentifier (RFC 8737 section 6.1)
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def _tls_certificate(address: str, name: str, port: int) -> tuple[bytes, str | None]:
    """(DER of the certificate served for SNI ``name`` with ALPN acme-tls/1, the protocol
    chosen). The certificate is self-signed by design: nothing is verified here."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["acme-tls/1"])
    with socket.create_connection((address, port), timeout=TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        return tls.getpeercert(binary_form=True) or b"", tls.selected_alpn_protocol()


def validate_tlsalpn01(name: str, key_auth: str, *, resolver: Resolver,
                       port: int) -> AcmeProblem | None:
    """RFC 8737: a TLS handshake with the name's first address that answers, offering
    only acme-tls/1; None when the certificate names exactly ``name`` and carries a
    critical acmeIdentifier of SHA-256(key authorization)."""
    problem: AcmeProblem | None = None
    for address in resolver.addresses(name):
        try:
            der, alpn = _tls_certificate(address, name, port)
        except (OSError, ssl.SSLError) as exc:
            problem = AcmeProblem("tls", f"tls-alpn-01: the handshake with {address}:{port} "
                                  f"for {name} failed: {exc}", identifier=name)
            continue
        return _check_alpn_cert(name, key_auth, der, alpn)
    return problem


def _check_alpn_cert(name: str, key_auth: str, der: bytes, alpn: str | None
                     ) -> AcmeProblem | None:
    def wrong(why: str) -> AcmeProblem:
        return AcmeProblem("incorrectResponse", f"tls-alpn-01: {why}", identifier=name)

    if alpn != "acme-tls/1":
        return wrong(f"the server chose the protocol {alpn!r}, not acme-tls/1")
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    except (ValueError, x509.ExtensionNotFound) as exc:
        return wrong(f"the certificate lacks what the challenge needs: {exc}")
    names = [str(n).lower() for n in san.get_values_for_type(x509.DNSName)]
    if names != [name] or len(list(san)) != 1:
        return wrong(f"the certificate names {names}, not exactly {name}")
    if not ext.critical:
        return wrong("the acmeIdentifier extension is not critical")
    want = b"\x04\x20" + hashlib.sha256(key_auth.encode()).digest()  # DER OCTET STRING
    value = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
    if value != want:
        return wrong("the acmeIdentifier is not SHA-256 of the key authorization")
    return None
