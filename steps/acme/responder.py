"""The built-in http-01 responder: a small threaded HTTP server for ACME challenges.

It answers ``GET /.well-known/acme-challenge/<token>`` with the key authorization from an
in-memory map, or from a file named ``<token>`` in an optional folder (the on-disk map);
everything else is 404. One responder per address per process: :func:`acquire` starts it
or returns the running one and counts users; :func:`release` stops it when the last user
lets go, so concurrent orders (threads) share one listener on the CA's http-01 port.

Hazards: the listener binds the address the CA connects to (often port 80, which needs
privileges); binding fails with a :class:`OSError` the caller turns into a step error.
Tokens are checked against the base64url alphabet so a request can never name a path
outside the folder.
"""
from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

PREFIX = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

log = structlog.get_logger("certwright.acme.responder")


class Responder:
    """An HTTP server answering http-01 challenges; ``start()`` binds, ``stop()`` closes.

    ``add``/``remove`` are thread-safe and take effect on the next request.
    """

    def __init__(self, host: str, port: int, folder: Path | None = None) -> None:
        self.host, self.port, self.folder = host, port, folder
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.served: list[str] = []  # tokens answered, for tests and logs

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def add(self, token: str, key_authorization: str) -> None:
        """Serve ``key_authorization`` for ``token``. Raises ValueError on a malformed token."""
        if not _TOKEN.match(token):
            raise ValueError(f"not an ACME token: {token!r}")
        with self._lock:
            self._tokens[token] = key_authorization

    def remove(self, token: str) -> None:
        """Stop serving ``token``; unknown tokens are ignored."""
        with self._lock:
            self._tokens.pop(token, None)

    def lookup(self, token: str) -> str | None:
        """The key authorization for ``token`` (memory first, then the folder), or None."""
        if not _TOKEN.match(token):
            return None
        with self._lock:
            value = self._tokens.get(token)
        if value is None and self.folder is not None:
            try:
                value = (self.folder / token).read_text().strip()
            except OSError:
                return None
        return value

    def start(self) -> Responder:
        """Bind and serve in a daemon thread. Raises OSError if the address is taken."""
        responder = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "certwright-acme-responder"

            def do_GET(self) -> None:
                value = None
                if self.path.startswith(PREFIX):
                    value = responder.lookup(self.path[len(PREFIX):].split("?", 1)[0])
                if value is None:
                    self.send_error(404)
                    return
                body = value.encode()
                responder.served.append(self.path[len(PREFIX):])
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - as in the base
                log.debug("responder_request", line=format % args)

        self._server = _Server((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"acme-responder-{self.port}", daemon=True)
        self._thread.start()
        log.info("responder_started", address=self.address)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. Safe to call twice."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            log.info("responder_stopped", address=self.address)


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops SYNs when a CA validates many tokens at once; the
    # client then retransmits after a second, which stalls validation (seen under load).
    request_queue_size = 128
    daemon_threads = True


_registry: dict[str, tuple[Responder, int]] = {}
_registry_lock = threading.Lock()


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too). Raises ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


def acquire(address: str) -> Responder:
    """The responder on ``address``, started if none runs in this process; counts a user.

    Raises ValueError for a malformed address, OSError when it cannot bind.
    """
    with _registry_lock:
        entry = _registry.get(address)
        if entry is not None:
            _registry[address] = (entry[0], entry[1] + 1)
            return entry[0]
        host, port = parse_address(address)
        responder = Responder(host, port).start()
        _registry[address] = (responder, 1)
        return responder


def find(address: str) -> Responder | None:
    """The responder running on ``address`` in this process, or None."""
    with _registry_lock:
        entry = _registry.get(address)
        return entry[0] if entry else None


def release(address: str) -> None:
    """Drop one user of the responder on ``address``; the last one stops it."""
    with _registry_lock:
        entry = _registry.get(address)
        if entry is None:
            return
        responder, users = entry
        if users > 1:
            _registry[address] = (responder, users - 1)
            return
        del _registry[address]
    responder.stop()
