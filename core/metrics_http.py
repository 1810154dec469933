"""Serving a Prometheus registry over HTTP: ``GET /metrics`` on a listener of its own.

The daemon (``daemon --metrics-listen``) and the CA (``ca serve --metrics-listen``) both
use :func:`serve_metrics`. It runs prometheus_client's own WSGI server in a daemon thread
(one request at a time, each a scrape that reads the store: no thread per scrape). The
listener is separate from the CA's public app on purpose: metrics name certificates and
hosts, so the port is meant for loopback or a monitoring network (bind it there), and the
CA's public address serves no ``/metrics``.

Hazard: prometheus_client is imported here, inside :func:`serve_metrics`, so a process
that exports nothing never imports it (``import certwright.metrics_http`` is free).
"""
from __future__ import annotations

import threading
from typing import Any


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as (host, port); ValueError saying what is
    wrong otherwise."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9464), got {text!r}")
    return host.strip("[]"), int(port)


class MetricsServer:
    """A running ``/metrics`` listener; :meth:`stop` closes it (a repeat call does nothing)."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread: threading.Thread | None = thread
        self.host, self.port = server.server_address[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)


def serve_metrics(registry: Any, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` (a ``prometheus_client.CollectorRegistry``) on ``host:port``
    (port 0: any free port, see :attr:`MetricsServer.port`). Raises OSError when it cannot
    listen there (``ca.listening.bind_failure`` words it for a person)."""
    from prometheus_client import start_http_server
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
