"""The CA's HTTP edge bounds the time a request's headers take (real sockets on loopback),
under both HTTP parsers uvicorn offers: a client that starts a request and stalls, or
dribbles its headers, is answered 408 and closed after ``http_header_timeout``; a
connection that never sends a byte is closed; an idle keep-alive connection is left to
the keep-alive timeout; and stalled clients do not starve the others.

Each test asserts what the server did (closed, answered, served), never how long it took;
:func:`wait_closed`'s guard only bounds a broken build.
"""
from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwright.ca import server as ca_server
from certwright.ca.server import CAServer
from certwright.clock import FakeClock
from tests.support.ca import SmtpSink, fake_clock, smtp_sink  # noqa: F401  (fixtures)
from tests.support.sockets import wait_closed

GUARD = 30.0  # seconds a test waits for the server at most: a broken build, not a figure


@pytest.fixture(params=["httptools", "h11"])
def http_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs under both of uvicorn's HTTP/1.1 parsers."""
    monkeypatch.setattr(ca_server, "HTTP_IMPL", request.param)
    return str(request.param)


@contextmanager
def ca(tmp_path: Path, sink: SmtpSink, clock: FakeClock, **settings: Any) -> Iterator[CAServer]:
    with CAServer(tmp_path / "ca", smarthost=sink.smarthost, clock=clock,
                  settings={"rate_limits": "off", **settings}) as server:
        yield server


def connect(server: CAServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=GUARD)


def begun(server: CAServer, start: bytes) -> socket.socket:
    """A connection that sends the start of a request at once: its header timer runs from
    the connect, so a client that connected many sockets before it sent on any could see
    the first ones closed as idle (no byte yet) rather than answered 408."""
    sock = connect(server)
    sock.sendall(start)
    return sock


def get_request(path: str = "/ca/root.crt") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: ca\r\n\r\n".encode()


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body) from a keep-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a whole response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def served_again(server: CAServer) -> bool:
    """Whether a normal request is answered 200 within :data:`GUARD` seconds (the server
    sees the closes of its connections asynchronously: 503 until it has counted them)."""
    end = time.monotonic() + GUARD
    with httpx.Client(base_url=server.url, timeout=GUARD) as http:
        while time.monotonic() < end:
            status = http.get("/ca/root.crt").status_code
            if status == 200:
                return True
            assert status == 503, status
            time.sleep(0.05)
    return False


