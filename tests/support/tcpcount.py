"""A TCP proxy on loopback that counts the connections it forwards (tests of keep-alive).

:class:`CountingProxy` listens on 127.0.0.1, forwards every connection byte for byte to a
target (TLS passes through untouched, so the client sees the target's certificate) and
counts the connections accepted. Each connection is served by two small threads; ``stop()``
closes the listener and every open connection.

Hazard: a server that builds URLs from the ``Host`` header (Pebble does) hands the client
URLs of the proxy, so the whole conversation stays on it; one that names its own address
sends the client past the proxy, and the count then says nothing.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self


class CountingProxy:
    """Forward 127.0.0.1:``port`` to ``target`` (host, port); ``connections`` counts."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tcp-proxy")

    def start(self) -> Self:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.connections += 1
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Close the listener and every forwarded connection. Safe to call twice."""
        self._listener.close()
        with self._lock:
            for sock in self._open:
                sock.close()
            self._open.clear()
