"""Steps that talk to the built-in CA: join, activate, add_domain, probe, verify, sign.

Every step takes ``ca`` (the CA's base URL). Account credentials (email, passphrase,
recovery answers) live in ``<state_dir>/accounts/<sha256(ca+email)[:16]>.json`` (0600 in
a 0700 folder) and are reused by later runs, so a second run for the same account logs
in instead of joining again. No step outputs a secret.

Idempotency: ``ca.join`` writes the credentials before joining, and the CA treats a
repeated join (same email, same passphrase, still pending) as the same account;
``ca.probe`` passes ``ctx.idempotency_key`` so a repeat sends no second mail; ``ca.sign``
passes it so the CA never issues twice (and asks first when ``ctx.recovering``).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from certwright.atomic import write_atomic, write_many_atomic
from certwright.ca.client import CAClient, CAError
from certwright.ca.passphrase import generate_passphrase
from certwright.clock import parse_instant
from certwright.engine.plugins.step import BaseStep, Done, StepContext, StepResult
from certwright.errors import PermanentError

_CA = {"type": "string", "format": "uri", "description": "base URL of the CA"}
_EMAIL = {"type": "string", "minLength": 3}


def _schema(required: list[str], **props: Any) -> Mapping[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": {"ca": _CA, **props}}


def credentials_path(state_dir: Path, ca: str, email: str) -> Path:
    """Where the credentials of ``email`` at CA ``ca`` are kept."""
    digest = hashlib.sha256((ca.rstrip("/") + email.strip().lower()).encode()).hexdigest()
    return Path(state_dir) / "accounts" / f"{digest[:16]}.json"


def save_credentials(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically (:func:`certwright.atomic.write_atomic`), 0600, in a 0700 folder."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_atomic(path, json.dumps(dict(data), indent=2).encode(), 0o600)


def load_credentials(ctx: StepContext, ca: str, email: str) -> dict[str, Any]:
    """The stored credentials; PermanentError when ``ca.join`` has not stored any."""
    path = credentials_path(ctx.state_dir, ca, email)
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise PermanentError(f"no CA account for {email} at {ca} (expected {path}); "
                             "run ca.join first") from None


def _client(ctx: StepContext) -> CAClient:
    return CAClient(str(ctx.params["ca"]), timeout=ctx.timeout or 10.0, shared=True)


# API tokens by (CA, email), in memory only: a login costs the CA a memory-hard scrypt,
# so steps of many runs for one account share a token until shortly before it expires.
# Expiry is judged on the step's clock, the same time line the CA's tokens live on.
_TOKENS: dict[tuple[str, str], tuple[str, str | None, datetime]] = {}
_TOKENS_LOCK = threading.Lock()
_TOKEN_LIFE = timedelta(minutes=30)  # at most this long (the CA's last an hour)
_TOKEN_MARGIN = timedelta(minutes=5)  # stop using one this long before the CA's expiry


def _cache_token(ctx: StepContext, key: tuple[str, str], client: CAClient) -> None:
    until = ctx.clock.now() + _TOKEN_LIFE
    if client.token_expires:
        with contextlib.suppress(ValueError):
            until = min(until, parse_instant(client.token_expires) - _TOKEN_MARGIN)
    with _TOKENS_LOCK:
        _TOKENS[key] = (str(client.token), client.account_id, until)


def _cached_token(ctx: StepContext, key: tuple[str, str]) -> tuple[str, str | None] | None:
    with _TOKENS_LOCK:
        cached = _TOKENS.get(key)
    if cached and cached[2] > ctx.clock.now():
        return cached[0], cached[1]
    return None


def _logged_in(ctx: StepContext) -> CAClient:
    ca, email = str(ctx.params["ca"]), str(ctx.params["email"])
    key = (ca.rstrip("/"), email.lower())
    client = _client(ctx)
    cached = _cached_token(ctx, key)
    if cached:
        client.token, client.account_id = cached
        return client
    creds = load_credentials(ctx, ca, email)
    try:
        client.login(creds["email"], creds["passphrase"])
    except BaseException:
        client.close()
        raise
    _cache_token(ctx, key, client)
    return client


@contextlib.contextmanager
def _session(ctx: StepContext) -> Iterator[CAClient]:
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
def _account_lock(path: Path) -> Iterator[None]:
    """An exclusive flock beside the credentials file, held while joining."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Join(BaseStep):
    """Join the CA (or reuse stored credentials that still log in)."""

    name: ClassVar[str] = "ca.join"
    description: ClassVar[str] = "create a CA account, or reuse the stored one"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = _schema(
        ["ca", "email", "name"], email=_EMAIL, name={"type": "string", "minLength": 1},
        passphrase={"type": "string", "description": "path to a file holding the passphrase"})

    def run(self, ctx: StepContext) -> StepResult:
        ca, email, name = str(ctx.params["ca"]), str(ctx.params["email"]), str(ctx.params["name"])
        log = ctx.log.bind(step=self.name, ca=ca, email=email)
        path = credentials_path(ctx.state_dir, ca, email)
        with _account_lock(path):  # runs for one account join one at a time, then reuse
            return self._join(ctx, log, path, ca, email, name)

    def _join(self, ctx: StepContext, log: Any, path: Path, ca: str, email: str,
              name: str) -> StepResult:
        creds: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
        key = (ca.rstrip("/"), email.lower())
        cached = _cached_token(ctx, key)
        if creds and cached:
            log.info("ca_account_reused", account_id=cached[1])
            return Done({"account_id": cached[1], "email": email, "reused": True,
                         "status": "active"})
        with _client(ctx) as client:
            if creds:
                try:
                    client.login(creds["email"], creds["passphrase"])
                    _cache_token(ctx, key, client)
                    log.info("ca_account_reused", account_id=client.account_id)
                    return Done({"account_id": client.account_id, "email": email,
                                 "reused": True, "status": "active"})
                except CAError as exc:
                    # pending: join again (same account); unknown: it was dropped, rejoin
                    if exc.code not in ("account_not_confirmed", "bad_credentials"):
                        raise
            else:
                creds = {"ca": ca.rstrip("/"), "email": email, "name": name,
                         "passphrase": self._passphrase(ctx, name, email),
                         "questions": [{"question": f"Recovery question {i + 1}",
                                        "answer": secrets.token_urlsafe(12)} for i in range(5)]}
                save_credentials(path, creds)
            try:
                out = client.join(email, name, creds["passphrase"], creds["questions"])
            except CAError as exc:
                if exc.code == "account_exists":
                    raise PermanentError(f"{exc}; the stored credentials in {path} do not "
                                         "match it (recover the account or use another "
                                         "email)") from None
                raise
        save_credentials(path, {**creds, "account_id": out["account_id"]})
        log.info("ca_account_joined", account_id=out["account_id"])
        return Done({"account_id": out["account_id"], "email": email, "reused": False,
                     "status": out.get("status", "pending")})

    @staticmethod
    def _passphrase(ctx: StepContext, name: str, email: str) -> str:
        given = ctx.params.get("passphrase")
        if given:
            try:
                return Path(str(given)).read_text().rstrip("\r\n")
            except OSError as exc:
                raise PermanentError(f"cannot read the passphrase file {given}: "
                                     f"{exc.strerror}") from None
        return generate_passphrase(name, email)


