"""Running the CA app on uvicorn in a background thread (tests, ``make demo``, the CLI).

``CAServer.start()`` binds the socket itself (port 0 = an ephemeral port, known before
uvicorn starts) and returns once uvicorn accepts connections; ``stop()`` asks uvicorn to
exit and joins the thread. Signal handlers are not installed (not the main thread).
"""
from __future__ import annotations

import importlib.util
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
import uvicorn

from certwright.ca.app import create_app
from certwright.ca.headerguard import PROTOCOLS, EdgeConfig, header_limits
from certwright.ca.httpguard import uvicorn_limits
from certwright.ca.setup import init_ca
from certwright.clock import Clock

log = structlog.get_logger("ca.server")

# httptools (a C HTTP parser) and uvloop (a libuv event loop) cost a request less CPU than
# uvicorn's pure-Python h11 and asyncio's loop; httptools is a dependency everywhere,
# uvloop where it has wheels. The h11 protocol stays tested (a key of headerguard.PROTOCOLS).
HTTP_IMPL = "httptools"
LOOP_IMPL = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


class CAServer:
    """The CA service on ``host:port``; usable as a context manager."""

    def __init__(self, ca_dir: Path, *, host: str = "127.0.0.1", port: int = 0,
                 public_url: str | None = None, smarthost: tuple[str, int] | None = None,
                 policy: str = "cacert", clock: Clock | None = None,
                 mail_from: str = "ca@certwright.invalid",
                 settings: dict[str, Any] | None = None,
                 weak_key_blocklist: str | None = None) -> None:
        self.ca_dir = Path(ca_dir)
        self.weak_key_blocklist = weak_key_blocklist
        self.host, self.port = host, port
        self._public_url = public_url
        self.smarthost, self.policy = smarthost, policy
        self.clock, self.mail_from = clock, mail_from
        self.settings = dict(settings or {})
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        """Base URL the server listens on (valid after start())."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def app(self) -> Any:
        """The ASGI app it serves (valid after start())."""
        if self._server is None:
            raise RuntimeError("the CA server is not started")
        return self._server.config.app

    @property
    def public_url(self) -> str:
        return (self._public_url or self.url).rstrip("/")

    def start(self, timeout: float = 15.0) -> Self:
        """Bind, create the CA if needed, serve in a thread; returns once listening."""
        init_ca(self.ca_dir, clock=self.clock)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this; without it Nagle + delayed ACK cost ~40 ms per
        # keep-alive request (uvicorn writes headers and body separately).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        app = create_app(self.ca_dir, public_url=self.public_url, smarthost=self.smarthost,
                         policy=self.policy, clock=self.clock, mail_from=self.mail_from,
                         settings=self.settings, weak_key_blocklist=self.weak_key_blocklist)
        # The edge's limits (connections, backlog, keep-alive, header size and time) are
        # CA settings; the header timeout lives in our subclass of uvicorn's protocol.
        settings = app.state.service.config
        # log_config=None: uvicorn installs no handlers of its own (its default writes to
        # stderr and stops propagation), so its loggers reach certwright's log routing.
        # proxy_headers=False: the client is the connection's peer (rate limits key on
        # it); uvicorn's default trusts X-Forwarded-For from 127.0.0.1, which any local
        # process could send, and costs a middleware layer on every request.
        config = EdgeConfig(app, header_limits=header_limits(settings), log_level="warning",
                            log_config=None, proxy_headers=False,
                            access_log=False, lifespan="off", http=PROTOCOLS[HTTP_IMPL],
                            loop=LOOP_IMPL, ws="none", **uvicorn_limits(settings))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"ca-server-{self.port}", daemon=True)
        self._thread.start()
        started = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            started.wait(0.02)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"CA server on {self.url} did not start within {timeout}s")
        log.info("ca_listening", url=self.url, public_url=self.public_url, policy=self.policy,
                 smarthost=f"{self.smarthost[0]}:{self.smarthost[1]}" if self.smarthost else None)
        return self

    def serve_forever(self) -> None:
        """Block until the server stops (the CLI's ``ca serve``)."""
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._server is not None:
            app = self._server.config.app
            state = getattr(app, "state", None)
            acme = getattr(state, "acme", None)
            if acme is not None:
                acme.close()  # its worker threads
            service = getattr(state, "service", None)
            if service is not None:
                service.close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
