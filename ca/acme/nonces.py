"""Replay nonces of the ACME server (RFC 8555 section 6.5): :class:`NonceBook`.

A nonce is an HMAC'd counter: ``base64url(counter (8 bytes) || HMAC-SHA256(key,
counter)[:16])``. The book keeps the counters issued and not yet used; :meth:`consume`
accepts a nonce once, when its MAC verifies and its counter is still outstanding, and
forgets it. The MAC lets a forged or mangled nonce be refused without a look-up, the
counter keeps the outstanding set small and ordered (the oldest are dropped first when it
is full).

Choice (documented in docs/ca-limits.md): nonces live in memory, not in the CA's store.
Every ACME response carries a fresh nonce, so a store row per nonce would be two commits
(two fsyncs) per request for nothing a client can use after a restart. The key is drawn
at each start, so a restart invalidates every outstanding nonce: clients answer that
``badNonce`` by retrying with the fresh nonce it carries, as RFC 8555 requires of them.
Single use holds within one process; one CA folder is served by one process.

Thread-safe: the HTTP threads share one book.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class NonceBook:
    """Issues and consumes single-use nonces (see the module docstring)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._key = secrets.token_bytes(32)
        self._capacity = capacity
        self._lock = threading.Lock()
        self._next = secrets.randbelow(1 << 32)
        self._outstanding: dict[int, None] = {}  # insertion-ordered: oldest first

    def _mac(self, counter: bytes) -> bytes:
        return hmac.new(self._key, counter, hashlib.sha256).digest()[:16]

    def issue(self) -> str:
        """A fresh nonce."""
        with self._lock:
            counter = self._next
            self._next += 1
            self._outstanding[counter] = None
            while len(self._outstanding) > self._capacity:
                del self._outstanding[next(iter(self._outstanding))]
        raw = counter.to_bytes(8, "big")
        return _b64(raw + self._mac(raw))

    def consume(self, nonce: str) -> bool:
        """True once for a nonce this book issued; False for any other, or a repeat."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return False
        if len(raw) != 24 or not hmac.compare_digest(raw[8:], self._mac(raw[:8])):
            return False
        with self._lock:
            return self._outstanding.pop(int.from_bytes(raw[:8], "big"), False) is None
