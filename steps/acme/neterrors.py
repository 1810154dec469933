"""Network failures reaching an ACME CA, in words.

``requests`` and urllib3 describe a refused connection as ``HTTPSConnectionPool(host=...,
port=9): Max retries exceeded with url: /dir (Caused by NewConnectionError(...))``: true,
but not a sentence for a person. :func:`reason` reduces a ``RequestException`` to what
happened (connection refused, no such host, no answer in time, a TLS failure, the
connection cut) and :func:`where` to the host and port that was tried; the library's text
goes to the log, where it helps whoever debugs the network.
"""
from __future__ import annotations

import errno
import socket
import ssl
from urllib.parse import urlsplit

import requests
import structlog

__all__ = ["describe", "reason", "where"]

log = structlog.get_logger("certwright.acme")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes and contexts, and urllib3's ``reason``, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__, getattr(item, "reason", None)]
        todo += [a for a in getattr(item, "args", ()) if isinstance(a, BaseException)]
    return seen


def reason(exc: requests.RequestException) -> str:
    """What happened, in a few words."""
    chain = _chain(exc)
    for item in chain:
        if isinstance(item, socket.gaierror):
            return "no such host (the name does not resolve)"
        if isinstance(item, ConnectionRefusedError) or getattr(item, "errno", None) == \
                errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(item, ssl.SSLCertVerificationError):
            return f"its TLS certificate is not trusted ({item.verify_message})"
    text = " ".join(str(item) for item in chain)
    if "Name or service not known" in text or "Temporary failure in name resolution" in text:
        return "no such host (the name does not resolve)"
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, requests.Timeout) or any(isinstance(i, TimeoutError) for i in chain):
        return "no answer in time"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed"
    if any(isinstance(i, ConnectionResetError) for i in chain) or "reset by peer" in text:
        return "the connection was reset"
    if isinstance(exc, requests.ConnectionError):
        return "the connection failed"
    return type(exc).__name__


def where(exc: requests.RequestException) -> str:
    """The host and port tried (``127.0.0.1:9``), or the URL when none is known."""
    url = getattr(exc.request, "url", None) if exc.request is not None else None
    if not url:
        return "the CA"
    parts = urlsplit(str(url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def describe(exc: requests.RequestException, doing: str) -> str:
    """``"<doing>: cannot reach HOST:PORT: <reason>"``; the library's words are logged."""
    log.info("acme_network_error", doing=doing, error=str(exc))
    return f"{doing}: cannot reach {where(exc)}: {reason(exc)}"
