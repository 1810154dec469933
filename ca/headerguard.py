"""Request headers bounded in time and size at the protocol level, before any ASGI code.

uvicorn times out idle keep-alive connections, and :mod:`certwright.ca.httpguard` bounds
a body in size and time, but nothing bounds the *headers*: a client that opens a
connection and sends its request line and headers slowly, or never finishes them
(slowloris), or never sends a byte, holds its connection until it leaves. This module
gives each request a deadline for its whole header section, as Go's
``http.Server.ReadHeaderTimeout``, nginx's ``client_header_timeout`` and Apache's
``mod_reqtimeout`` do.

Why a subclass of uvicorn's protocols and not another server: Hypercorn has
``read_timeout``, but it bounds the gap between two reads, so a client that sends a byte
every few seconds passes it for ever; moving the CA to it would also trade uvicorn's
httptools parser and uvloop (the benchmarks' figures), its ``limit_concurrency`` cap (503)
and ``h11_max_incomplete_event_size`` for a new dependency. Bounding the whole section
needs a timer where the parser says "headers complete", which only the HTTP protocol
object knows: :class:`HttpToolsHeaderTimeout` and :class:`H11HeaderTimeout` extend
uvicorn's two HTTP/1.1 protocols by a few hooks each and hold a :class:`HeaderTimer`.

Contract:

* The timer starts when a connection is made (a client that never sends a byte is
  timed too) and, on a keep-alive connection, when the first byte of the next request
  arrives (until then the keep-alive timeout governs the idle connection, as in Go). A
  pipelined request that arrived unfinished while the previous one was served is timed
  from the end of that response. It stops when the parser has the whole header section;
  the body is then :class:`~certwright.ca.httpguard.BodyGuard`'s.
* Dribbling does not extend it: the deadline is for the section, not for each read.
* On expiry, a request that had begun is answered ``408 header_timeout`` (JSON, as every
  error of the CA, with ``Connection: close``, RFC 9110 15.5.9) and the connection is
  closed; a connection on which nothing was sent is closed without an answer (nothing
  was asked: a browser's preconnect, a port scan).
* Size: httptools keeps every header it parses, and a header's value until it ends,
  with no limit of its own (64 MB of headers were taken into memory). A
  :class:`HeaderBudget` counts the bytes of an unfinished header section before the
  parser sees them and answers ``431 headers_too_large`` (and closes) once they pass
  ``http_max_header``; h11's own limit (answered 400) is the same size and checked
  after ours, so both parsers answer 431.
* :class:`EdgeConfig` carries the limits from the CA's settings to the protocols
  (``http_header_timeout``, ``http_max_header``, read by :func:`header_limits`).

Hazard: this leans on uvicorn's protocol internals (``connection_made``,
``data_received``, ``on_response_complete``, ``connection_lost``, the h11 connection's
``their_state``, the httptools parser callbacks ``on_message_begin`` and
``on_headers_complete``). They have been stable for years, but an upgrade of uvicorn must
pass tests/integration/test_ca_header_timeout.py, which runs every case under both
parsers.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from certwright.ca.httpguard import http_settings
from certwright.ca.writecork import CorkedTransport

log = structlog.get_logger("ca.headerguard")


@dataclass(frozen=True)
class HeaderLimits:
    """What a request's header section may take: ``timeout`` seconds from its first byte
    (from the connection's start for a first request), ``max_size`` bytes."""

    timeout: float = 10.0
    max_size: int = 16 * 1024


def header_limits(config: dict[str, Any]) -> HeaderLimits:
    """The :class:`HeaderLimits` in the CA's HTTP settings (``config``); SettingError as
    :func:`~certwright.ca.httpguard.http_settings`."""
    http = http_settings(config)
    return HeaderLimits(timeout=http["http_header_timeout"], max_size=http["http_max_header"])


class EdgeConfig(uvicorn.Config):
    """uvicorn's ``Config`` with the :class:`HeaderLimits` this module's protocols read;
    pass one of them as ``http=``."""

    def __init__(self, app: Any, *, header_limits: HeaderLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_limits = header_limits


def _limits_of(config: uvicorn.Config) -> HeaderLimits:
    """The limits an :class:`EdgeConfig` carries; TypeError for a plain ``Config`` (a
    header-timeout protocol without its timeout would be a silent hole)."""
    if not isinstance(config, EdgeConfig):
        raise TypeError("the header-timeout protocols need an EdgeConfig, "
                        f"not {type(config).__name__}")
    return config.header_limits


class HeaderTimer:
    """One connection's header deadline. Not thread-safe: the event loop's thread only.

    ``expect()`` starts it for a request that may come (no byte yet); ``received()``
    starts it, unless it runs, for bytes of an unfinished header section; ``complete()``
    stops it once the parser has the headers; ``close()`` stops it for good. On expiry
    it calls ``on_expiry(begun)``, ``begun`` telling whether any byte had arrived.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float,
                 on_expiry: Callable[[bool], None]) -> None:
        self._loop, self.timeout, self._on_expiry = loop, timeout, on_expiry
        self._handle: asyncio.TimerHandle | None = None
        self._begun = False

    def expect(self) -> None:
        self._arm()

    def received(self) -> None:
        self._begun = True
        self._arm()

    def complete(self) -> None:
        self.close()
        self._begun = False

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        if self._handle is None:
            self._handle = self._loop.call_later(self.timeout, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._on_expiry(self._begun)


class HeaderBudget:
    """The bytes of one unfinished header section, checked before the parser sees them.

    ``admits(data)`` says whether ``data`` may be fed: yes while the section stays within
    ``limit`` bytes, or when it ends (a blank line) within them. ``add(data)`` counts
    bytes fed while the section is unfinished; ``reset()`` once the parser has it. The
    count may include bytes of a previous message that shared the read (at most one
    read's worth, so a pipelined request can be refused a little early, never late).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._tail = b""  # the last bytes counted: a blank line may span two reads

    def admits(self, data: bytes) -> bool:
        if self.used + len(data) <= self.limit:
            return True
        seen = self._tail + data
        ends = [i + len(mark) for mark in (b"\n\r\n", b"\n\n")
                if (i := seen.find(mark)) >= 0]
        return bool(ends) and self.used + max(0, min(ends) - len(self._tail)) <= self.limit

    def add(self, data: bytes) -> None:
        self.used += len(data)
        self._tail = (self._tail + data)[-2:]

    def reset(self) -> None:
        self.used, self._tail = 0, b""


def _refuse(transport: asyncio.Transport, server_state: ServerState, status: bytes,
            error: dict[str, Any]) -> None:
    """Write a JSON error answer that closes the connection, then close it."""
    body = json.dumps(error, separators=(",", ":")).encode()
    head = [b"HTTP/1.1 " + status]
    head += [name + b": " + value for name, value in server_state.default_headers]
    head += [b"content-type: application/json",
             b"content-length: " + str(len(body)).encode(), b"connection: close"]
    transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    transport.close()


def _too_large(transport: asyncio.Transport, server_state: ServerState, limit: int,
               client: tuple[str, int] | None, *, answer: bool) -> None:
    """Answer 431 (unless a response is being written: then only close) and close."""
    if transport.is_closing():
        return
    log.info("http_headers_too_large", client=f"{client[0]}:{client[1]}" if client else None,
             limit=limit)
    if not answer:
        transport.close()
        return
    _refuse(transport, server_state, b"431 Request Header Fields Too Large",
            {"error": "headers_too_large", "message": "the request headers are over the "
             f"{limit} bytes the CA takes", "limit": limit})


def _timed_out(transport: asyncio.Transport, server_state: ServerState, timeout: float,
               client: tuple[str, int] | None, *, begun: bool) -> None:
    """Answer 408 (when a request had begun) and close ``transport``."""
    if transport.is_closing():
        return
    log.info("http_header_timeout", client=f"{client[0]}:{client[1]}" if client else None,
             begun=begun, timeout=timeout)
    if not begun:
        transport.close()
        return
    _refuse(transport, server_state, b"408 Request Timeout",
            {"error": "header_timeout", "message": "the request headers did not arrive "
             f"within {timeout:g} s", "timeout": timeout})


class HttpToolsHeaderTimeout(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = _limits_of(config)
        self._timer = HeaderTimer(self.loop, limits.timeout, self._expired)
        self._budget = HeaderBudget(limits.max_size)
        self._in_headers = False  # the parser is inside a request's header section

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # ca/writecork.py
        self._timer.expect()

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.close()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # httptools keeps every header it parses (and a header's value until its end)
        # with no limit of its own: the budget is checked before the parser sees a byte.
        if self._in_headers and not self._budget.admits(data):
            _too_large(self.transport, self.server_state, self._budget.limit, self.client,
                       answer=self._idle())
            return
        super().data_received(data)
        if self._in_headers:
            self._budget.add(data)
        else:
            self._budget.reset()
        # Headers still to come while no request is in flight: this request's deadline
        # runs (blank lines before a request count: they hold the connection too).
        if self._idle():
            self._timer.received()
        else:
            self._timer.complete()

    def on_message_begin(self) -> None:
        self._in_headers = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_headers and not self.transport.is_closing():
            self._timer.received()  # a pipelined request arrived unfinished

    def _idle(self) -> bool:
        """No request is being served (so an answer of ours cannot interleave)."""
        return self.cycle is None or self.cycle.response_complete

    def _expired(self, begun: bool) -> None:
        if not self._idle():
            return  # a response is being written; never interleave a 408 with it
        _timed_out(self.transport, self.server_state, self._timer.timeout, self.client,
                   begun=begun)


class H11HeaderTimeout(H11Protocol):
    """uvicorn's h11 protocol with a header deadline (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = _limits_of(config)
        self._timer = HeaderTimer(self.loop, limits.timeout, self._expired)
        # h11 has a limit of its own (h11_max_incomplete_event_size, answered 400): the
        # same budget, checked first, answers 431 as under httptools.
        self._budget = HeaderBudget(limits.max_size)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # ca/writecork.py
        self._timer.expect()

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.close()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # h11 leaves IDLE for SEND_BODY once it has parsed a whole request head.
        if self.conn.their_state is h11.IDLE and not self._budget.admits(data):
            _too_large(self.transport, self.server_state, self._budget.limit, self.client,
                       answer=True)
            return
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._budget.add(data)
            self._timer.received()
        else:
            self._budget.reset()
            self._timer.complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]
                and not self.transport.is_closing()):
            self._timer.received()  # a pipelined request arrived unfinished

    def _expired(self, begun: bool) -> None:
        if self.conn.their_state is not h11.IDLE:
            return  # a request is being served; its body and response are not ours
        _timed_out(self.transport, self.server_state, self._timer.timeout, self.client,
                   begun=begun)


#: The protocol class for each of uvicorn's HTTP/1.1 implementations (``http=`` names).
PROTOCOLS: dict[str, type[asyncio.Protocol]] = {
    "httptools": HttpToolsHeaderTimeout,
    "h11": H11HeaderTimeout,
}
