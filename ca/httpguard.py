"""The CA's HTTP edge: request bodies bounded in size and in time, before anything else.

:class:`BodyGuard` is pure ASGI middleware that reads each request's body itself, before
routing, authentication or JSON parsing, and hands the app the body it read:

* a ``Content-Length`` over the route's limit is answered 413 ``body_too_large`` at once,
  without reading a byte of the body; a chunked body is counted as it arrives and cut
  with 413 as soon as it passes the limit. So a body never costs more memory than its
  route's limit (:data:`LARGE_ROUTES` take ``http_max_csr_body``, every other route
  ``http_max_body``).
* the whole body must arrive within ``http_body_timeout`` seconds of the headers, or the
  answer is 408 ``body_timeout``: a client stalled mid-body holds its connection that
  long at most.

Both refusals carry ``Connection: close``, so uvicorn closes the connection instead of
reading (and discarding) the rest of the body. The other limits of the edge are
uvicorn's, set by :func:`uvicorn_limits`: ``limit_concurrency`` (503 once that many
connections are open), ``backlog``, ``timeout_keep_alive`` for idle connections, and
``h11_max_incomplete_event_size`` for header size under the pure-Python parser.

uvicorn has no timeout for a request's *headers*, and its httptools parser no limit on
their size; :mod:`certwright.ca.headerguard` adds both (``http_header_timeout``,
``http_max_header``) in the protocol, before this guard.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certwright.ca.errors import SettingError

#: Routes whose bodies may be larger (a CSR in JSON): (method, path).
LARGE_ROUTES = frozenset({("POST", "/api/v1/certificates")})

#: The defaults of the HTTP settings (keys of the CA's config or the server's settings).
HTTP_DEFAULTS: dict[str, Any] = {
    "http_max_body": 16 * 1024,         # login, join, recovery, probes, forms
    "http_max_csr_body": 256 * 1024,    # POST /api/v1/certificates (CSR up to 64 KiB)
    "http_body_timeout": 10.0,          # seconds for a whole body after the headers
    "http_header_timeout": 10.0,        # seconds for a request's headers (ca/headerguard.py)
    "http_max_connections": 1000,       # open connections before uvicorn answers 503
    "http_backlog": 1024,               # connections the kernel queues for accept()
    "http_keep_alive": 5,               # seconds an idle keep-alive connection stays
    "http_max_header": 16 * 1024,       # bytes of headers (ca/headerguard.py, and h11's)
}


def http_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The HTTP settings in ``config`` over :data:`HTTP_DEFAULTS`; SettingError naming a
    setting that is not a positive number."""
    out = {}
    for key, default in HTTP_DEFAULTS.items():
        value = config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise SettingError(f"CA setting {key}: {value!r} is not a positive number")
        out[key] = type(default)(value)
    return out


def uvicorn_limits(config: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` from the CA's HTTP settings."""
    http = http_settings(config)
    return {"limit_concurrency": http["http_max_connections"],
            "backlog": http["http_backlog"],
            "timeout_keep_alive": http["http_keep_alive"],
            "h11_max_incomplete_event_size": http["http_max_header"]}


class BodyGuard:
    """Reads and bounds each request body (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, config: dict[str, Any]) -> None:
        self.app = app
        http = http_settings(config)
        self.max_body: int = http["http_max_body"]
        self.max_large: int = http["http_max_csr_body"]
        self.timeout = http["http_body_timeout"]

    def limit(self, scope: Scope) -> int:
        """The body limit of the request ``scope``."""
        return self.max_large if (scope["method"], scope["path"]) in LARGE_ROUTES \
            else self.max_body

    async def read(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request's whole body, read within the limits; None when the client left
        before it was all there; raises :class:`BodyRefused`."""
        limit = self.limit(scope)
        length = _content_length(scope)
        if length == -1:
            raise BodyRefused(400, "bad_request", "Content-Length is not a number")
        if length is not None and length > limit:
            raise BodyRefused(413, "body_too_large", f"the body ({length} bytes) is over "
                              f"the {limit} bytes {scope['method']} {scope['path']} takes",
                              limit=limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None  # the client left; nothing to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise BodyRefused(413, "body_too_large", "the body is over the "
                                          f"{limit} bytes {scope['method']} "
                                          f"{scope['path']} takes", limit=limit)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise BodyRefused(408, "body_timeout", "the request body did not arrive "
                              f"within {self.timeout:g} s", timeout=self.timeout) from None
        return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self.read(scope, receive)
        except BodyRefused as refused:
            await refused.send(send)
            return
        if body is None:
            return
        await self.app(scope, replay(body, receive), send)


class BodyRefused(Exception):
    """A body refused at the edge: ``status`` (400, 408, 413) and a JSON answer that says
    why, sent with ``Connection: close``."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = json.dumps({"error": code, "message": message, **details},
                               separators=(",", ":")).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", b"application/json"),
                (b"content-length", str(len(self.body)).encode()),
                (b"connection", b"close")]

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status,
                    "headers": self.headers()})
        await send({"type": "http.response.body", "body": self.body})


def _content_length(scope: Scope) -> int | None:
    """The declared length; None when absent, -1 when malformed."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else -1
    return None


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` giving ``body`` (already read, whole) first, then what the client
    sends after it (only the disconnect is left)."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return again
