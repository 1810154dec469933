"""Rate limits for the CA's unauthenticated and mail-sending routes, and a bound on
concurrent password hashes.

:class:`RateLimiter` keeps one token bucket per (limit, key) in ``ratelimit.sqlite3`` in
the CA's folder: a limit ``N/period`` lets a key spend N requests at once and gives one
back every ``period / N``. A request over its limit is refused with 429 ``rate_limited``
and the seconds until a token is back (the app sends them as ``Retry-After``). Keys are
stored as sha256, never the address or email itself. The limits (:data:`DEFAULT_RATES`)
are the CA's settings: ``rate_limits`` in its ``config.json`` or in the settings given to
the server, a mapping of name to ``"N/second|minute|hour|day"`` or ``"off"``; the value
``"off"`` for ``rate_limits`` itself turns every limit off (tests, benchmarks).

Why a table of our own rather than a library: ``limits`` (the well-kept choice) reads
``time.time()`` and runs a ``threading.Timer`` for expiry, so neither the CA's injected
clock nor a fake clock in tests would drive it, and its memory storage is lost on a
restart; a bucket is twenty lines over SQLite, durable across restarts and shared by
every process that serves the same CA folder.

:class:`HashGate` lets at most ``password_hash_concurrency`` scrypt computations run at
once (login, join, a recovery answer); the others wait on the event loop, not in a thread,
so a flood of logins cannot take every worker thread and slow every other request.

Hazards: the bucket file is written on every limited request (WAL, synchronous=NORMAL:
a power loss may forget the last few hits, never corrupt the file). The client key is
the connection's peer address: behind a reverse proxy every client shares the proxy's
address, so raise ``*.client`` limits or rely on the proxy's own.
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from certwright.ca.errors import ApiError, SettingError
from certwright.clock import Clock

T = TypeVar("T")

#: The default limits, per client address (``.client``), per account or email
#: (``.account``, ``join.address``), per mail domain (``join.domain``, ``probe.domain``:
#: how much mail one victim domain can be sent). Scaled for one person or a small team;
#: a cluster of runs from one address raises them in its settings.
DEFAULT_RATES: dict[str, str] = {
    "login.client": "30/minute",
    "login.account": "10/minute",
    "join.client": "10/hour",
    "join.address": "3/hour",
    "join.domain": "20/hour",
    "probe.account": "30/hour",
    "probe.domain": "6/hour",
    "recovery.client": "10/hour",
    "recovery.account": "5/hour",
    "recovery_answer.client": "20/hour",
    # the ACME server (ca/acme/): new accounts per address, new orders per ACME account
    "acme_account.client": "20/hour",
    "acme_order.account": "300/hour",
}
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate:
    """``count`` requests per ``seconds``."""

    count: int
    seconds: float


def parse_rate(text: str, *, name: str = "rate") -> Rate | None:
    """``"N/unit"`` as a :class:`Rate`, ``"off"`` as None; SettingError (a ValueError)
    saying what is wrong."""
    if text.strip().lower() == "off":
        return None
    count, sep, unit = text.strip().partition("/")
    unit = unit.strip().lower().removesuffix("s")
    if not sep or not count.strip().isdigit() or int(count) < 1 or unit not in _UNITS:
        raise SettingError(f"CA setting rate limit {name}: {text!r} is not N/second, "
                           "N/minute, N/hour, N/day (N >= 1) or off")
    return Rate(int(count), float(_UNITS[unit]))


def rates_from(setting: Any) -> dict[str, Rate | None]:
    """The limits a CA's ``rate_limits`` setting asks for, over :data:`DEFAULT_RATES`."""
    if isinstance(setting, str) and setting.strip().lower() == "off":
        return dict.fromkeys(DEFAULT_RATES)
    if setting is not None and not isinstance(setting, dict):
        raise SettingError(f"CA setting rate_limits: {setting!r} is neither 'off' nor a "
                           "mapping of limit names to rates")
    given = dict(setting or {})
    unknown = sorted(set(given) - set(DEFAULT_RATES))
    if unknown:
        raise SettingError(f"CA setting rate_limits: unknown limit(s) {unknown}; known: "
                           f"{sorted(DEFAULT_RATES)}")
    return {name: parse_rate(str(given.get(name, default)), name=name)
            for name, default in DEFAULT_RATES.items()}


