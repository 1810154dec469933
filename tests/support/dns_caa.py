"""The test DNS server (:mod:`tests.support.dns`) answering CAA records (RFC 8659) too,
from :attr:`CaaDNS.caa`: ``{"acme.test.": [(flags, tag, value), ...]}``, changeable while
it runs, with the TTL ``ttl`` (0: nothing may be cached)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dnslib import CAA, QTYPE, RR  # type: ignore[import-untyped]

from tests.support.dns import TestDNS


class CaaDNS(TestDNS):
    """:class:`TestDNS` plus CAA answers."""

    def __init__(self, records: Path, zones: tuple[str, ...] = ("acme.test", "test"), *,
                 ttl: int = 0) -> None:
        super().__init__(records, zones)
        self.caa: dict[str, list[tuple[int, str, str]]] = {}
        inner, caa = self.resolver, self.caa

        class Resolver(type(inner)):  # type: ignore[misc]
            def resolve(self, request: Any, handler: Any) -> Any:
                reply = inner.resolve(request, handler)
                name = str(request.q.qname).lower().rstrip(".") + "."
                if QTYPE[request.q.qtype] == "CAA" and reply.header.rcode == 0:
                    for flags, tag, value in caa.get(name, []):
                        reply.add_answer(RR(request.q.qname, QTYPE.CAA,
                                            rdata=CAA(flags, tag, value), ttl=ttl))
                return reply

        self.resolver = Resolver.__new__(Resolver)
        self.resolver.__dict__.update(inner.__dict__)
