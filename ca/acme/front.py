"""The CA's edge for ACME: :class:`AcmeFront`, the outermost ASGI layer of the CA's app.

A request under ``/acme`` is served here, before the web framework's own layers (its
error and exception middleware, its router matching every route of the JSON API), which
cost more CPU than a cheap ACME request itself; anything else goes on to the CA's app.
An ACME request gets what every request of the CA gets, in the same order:

1. a request id (the client's ``X-Request-Id``, or a random one) bound to the log
   context and sent back as ``X-Request-Id``;
2. its body read and bounded by the CA's :class:`~certwright.ca.httpguard.BodyGuard`
   (413, 408 or 400 with ``Connection: close``, before any of it is parsed);
3. one ``http_request`` log line (method, path, status, milliseconds);
4. its status counted for ``/metrics`` (:class:`~certwright.ca.httpcounts.StatusCounts`)
   as its answer is sent (so a client that has its answer finds it counted), ``none``
   when the client left before any answer.

The answer is sent as two ASGI messages, the headers and the whole body.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from certwright.ca.acme.app import PREFIX, AcmeApp, AcmeRequest
from certwright.ca.httpcounts import StatusCounts
from certwright.ca.httpguard import BodyGuard, BodyRefused

log = structlog.get_logger("ca.app")


def is_acme(path: str) -> bool:
    """Whether ``path`` is the ACME server's."""
    return path == PREFIX or path.startswith(PREFIX + "/")


class AcmeFront:
    """Pure ASGI: ``/acme`` requests to ``acme`` (see the module docstring), the rest to
    ``app``."""

    def __init__(self, app: ASGIApp, acme: AcmeApp, *, counts: StatusCounts,
                 config: dict[str, Any]) -> None:
        self.app, self.acme, self.counts = app, acme, counts
        self.guard = BodyGuard(app, config=config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_acme(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        rid = headers.get("x-request-id", "")[:64] or secrets.token_hex(6)
        id_header = (b"x-request-id", rid.encode("latin-1"))
        status = 0

        async def answer(code: int, raw: list[tuple[bytes, bytes]], body: bytes) -> None:
            nonlocal status
            status = code
            self.counts.add(code)  # before the client can see it, so it finds it counted
            await send({"type": "http.response.start", "status": code,
                        "headers": [*raw, id_header]})
            await send({"type": "http.response.body", "body": body})

        try:
            with structlog.contextvars.bound_contextvars(request_id=rid):
                await self._serve(scope, receive, headers, answer)
                log.info("http_request", method=scope["method"], path=scope["path"],
                         status=status, ms=round((time.monotonic() - started) * 1000, 1))
        finally:
            if not status:
                self.counts.add(0)  # nothing was answered

    async def _serve(self, scope: Scope, receive: Receive, headers: dict[str, str],
                     answer: Callable[[int, list[tuple[bytes, bytes]], bytes],
                                      Awaitable[None]]) -> None:
        """Read the body, have the ACME app answer, and ``answer``."""
        try:
            body = await self.guard.read(scope, receive)
        except BodyRefused as refused:
            await answer(refused.status, refused.headers(), refused.body)
            return
        if body is None:
            return  # the client left mid-body
        client = scope.get("client")
        reply = await self.acme.handle(AcmeRequest(
            scope["method"], scope["path"], headers, body,
            client[0] if client else "unknown"))
        await answer(reply.status, reply.headers, reply.body)


def outermost(app: Any, front: Callable[[ASGIApp], ASGIApp]) -> None:
    """Put ``front(stack)`` around the whole middleware stack of the Starlette app
    ``app``, outside even the error middleware Starlette always puts first (its
    ``build_middleware_stack`` runs once, at the first request)."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: front(build())
