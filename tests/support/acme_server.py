"""The built-in CA as an ACME server for tests: a test DNS server answering for
``acme.test`` (every name is 127.0.0.1), a challenge web server on a free loopback port,
and a CAServer whose ``acme_resolver`` and ``acme_http01_port`` point at them."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from certwright.ca.server import CAServer
from certwright.clock import FakeClock
from tests.support.ca import TEST_SETTINGS, SmtpSink, free_port
from tests.support.dns import TestDNS


class ChallengeServer:
    """Serves ``/.well-known/acme-challenge/TOKEN`` from :attr:`tokens` (what a client's
    web server would), on 127.0.0.1:``port``."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        tokens = self.tokens

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.path.rsplit("/", 1)[-1]
                body = tokens.get(token)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write((body or "not found").encode())

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ChallengeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class AcmeCA:
    """The running pieces: ``server`` (the CA), ``dns``, ``web`` (http-01), ``directory``."""

    server: CAServer
    dns: TestDNS
    web: ChallengeServer
    http01_port: int

    @property
    def directory(self) -> str:
        return f"{self.server.public_url}/acme/directory"


def start_acme_ca(tmp_path: Path, sink: SmtpSink, *, http01_port: int | None = None,
                  clock: FakeClock | None = None, public_url: str | None = None,
                  settings: dict[str, Any] | None = None) -> Iterator[AcmeCA]:
    """Start DNS, the challenge server and the CA; yield them; stop them all. With
    ``http01_port`` the CA's http-01 goes to that port (a peer client's own server)
    instead of the challenge server's; ``public_url`` is the CA's (a proxy in front)."""
    # authoritative for the TLD too: CAA lookups climb to it (RFC 8659)
    dns = TestDNS(tmp_path / "records.json", zones=("acme.test", "test")).start()
    web = ChallengeServer().start()
    port = http01_port or web.port
    config = {**TEST_SETTINGS, "acme_resolver": dns.address, "acme_http01_port": port,
              **(settings or {})}
    try:
        with CAServer(tmp_path / "ca", smarthost=sink.smarthost, settings=config,
                      clock=clock or FakeClock(datetime.now(UTC)),
                      public_url=public_url) as server:
            yield AcmeCA(server, dns, web, port)
    finally:
        web.stop()
        dns.stop()


@pytest.fixture
def acme_ca(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[AcmeCA]:
    yield from start_acme_ca(tmp_path, smtp_sink)


@pytest.fixture
def peer_port() -> int:
    """A free port for a peer client's http-01 server."""
    return free_port()
