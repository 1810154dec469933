"""The mail server on your PC: a small SMTP receiver (aiosmtpd) that delivers into a Maildir.

It accepts mail only for its own domains (never an open relay: other recipients get
``550 5.7.1 relay not permitted``), refuses messages over ``max_message_size`` (``552``,
also advertised in EHLO's ``SIZE``), and delivers each accepted message once, atomically,
into ``new/`` of the Maildir (see :meth:`engine.maildir.Maildir.deliver`) with
``Delivered-To:`` (one per recipient), ``Received:`` and ``Authentication-Results:``
headers prepended. Incoming ``Authentication-Results`` headers that claim our own
authserv-id are removed (RFC 8601 section 5), so only ours can carry it.

EHLO advertises PIPELINING (RFC 2920): commands are read and answered strictly in order,
so a client may send MAIL, RCPT and DATA in one write.

Hazards: the HELO name and addresses come from the client and are sanitized before they go
into a header; delivery does fsyncs, so it runs in a small pool of delivery threads of its
own (``DELIVERY_THREADS``), not on the event loop, and the 250 is sent only once the file
and its entry in ``new/`` are synced. A crash during delivery leaves the message
undelivered and the client without a 250, so the sender retries.
"""
from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import socket
import threading
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from certwright.mail.intake import AUTHSERV_ID
from certwright.mail.maildir import Maildir

log = structlog.get_logger(__name__)

