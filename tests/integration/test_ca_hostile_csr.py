"""Hostile CSRs over real HTTP: every field the library parses lazily (the subject, the
extensions, the SANs in them) that does not parse is a 422 ``bad_csr`` naming the field,
never a 500; names with control characters are refused, not certified."""
from __future__ import annotations

import httpx
import pytest

from tests.support.ca import (  # noqa: F401  (fixtures)
    Account,
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    http,
    make_csr,
    smtp_sink,
    verified_domain,
)
from tests.support.der import (
    PLACEHOLDER,
    SAN_OID,
    csr_with_raw_extensions,
    extension,
    patched_csr,
    san_value,
    tlv,
)

DOMAIN = "example.test"
N = len(PLACEHOLDER)


@pytest.fixture
def acct(http: httpx.Client, smtp_sink: SmtpSink) -> Account:
    account = active_account(http, smtp_sink)
    verified_domain(http, smtp_sink, account, DOMAIN)
    return account


def sign(http: httpx.Client, acct: Account, csr: str, key: str) -> httpx.Response:
    return http.post("/api/v1/certificates", json={"csr": csr, "idempotency_key": key},
                     headers=acct.auth)


def dns(value: bytes) -> bytes:
    return tlv(0x82, value)


SUBJECTS = {
    "utf8-invalid": (0x0C, b"\xff" * N),
    "integer": (0x02, b"\x01" * N),
    "bit-string": (0x03, b"\x00" + b"\x01" * (N - 1)),
    "teletex-8bit": (0x14, b"abc\xe9" + b"a" * (N - 4)),
    "ia5-8bit": (0x16, b"\xff" * N),
}

EXTENSIONS = {
    "duplicate-san": [extension(SAN_OID, san_value(dns(b"a.example.test")))] * 2,
    "x400-address": [extension(SAN_OID, san_value(tlv(0xA3, tlv(0x30, b""))))],
    "edi-party-name": [extension(SAN_OID, san_value(tlv(0xA5, tlv(0x80, b"x"))))],
    "dns-8bit": [extension(SAN_OID, san_value(dns(b"\xff.example.test")))],
    "san-truncated": [extension(SAN_OID, b"\x30\x05\x82")],
    "key-usage-garbage": [extension(bytes([0x55, 0x1D, 0x0F]), b"\x01\x01")],
}


@pytest.mark.parametrize("case", sorted(SUBJECTS))
def test_unparsable_subject_is_bad_csr(case: str, http: httpx.Client, acct: Account) -> None:
    """A CN that is invalid UTF-8, an INTEGER, a BIT STRING, an 8-bit TeletexString or
    IA5String (the signature verifies) is 422 bad_csr naming the subject."""
    tag, content = SUBJECTS[case]
    r = sign(http, acct, patched_csr(tag, content), f"k-{case}")
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "bad_csr"
    assert "subject" in r.json()["message"]
    # the CA goes on serving
    assert sign(http, acct, make_csr([DOMAIN])[0], "k-ok").status_code == 201


@pytest.mark.parametrize("case", sorted(EXTENSIONS))
def test_unparsable_extensions_are_bad_csr(case: str, http: httpx.Client,
                                           acct: Account) -> None:
    """Duplicate extensions, x400Address/EDIPartyName names, 8-bit DNS names, truncated
    or garbage extension values are 422 bad_csr naming the extensions."""
    r = sign(http, acct, csr_with_raw_extensions(EXTENSIONS[case]), f"k-{case}")
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "bad_csr"
    assert "extension" in r.json()["message"]


def test_san_of_the_wrong_type_is_bad_csr(http: httpx.Client, acct: Account) -> None:
    """A SAN entry whose tag is no GeneralName form is 422 bad_csr."""
    r = sign(http, acct, patched_csr(0x83, b"\x01" * N, where="san"), "k1")
    assert r.status_code == 422 and r.json()["error"] == "bad_csr", r.text


@pytest.mark.parametrize("where", ["cn", "san"])
def test_names_with_control_characters_are_refused(where: str, http: httpx.Client,
                                                   acct: Account) -> None:
    """A name with a newline inside a label (``abcdefg`` newline ``.example.test``, under
    the verified domain) is refused, not certified: a label is matched whole."""
    content = b"abcdefg\n.example.test"
    tag = 0x0C if where == "cn" else 0x82
    r = sign(http, acct, patched_csr(tag, content, where=where), "k1")
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "bad_csr"
    assert "not a valid DNS name" in r.json()["message"]
