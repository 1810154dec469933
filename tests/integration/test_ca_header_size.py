"""The CA's HTTP edge bounds a request's headers in size (``http_max_header``) under both
HTTP parsers, before they reach the parser's memory: 64 MB of headers are cut with 431
``headers_too_large`` once the limit is passed, and headers within it, whole or in
pieces, are served. Real sockets on loopback."""
from __future__ import annotations

import socket
from pathlib import Path

from certwright.clock import FakeClock
from tests.integration.test_ca_header_timeout import (  # noqa: F401  (fixtures)
    ca,
    connect,
    http_impl,
    read_response,
    wait_closed,
)
from tests.integration.test_ca_http_limits import peak_rss, send_until_closed
from tests.support.ca import SmtpSink, fake_clock, smtp_sink  # noqa: F401  (fixtures)

MB = 1 << 20


def test_64_mb_of_headers_are_cut_with_431(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """Headers that never end are refused with 431 once past the limit, the connection
    closed: far less than the 64 MB offered is sent, and memory stays where it was."""
    with ca(tmp_path, smtp_sink, fake_clock, http_header_timeout=600) as server:
        before = peak_rss()
        sock = connect(server)
        try:
            sock.sendall(b"GET /ca/root.crt HTTP/1.1\r\nHost: ca\r\n")
            sent = send_until_closed(sock, b"X-Pad: " + b"a" * 8000 + b"\r\n", 64 * MB)
            closed = wait_closed([sock])
        finally:
            sock.close()
        reply = next(iter(closed.values()), b"")
        assert reply.startswith(b"HTTP/1.1 431"), (sent, reply[:200])
        assert b'"error":"headers_too_large"' in reply and b'"limit":16384' in reply
        assert sent < 64 * MB
        assert peak_rss() - before < 32 * MB


def test_headers_within_the_limit_are_served_whole_or_in_pieces(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """15 KB of headers (under the 16 KB limit) are served, sent at once or 1 KB at a
    time, and so is the next request on the same connection."""
    head = (b"GET /ca/root.crt HTTP/1.1\r\nHost: ca\r\n"
            + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(15)) + b"\r\n")
    with ca(tmp_path, smtp_sink, fake_clock) as server:
        sock = connect(server)
        try:
            sock.sendall(head)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            for at in range(0, len(head), 1024):
                sock.sendall(head[at:at + 1024])
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        finally:
            sock.close()


def test_a_body_after_large_headers_is_no_header(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """Headers near the limit and a body in the same packet: the body's bytes are not
    counted against the header limit (the request reaches the app, which asks for a
    login)."""
    body = b'{"csr":"' + b"A" * 100000 + b'"}'
    head = (b"POST /api/v1/certificates HTTP/1.1\r\nHost: ca\r\nContent-Type: "
            b"application/json\r\nContent-Length: %d\r\nX-Pad: %s\r\n\r\n"
            % (len(body), b"a" * 15000))
    with ca(tmp_path, smtp_sink, fake_clock) as server:
        sock = socket.create_connection((server.host, server.port), timeout=30)
        try:
            sock.sendall(head + body)
            assert read_response(sock).startswith(b"HTTP/1.1 401")
        finally:
            sock.close()
