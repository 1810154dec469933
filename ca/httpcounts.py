"""Responses of the CA's app counted by status class (1xx-5xx), for its ``/metrics``.

:class:`CountStatuses` is pure ASGI middleware (as the app's request log is: Starlette's
BaseHTTPMiddleware costs more per request than a cheap request itself), the outermost one,
so every response is counted, the edge's own 413/408 and a 500 included; a request whose
connection dropped before any response is counted as ``none``. The counts live in a
:class:`StatusCounts` the app keeps (``app.state.http_status_counts``) and the metrics
collector reads (``ca.metrics``). No import of prometheus_client here: the counting is a
dict update, the same whether metrics are served or not.
"""
from __future__ import annotations

import threading

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")


class StatusCounts:
    """Responses so far by status class; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(CLASSES, 0)

    def add(self, status: int) -> None:
        key = f"{status // 100}xx" if 100 <= status < 600 else "none"
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class CountStatuses:
    """Pure ASGI middleware: each HTTP response's status into ``counts``."""

    def __init__(self, app: ASGIApp, counts: StatusCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.counts.add(status)
