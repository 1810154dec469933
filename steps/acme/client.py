"""ACME plumbing shared by the ``acme.*`` steps: the HTTP client, accounts, persisted orders.

Built on certbot's ``acme`` library (``ClientNetwork`` signs and sends JWS requests) with
two additions the library lacks: ``badNonce`` is retried up to :data:`NONCE_RETRIES` times
(the library retries once, which fails a quarter of requests when Pebble rejects half of
all nonces), and ``429``/``503`` answers (with or without a problem document) are retried
in place after their ``Retry-After`` when it is at most :data:`MAX_RETRY_AFTER` seconds,
:data:`SERVER_RETRIES` times. A longer wait (a rate limit of an hour) or one retry too many
raises :class:`RetryLater`, which :func:`as_step_error` turns into a StepError whose
``retry_after`` the engine honours: the run backs off durably instead of holding a worker.

Hazards: a session (:class:`AcmeSession`) is cached per (directory, account, CA bundle) and
shared by threads, so that one process keeps its TCP/TLS connections and directory; the
last response is kept per thread. Account keys are written 0600 before the CA sees them, so
a crash after the CA created an account finds the key and recovers the same account.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import fcntl
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import jws, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.errors import DeserializationError
from josepy.jwa import ES256, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from certwright.atomic import write_atomic
from certwright.errors import PermanentError, StepError

NONCE_RETRIES = 10
SERVER_RETRIES = 5
MAX_RETRY_AFTER = 60.0
USER_AGENT = "certwright-acme"

Sleep = Callable[[float], None]

#: JSON Schema of the parameters every acme.* step takes.
COMMON_PARAMS: dict[str, Any] = {
    "directory": {"type": "string", "minLength": 1,
                  "description": "ACME directory URL; https unless allow_insecure"},
    "contact": {"type": "string", "description": "account contact email"},
    "ca_bundle": {"type": "string", "description": "PEM file of roots for the CA's TLS"},
    "allow_insecure": {"type": "boolean", "default": False,
                       "description": "allow an http:// directory (test servers only)"},
}


def step_schema(extra: Mapping[str, Any],
                required: tuple[str, ...] = ("directory",)) -> dict[str, Any]:
    """The JSON Schema of an acme.* step's parameters: COMMON_PARAMS and ``extra``, no others."""
    return {"type": "object", "additionalProperties": False, "required": list(required),
            "properties": {**COMMON_PARAMS, **extra}}


def check_params(params: Mapping[str, Any], required: tuple[str, ...]) -> None:
    """Raise PermanentError naming each required parameter that is missing or empty."""
    missing = [k for k in required if params.get(k) in (None, "", [])]
    if missing:
        raise PermanentError(f"missing parameter(s): {', '.join(missing)}")


def check_directory(params: Mapping[str, Any]) -> str:
    """The directory URL; PermanentError unless it is https (or http with allow_insecure)."""
    url = str(params.get("directory") or "")
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and params.get("allow_insecure") is True):
        return url
    if scheme == "http":
        raise PermanentError(f"refusing ACME directory {url}: it is http://, not https://; "
                             "set allow_insecure: true only for a test server")
    raise PermanentError(f"ACME directory {url!r} is not an https:// URL")


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


@dataclass
class Account:
    """An ACME account as stored on disk: its folder, key and registration URL (if any)."""

    folder: Path
    key: JWK
    alg: JWASignature
    url: str | None


