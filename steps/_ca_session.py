"""Sessions with the built-in CA for its steps: stored credentials and shared API tokens.

Credentials (email, passphrase, recovery answers) live in
``<state_dir>/accounts/<sha256(ca+email)[:16]>.json`` (0600 in a 0700 folder). With a
store key they are also kept in the store, sealed (``account/<that id>``, no run's), and
the store's copy wins: daemons on several hosts share the accounts their runs joined (a
renewal on another host logs in, where it would have joined again and been refused). New
credentials reach the store before the join is sent (:func:`share_account`), so a host
killed inside the join leaves them to whichever daemon takes its run. A login costs the
CA a memory-hard scrypt, so the steps of many runs for one account share an API token in
memory until shortly before it expires (judged on the step's clock). Private to
:mod:`certwright.steps.ca`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from certwright.atomic import write_atomic
from certwright.ca.client import CAClient, CAError
from certwright.clock import parse_instant
from certwright.engine.plugins.step import StepContext
from certwright.errors import PermanentError, StepError, StoreError
from certwright.state.artefacts import SHARED, Artefact


def credentials_path(state_dir: Path, ca: str, email: str) -> Path:
    """Where the credentials of ``email`` at CA ``ca`` are kept."""
    digest = hashlib.sha256((ca.rstrip("/") + email.strip().lower()).encode()).hexdigest()
    return Path(state_dir) / "accounts" / f"{digest[:16]}.json"


def save_credentials(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically (:func:`certwright.atomic.write_atomic`), 0600, in a 0700 folder."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_atomic(path, _dumps(data), 0o600)


def load_credentials(ctx: StepContext, ca: str, email: str) -> dict[str, Any]:
    """The stored credentials; PermanentError when ``ca.join`` has not stored any."""
    path = credentials_path(ctx.state_dir, ca, email)
    creds = stored_credentials(ctx, path)
    if creds is None:
        raise PermanentError(f"no CA account for {email} at {ca} (expected {path}"
                             f"{'' if ctx.sealing else ', or a store key to share accounts'}); "
                             "run ca.join first")
    return creds


def account_name(path: Path) -> str:
    """The name an account's credentials are kept under in the store (``state.artefacts``)."""
    return f"account/{path.stem}"


def stored_credentials(ctx: StepContext, path: Path) -> dict[str, Any] | None:
    """The account's credentials: the store's copy when the store has a key and one (every
    host's daemons share it; this host's file is rewritten from it), else this host's file;
    None when neither has any."""
    if ctx.artefact is not None and ctx.sealing:
        try:
            art = ctx.artefact(account_name(path))
        except StoreError as exc:
            raise PermanentError(f"the CA account kept in the store cannot be read: "
                                 f"{exc}") from exc
        if art is not None:
            if not path.exists() or path.read_bytes() != art.data:
                save_credentials(path, json.loads(art.data))
                ctx.log.info("ca_account_restored", path=str(path))
            return dict(json.loads(art.data))
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def keep_account(ctx: StepContext, path: Path, creds: Mapping[str, Any]) -> tuple[Artefact, ...]:
    """The account's credentials as ``Done.kept`` (sealed in the store, shared by every
    run and host); none when the store has no key (they stay in this host's file)."""
    if ctx.artefact is None or not ctx.sealing:
        return ()
    return (Artefact(run_id=SHARED, name=account_name(path), kind="account",
                     data=_dumps(creds)),)


def share_account(ctx: StepContext, path: Path, creds: Mapping[str, Any]) -> dict[str, Any]:
    """New credentials kept in the store (sealed) before ``ca.join`` sends them, when the
    store has a key: a host killed after its join reached the CA leaves them to the daemon
    that takes the run, which then joins again as the same account instead of meeting
    ``account_exists``. When another host kept some first, those are used instead."""
    if ctx.share is None or not ctx.sealing:
        return dict(creds)
    try:
        kept = ctx.share(Artefact(run_id=SHARED, name=account_name(path), kind="account",
                                  data=_dumps(creds)))
    except StoreError as exc:
        raise StepError(f"the new CA account's credentials cannot be kept in the store "
                        f"before joining: {exc}") from exc
    if kept.data != _dumps(creds):
        ctx.log.info("ca_account_restored", path=str(path))
    return dict(json.loads(kept.data))


def _dumps(creds: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(creds), indent=2).encode()


def client_for(ctx: StepContext) -> CAClient:
    return CAClient(str(ctx.params["ca"]), timeout=ctx.timeout or 10.0, shared=True)


# API tokens by (CA, email), in memory only: a login costs the CA a memory-hard scrypt,
# so steps of many runs for one account share a token until shortly before it expires.
# Expiry is judged on the step's clock, the same time line the CA's tokens live on.
_TOKENS: dict[tuple[str, str], tuple[str, str | None, datetime]] = {}
_TOKENS_LOCK = threading.Lock()
_TOKEN_LIFE = timedelta(minutes=30)  # at most this long (the CA's last an hour)
_TOKEN_MARGIN = timedelta(minutes=5)  # stop using one this long before the CA's expiry


def cache_token(ctx: StepContext, key: tuple[str, str], client: CAClient) -> None:
    until = ctx.clock.now() + _TOKEN_LIFE
    if client.token_expires:
        with contextlib.suppress(ValueError):
            until = min(until, parse_instant(client.token_expires) - _TOKEN_MARGIN)
    with _TOKENS_LOCK:
        _TOKENS[key] = (str(client.token), client.account_id, until)


def cached_token(ctx: StepContext, key: tuple[str, str]) -> tuple[str, str | None] | None:
    with _TOKENS_LOCK:
        cached = _TOKENS.get(key)
    if cached and cached[2] > ctx.clock.now():
        return cached[0], cached[1]
    return None


def _logged_in(ctx: StepContext) -> CAClient:
    ca, email = str(ctx.params["ca"]), str(ctx.params["email"])
    key = (ca.rstrip("/"), email.lower())
    client = client_for(ctx)
    cached = cached_token(ctx, key)
    if cached:
        client.token, client.account_id = cached
        return client
    creds = load_credentials(ctx, ca, email)
    try:
        client.login(creds["email"], creds["passphrase"])
    except BaseException:
        client.close()
        raise
    cache_token(ctx, key, client)
    return client


@contextlib.contextmanager
def session(ctx: StepContext) -> Iterator[CAClient]:
    """A logged-in client; a token the CA no longer accepts is dropped and the step retried."""
    client = _logged_in(ctx)
    try:
        yield client
    except CAError as exc:
        if exc.status == 401:
            forget_token(str(ctx.params["ca"]), str(ctx.params["email"]))
            raise CAError(f"{exc} (the cached token was refused; logging in again)",
                          status=401, code=exc.code, retryable=True) from exc
        raise
    finally:
        client.close()


def forget_token(ca: str, email: str) -> None:
    """Drop a cached token (after the CA refused it)."""
    with _TOKENS_LOCK:
        _TOKENS.pop((ca.rstrip("/"), email.lower()), None)


@contextlib.contextmanager
def account_lock(path: Path) -> Iterator[None]:
    """An exclusive flock beside the credentials file, held while joining."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
