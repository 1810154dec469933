"""Raw sockets against a server under test: what each received before the server
closed it."""
from __future__ import annotations

import select
import socket
import time


def wait_closed(socks: list[socket.socket], guard: float = 60.0) -> dict[int, bytes]:
    """What each socket received up to the server's EOF, for the sockets the server
    closed within ``guard`` seconds (keyed by file descriptor; a bound for a broken build,
    not a measured time)."""
    got = {s.fileno(): b"" for s in socks}
    pending = {s.fileno(): s for s in socks}
    closed: dict[int, bytes] = {}
    end = time.monotonic() + guard
    while pending and time.monotonic() < end:
        ready, _, _ = select.select(list(pending.values()), [], [], 0.5)
        for sock in ready:
            fd = sock.fileno()
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                got[fd] += data
            else:
                closed[fd] = got[fd]
                del pending[fd]
    return closed