def account_folder(state_dir: Path, directory: str, contact: str | None) -> Path:
    """``state_dir/acme/accounts/<sha256(directory+contact)[:16]>``."""
    digest = hashlib.sha256((directory + (contact or "")).encode()).hexdigest()[:16]
    return state_dir / "acme" / "accounts" / digest


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, created 0600 (:mod:`certwright.atomic`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, 0o600)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_private(path, json.dumps(data, indent=2, sort_keys=True).encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when missing; PermanentError when corrupt."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PermanentError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PermanentError(f"{path} does not hold a JSON object")
    return data


def load_or_create_key(folder: Path, key_type: str = "ec",
                       key_size: int = 2048) -> tuple[JWK, JWASignature]:
    """The account key in ``folder/account.key``, generated (0600) when missing."""
    path = folder / "account.key"
    if not path.exists():
        private: Any = (ec.generate_private_key(ec.SECP256R1()) if key_type == "ec"
                        else rsa.generate_private_key(65537, key_size))
        write_private(path, private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    private = serialization.load_pem_private_key(path.read_bytes(), None)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return JWKEC(key=private), ES256
    if isinstance(private, rsa.RSAPrivateKey):
        return JWKRSA(key=private), RS256
    raise PermanentError(f"{path}: account key is neither EC nor RSA")


_account_locks: dict[str, threading.Lock] = {}
_account_locks_guard = threading.Lock()


@contextlib.contextmanager
def account_locked(state_dir: Path, params: Mapping[str, Any]) -> Iterator[None]:
    """Hold the account folder's lock: a thread lock (runs of one engine share a process)
    and an ``fcntl`` lock on ``account.lock`` (other processes). Runs registering at once
    for the same directory+contact thus make one key and one account, not one each."""
    folder = account_folder(state_dir, check_directory(params), params.get("contact"))
    folder.mkdir(parents=True, exist_ok=True)
    with _account_locks_guard:
        local = _account_locks.setdefault(str(folder), threading.Lock())
    with local, open(folder / "account.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_account(state_dir: Path, params: Mapping[str, Any], *,
                 create_key: bool = False) -> Account:
    """The stored account for the step's directory+contact.

    Raises PermanentError when no account was registered yet (run ``acme.account`` first)
    unless ``create_key``.
    """
    directory = check_directory(params)
    folder = account_folder(state_dir, directory, params.get("contact"))
    if not create_key and not (folder / "account.key").exists():
        raise PermanentError(f"no ACME account for {directory} in {folder}: "
                             "run acme.account first")
    key, alg = load_or_create_key(folder, str(params.get("key_type", "ec")),
                                  int(params.get("key_size", 2048)))
    meta = read_json(folder / "account.json") or {}
    url = meta.get("url") if meta.get("directory") == directory else None
    return Account(folder, key, alg, url)


class AcmeSession:
    """A directory plus a signing network for one account; thread-safe to share."""

    def __init__(self, directory_url: str, account: Account, verify: str | bool,
                 sleep: Sleep = time.sleep) -> None:
        self.url = directory_url
        self.account = account
        self.net = RetryingNetwork(key=account.key, alg=account.alg, verify_ssl=verify,
                                   user_agent=USER_AGENT, sleep=sleep)
        self.directory = acme_client.ClientV2.get_directory(directory_url, self.net)
        self.client = acme_client.ClientV2(self.directory, self.net)
        if account.url:
            self.net.account = messages.RegistrationResource(
                body=messages.Registration(), uri=account.url)

    def post(self, url: str, obj: Any, **kwargs: Any) -> requests.Response:
        """POST a signed ``obj`` (None: POST-as-GET) with all retries."""
        return self.net.post(url, obj, new_nonce_url=self.directory["newNonce"], **kwargs)

    def order(self, url: str) -> messages.Order:
        order: messages.Order = messages.Order.from_json(self.post(url, None).json())
        return order

    def authorization(self, url: str) -> tuple[messages.Authorization, requests.Response]:
        resp = self.post(url, None)
        return messages.Authorization.from_json(resp.json()), resp


_sessions: dict[tuple[str, str, str, str], AcmeSession] = {}
_sessions_lock = threading.Lock()


def session_for(ctx_services: Mapping[str, Any], params: Mapping[str, Any],
                account: Account) -> AcmeSession:
    """A (cached) session for the account, or StepError when the CA is unreachable."""
    directory = check_directory(params)
    verify: str | bool = str(params["ca_bundle"]) if params.get("ca_bundle") else True
    sleep: Sleep = ctx_services.get("sleep", time.sleep)
    key = (directory, str(account.folder), account.url or "", str(verify))
    with _sessions_lock:
        cached = _sessions.get(key)
    if cached is not None:
        return cached
    try:
        session = AcmeSession(directory, account, verify, sleep)
    except (requests.RequestException, acme_errors.Error) as exc:
        raise as_step_error(exc, f"fetching the ACME directory {directory}") from exc
    if account.url:
        with _sessions_lock:
            _sessions[key] = session
    return session


def forget_sessions() -> None:
    """Drop cached sessions (tests restart the CA between cases)."""
    with _sessions_lock:
        _sessions.clear()


def as_step_error(exc: BaseException, doing: str) -> StepError:
    """Turn a library or network exception into a StepError saying what was tried.

    A CA problem document is permanent unless it is a rate limit, server error or
    badNonce that outlived its retries; network failures are retryable.
    """
    if isinstance(exc, RetryLater):
        return StepError(f"{doing}: {exc}", retry_after=exc.seconds)
    if isinstance(exc, messages.Error):
        retryable = exc.code in ("rateLimited", "serverInternal", "badNonce")
        cls = StepError if retryable else PermanentError
        return cls(f"{doing}: the CA answered with a problem: {problem_text(exc)}")
    if isinstance(exc, requests.RequestException):
        return StepError(f"{doing}: network error: {exc}")
    return StepError(f"{doing}: {type(exc).__name__}: {exc}")
