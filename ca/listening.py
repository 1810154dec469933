"""What to tell a person whose server could not listen where it was asked to.

:func:`bind_failure` turns the ``OSError`` of binding a listening socket (port in use, a
privileged port, an address not of this machine, a host name that does not resolve) into
one sentence naming the address and what to do; None for any other error, which is then
not an expected failure of listening. Used by ``ca serve`` and ``mail serve``.
"""
from __future__ import annotations

import errno
import socket


def bind_failure(exc: BaseException, host: str, port: int) -> str | None:
    """The sentence for a failure to listen on ``host:port``, or None if ``exc`` is not
    one. The library's own text follows a colon, so nothing it said is lost."""
    if not isinstance(exc, OSError):
        return None
    detail = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        return (f"cannot listen on {host}:{port}: the host name {host!r} does not resolve "
                f"({detail}); give an address of this machine with --listen HOST:PORT")
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is in use: {detail}; stop what listens there "
                f"(`ss -ltnp 'sport = :{port}'` names it) or choose another port with "
                f"--listen HOST:PORT")
    if exc.errno == errno.EACCES:
        return (f"port {port} on {host} needs privileges this user lacks: {detail}; choose "
                f"a port from 1024 up with --listen HOST:PORT, or grant the process "
                f"CAP_NET_BIND_SERVICE")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {host}:{port}: {host} is no address of this machine "
                f"({detail}); choose one of its addresses with --listen HOST:PORT")
    return None
