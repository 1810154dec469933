"""The network under the ACME steps: a ``ClientNetwork`` that survives badNonce and 429/503.

Built on certbot's ``acme`` library (``ClientNetwork`` signs and sends JWS requests over one
``requests.Session``, so a network object keeps its connection alive) with two additions
the library lacks: ``badNonce`` is retried up to :data:`NONCE_RETRIES` times (the library
retries once, which fails a quarter of requests when Pebble rejects half of all nonces),
and ``429``/``503`` answers (with or without a problem document) are retried in place after
their ``Retry-After`` when it is at most :data:`MAX_RETRY_AFTER` seconds,
:data:`SERVER_RETRIES` times. A longer wait or one retry too many raises
:class:`RetryLater`.

Hazards: the last response is kept per thread (``last_status``/``last_date`` answer for
the calling thread's last request); nonces are shared by threads under a lock.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import jws, messages
from josepy.errors import DeserializationError

NONCE_RETRIES = 10
SERVER_RETRIES = 5
MAX_RETRY_AFTER = 60.0

Sleep = Callable[[float], None]


def problem_text(err: messages.Error) -> str:
    """A CA problem document as one line: type, detail, identifier, subproblems."""
    parts = [f"type={err.typ}"]
    if err.detail:
        parts.append(f"detail={err.detail!r}")
    if err.identifier is not None:
        parts.append(f"identifier={err.identifier.value}")
    parts.extend(f"[{problem_text(sub)}]" for sub in err.subproblems or ())
    return " ".join(parts)


def retry_after_seconds(response: requests.Response, default: float) -> float:
    """Seconds the ``Retry-After`` header asks for (delta-seconds or an HTTP-date), at
    least 0; ``default`` when it is missing or unreadable."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return default
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class RetryLater(acme_errors.Error):
    """The CA answered 429/503 and wants us back in ``seconds`` (more than we wait in place,
    or after :data:`SERVER_RETRIES` tries in place); ``cause`` is its answer."""

    def __init__(self, seconds: float, cause: Exception, status: int) -> None:
        self.seconds = seconds
        self.cause = cause
        self.status = status
        what = (f"a problem: {problem_text(cause)}" if isinstance(cause, messages.Error)
                else f"HTTP {status} without a problem document")
        super().__init__(f"the CA answered {status} with {what}, and asks to retry after "
                         f"{seconds:g}s")


class RetryingNetwork(acme_client.ClientNetwork):
    """``ClientNetwork`` that survives repeated badNonce and honours 429/503 Retry-After."""

    def __init__(self, *args: Any, sleep: Sleep = time.sleep, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sleep = sleep
        self._local = threading.local()
        self._nonce_lock = threading.Lock()
        self.bad_nonces = 0  # how many badNonce answers were retried (tests observe this)

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        self._local.last = response
        return response

    def _add_nonce(self, response: requests.Response) -> None:
        with self._nonce_lock:
            super()._add_nonce(response)

    def _get_nonce(self, url: str, new_nonce_url: str) -> bytes:  # type: ignore[override]
        # The library's version is not thread-safe (check, fetch, pop); this one is.
        with self._nonce_lock:
            if self._nonces:
                # the library annotates _nonces as set[str], but its _add_nonce stores the
                # decoded bytes, which is what signing takes
                return self._nonces.pop()  # type: ignore[return-value]
        response = (self.head(url) if new_nonce_url is None else
                    self._check_response(self.head(new_nonce_url), content_type=None))
        fresh = response.headers.get(self.REPLAY_NONCE_HEADER)
        if fresh is None:
            raise acme_errors.MissingNonce(response)
        try:
            return jws.Header._fields["nonce"].decode(fresh)  # type: ignore[no-any-return]
        except DeserializationError as exc:
            raise acme_errors.BadNonce(fresh, exc) from exc

    def last_date(self) -> str | None:
        """The ``Date`` header of this thread's last response (None before any)."""
        last: requests.Response | None = getattr(self._local, "last", None)
        return last.headers.get("Date") if last is not None else None

    def last_url(self) -> str | None:
        """The URL of this thread's last response (None before any)."""
        last: requests.Response | None = getattr(self._local, "last", None)
        return last.url if last is not None else None

    def last_status(self) -> int | None:
        """The HTTP status of this thread's last response (None before any)."""
        last: requests.Response | None = getattr(self._local, "last", None)
        return last.status_code if last is not None else None

    def _retry_delay(self, err: Exception, nonce_tries: int, server_tries: int) -> float | None:
        """Seconds to wait in place before retrying after ``err``, or None to give up.

        Raises :class:`RetryLater` when the CA asks for a longer wait than we spend in
        place, or keeps asking after :data:`SERVER_RETRIES` tries."""
        if isinstance(err, messages.Error) and err.code == "badNonce":
            return 0.0 if nonce_tries < NONCE_RETRIES else None
        last: requests.Response | None = getattr(self._local, "last", None)
        if last is None or last.status_code not in (429, 503):
            return None
        wait = retry_after_seconds(last, 1.0)
        if wait > MAX_RETRY_AFTER or server_tries >= SERVER_RETRIES:
            raise RetryLater(wait, err, last.status_code) from err
        return wait

    def _with_retries(self, send: Callable[[], requests.Response]) -> requests.Response:
        nonce_tries = server_tries = 0
        while True:
            self._local.last = None
            try:
                return send()
            except (messages.Error, acme_errors.ClientError) as err:
                delay = self._retry_delay(err, nonce_tries, server_tries)
                if delay is None:
                    raise
                if isinstance(err, messages.Error) and err.code == "badNonce":
                    nonce_tries += 1
                    self.bad_nonces += 1
                else:
                    server_tries += 1
                    self._sleep(delay)

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        return self._with_retries(lambda: self._post_once(*args, **dict(kwargs)))

    def get(self, url: str, content_type: str = acme_client.ClientNetwork.JSON_CONTENT_TYPE,
            **kwargs: Any) -> requests.Response:
        return self._with_retries(lambda: super(RetryingNetwork, self).get(
            url, content_type=content_type, **kwargs))
