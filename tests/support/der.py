"""Hand-made DER for hostile CSRs: a well-formed, correctly signed CSR whose subject or
extensions carry what a library parses only when it is asked for.

``cryptography``'s builders refuse to produce these, so :func:`patched_csr` builds an
ordinary CSR with a placeholder, swaps the placeholder's bytes (tag and content of the same
length) in the CertificationRequestInfo, and signs the result again with the same key, so
the signature verifies and only the patched field is wrong.
"""
from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PLACEHOLDER = "zzzzzzzzzzzzzzzz.test"


def der_length(n: int) -> bytes:
    """The DER length octets of ``n``."""
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element."""
    return bytes([tag]) + der_length(len(content)) + content


def element(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at ``at``."""
    tag, first = data[at], data[at + 1]
    if first < 0x80:
        return tag, at + 2, at + 2 + first
    n = first & 0x7F
    length = int.from_bytes(data[at + 2:at + 2 + n], "big")
    return tag, at + 2 + n, at + 2 + n + length


def _csr_der(key: Any, subject: x509.Name, extensions: list[x509.ExtensionType]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def resign(der: bytes, info: bytes, key: ec.EllipticCurvePrivateKey) -> str:
    """The PEM CSR made of ``info`` (a CertificationRequestInfo) and the signature
    algorithm of ``der``, signed again with ``key``."""
    _, start, _ = element(der, 0)
    _, _, info_end = element(der, start)
    _, _, alg_end = element(der, info_end)
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    body = info + der[info_end:alg_end] + tlv(0x03, b"\x00" + signature)
    return _pem(tlv(0x30, body))


def _pem(der: bytes) -> str:
    import base64
    import textwrap

    text = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{text}\n-----END CERTIFICATE REQUEST-----\n"


def _info(der: bytes) -> bytes:
    _, start, _ = element(der, 0)
    _, _, info_end = element(der, start)
    return der[start:info_end]


def patched_csr(tag: int, content: bytes, *, where: str = "cn",
                sans: tuple[str, ...] = ("a.example.test",)) -> str:
    """A signed CSR whose placeholder string (the CN, or with ``where="san"`` the first
    DNS SAN) now has DER ``tag`` and ``content`` (exactly ``len(PLACEHOLDER)`` bytes)."""
    if len(content) != len(PLACEHOLDER):
        raise ValueError(f"content must be {len(PLACEHOLDER)} bytes, not {len(content)}")
    key = ec.generate_private_key(ec.SECP256R1())
    cn = PLACEHOLDER if where == "cn" else sans[0]
    names = [PLACEHOLDER, *sans] if where == "san" else list(sans)
    der = _csr_der(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
                   [x509.SubjectAlternativeName([x509.DNSName(n) for n in names])])
    info = bytearray(_info(der))
    at = bytes(info).find(PLACEHOLDER.encode())
    info[at - 2] = tag
    info[at:at + len(PLACEHOLDER)] = content
    return resign(der, bytes(info), key)


def csr_with_raw_extensions(extensions: list[bytes]) -> str:
    """A signed CSR (CN ``a.example.test``) whose extensionRequest holds the DER
    ``Extension`` elements given, as they are (duplicates, unknown name forms, ...)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = _csr_der(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                      "a.example.test")]), [])
    info = _info(der)
    # CertificationRequestInfo ::= SEQUENCE { version, subject, spki, [0] attributes }
    _, start, end = element(info, 0)
    at, parts = start, []
    while at < end:
        _, _, stop = element(info, at)
        parts.append(info[at:stop])
        at = stop
    ext_req_oid = tlv(0x06, bytes([0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x0E]))
    attribute = tlv(0x30, ext_req_oid + tlv(0x31, tlv(0x30, b"".join(extensions))))
    body = b"".join(parts[:3]) + tlv(0xA0, attribute)
    return resign(der, tlv(0x30, body), key)


def extension(oid: bytes, value: bytes) -> bytes:
    """A DER Extension (non-critical) with the OID's content octets and the value."""
    return tlv(0x30, tlv(0x06, oid) + tlv(0x04, value))


SAN_OID = bytes([0x55, 0x1D, 0x11])


def san_value(*general_names: bytes) -> bytes:
    """The DER of a SubjectAltName holding the GeneralName elements given."""
    return tlv(0x30, b"".join(general_names))
