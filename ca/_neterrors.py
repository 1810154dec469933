"""Why the CA could not be reached, in a few words, for :class:`certwright.ca.client.CAClient`'s
errors (a person reads them; the exception itself goes to the log)."""
from __future__ import annotations

import http.client
import socket
import ssl

import httpx


def network_reason(exc: BaseException) -> str:
    """What went wrong reaching the CA, in a few words (the exception goes to the log)."""
    if isinstance(exc, socket.gaierror):
        return "no such host (the name does not resolve)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected):
        return "the connection was cut"
    return f"{type(exc).__name__}: {exc}"
