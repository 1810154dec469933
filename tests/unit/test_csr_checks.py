"""The CSR checks on their own: DNS names matched whole, and (searched by hypothesis)
any re-signed mutation of a CSR is either accepted with valid names or refused with
CSRRejected, never another exception."""
from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certwright.ca.signer import CSRRejected, inspect_csr, valid_dns_name
from tests.support.der import element, resign

KEY = ec.generate_private_key(ec.SECP256R1())
CSR_DER = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example.test"),
                                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example.test"),
                                                       x509.DNSName("*.example.test")]),
                          critical=False)
           .sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
_, _START, _ = element(CSR_DER, 0)
_, _, _INFO_END = element(CSR_DER, _START)
INFO = CSR_DER[_START:_INFO_END]


@pytest.mark.parametrize("name", ["a\n.example.test", "example.test\n", "a.exa mple.test",
                                  "-a.example.test", "a.example.123", "single"])
def test_invalid_dns_names(name: str) -> None:
    """Labels are matched whole: a newline, a space, a leading hyphen, a numeric TLD or
    a single label is not a DNS name."""
    assert not valid_dns_name(name, wildcard=True)


def test_valid_dns_names() -> None:
    """Ordinary names and a left-most wildcard are."""
    assert valid_dns_name("www.example.test")
    assert valid_dns_name("*.example.test", wildcard=True)
    assert not valid_dns_name("*.example.test")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_csrs_are_accepted_or_refused(data: st.DataObject) -> None:
    """Bytes of the CertificationRequestInfo overwritten (tags, lengths, string bytes),
    then signed again: inspect_csr returns valid names or raises CSRRejected."""
    info = bytearray(INFO)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(info) - 1))
        info[at] = data.draw(st.integers(0, 255))
    pem = resign(CSR_DER, bytes(info), KEY)
    outcome: CSRRejected | list[str]
    try:
        outcome = inspect_csr(pem)[1]
    except CSRRejected as exc:
        outcome = exc
    if isinstance(outcome, CSRRejected):
        assert outcome.code in {"bad_csr", "weak_key"} and outcome.message
    else:
        assert outcome and all(valid_dns_name(n, wildcard=True) for n in outcome)


def test_unknown_version_is_refused() -> None:
    """A CSR of version 2 (only 1, encoded 0, exists) is bad_csr, not InvalidVersion."""
    info = bytearray(INFO)
    _, start, _ = element(bytes(info), 0)
    info[start + 2] = 1  # INTEGER 0 -> 1
    with pytest.raises(CSRRejected) as caught:
        inspect_csr(resign(CSR_DER, bytes(info), KEY))
    assert caught.value.code == "bad_csr" and "version" in caught.value.message
