"""CAA (RFC 8659) on the built-in CA's ACME server, checked at finalize against the
resolver: a record naming the CA (``acme_caa_identities``) permits issuance; one naming
another CA, an ``issuewild`` forbidding wildcards, or an unknown critical property refuse
it with ``caa`` naming the identifier; the relevant set is found by climbing the tree;
``acme_caa: false`` skips the check."""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certwright.ca.server import CAServer
from certwright.clock import FakeClock
from tests.support.acme_client import Client, b64
from tests.support.acme_server import AcmeCA, ChallengeServer
from tests.support.ca import TEST_SETTINGS, SmtpSink, make_csr, smtp_sink  # noqa: F401
from tests.support.dns_caa import CaaDNS

URN = "urn:ietf:params:acme:error:"
ME = "ca.certwright.test"


def start(tmp_path: Path, sink: SmtpSink, **settings: Any) -> Iterator[AcmeCA]:
    dns = CaaDNS(tmp_path / "records.json").start()
    web = ChallengeServer().start()
    config = {**TEST_SETTINGS, "acme_resolver": dns.address, "acme_http01_port": web.port,
              "acme_caa_identities": [ME], **settings}
    try:
        with CAServer(tmp_path / "ca", smarthost=sink.smarthost, settings=config,
                      clock=FakeClock(datetime.now(UTC))) as server:
            yield AcmeCA(server, dns, web, web.port)
    finally:
        web.stop()
        dns.stop()


@pytest.fixture
def ca(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[AcmeCA]:
    yield from start(tmp_path, smtp_sink)


def finalize(ca: AcmeCA, name: str) -> dict[str, Any]:
    """Order ``name``, validate it (dns-01), finalize; the finalize answer."""
    with httpx.Client(timeout=30) as http:
        c = Client(http, ca.directory)
        c.register()
        placed = c.post(c.dir["newOrder"], {"identifiers": [{"type": "dns",
                                                              "value": name}]}).json()
        authz = c.post(placed["authorizations"][0], None).json()
        chall = next(x for x in authz["challenges"] if x["type"] == "dns-01")
        key_auth = f"{chall['token']}.{c.thumbprint()}"
        value = base64.urlsafe_b64encode(hashlib.sha256(key_auth.encode()).digest()) \
            .rstrip(b"=").decode()
        ca.dns.add(f"_acme-challenge.{name.removeprefix('*.')}.", value)
        assert c.post(chall["url"], {}).json()["status"] == "valid"
        csr, _ = make_csr([name])
        der = b64(x509.load_pem_x509_csr(csr.encode()).public_bytes(Encoding.DER))
        return dict(c.post(placed["finalize"], {"csr": der}).json())


def dns(ca: AcmeCA) -> CaaDNS:
    assert isinstance(ca.dns, CaaDNS)
    return ca.dns


def test_caa_naming_the_ca_permits(ca: AcmeCA) -> None:
    """``issue "ca.certwright.test"`` on the name's parent: issued."""
    dns(ca).caa["acme.test."] = [(0, "issue", f"{ME}; accounturi=x")]
    assert finalize(ca, "ok.acme.test")["status"] == "valid"


def test_caa_naming_another_ca_refuses(ca: AcmeCA) -> None:
    """``issue "other.example"`` on the parent: caa, naming the identifier; the record on
    the name itself wins over the parent's (tree climbing stops at the first set)."""
    dns(ca).caa["acme.test."] = [(0, "issue", "other.example")]
    refused = finalize(ca, "no.acme.test")
    assert refused["type"] == URN + "caa", refused
    assert refused["subproblems"][0]["identifier"]["value"] == "no.acme.test"
    dns(ca).caa["yes.acme.test."] = [(0, "issue", ME)]
    assert finalize(ca, "yes.acme.test")["status"] == "valid"


def test_issuewild_forbids_a_wildcard(ca: AcmeCA) -> None:
    """``issue`` naming the CA with ``issuewild ";"``: the name is issued, its wildcard
    refused."""
    dns(ca).caa["w.acme.test."] = [(0, "issue", ME), (0, "issuewild", ";")]
    assert finalize(ca, "w.acme.test")["status"] == "valid"
    assert finalize(ca, "*.w.acme.test")["type"] == URN + "caa"


def test_unknown_critical_property_refuses(ca: AcmeCA) -> None:
    """A critical (flag 128) property the CA does not know refuses issuance."""
    dns(ca).caa["crit.acme.test."] = [(0, "issue", ME), (128, "tbs", "x")]
    assert finalize(ca, "crit.acme.test")["type"] == URN + "caa"


def test_caa_off_skips_the_check(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    """With ``acme_caa: false`` a record naming another CA does not matter."""
    for ca in start(tmp_path, smtp_sink, acme_caa=False):
        dns(ca).caa["acme.test."] = [(0, "issue", "other.example")]
        assert finalize(ca, "off.acme.test")["status"] == "valid"