_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@([A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*)")
_SAFE_TOKEN = re.compile(r"[^A-Za-z0-9.:\[\]_-]")
MAX_RECIPIENTS = 100
DELIVERY_THREADS = 4  # deliveries (each a file fsync and a share of a folder fsync) at once
#: Bytes asked of one recv() on a client connection. asyncio's default (256 KiB) makes each
#: read allocate and free a block that large, about 15 us for a 60-byte SMTP command; a
#: bigger message just takes more reads.
RECV_SIZE = 64 * 1024 - 1
_OUR_AUTH_RESULTS = re.compile(rb"(?im)^authentication-results[ \t]*:")
_ATOMS = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_PLAIN_PATH = re.compile(rf"<({_ATOMS}@{_ATOMS})>(.*)", re.DOTALL)


def _strip_our_auth_results(content: bytes, authserv_id: str) -> bytes:
    """Drop header fields ``Authentication-Results: <authserv_id>; ...`` from ``content``."""
    head, sep, body = content.partition(b"\n\n")
    if not sep:
        head, body = content, b""
    if not _OUR_AUTH_RESULTS.search(head):
        return content  # the usual case: no such header at all, nothing to split
    kept: list[bytes] = []
    drop = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not drop:
                kept.append(line)
            continue
        name, _, value = line.partition(b":")
        drop = (name.strip().lower() == b"authentication-results"
                and value.split(b";")[0].strip().lower() == authserv_id.lower().encode())
        if not drop:
            kept.append(line)
    return b"\n".join(kept) + (sep + body if sep else b"")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the client went away meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _DeliveryThreads:
    """A few threads of its own that run the blocking deliveries for the event loop.

    Each result goes back with one ``call_soon_threadsafe`` (``run_in_executor`` wraps a
    concurrent future in an asyncio one and chains their states, which costs the event
    loop more than the rest of handling DATA). ``shutdown()`` lets the deliveries under
    way finish.
    """

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(count)]
        for thread in self._threads:
            thread.start()

    def run(self, loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> asyncio.Future[Any]:
        future = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, future, fn, args = job
            try:
                outcome: tuple[Any, BaseException | None] = (fn(*args), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                outcome = (None, exc)
            # RuntimeError: the loop is closed, the server stopped meanwhile
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, *outcome)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()


class _SMTP(SMTP):
    """aiosmtpd's protocol with a smaller read size (see RECV_SIZE) and a quick path for
    the usual MAIL/RCPT argument."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(getattr(transport, "max_size", None), int):
            transport.max_size = RECV_SIZE  # type: ignore[attr-defined]
        super().connection_made(transport)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's parse of ``<local@domain> [params]``, ~50x quicker for the plain
        dot-atom form (aiosmtpd builds a typing.Protocol class and runs the RFC 5322
        header parser per call); anything else goes to aiosmtpd's own parser, and a test
        checks both agree."""
        match = _PLAIN_PATH.fullmatch(arg) if arg else None
        if match is None:
            return super()._getaddr(arg)
        address, rest = match.groups()
        rest = rest.lstrip(" \t")
        if rest[:1] == "(":  # a comment: the full parser knows what to make of it
            return super()._getaddr(arg)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest


class _Handler:
    """aiosmtpd handler: EHLO extensions, recipient policy and delivery."""

    def __init__(self, server: MailServer, delivery: _DeliveryThreads) -> None:
        self.server = server
        self.delivery = delivery

    async def handle_EHLO(self, smtp: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", *responses[-1:]]

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        match = _ADDRESS.fullmatch(address)
        if not match:
            log.info("mail_rcpt_refused", rcpt=address[:200], reason="bad address")
            return "553 5.1.3 bad recipient address syntax"
        if not await self.server.accepts(match.group(1).lower()):
            log.info("mail_rcpt_refused", rcpt=address, reason="relay not permitted")
            return "550 5.7.1 relay not permitted"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):  # only with decode_data=True, which we never set
            raw = raw.encode("utf-8", "surrogateescape")
        if len(raw) > self.server.max_message_size:
            return "552 5.3.4 message too big"
        loop = asyncio.get_running_loop()
        try:
            name = await self.delivery.run(loop, self.server.deliver, raw, envelope, session)
        except OSError as exc:
            log.error("mail_delivery_failed", error=str(exc))
            return "451 4.3.0 local delivery failed, try again later"
        return f"250 2.0.0 OK delivered as {name}"


class MailServer:
    """An SMTP receiver on ``host:port`` (port 0: an ephemeral port, see :attr:`port`).

    ``start()`` returns once the socket listens (raises OSError if it cannot bind);
    ``stop()`` closes it and waits for the server thread; both are safe to repeat.
    Usable as a context manager. Runs its own event loop in a daemon thread.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, domains: Iterable[str],
                 maildir: Path, max_message_size: int = 10 * 1024 * 1024,
                 authserv_id: str = AUTHSERV_ID,
                 also_accept: Callable[[str], bool] | None = None) -> None:
        self.host = host
        self.port = port
        self.domains = frozenset(d.strip().lower().rstrip(".") for d in domains)
        if not self.domains:
            raise ValueError("a mail server needs at least one domain")
        # asked (in a worker thread: it may block) about a domain not in `domains`
        self.also_accept = also_accept
        self.maildir = Maildir(maildir)
        self.max_message_size = max_message_size
        self.authserv_id = authserv_id
        self.hostname = socket.getfqdn() or "localhost"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._delivery: _DeliveryThreads | None = None

    async def accepts(self, domain: str) -> bool:
        """Whether mail for ``domain`` is taken: one of :attr:`domains`, or one
        :attr:`also_accept` (when set) says yes to; never an open relay."""
        if domain in self.domains:
            return True
        if self.also_accept is None:
            return False
        loop = asyncio.get_running_loop()
        return bool(await loop.run_in_executor(None, self.also_accept, domain))

    def _factory(self) -> SMTP:
        if self._delivery is None:  # start() sets it before the server listens
            raise RuntimeError("mail server: a connection before start() set up delivery")
        proto = _SMTP(_Handler(self, self._delivery), data_size_limit=self.max_message_size,
                     hostname=self.hostname, ident="certwright mail", loop=self._loop)
        self._protocols.add(proto)
        return proto

    def start(self) -> Self:
        """Listen and serve in a background thread; returns once listening."""
        if self._thread is not None:
            return self
        self.maildir.ensure()
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = self._loop = asyncio.new_event_loop()
        delivery = self._delivery = _DeliveryThreads(DELIVERY_THREADS,
                                                     "certwright-mail-delivery")

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(self._factory, self.host, self.port))
            except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                delivery.shutdown()
                return
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            # Close the clients' connections too: a client keeping a session open must see
            # the server go at once, not block until its own timeout.
            for proto in list(self._protocols):
                transport = getattr(proto, "transport", None) or getattr(proto, "_transport", None)
                if transport is not None:
                    transport.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(self._server.wait_closed())
            delivery.shutdown()  # a delivery under way finishes first
            loop.close()

        self._thread = threading.Thread(target=serve, name="certwright-mail", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        log.info("mail_server_listening", host=self.host, port=self.port,
                 domains=sorted(self.domains), maildir=str(self.maildir.path))
        return self

    def stop(self) -> None:
        """Stop listening and wait for the server thread; a repeat call does nothing."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        log.info("mail_server_stopped", port=self.port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def deliver(self, raw: bytes, envelope: Envelope, session: Session) -> str:
        """Prepend our trace headers to ``raw`` and deliver it into the Maildir (blocking)."""
        content = _strip_our_auth_results(raw.replace(b"\r\n", b"\n"), self.authserv_id)
        helo = _SAFE_TOKEN.sub("", str(session.host_name or "unknown"))[:255] or "unknown"
        peer: Any = session.peer
        peer_ip = _SAFE_TOKEN.sub("", str(peer[0] if isinstance(peer, tuple) else peer))
        now = format_datetime(datetime.now(UTC))
        proto = "ESMTP" if session.extended_smtp else "SMTP"
        lines = [f"Delivered-To: {rcpt}" for rcpt in envelope.rcpt_tos]
        lines.append(f"Received: from {helo} ([{peer_ip}])\n\tby {self.hostname} "
                     f"(certwright) with {proto};\n\t{now}")
        lines.append(f"Authentication-Results: {self.authserv_id}; none")
        name = self.maildir.deliver(("\n".join(lines) + "\n").encode() + content)
        log.info("mail_delivered", file=name, rcpts=list(envelope.rcpt_tos),
                 size=len(content))
        return name