def _follow(ctx: StepContext, step: str, want: str) -> dict[str, Any]:
    """Confirm the request behind ``ctx.params['link']``; 'already verified' is success."""
    link = str(ctx.params.get("link") or "")
    with _client(ctx) as client:
        if not client.same_origin(link):
            raise PermanentError(f"{step}: refusing to follow link to other host "
                                 f"({link.split('?', maxsplit=1)[0]} is not at {client.base_url})")
        kind, request_id, token = client.parse_link(link)
        if kind != want:
            raise PermanentError(f"{step}: expected a {want} link, got a {kind} link")
        try:
            out = client.confirm(request_id, token)
        except CAError as exc:
            # Our own earlier attempt may have used the link before a crash.
            if exc.code == "link_used" and exc.body.get("outcome") == "verified":
                out = {"status": "already_verified", "kind": kind,
                       "domain": exc.body.get("domain")}
            else:
                raise
    if out["status"] not in ("verified", "already_verified"):
        raise PermanentError(f"{step}: the CA answered {out['status']!r}")
    ctx.log.info("ca_link_followed", step=step, kind=kind, request_id=request_id,
                 status=out["status"])
    return out


class Activate(BaseStep):
    """Follow the account confirmation link (programmatically, via the API)."""

    name: ClassVar[str] = "ca.activate"
    description: ClassVar[str] = "confirm the CA account with the link from its mail"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = _schema(
        ["ca"], link={"type": "string"}, email=_EMAIL)

    def run(self, ctx: StepContext) -> StepResult:
        if not ctx.params.get("link"):
            if ctx.params.get("email"):
                with _session(ctx):  # raises when not active
                    return Done({"status": "already_verified", "skipped": True})
            raise PermanentError("ca.activate: no confirmation link given")
        return Done({"status": _follow(ctx, self.name, "account")["status"], "skipped": False})


