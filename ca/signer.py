"""Checking CSRs and signing certificates and CRLs with the intermediate.

Contract:

* :func:`inspect_csr` parses and checks a CSR and returns its names; it raises
  :class:`CSRRejected` with an API error code (``bad_csr``, ``weak_key``,
  ``public_suffix``) and a message that names what was wrong. It never looks at the
  store. Every part of the CSR that the library parses lazily (subject, extensions, key)
  is parsed here, so nothing the client sent can raise later.
* :meth:`Signer.issue` signs a checked CSR. It has no idempotency of its own: the service
  looks the idempotency key up and stores the result in one store transaction.
* Certificates follow the CA/B Forum BR profile for DV subscriber certificates (checked by
  pkilint in the tests): CN = first DNS name, SANs, serverAuth, KU, SKI/AKI, AIA caIssuers,
  CRL DP, policy 2.23.140.1.2.1, 128-bit random serial.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from certwright.ca.setup import CAPaths
from certwright.ca.weakkeys import Blocklist, fermat_factor, roca_vulnerable
from certwright.domains import find_public_suffix

DV_POLICY = x509.ObjectIdentifier("2.23.140.1.2.1")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
REASONS = {f.value.lower(): f for f in x509.ReasonFlags}
REASONS.update({f.name.replace("_", "").lower(): f for f in x509.ReasonFlags})
T = TypeVar("T")


class CSRRejected(Exception):
    """A CSR the CA refuses; ``code`` is the API error code, ``details`` extra fields."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def valid_dns_name(name: str, *, wildcard: bool = False) -> bool:
    """True for a lower-case DNS name of >= 2 labels (``*.`` prefix allowed if asked)."""
    if wildcard and name.startswith("*."):
        name = name[2:]
    labels = name.split(".")
    # fullmatch: ``$`` alone would let a label end in a newline
    return len(name) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(x) for x in labels) \
        and not labels[-1].isdigit()


def check_key(key: Any, blocklist: Blocklist | None = None) -> str:
    """A short description of an acceptable subscriber key; raises CSRRejected otherwise
    (``weak_key``, with ``rule`` naming the check that refused it)."""
    listed = blocklist.match(key) if blocklist is not None else None
    if listed is not None:
        raise CSRRejected("weak_key", f"the key is on the weak-key blocklist {listed!r}: "
                          "its private key is known (such as Debian's weak keys of "
                          "CVE-2008-0166); generate a new key", rule="blocklist",
                          blocklist=listed)
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        if not 2048 <= key.key_size <= 4096:
            raise CSRRejected("weak_key", f"RSA key of {key.key_size} bits; 2048 to 4096 "
                              "accepted")
        if numbers.e != 65537:
            raise CSRRejected("weak_key", f"RSA public exponent {numbers.e}; only 65537 "
                              "accepted")
        if roca_vulnerable(numbers.n):
            raise CSRRejected("weak_key", "RSA modulus has the ROCA fingerprint "
                              "(CVE-2017-15361); generate a new key elsewhere")
        if fermat_factor(numbers.n):
            raise CSRRejected("weak_key", "RSA modulus factors by Fermat's method (its "
                              "primes are too close together); generate a new key")
        return f"rsa{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise CSRRejected("weak_key", f"EC key on curve {key.curve.name}; P-256 and "
                              "P-384 accepted")
        return "ec-" + key.curve.name
    raise CSRRejected("weak_key", f"{type(key).__name__.lstrip('_')} keys are not accepted; "
                      "use RSA 2048-4096 or EC P-256/P-384")


def _parsed(part: str, read: Callable[[], T], hint: str = "") -> T:
    """``read()``, which parses one lazily parsed part of a CSR; CSRRejected(bad_csr)
    naming ``part`` when it does not parse."""
    try:
        return read()
    # The library parses the subject, the extensions and the key only when asked and
    # raises ValueError, TypeError, DuplicateExtension, UnsupportedGeneralNameType or
    # UnsupportedAlgorithm on hostile bytes: whatever it raises there is the CSR's fault.
    except Exception as exc:  # noqa: BLE001
        raise CSRRejected("bad_csr", f"the CSR's {part} cannot be parsed ({exc}){hint}") from None


def _common_names(csr: x509.CertificateSigningRequest) -> list[str]:
    subject = _parsed("subject", lambda: list(csr.subject), "; each attribute must be a "
                      "valid string of its type (a CN is a UTF8String or PrintableString)")
    return [str(a.value).strip().lower() for a in subject if a.oid == NameOID.COMMON_NAME]


