"""The CA's HTTP edge before any authentication (real sockets on loopback): bodies over a
route's limit are refused with 413 without being read into memory, bodies that stall are
cut after the body timeout, and connections over the cap are refused."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from certwright.ca.server import CAServer
from certwright.clock import FakeClock
from tests.support.ca import SmtpSink, fake_clock, smtp_sink  # noqa: F401  (fixtures)
from tests.support.sockets import wait_closed

MB = 1 << 20


@contextmanager
def ca(tmp_path: Path, sink: SmtpSink, clock: FakeClock,
       **settings: Any) -> Iterator[CAServer]:
    with CAServer(tmp_path / "ca", smarthost=sink.smarthost, clock=clock,
                  settings={"rate_limits": "off", **settings}) as server:
        yield server


def peak_rss() -> int:
    """This process's peak resident set (VmHWM) in bytes: the CA serves in a thread here."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def connect(server: CAServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=30)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def send_until_closed(sock: socket.socket, data: bytes, total: int) -> int:
    """Send ``data`` repeatedly up to ``total`` bytes or until the server closes."""
    sent = 0
    try:
        while sent < total:
            sock.sendall(data)
            sent += len(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_400_mb_login_is_413_by_its_length(tmp_path: Path, smtp_sink: SmtpSink,
                                           fake_clock: FakeClock) -> None:
    """A login announcing 400 MB is refused with 413 before its body is read, and the
    connection is closed; memory stays where it was."""
    with ca(tmp_path, smtp_sink, fake_clock) as server:
        before = peak_rss()
        sock = connect(server)
        sock.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: ca\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 400000000\r\n\r\n")
        send_until_closed(sock, b"x" * MB, 400 * MB)
        reply = read_all(sock)
        sock.close()
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b'"error":"body_too_large"' in reply
        assert peak_rss() - before < 64 * MB


def test_chunked_body_counted_as_it_comes(tmp_path: Path, smtp_sink: SmtpSink,
                                          fake_clock: FakeClock) -> None:
    """A chunked body (no length given) is cut with 413 once it passes the limit, so
    400 MB streamed at the CA never reach its memory."""
    with ca(tmp_path, smtp_sink, fake_clock) as server:
        before = peak_rss()
        sock = connect(server)
        sock.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: ca\r\nContent-Type: "
                     b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % MB + b"x" * MB + b"\r\n"
        sent = send_until_closed(sock, chunk, 400 * MB)
        reply = read_all(sock)
        sock.close()
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert sent < 400 * MB
        assert peak_rss() - before < 64 * MB


def test_signing_route_takes_a_larger_body(tmp_path: Path, smtp_sink: SmtpSink,
                                           fake_clock: FakeClock) -> None:
    """100 KB is over the login limit but within the signing route's (which then asks
    for authentication as usual)."""
    body = {"csr": "A" * 60000, "idempotency_key": "k" * 100, "pad": "p" * 40000}
    with ca(tmp_path, smtp_sink, fake_clock) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        big = http.post("/api/v1/login", json={"email": "a@b.test", "passphrase": "x" * 100000})
        assert big.status_code == 413 and big.json()["limit"] == 16384
        assert http.post("/api/v1/certificates", json=body).status_code == 401


def open_stalled(server: CAServer, count: int) -> list[socket.socket]:
    """``count`` connections that send their headers and 10 of 100 body bytes, then wait."""
    socks = []
    for _ in range(count):
        sock = connect(server)
        sock.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: ca\r\nContent-Type: "
                     b'application/json\r\nContent-Length: 100\r\n\r\n{"email":')
        socks.append(sock)
    return socks


def test_300_stalled_bodies_are_cut(tmp_path: Path, smtp_sink: SmtpSink,
                                    fake_clock: FakeClock) -> None:
    """300 connections stalled mid-body: a normal request is still answered, and every
    stalled one gets 408 and is closed once the body timeout (1 s here) has passed."""
    with ca(tmp_path, smtp_sink, fake_clock, http_body_timeout=1) as server:
        socks = open_stalled(server, 300)
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                assert http.get("/ca/root.crt").status_code == 200
            closed = wait_closed(socks)
            assert len(closed) == 300
            assert all(reply.startswith(b"HTTP/1.1 408") for reply in closed.values())
            assert all(b'"error":"body_timeout"' in reply for reply in closed.values())
        finally:
            for sock in socks:
                sock.close()


def test_connections_over_the_cap_are_refused(tmp_path: Path, smtp_sink: SmtpSink,
                                              fake_clock: FakeClock) -> None:
    """With ``http_max_connections`` held by stalled clients, a new request is 503; once
    they are gone, requests are served again."""
    with ca(tmp_path, smtp_sink, fake_clock, http_max_connections=20,
            http_body_timeout=600) as server:
        socks = open_stalled(server, 20)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/ca/root.crt").status_code == 503
        for sock in socks:
            sock.close()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for _ in range(200):  # the server sees the closes asynchronously
                if http.get("/ca/root.crt").status_code == 200:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the CA still refuses after the stalled clients left")
