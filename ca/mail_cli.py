"""``certwright mail serve``: run the local SMTP receiver until SIGTERM or SIGINT.

Exit codes: 0 after SIGTERM or SIGINT; 2 when it cannot listen where it is told to (a port
in use, a privileged port, an address that is not this machine's).

Hazard: the parser of every command imports this module, so the mail server (aiosmtpd,
asyncio) and the log library are imported by the handler, not at the top.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any


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
    """Serve until SIGTERM or SIGINT; print the listening address once ready. Returns 0,
    or 2 (with the reason on stderr) when it cannot listen."""
    import structlog

    from certwright.ca.listening import bind_failure
    from certwright.ca.mailserver import MailServer
    host, port = args.listen
    server = MailServer(host, port, domains=args.domains, maildir=args.maildir,
                        max_message_size=args.max_size)
    try:
        server.start()
    except OSError as exc:
        why = bind_failure(exc, host, port)
        if why is None:
            raise
        print(f"certwright mail serve: {why}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with server:
            shown = f"[{host}]" if ":" in host else host
            print(f"mail server listening on {shown}:{server.port}, delivering to "
                  f"{args.maildir}", flush=True)
            while not stop.wait(1.0):
                pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    structlog.get_logger(__name__).info("mail_serve_exit")
    return 0
