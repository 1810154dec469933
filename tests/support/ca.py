"""Fixtures and helpers for the CA tests: an SMTP sink, a live CAServer, CSRs, accounts.

Import the fixtures you use into the test module (``from tests.support.ca import
smtp_sink, ca_server, ...``); pytest then finds them there.
"""
from __future__ import annotations

import email
import email.policy
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certwright.ca.passphrase import generate_passphrase
from certwright.ca.server import CAServer
from certwright.clock import FakeClock

#: The test CA's settings (see :func:`ca_server`).
TEST_SETTINGS: dict[str, Any] = {"rate_limits": "off"}
LINK_RE = re.compile(r"(https?://\S+/(?:account/confirm|domains/verify)/(\S+?)\?token=(\S+))")


@dataclass
class Mail:
    """One message the sink received."""

    rcpt: list[str]
    msg: EmailMessage

    @property
    def body(self) -> str:
        part = self.msg.get_body(("plain",))
        return part.get_content() if part else ""

    def link(self) -> str:
        match = LINK_RE.search(self.body)
        if not match:
            raise AssertionError(f"no link in mail to {self.rcpt}: {self.body!r}")
        return match.group(1)


@dataclass
class SmtpSink:
    """Collects every message delivered to it (aiosmtpd handler)."""

    messages: list[Mail] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    defer: set[str] = field(default_factory=set)  # answered 451 (try again later)
    lock: threading.Lock = field(default_factory=threading.Lock)
    host: str = "127.0.0.1"
    port: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if address.lower() in self.refuse:
            return "550 5.1.1 no such mailbox here"
        if address.lower() in self.defer:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(Mail([r.lower() for r in envelope.rcpt_tos], msg))  # type: ignore[arg-type]
        return "250 Message accepted"

    def to(self, address: str) -> list[Mail]:
        with self.lock:
            return [m for m in self.messages if address.lower() in m.rcpt]

    def last_to(self, address: str) -> Mail:
        found = self.to(address)
        if not found:
            raise AssertionError(f"no mail to {address}; got mail to "
                                 f"{[m.rcpt for m in self.messages]}")
        return found[-1]

    @property
    def smarthost(self) -> tuple[str, int]:
        return (self.host, self.port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ca_server(tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock) -> Iterator[CAServer]:
    # Rate limits off: the tests make many calls from 127.0.0.1 while the fake clock stands
    # still (tests/integration/test_ca_ratelimit.py turns them on one at a time).
    with CAServer(tmp_path / "ca", smarthost=smtp_sink.smarthost, clock=fake_clock,
                  settings=TEST_SETTINGS) as server:
        yield server


@pytest.fixture
def http(ca_server: CAServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ca_server.url, timeout=10) as client:
        yield client


def questions() -> list[dict[str, str]]:
    return [{"question": f"Question number {i}?", "answer": f"answer {i}"} for i in range(5)]


@dataclass
class Account:
    email: str
    name: str
    passphrase: str
    account_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def follow(http: httpx.Client, link: str, action: str = "verify") -> httpx.Response:
    """POST the link's form as a browser would."""
    match = LINK_RE.search(link)
    if not match:
        raise AssertionError(f"not a link: {link}")
    path = link.split("://", 1)[1].split("/", 1)[1].split("?", maxsplit=1)[0]
    return http.post("/" + path, data={"token": match.group(3), "action": action})


def active_account(http: httpx.Client, sink: SmtpSink, name: str = "Quentin Zyx") -> Account:
    """Join, confirm by mail link, log in."""
    mail = f"q{secrets.token_hex(3)}@mailhost.test"
    passphrase = generate_passphrase(name, mail)
    r = http.post("/api/v1/accounts", json={"email": mail, "name": name,
                                            "passphrase": passphrase, "questions": questions()})
    if r.status_code != 201:
        raise AssertionError(r.text)
    follow(http, sink.last_to(mail).link()).raise_for_status()
    login = http.post("/api/v1/login", json={"email": mail, "passphrase": passphrase})
    login.raise_for_status()
    return Account(mail, name, passphrase, r.json()["account_id"], login.json()["token"])


def verified_domain(http: httpx.Client, sink: SmtpSink, acct: Account, domain: str) -> None:
    """Add ``domain`` and verify it through a postmaster probe."""
    http.post("/api/v1/domains", json={"domain": domain}, headers=acct.auth).raise_for_status()
    r = http.post(f"/api/v1/domains/{domain}/probes", json={"local_part": "postmaster"},
                  headers=acct.auth)
    r.raise_for_status()
    follow(http, sink.last_to(f"postmaster@{domain}").link()).raise_for_status()


def make_csr(names: list[str], key: Any = None, cn: bool = True) -> tuple[str, Any]:
    """A PEM CSR for ``names`` (CN = first, SAN = all) and its private key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if cn else [])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


# -- constructing weak RSA keys ------------------------------------------------------------
def is_probable_prime(n: int, rounds: int = 32) -> bool:
    """Miller-Rabin."""
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def rsa_key_from_primes(p: int, q: int, e: int = 65537) -> rsa.RSAPrivateKey:
    n = p * q
    d = pow(e, -1, (p - 1) * (q - 1))
    pub = rsa.RSAPublicNumbers(e, n)
    priv = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q),
                                 rsa.rsa_crt_iqmp(p, q), pub)
    return priv.private_key()


def _prime_where(candidate: Any) -> int:
    while True:
        n = candidate()
        if n % 65537 != 1 and is_probable_prime(n):
            return n


def fermat_weak_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key whose primes are adjacent (Fermat factors it in one round)."""
    p = _prime_where(lambda: secrets.randbits(bits // 2) | (3 << (bits // 2 - 2)) | 1)
    q = p + 2
    while not (is_probable_prime(q) and q % 65537 != 1):
        q += 2
    return rsa_key_from_primes(p, q)


def roca_like_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key whose primes have Infineon's form ``k*M + 65537^a mod M`` (ROCA)."""
    from certwright.ca.weakkeys import ROCA_PRIMES

    m = 1
    for prime in ROCA_PRIMES:
        m *= prime
    half = bits // 2

    def candidate() -> int:
        k = secrets.randbits(half - m.bit_length() + 1) | 3 << (half - m.bit_length() - 1)
        return k * m + pow(65537, secrets.randbelow(1 << 20), m)

    while True:
        p, q = _prime_where(candidate), _prime_where(candidate)
        if (p * q).bit_length() == bits:
            return rsa_key_from_primes(p, q)
