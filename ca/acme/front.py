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

The edge also answers the JSON API's quick routes (:mod:`ca.quickroutes`), by method and
path, with the same four; a request a quick route hands back goes on to the app with its
body (and its request id), and the app's own middleware logs and counts it.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from certwright.ca.acme.app import PREFIX, AcmeApp, AcmeRequest
from certwright.ca.httpcounts import StatusCounts
from certwright.ca.httpguard import BodyGuard, BodyRefused, replay
from certwright.ca.quickroutes import QuickRoute

log = structlog.get_logger("ca.app")


def is_acme(path: str) -> bool:
    """Whether ``path`` is the ACME server's."""
    return path == PREFIX or path.startswith(PREFIX + "/")


class AcmeFront:
    """Pure ASGI: ``/acme`` requests to ``acme`` (see the module docstring), the rest to
    ``app``."""

    def __init__(self, app: ASGIApp, acme: AcmeApp, *, counts: StatusCounts,
                 config: dict[str, Any],
                 quick: Mapping[tuple[str, str], QuickRoute] | None = None) -> None:
        self.app, self.acme, self.counts = app, acme, counts
        self.guard = BodyGuard(app, config=config)
        self.quick = dict(quick or {})  # (method, path) -> route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        quick = self.quick.get((scope["method"], scope["path"]))
        if quick is None and not is_acme(scope["path"]):
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

        handed = False
        try:
            with structlog.contextvars.bound_contextvars(request_id=rid):
                try:
                    body = await self.guard.read(scope, receive)
                except BodyRefused as refused:
                    await answer(refused.status, refused.headers(), refused.body)
                    body = None
                if body is not None:
                    if quick is not None:
                        reply = await quick(body, headers)
                        if reply is None:  # the app answers it, and logs and counts it
                            handed = True
                            await self.app(_with_id(scope, headers, rid),
                                           replay(body, receive), send)
                            return
                    else:
                        client = scope.get("client")
                        reply = await self.acme.handle(AcmeRequest(
                            scope["method"], scope["path"], headers, body,
                            client[0] if client else "unknown"))
                    await answer(reply.status, reply.headers, reply.body)
                log.info("http_request", method=scope["method"], path=scope["path"],
                         status=status, ms=round((time.monotonic() - started) * 1000, 1))
        finally:
            if not status and not handed:
                self.counts.add(0)  # nothing was answered (the client left mid-body)


def _with_id(scope: Scope, headers: Mapping[str, str], rid: str) -> Scope:
    """``scope`` with the request id the edge gave it, for the app's own request log."""
    if "x-request-id" in headers:
        return scope
    return {**scope, "headers": [*scope["headers"], (b"x-request-id", rid.encode("latin-1"))]}


def outermost(app: Any, front: Callable[[ASGIApp], ASGIApp]) -> None:
    """Put ``front(stack)`` around the whole middleware stack of the Starlette app
    ``app``, outside even the error middleware Starlette always puts first (its
    ``build_middleware_stack`` runs once, at the first request)."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: front(build())
