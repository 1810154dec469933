"""The CA's CAA lookups are cached for their TTL, against a real DNS server on loopback:
names under one parent ask the parent once while its answer lives, a TTL of 0 is asked
every time (the tests' DNS), a changed record is seen once the old answer expired, and
validation lookups (A, TXT) are never cached."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certwright.ca.acme.caa import check_caa
from certwright.ca.acme.validate import Resolver
from tests.support.dns_caa import CaaDNS

ME = "ca.certwright.test"


def caa_queries(dns: CaaDNS, name: str) -> int:
    return sum(1 for q, t in dns.resolver.queries if q == name and t == "CAA")


@pytest.fixture
def dns(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[CaaDNS]:
    server = CaaDNS(tmp_path / "records.json", ttl=getattr(request, "param", 0)).start()
    server.caa["acme.test."] = [(0, "issue", ME)]
    yield server
    server.stop()


@pytest.mark.parametrize("dns", [3], indirect=True)
def test_a_parent_is_asked_once_while_its_answer_lives(dns: CaaDNS) -> None:
    resolver = Resolver(("127.0.0.1", dns.port))
    for child in ("a.x.acme.test", "b.x.acme.test", "c.x.acme.test"):
        assert check_caa(child, resolver=resolver, identities=[ME]) is None
    assert caa_queries(dns, "acme.test.") == 1
    dns.caa["acme.test."] = [(0, "issue", "other.example")]  # the record changes
    assert check_caa("d.x.acme.test", resolver=resolver, identities=[ME]) is None  # cached
    time.sleep(3.2)  # the old answer expires
    refused = check_caa("e.x.acme.test", resolver=resolver, identities=[ME])
    assert refused is not None and refused.kind == "caa"
    assert caa_queries(dns, "acme.test.") == 2


def test_a_ttl_of_zero_is_asked_every_time_and_validation_lookups_never_cached(
        dns: CaaDNS) -> None:
    resolver = Resolver(("127.0.0.1", dns.port))
    for child in ("a.acme.test", "b.acme.test"):
        assert check_caa(child, resolver=resolver, identities=[ME]) is None
    assert caa_queries(dns, "acme.test.") == 2
    for _ in range(2):
        assert resolver.addresses("www.acme.test") == ["127.0.0.1"]
        assert resolver.txt("_acme-challenge.www.acme.test") == []
    asked = [t for q, t in dns.resolver.queries if q.endswith("www.acme.test.")]
    assert asked.count("A") == 2 and asked.count("TXT") == 2
