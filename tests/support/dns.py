"""A tiny authoritative DNS server for ACME tests, on dnslib, loopback only.

It answers ``A 127.0.0.1`` for every name under the test zones (``acme.test`` by default)
and serves TXT records from a JSON file (``{"_acme-challenge.a.acme.test.": ["value"]}``)
that is re-read on every query, so a dns-01 hook running in another process can add and
remove records. The same module is that hook::

    python tests/support/dns.py RECORDS.json add _acme-challenge.a.acme.test. VALUE
    python tests/support/dns.py RECORDS.json del _acme-challenge.a.acme.test. VALUE

Hazards: the records file is shared between processes, so writers take an ``fcntl`` lock
and replace the file atomically; readers never see a half-written file. Pebble queries over
UDP; a TCP listener on the same port is started as well for truncated answers.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RR, TXT, A  # type: ignore[import-untyped]
from dnslib.server import BaseResolver, DNSServer  # type: ignore[import-untyped]


def _norm(name: str) -> str:
    return name.lower().rstrip(".") + "."


def read_records(path: Path) -> dict[str, list[str]]:
    """The TXT records in ``path`` (empty when the file is missing or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {_norm(k): list(v) for k, v in data.items()} if isinstance(data, dict) else {}


def change_record(path: Path, action: str, name: str, value: str) -> None:
    """Add (``add``) or remove (``del``) one TXT value, under an exclusive lock.

    Adding a value already present does nothing, so a hook may run twice.
    """
    lock = path.with_suffix(path.suffix + ".lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        records = read_records(path)
        values = records.setdefault(_norm(name), [])
        if action == "add" and value not in values:
            values.append(value)
        elif action == "del" and value in values:
            values.remove(value)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records))
        os.replace(tmp, path)


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, records: Path, zones: tuple[str, ...], address: str) -> None:
        self.records = records
        self.zones = tuple(_norm(z) for z in zones)
        self.address = address
        self.queries: list[tuple[str, str]] = []

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        qname = str(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        self.queries.append((qname, qtype))
        name = _norm(qname)
        if not any(name == z or name.endswith("." + z) for z in self.zones):
            reply.header.rcode = 5  # REFUSED: we are authoritative for the test zones only
            return reply
        if qtype == "A":
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(self.address), ttl=0))
        elif qtype == "TXT":
            for value in read_records(self.records).get(name, []):
                reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT(value), ttl=0))
        return reply


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


class TestDNS:
    """The test DNS server: ``start()``, then ``address`` ("127.0.0.1:port"), ``stop()``."""

    __test__ = False  # not a pytest test class

    def __init__(self, records: Path, zones: tuple[str, ...] = ("acme.test",),
                 answer: str = "127.0.0.1") -> None:
        self.records = records
        self.resolver = _Resolver(records, zones, answer)
        self.port = 0
        self._servers: list[Any] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TestDNS:
        self.port = _free_port()
        for tcp in (False, True):
            server = DNSServer(self.resolver, address="127.0.0.1", port=self.port, tcp=tcp,
                               logger=_QuietLogger())
            server.start_thread()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()
        self._servers.clear()

    def add(self, name: str, value: str) -> None:
        change_record(self.records, "add", name, value)

    def remove(self, name: str, value: str) -> None:
        change_record(self.records, "del", name, value)

    def hook_argv(self, action: str) -> list[str]:
        """The argv of a dns-01 hook that changes this server's records (``{name}``,
        ``{value}``)."""
        return [sys.executable, str(Path(__file__).resolve()), str(self.records), action,
                "{name}", "{value}"]


class _QuietLogger:
    """dnslib's logger interface, saying nothing (tests read ``resolver.queries``)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def main(argv: list[str]) -> int:
    """The hook: ``dns.py RECORDS add|del NAME VALUE``."""
    if len(argv) != 4 or argv[1] not in ("add", "del"):
        print("usage: dns.py RECORDS.json add|del NAME VALUE", file=sys.stderr)
        return 2
    change_record(Path(argv[0]), argv[1], argv[2], argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
