"""``certwright mail serve``: run the local SMTP receiver until SIGTERM or SIGINT."""
from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

import structlog

from certwright.ca.mailserver import MailServer

log = structlog.get_logger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:25`` for IPv6) into host and port; ValueError if bad."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen wants HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} out of range")
    return host, number


def _listen_arg(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    """Add ``mail serve`` to an argparse subparsers object (handler in ``args.func``)."""
    mail = subparsers.add_parser("mail", help="the local mail server")
    sub = mail.add_subparsers(dest="mail_command", required=True)
    serve = sub.add_parser("serve", help="receive mail for some domains into a Maildir")
    serve.add_argument("--listen", type=_listen_arg, default=("127.0.0.1", 2525),
                       metavar="HOST:PORT", help="address to listen on (port 0: any free port)")
    serve.add_argument("--domain", action="append", required=True, dest="domains",
                       metavar="DOMAIN", help="accept mail for this domain (repeatable)")
    serve.add_argument("--maildir", type=Path, required=True, help="Maildir to deliver into")
    serve.add_argument("--max-size", type=int, default=10 * 1024 * 1024, metavar="BYTES",
                       help="largest message accepted (default 10 MiB)")
    serve.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; print the listening address once ready. Returns 0."""
    host, port = args.listen
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with MailServer(host, port, domains=args.domains, maildir=args.maildir,
                        max_message_size=args.max_size) as server:
            shown = f"[{host}]" if ":" in host else host
            print(f"mail server listening on {shown}:{server.port}, delivering to "
                  f"{args.maildir}", flush=True)
            while not stop.wait(1.0):
                pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    log.info("mail_serve_exit")
    return 0
