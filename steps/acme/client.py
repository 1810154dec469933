"""ACME plumbing shared by the ``acme.*`` steps: accounts, sessions, persisted orders.

The network under it (badNonce retried up to :data:`.network.NONCE_RETRIES` times, ``429``/``503``
retried in place up to :data:`.network.MAX_RETRY_AFTER` seconds, :class:`RetryLater` beyond) is
:mod:`.network`. :func:`as_step_error` turns a
:class:`RetryLater` into a StepError whose ``retry_after`` the engine honours: the run
backs off durably instead of holding a worker.

Hazards: a session (:class:`AcmeSession`) is cached per (directory, account, CA bundle) and
shared by threads, so that one process keeps one kept-alive TCP/TLS connection and its
directory for all the steps of a run; the directory document and the account URL are kept
on disk with the account (:mod:`.known`, ``account.json``), so a new process finds both
without asking the CA. Account keys are written 0600 before the CA sees them, so a crash
after the CA created an account finds the key and recovers the same account.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from certwright.atomic import write_atomic
from certwright.errors import PermanentError, StepError
from certwright.steps.acme import known
from certwright.steps.acme.network import (
    RetryingNetwork,
    RetryLater,
    Sleep,
    problem_text,
)

USER_AGENT = "certwright-acme"

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
    """A directory plus a signing network for one account; thread-safe to share.

    With ``now``, the directory is taken from the account's kept document
    (:mod:`.known`) when it is fresh, and a fetched one is kept; a POST to an endpoint of a
    kept document that answers 404 fetches the directory again and is sent once more to
    the new endpoint. Without ``now`` the directory is always fetched and nothing is kept.
    """

    def __init__(self, directory_url: str, account: Account, verify: str | bool,
                 sleep: Sleep = time.sleep, now: dt.datetime | None = None) -> None:
        self.url = directory_url
        self.account = account
        self.net = RetryingNetwork(key=account.key, alg=account.alg, verify_ssl=verify,
                                   user_agent=USER_AGENT, sleep=sleep)
        self._now = now
        kept = known.find_directory(account.folder, directory_url, now) if now else None
        self.kept = kept is not None
        self.directory = (messages.Directory.from_json(kept) if kept is not None
                          else self._fetch_directory())
        self.client = acme_client.ClientV2(self.directory, self.net)
        if account.url:
            self.net.account = messages.RegistrationResource(
                body=messages.Registration(), uri=account.url)

    def _fetch_directory(self) -> messages.Directory:
        document = self.net.get(self.url).json()
        if self._now is not None and isinstance(document, dict):
            known.save_directory(self.account.folder, self.url, document, self._now)
        return messages.Directory.from_json(document)  # (which changes ``document``)

    def post(self, url: str, obj: Any, **kwargs: Any) -> requests.Response:
        """POST a signed ``obj`` (None: POST-as-GET) with all retries."""
        try:
            return self.net.post(url, obj, new_nonce_url=self.directory["newNonce"], **kwargs)
        except (messages.Error, acme_errors.ClientError):
            moved = self._moved(url)
            if moved is None:
                raise
        return self.net.post(moved, obj, new_nonce_url=self.directory["newNonce"], **kwargs)

    def _moved(self, url: str) -> str | None:
        """After a 404 from an endpoint of a kept directory (``url`` itself, or the
        newNonce fetched for it): the directory fetched again and where to send the request
        now; None otherwise (a 404 of an order or an authorization is the caller's)."""
        if not self.kept or self.net.last_status() != 404:
            return None
        document = self.directory.to_partial_json()
        field = next((k for k, v in document.items() if k != "meta" and v == url), None)
        nonce = document.get("newNonce")
        if field is None and self.net.last_url() != nonce:
            return None
        self.kept = False
        self.directory = self._fetch_directory()
        self.client = acme_client.ClientV2(self.directory, self.net)
        fresh = self.directory.to_partial_json()
        if field is not None:
            return str(fresh[field]) if fresh.get(field) else None
        return url if fresh.get("newNonce") != nonce else None

    def order(self, url: str) -> messages.Order:
        order: messages.Order = messages.Order.from_json(self.post(url, None).json())
        return order

    def authorization(self, url: str) -> tuple[messages.Authorization, requests.Response]:
        resp = self.post(url, None)
        return messages.Authorization.from_json(resp.json()), resp


_sessions: dict[tuple[str, str, str, str], AcmeSession] = {}
_sessions_lock = threading.Lock()


def session_for(ctx_services: Mapping[str, Any], params: Mapping[str, Any],
                account: Account, now: dt.datetime | None = None) -> AcmeSession:
    """A (cached) session for the account, or StepError when the CA is unreachable.

    ``now`` (the step's clock) lets the session use and keep the directory document."""
    directory = check_directory(params)
    verify: str | bool = str(params["ca_bundle"]) if params.get("ca_bundle") else True
    sleep: Sleep = ctx_services.get("sleep", time.sleep)
    key = (directory, str(account.folder), account.url or "", str(verify))
    with _sessions_lock:
        cached = _sessions.get(key)
    if cached is not None:
        return cached
    try:
        session = AcmeSession(directory, account, verify, sleep, now)
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
        from certwright.steps.acme.neterrors import describe
        return StepError(describe(exc, doing))
    return StepError(f"{doing}: {type(exc).__name__}: {exc}")