def _san(csr: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
    extensions = _parsed("extensions", lambda: csr.extensions)
    try:
        return extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def inspect_csr(pem: str, blocklist: Blocklist | None = None,
                ) -> tuple[x509.CertificateSigningRequest, list[str]]:
    """Parse and check ``pem`` (its key also against ``blocklist``); returns the CSR and
    its DNS names (CN first, no repeats).

    Every part is parsed here, inside a guard (:func:`_parsed`), so a hostile encoding
    is a CSRRejected naming the part, never an exception from the library later."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except Exception as exc:  # noqa: BLE001  (ValueError, InvalidVersion, ...: see _parsed)
        raise CSRRejected("bad_csr", f"not a PEM certificate signing request: {exc}") from None
    key = _parsed("public key", csr.public_key)
    if not _parsed("signature", lambda: csr.is_signature_valid):
        raise CSRRejected("bad_csr", "the CSR's signature does not verify with its own key")
    check_key(key, blocklist)
    names = _common_names(csr)
    san = _san(csr)
    if san is not None:
        others = [g for g in san if not isinstance(g, x509.DNSName)]
        if others:
            raise CSRRejected("bad_csr", f"only DNS names can be certified, not {others[0]}")
        names += [str(v).strip().lower() for v in san.get_values_for_type(x509.DNSName)]
    names = list(dict.fromkeys(names))
    if not names:
        raise CSRRejected("bad_csr", "the CSR names no domain (no CN, no DNS SAN)")
    for name in names:
        if not valid_dns_name(name, wildcard=True):
            raise CSRRejected("bad_csr", f"{name!r} is not a valid DNS name", name=name)
    if len(names) > 100:
        raise CSRRejected("bad_csr", f"{len(names)} names; at most 100 per certificate")
    for name in names:
        refuse_public_suffix(name)
    return csr, names


def refuse_public_suffix(name: str) -> None:
    """CSRRejected(public_suffix) when ``name``, or the base of a wildcard ``name``, is a
    public suffix (``co.uk``, ``*.co.uk``): no account can own all names under one (BR
    3.2.2.6), so none is certified or verified, whatever the store says."""
    base = name.removeprefix("*.")
    suffix = find_public_suffix(base)
    if suffix is None:
        return
    what = "is a wildcard directly on" if base != name else "is"
    raise CSRRejected("public_suffix", f"{name} {what} the public suffix {suffix} (on the "
                      f"Public Suffix List), which no account can own; ask for a domain "
                      f"under it, such as example.{suffix}", name=name, suffix=suffix)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, lower-case hex without colons."""
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class Issued:
    """A freshly signed certificate."""

    serial: str
    cert: x509.Certificate
    pem: str
    fingerprint: str


class Signer:
    """The intermediate's key and certificate, and what it signs."""

    def __init__(self, ca_dir: Path, public_url: str) -> None:
        paths = CAPaths(Path(ca_dir))
        key = serialization.load_pem_private_key(paths.intermediate_key.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.intermediate_key}: expected an EC key")
        self._key = key
        self.intermediate = x509.load_pem_x509_certificate(paths.intermediate_cert.read_bytes())
        self.root = x509.load_pem_x509_certificate(paths.root_cert.read_bytes())
        self.public_url = public_url.rstrip("/")
        self.chain_pem = (self.intermediate.public_bytes(serialization.Encoding.PEM)
                          + self.root.public_bytes(serialization.Encoding.PEM)).decode()

    def _hash(self) -> hashes.SHA256 | hashes.SHA384:
        return hashes.SHA384() if self._key.curve.name == "secp384r1" else hashes.SHA256()

    def issue(self, csr: x509.CertificateSigningRequest, names: list[str], *,
              now: datetime, days: int) -> Issued:
        """Sign a certificate for ``names`` with the CSR's key, valid ``days`` from now."""
        key = csr.public_key()
        if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise CSRRejected("weak_key", "unsupported key type")
        serial = secrets.randbits(128) | 1 << 127  # positive, 16 bytes, never leading zero
        not_before = now.replace(microsecond=0)
        # BR 6.3.2 counts validity inclusively, so end one second before the last day ends.
        not_after = not_before + timedelta(days=days) - timedelta(seconds=1)
        rsa_key = isinstance(key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.intermediate.subject)
            .public_key(key)
            .serial_number(serial)
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=rsa_key,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.CertificatePolicies([x509.PolicyInformation(DV_POLICY, None)]),
                           critical=False)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(f"{self.public_url}/ca/intermediate.crt"))]),
                critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(f"{self.public_url}/ca/crl")],
                None, None, None)]), critical=False)
        )
        cert = builder.sign(self._key, self._hash())
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        return Issued(format(serial, "x"), cert, pem, fingerprint(cert))

    def crl(self, revoked: list[tuple[str, datetime, str]], *, now: datetime,
            days: int, number: int) -> bytes:
        """A DER CRL listing ``(serial_hex, revoked_at, reason)``; nextUpdate now+days."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.intermediate.subject)
            .last_update(now.replace(microsecond=0))
            .next_update(now.replace(microsecond=0) + timedelta(days=days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
        )
        for serial, when, reason in revoked:
            entry = (x509.RevokedCertificateBuilder().serial_number(int(serial, 16))
                     .revocation_date(when.replace(microsecond=0)))
            flag = REASONS.get(reason.replace("_", "").lower())
            # RFC 5280 5.3.1: omit the reason code rather than use unspecified.
            if flag is not None and flag is not x509.ReasonFlags.unspecified:
                entry = entry.add_extension(x509.CRLReason(flag), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self._key, self._hash()).public_bytes(serialization.Encoding.DER)

    def der(self, which: str) -> bytes:
        """DER of the ``"intermediate"`` or ``"root"`` certificate."""
        cert = self.intermediate if which == "intermediate" else self.root
        return cert.public_bytes(serialization.Encoding.DER)

    def pem(self, which: str) -> str:
        """PEM of the ``"intermediate"`` or ``"root"`` certificate."""
        cert = self.intermediate if which == "intermediate" else self.root
        return cert.public_bytes(serialization.Encoding.PEM).decode()