def test_half_a_request_line_is_answered_408_and_closed(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """A client that sends half a request line and stalls gets 408 ``header_timeout`` and
    is closed; a normal request on another connection meanwhile is served."""
    with ca(tmp_path, smtp_sink, fake_clock, http_header_timeout=0.5,
            http_keep_alive=600) as server:
        stalled = connect(server)
        stalled.sendall(b"GET /ca/ro")
        try:
            with httpx.Client(base_url=server.url, timeout=GUARD) as http:
                assert http.get("/ca/root.crt").status_code == 200
            closed = wait_closed([stalled], GUARD)
            assert stalled.fileno() in closed, "the stalled client is still connected"
            reply = closed[stalled.fileno()]
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert b"connection: close" in reply.lower()
            assert b'"error":"header_timeout"' in reply
        finally:
            stalled.close()


def test_headers_dribbled_byte_by_byte_are_cut(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """The timeout bounds the whole header section, not the gap between reads: a client
    that keeps sending a header byte at a time (slowloris) is still answered 408."""
    with ca(tmp_path, smtp_sink, fake_clock, http_header_timeout=0.5,
            http_keep_alive=600) as server:
        sock = connect(server)
        sock.sendall(b"GET /ca/root.crt HTTP/1.1\r\nHost: ca\r\nX-Slow: ")
        reply, sent = b"", 0
        try:
            while sent < int(GUARD / 0.05):
                ready, _, _ = select.select([sock], [], [], 0.05)
                if ready:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
                    continue
                sock.sendall(b"a")
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            sock.close()
        assert reply.startswith(b"HTTP/1.1 408"), (sent, reply[:200])


def test_a_connection_that_sends_nothing_is_closed(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """A connection that never sends a byte is closed without an answer (nothing was
    asked), although the keep-alive timeout is far away."""
    with ca(tmp_path, smtp_sink, fake_clock, http_header_timeout=0.5,
            http_keep_alive=600) as server:
        sock = connect(server)
        try:
            closed = wait_closed([sock], GUARD)
            assert closed == {sock.fileno(): b""}
        finally:
            sock.close()


def test_a_stall_between_keep_alive_requests_is_the_keep_alive_timeout(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """After a whole response, an idle connection is closed by the keep-alive timeout
    (the header timeout is far away), with nothing more sent."""
    with ca(tmp_path, smtp_sink, fake_clock, http_header_timeout=600,
            http_keep_alive=1) as server:
        sock = connect(server)
        try:
            sock.sendall(get_request())
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            assert wait_closed([sock], GUARD) == {sock.fileno(): b""}
        finally:
            sock.close()


def test_the_next_keep_alive_request_has_its_own_header_timeout(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """A client served once that starts a second request and stalls is answered 408 by
    the header timeout, although the keep-alive timeout is far away."""
    with ca(tmp_path, smtp_sink, fake_clock, http_header_timeout=0.5,
            http_keep_alive=600) as server:
        sock = connect(server)
        try:
            sock.sendall(get_request())
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            sock.sendall(b"GET /ca/root.crt HTTP/1.1\r\nHo")
            closed = wait_closed([sock], GUARD)
            assert closed.get(sock.fileno(), b"").startswith(b"HTTP/1.1 408"), closed
        finally:
            sock.close()


def test_slow_but_whole_headers_within_the_timeout_are_served(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """Headers sent in pieces that complete within the timeout are served as usual, and
    the timer does not cut the connection afterwards while it is in use."""
    with ca(tmp_path, smtp_sink, fake_clock, http_header_timeout=600,
            http_keep_alive=600) as server:
        sock = connect(server)
        try:
            for piece in (b"GET /ca/ro", b"ot.crt HTTP/1.1\r\n", b"Host: ca\r\n", b"\r\n"):
                sock.sendall(piece)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            sock.sendall(get_request())
            assert read_response(sock).startswith(b"HTTP/1.1 200")
        finally:
            sock.close()


def test_many_stalled_headers_do_not_starve_normal_requests(
        tmp_path: Path, smtp_sink: SmtpSink, fake_clock: FakeClock, http_impl: str) -> None:
    """With every connection the CA allows held by clients stalled in their headers, the
    header timeout frees them all (408 each) and normal requests are served again; 200
    stalled clients under a larger cap do not stop a normal request meanwhile."""
    with ca(tmp_path, smtp_sink, fake_clock, http_header_timeout=0.5, http_keep_alive=600,
            http_max_connections=30) as server:
        socks = [begun(server, b"POST /api/v1/login HTTP/1.1\r\nHost: ca\r\nContent-Le")
                 for _ in range(30)]
        try:
            closed = wait_closed(socks, GUARD)
            assert len(closed) == 30
            assert all(reply.startswith(b"HTTP/1.1 408") for reply in closed.values())
        finally:
            for sock in socks:
                sock.close()
        assert served_again(server), "the CA still refuses after the stalled clients left"
    with ca(tmp_path, smtp_sink, fake_clock, http_header_timeout=0.5,
            http_keep_alive=600) as server:
        socks = [begun(server, b"GET /ca/root.crt HTTP/1.1\r\nHost: c") for _ in range(200)]
        try:
            with httpx.Client(base_url=server.url, timeout=GUARD) as http:
                assert http.get("/ca/root.crt").status_code == 200
            assert len(wait_closed(socks, GUARD)) == 200
        finally:
            for sock in socks:
                sock.close()