def scaled(factor: int) -> dict[str, str]:
    """:data:`DEFAULT_RATES` with every count multiplied by ``factor`` (the embedded CA)."""
    out = {}
    for name, text in DEFAULT_RATES.items():
        count, _, unit = text.partition("/")
        out[name] = f"{int(count) * factor}/{unit}"
    return out


class RateLimiter:
    """Token buckets in a SQLite file (see the module docstring)."""

    def __init__(self, path: Path, *, clock: Clock, setting: Any = None) -> None:
        self.rates = rates_from(setting)
        self.clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._path = path
        self._hits = 0
        if any(self.rates.values()):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(str(path), check_same_thread=False,
                                       isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS buckets (name TEXT NOT NULL, "
                             "key TEXT NOT NULL, tokens REAL NOT NULL, at REAL NOT NULL, "
                             "PRIMARY KEY (name, key))")

    def hit(self, name: str, key: str) -> None:
        """Spend one token of ``name`` for ``key``; ApiError 429 when none is left."""
        rate = self.rates[name]
        if rate is None or self._db is None:
            return
        digest = hashlib.sha256(key.strip().lower().encode()).hexdigest()
        now = self.clock.now().timestamp()
        per_token = rate.seconds / rate.count
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT tokens, at FROM buckets WHERE name=? AND key=?",
                                 (name, digest)).fetchone()
                tokens = float(rate.count) if row is None else \
                    min(float(rate.count), row[0] + max(now - row[1], 0.0) / per_token)
                allowed = tokens >= 1.0
                if allowed:
                    tokens -= 1.0
                db.execute("INSERT OR REPLACE INTO buckets VALUES (?,?,?,?)",
                           (name, digest, tokens, now))
                self._hits += 1
                if self._hits % 1000 == 0:  # forget buckets idle for a day (refilled)
                    db.execute("DELETE FROM buckets WHERE at<?", (now - 86400,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        if not allowed:
            wait = max(math.ceil((1.0 - tokens) * per_token), 1)
            what = name.split(".", maxsplit=1)[0].replace("_", " ")
            raise ApiError(429, "rate_limited", f"too many {what} requests "
                           f"(limit {name}: {rate.count} per {int(rate.seconds)} s); "
                           f"try again in {wait} s", retry_after=wait, limit=name)

    def close(self) -> None:
        """Close the file; safe to call twice."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class HashGate:
    """At most ``concurrency`` password hashes at once; at most ``queue`` waiting (more:
    503 ``busy`` with Retry-After). ``peak`` is the most that ever ran at once."""

    def __init__(self, concurrency: int, queue: int) -> None:
        if concurrency < 1 or queue < 0:
            raise SettingError("CA settings password_hash_concurrency must be >= 1 and "
                               "password_hash_queue >= 0")
        self.concurrency, self.queue = concurrency, queue
        self.active = self.peak = self.waiting = 0
        self._sem: asyncio.Semaphore | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread pool once a slot is free."""
        # imported here: ca.setup reads this module's defaults, and the CLI imports that
        from starlette.concurrency import run_in_threadpool

        if self._sem is None:  # made on the serving loop, at its first use
            self._sem = asyncio.Semaphore(self.concurrency)
        if self._sem.locked() and self.waiting >= self.queue:
            raise ApiError(503, "busy", "too many passphrase checks at once; try again",
                           retry_after=1)
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await run_in_threadpool(fn, *args)
        finally:
            self.active -= 1
            self._sem.release()


def default_hash_concurrency() -> int:
    """One scrypt per core but one, so one core stays for every other request."""
    return max(1, (os.cpu_count() or 2) - 1)