class AddDomain(BaseStep):
    """Add a domain to the account (idempotent)."""

    name: ClassVar[str] = "ca.add_domain"
    description: ClassVar[str] = "add a domain to the CA account"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = _schema(
        ["ca", "email", "domain"], email=_EMAIL, domain={"type": "string"})

    def run(self, ctx: StepContext) -> StepResult:
        with _session(ctx) as client:
            view = client.add_domain(str(ctx.params["domain"]))
        return Done({"domain": view["domain"], "verified": view["status"] == "verified"})


class Probe(BaseStep):
    """Have the CA mail a verification link to ``local_part@domain`` (unless verified)."""

    name: ClassVar[str] = "ca.probe"
    description: ClassVar[str] = "ask the CA to send the domain's probe mail"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = _schema(
        ["ca", "email", "domain", "local_part"], email=_EMAIL, domain={"type": "string"},
        local_part={"type": "string"})

    def run(self, ctx: StepContext) -> StepResult:
        domain = str(ctx.params["domain"]).strip().lower()
        with _session(ctx) as client:
            row = client.domain(domain)  # one domain, not the account's whole list
            if row is not None and row.get("status") == "verified":
                ctx.log.info("ca_probe_skipped", domain=domain, reason="verified")
                return Done({"skipped": True, "domain": domain})
            if row is None:
                client.add_domain(domain)
            out = client.probe(domain, str(ctx.params["local_part"]), ctx.idempotency_key)
        ctx.log.info("ca_probe_sent", domain=domain, probe_id=out["probe_id"])
        return Done({"skipped": False, "domain": domain, "probe_id": out["probe_id"],
                     "address": out["address"], "expires_at": out["expires_at"]})


class Verify(BaseStep):
    """Follow a domain probe link (programmatically, via the API)."""

    name: ClassVar[str] = "ca.verify"
    description: ClassVar[str] = "verify the domain with the link from the probe mail"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = _schema(["ca", "link"], link={"type": "string"})

    def run(self, ctx: StepContext) -> StepResult:
        out = _follow(ctx, self.name, "domain")
        return Done({"domain": out.get("domain"), "status": out["status"]})


class Sign(BaseStep):
    """Have a CSR signed (once per idempotency key) and write cert.pem and chain.pem."""

    name: ClassVar[str] = "ca.sign"
    description: ClassVar[str] = "get the CSR signed by the CA"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = _schema(
        ["ca", "email", "csr"], email=_EMAIL, csr={"type": "string"},
        out_dir={"type": "string"}, days={"type": "integer", "minimum": 1})

    def run(self, ctx: StepContext) -> StepResult:
        csr_path = Path(str(ctx.params["csr"]))
        try:
            csr = csr_path.read_text()
        except OSError as exc:
            raise PermanentError(f"ca.sign: cannot read the CSR {csr_path}: "
                                 f"{exc.strerror}") from None
        out_dir = Path(str(ctx.params.get("out_dir") or ctx.run_dir))
        with _session(ctx) as client:
            cert = client.find_certificate(ctx.idempotency_key) if ctx.recovering else None
            if cert is None:
                days = ctx.params.get("days")
                cert = client.sign(csr, ctx.idempotency_key, int(days) if days else None)
        out_dir.mkdir(parents=True, exist_ok=True)
        cert_path, chain_path = out_dir / "cert.pem", out_dir / "chain.pem"
        root_path = out_dir / "root.pem"
        chain, root = _split_chain(cert["chain"])
        # public files, in a folder the user may have named (a symlinked one included)
        write_many_atomic([(path, text.encode(), 0o644) for path, text in (
            (cert_path, cert["certificate"]), (chain_path, chain), (root_path, root))],
            follow_folder=True)
        ctx.log.info("ca_cert_signed", serial=cert["serial"], not_after=cert["not_after"])
        return Done({"cert_path": str(cert_path), "chain_path": str(chain_path),
                     "root_path": str(root_path),
                     "serial": cert["serial"], "fingerprint_sha256": cert["fingerprint_sha256"],
                     "not_after": cert["not_after"]})


def _split_chain(pem: str) -> tuple[str, str]:
    """(intermediates, root) of a PEM chain: servers send the first, clients trust the second."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    certs = x509.load_pem_x509_certificates(pem.encode())
    roots = [c for c in certs if c.subject == c.issuer]
    rest = [c for c in certs if c.subject != c.issuer]
    def dump(cs: list[x509.Certificate]) -> str:
        return "".join(c.public_bytes(Encoding.PEM).decode() for c in cs)
    return dump(rest), dump(roots)
