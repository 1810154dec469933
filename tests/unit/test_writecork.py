"""CorkedTransport joins the writes of one event-loop turn into one write, in order;
close() sends what is pending first, abort() drops it, and a transport that closed
before the turn ended is written no more."""
from __future__ import annotations

import asyncio

from certwright.ca.writecork import CorkedTransport


class Recorder(asyncio.Transport):
    """The socket side: what was written to it, write by write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0  # written at once

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 4242)}.get(name, default)


def test_writes_of_one_turn_are_one_write() -> None:
    async def main() -> list[bytes]:
        sock = Recorder()
        cork = CorkedTransport(sock, asyncio.get_running_loop())
        cork.write(b"HTTP/1.1 200 OK\r\n\r\n")
        cork.write(b"")
        cork.write(memoryview(b"body"))
        assert sock.writes == []  # nothing before the turn ends
        assert cork.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody")
        await asyncio.sleep(0)
        cork.write(b"next")
        await asyncio.sleep(0)
        assert cork.get_extra_info("peername") == ("127.0.0.1", 4242)
        return sock.writes

    assert asyncio.run(main()) == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"]


def test_close_flushes_and_abort_drops() -> None:
    async def main() -> tuple[Recorder, Recorder]:
        loop = asyncio.get_running_loop()
        closed, aborted = Recorder(), Recorder()
        first, second = CorkedTransport(closed, loop), CorkedTransport(aborted, loop)
        first.write(b"answer")
        first.close()
        second.write(b"lost")
        second.abort()
        await asyncio.sleep(0)
        return closed, aborted

    closed, aborted = asyncio.run(main())
    assert closed.writes == [b"answer"] and closed.closed
    assert aborted.writes == [] and aborted.aborted


def test_a_transport_closed_before_the_turn_ends_gets_nothing() -> None:
    async def main() -> Recorder:
        sock = Recorder()
        cork = CorkedTransport(sock, asyncio.get_running_loop())
        cork.write(b"too late")
        sock.closed = True  # the peer went away
        await asyncio.sleep(0)
        return sock

    assert asyncio.run(main()).writes == []
