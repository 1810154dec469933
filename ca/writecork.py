"""One write per turn of the event loop for each connection: :class:`CorkedTransport`.

uvicorn writes a response as at least two writes on its transport, the status line and
headers, then the body, and each is a ``send`` system call at once (uvloop writes
straight to the socket when its buffer is empty): two segments on the wire and two
wake-ups of the client for an answer of a few hundred bytes, the largest single cost of
a cheap request in the CA's profile. The CA's HTTP protocols (:mod:`.headerguard`) hand
uvicorn this wrapper instead of the socket's transport: writes made in one turn of the
event loop are joined and written once, at the end of that turn (``call_soon``), as
TCP_CORK would, without a system call to set it.

Contract: bytes go out in the order written; ``close()`` writes what is pending first;
``abort()`` drops it, as the socket's transport does; a transport closing by the time the
turn ends gets nothing more (its peer is gone). Flow control is the socket transport's
(its buffer limits and ``pause_writing`` calls to the protocol) once the bytes reach it.
"""
from __future__ import annotations

import asyncio
from typing import Any


class CorkedTransport(asyncio.Transport):
    """``transport`` with its writes of one loop turn joined (see the module docstring)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    # -- writing -------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Write what is pending now."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    # -- everything else is the socket transport's ----------------------------------------
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
