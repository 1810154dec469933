"""Request headers bounded in time at the protocol level, before any ASGI code runs.

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
* :class:`EdgeConfig` carries the limits from the CA's settings to the protocols
  (``http_header_timeout``, read by :func:`header_limits`).

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

log = structlog.get_logger("ca.headerguard")


@dataclass(frozen=True)
class HeaderLimits:
    """What a request's header section may take: ``timeout`` seconds from its first byte
    (from the connection's start for a first request)."""

    timeout: float = 10.0


def header_limits(config: dict[str, Any]) -> HeaderLimits:
    """The :class:`HeaderLimits` in the CA's HTTP settings (``config``); SettingError as
    :func:`~certwright.ca.httpguard.http_settings`."""
    return HeaderLimits(timeout=http_settings(config)["http_header_timeout"])


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


def _timed_out(transport: asyncio.Transport, server_state: ServerState, timeout: float,
               client: tuple[str, int] | None, *, begun: bool) -> None:
    """Answer 408 (when a request had begun) and close ``transport``."""
    if transport.is_closing():
        return
    log.info("http_header_timeout", client=f"{client[0]}:{client[1]}" if client else None,
             begun=begun, timeout=timeout)
    if begun:
        body = json.dumps({"error": "header_timeout", "message": "the request headers did "
                           f"not arrive within {timeout:g} s", "timeout": timeout},
                          separators=(",", ":")).encode()
        head = [b"HTTP/1.1 408 Request Timeout"]
        head += [name + b": " + value for name, value in server_state.default_headers]
        head += [b"content-type: application/json",
                 b"content-length: " + str(len(body)).encode(), b"connection: close"]
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    transport.close()


class HttpToolsHeaderTimeout(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._timer = HeaderTimer(self.loop, _limits_of(config).timeout, self._expired)
        self._in_headers = False  # the parser is inside a request's header section

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer.expect()

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.close()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Headers still to come while no request is in flight: this request's deadline
        # runs (blank lines before a request count: they hold the connection too).
        if self.cycle is None or self.cycle.response_complete:
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

    def _expired(self, begun: bool) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is being written; never interleave a 408 with it
        _timed_out(self.transport, self.server_state, self._timer.timeout, self.client,
                   begun=begun)


class H11HeaderTimeout(H11Protocol):
    """uvicorn's h11 protocol with a header deadline (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._timer = HeaderTimer(self.loop, _limits_of(config).timeout, self._expired)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer.expect()

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.close()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # h11 leaves IDLE for SEND_BODY once it has parsed a whole request head.
        if self.conn.their_state is h11.IDLE:
            self._timer.received()
        else:
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
