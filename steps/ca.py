"""Steps that talk to the built-in CA: join, activate, add_domain, probe, verify, sign.

Every step takes ``ca`` (the CA's base URL). Account credentials (email, passphrase,
recovery answers) live in ``<state_dir>/accounts/<sha256(ca+email)[:16]>.json`` (0600 in
a 0700 folder; :mod:`certwright.steps._ca_session` keeps them and the shared API tokens)
and are reused by later runs, so a second run for the same account logs in instead of
joining again. No step outputs a secret. A certificate of several names needs each name
covered by a verified domain: ``ca.probe`` probes every base domain not covered yet in
one go, ``ca.verify`` follows each of their links.

Idempotency: ``ca.join`` writes the credentials before joining, and the CA treats a
repeated join (same email, same passphrase, still pending) as the same account;
``ca.probe`` passes ``ctx.idempotency_key`` so a repeat sends no second mail; ``ca.sign``
passes it so the CA never issues twice (and asks first when ``ctx.recovering``).
"""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Any, ClassVar

from certwright.atomic import write_many_atomic
from certwright.ca.client import CAClient, CAError
from certwright.ca.passphrase import generate_passphrase
from certwright.clock import parse_instant
from certwright.domains import normalize_domain
from certwright.engine.plugins.step import BaseStep, Done, StepContext, StepResult
from certwright.errors import PermanentError, StepError
from certwright.steps._ca_session import (
    account_lock,
    cache_token,
    cached_token,
    client_for,
    credentials_path,
    forget_token,
    keep_account,
    load_credentials,
    save_credentials,
    session,
    share_account,
    stored_credentials,
)
from certwright.steps._kept import keep, restore

__all__ = ["Activate", "AddDomain", "Join", "Probe", "Sign", "Verify", "base_domains",
           "credentials_path", "forget_token", "load_credentials", "save_credentials"]

_CA = {"type": "string", "format": "uri", "description": "base URL of the CA"}
_EMAIL = {"type": "string", "minLength": 3}


def _schema(required: list[str], **props: Any) -> Mapping[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required,
            "properties": {"ca": _CA, **props}}


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
        with account_lock(path):  # runs for one account join one at a time, then reuse
            return self._join(ctx, log, path, ca, email, name)

    def _join(self, ctx: StepContext, log: Any, path: Path, ca: str, email: str,
              name: str) -> StepResult:
        creds = stored_credentials(ctx, path)
        key = (ca.rstrip("/"), email.lower())
        cached = cached_token(ctx, key)
        if creds and cached:
            log.info("ca_account_reused", account_id=cached[1])
            return Done({"account_id": cached[1], "email": email, "reused": True,
                         "status": "active"}, kept=keep_account(ctx, path, creds))
        with client_for(ctx) as client:
            if creds:
                try:
                    client.login(creds["email"], creds["passphrase"])
                    cache_token(ctx, key, client)
                    log.info("ca_account_reused", account_id=client.account_id)
                    return Done({"account_id": client.account_id, "email": email,
                                 "reused": True, "status": "active"},
                                kept=keep_account(ctx, path, creds))
                except CAError as exc:
                    # pending: join again (same account); unknown: it was dropped, rejoin
                    if exc.code not in ("account_not_confirmed", "bad_credentials"):
                        raise
            else:  # kept in the store (with a key) before the POST: a host killed after
                # it leaves them to the daemon that takes the run (it joins again as them)
                creds = {"ca": ca.rstrip("/"), "email": email, "name": name,
                         "passphrase": self._passphrase(ctx, name, email),
                         "questions": [{"question": f"Recovery question {i + 1}",
                                        "answer": secrets.token_urlsafe(12)} for i in range(5)]}
                creds = share_account(ctx, path, creds)
                save_credentials(path, creds)
            try:
                out = client.join(email, name, creds["passphrase"], creds["questions"])
            except CAError as exc:
                if exc.code == "account_exists" and ctx.sealing and ctx.attempt < 3:
                    # a daemon of another host may be joining it now: its commit shares it
                    raise StepError(f"{exc}; another host may be joining this account at "
                                    f"this moment: trying again, with the store's copy of "
                                    f"its credentials") from None
                if exc.code == "account_exists":
                    raise PermanentError(f"{exc}; the stored credentials in {path} do not "
                                         "match it (recover the account or use another "
                                         "email)") from None
                raise
        creds = {**creds, "account_id": out["account_id"]}
        save_credentials(path, creds)
        log.info("ca_account_joined", account_id=out["account_id"])
        return Done({"account_id": out["account_id"], "email": email, "reused": False,
                     "status": out.get("status", "pending")}, kept=keep_account(ctx, path, creds))

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


def _follow(ctx: StepContext, step: str, want: str, link: str | None = None) -> dict[str, Any]:
    """Confirm the request behind ``link`` (default ``ctx.params['link']``); 'already
    verified' is success."""
    link = str(ctx.params.get("link") or "") if link is None else link
    with client_for(ctx) as client:
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
                with session(ctx):  # raises when not active
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
        with session(ctx) as client:
            view = client.add_domain(str(ctx.params["domain"]))
        return Done({"domain": view["domain"], "verified": view["status"] == "verified"})


def base_domains(names: list[str]) -> list[str]:
    """The domains to verify so that the CA signs ``names``: each name without ``*.``, in
    order, less those under another of them (``www.a.example`` is covered by ``a.example``).
    """
    bases: list[str] = []
    for name in names:
        base = normalize_domain(str(name)).removeprefix("*.")
        if base and base not in bases:
            bases.append(base)
    return [b for b in bases if not any(b.endswith("." + other) for other in bases)]


def _covered(client: CAClient, domain: str) -> bool:
    """Whether ``domain`` or a domain above it (of two labels or more) is verified."""
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        row = client.domain(".".join(labels[i:]))
        if row is not None and row.get("status") == "verified":
            return True
    return False


class Probe(BaseStep):
    """Have the CA mail a verification link to ``local_part@`` each base domain not
    verified yet, all in one go.

    ``domains`` are the certificate's names (wildcards included): every one must be
    covered by a verified domain, so the step probes each base (:func:`base_domains`)
    that neither it nor a domain above it covers, adding it to the account first.
    Outputs ``skipped`` (no probe needed), ``verified`` (the bases already covered),
    ``domains`` (those probed), ``probes`` (``domain, probe_id, address, expires_at``
    each), ``mails`` (``to, link_path`` each: what ``wait.mails`` is to expect) and
    ``expires_at`` (the first link to expire). ``domain`` is the older one-domain form,
    with its outputs ``skipped, domain`` and, when probed, ``probe_id, address,
    expires_at``.

    Idempotent: each probe carries ``ctx.idempotency_key`` (with the domain's digest after
    it when the step probes from ``domains``), so a repeat mails nobody twice.
    """

    name: ClassVar[str] = "ca.probe"
    description: ClassVar[str] = "ask the CA to send the probe mail of each unverified domain"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        **_schema(["ca", "email", "local_part"], email=_EMAIL, domain={"type": "string"},
                  domains={"type": "array", "minItems": 1,
                           "items": {"type": "string", "minLength": 1}},
                  local_part={"type": "string"}),
        "oneOf": [{"required": ["domain"]}, {"required": ["domains"]}]}

    def run(self, ctx: StepContext) -> StepResult:
        one = "domains" not in ctx.params
        names = [str(ctx.params["domain"])] if one else [str(d) for d in ctx.params["domains"]]
        probes: list[dict[str, str]] = []
        verified: list[str] = []
        with session(ctx) as client:
            for domain in base_domains(names):
                if _covered(client, domain):
                    ctx.log.info("ca_probe_skipped", domain=domain, reason="verified")
                    verified.append(domain)
                    continue
                if client.domain(domain) is None:
                    client.add_domain(domain)
                key = ctx.idempotency_key if one else (
                    f"{ctx.idempotency_key}:{hashlib.sha256(domain.encode()).hexdigest()[:16]}")
                out = client.probe(domain, str(ctx.params["local_part"]), key)
                ctx.log.info("ca_probe_sent", domain=domain, probe_id=out["probe_id"])
                probes.append({"domain": domain, "probe_id": out["probe_id"],
                               "address": out["address"], "expires_at": out["expires_at"]})
        if one:  # the one-domain form's outputs, as runs pinned to it expect them
            return Done({"skipped": False, **probes[0]} if probes else
                        {"skipped": True, "domain": verified[0]})
        return Done({
            "skipped": not probes, "verified": verified,
            "domains": [p["domain"] for p in probes], "probes": probes,
            "mails": [{"to": p["address"], "link_path": f"/domains/verify/{p['probe_id']}"}
                      for p in probes],
            "expires_at": min((p["expires_at"] for p in probes), default=None,
                              key=parse_instant)})


class Verify(BaseStep):
    """Follow domain probe links (programmatically, via the API): ``link``, or each of
    ``links``. Outputs ``domain`` (the first), ``status`` (``verified`` when one link
    verified a domain now) and, for ``links``, ``domains``; 'already verified' counts as
    success, so a repeat after a crash is safe."""

    name: ClassVar[str] = "ca.verify"
    description: ClassVar[str] = "verify domains with the links from their probe mails"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        **_schema(["ca"], link={"type": "string"},
                  links={"type": "array", "minItems": 1, "items": {"type": "string"}}),
        "oneOf": [{"required": ["link"]}, {"required": ["links"]}]}

    def run(self, ctx: StepContext) -> StepResult:
        links = [ctx.params["link"]] if "link" in ctx.params else list(ctx.params["links"])
        outs = [_follow(ctx, self.name, "domain", str(link)) for link in links]
        status = "verified" if any(o["status"] == "verified" for o in outs) \
            else "already_verified"
        if "link" in ctx.params:
            return Done({"domain": outs[0].get("domain"), "status": status})
        return Done({"domain": outs[0].get("domain"),
                     "domains": [o.get("domain") for o in outs], "status": status})


class Sign(BaseStep):
    """Have a CSR signed (once per idempotency key) and write cert.pem and chain.pem.

    Outputs the three paths, ``serial``, ``fingerprint_sha256``, ``names``, ``not_after``
    (ISO 8601, as the CA gives it) and ``expires`` (the same instant as a person reads it,
    ``2027-05-31 11:41:54 UTC``)."""

    name: ClassVar[str] = "ca.sign"
    description: ClassVar[str] = "get the CSR signed by the CA"
    idempotent: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = _schema(
        ["ca", "email", "csr"], email=_EMAIL, csr={"type": "string"},
        out_dir={"type": "string"}, days={"type": "integer", "minimum": 1})

    def run(self, ctx: StepContext) -> StepResult:
        csr_path = restore(ctx, ctx.params["csr"], "csr")
        try:
            csr = csr_path.read_text()
        except OSError as exc:
            raise PermanentError(f"ca.sign: cannot read the CSR {csr_path}: "
                                 f"{exc.strerror}") from None
        out_dir = Path(str(ctx.params.get("out_dir") or ctx.run_dir))
        with session(ctx) as client:
            cert = client.find_certificate(ctx.idempotency_key) if ctx.recovering else None
            if cert is None:
                days = ctx.params.get("days")
                cert = client.sign(csr, ctx.idempotency_key, int(days) if days else None)
        out_dir.mkdir(parents=True, exist_ok=True)
        cert_path, chain_path = out_dir / "cert.pem", out_dir / "chain.pem"
        root_path = out_dir / "root.pem"
        chain, root = _split_chain(cert["chain"])
        # public files, in a folder the user may have named (a symlinked one included)
        files = [(cert_path, cert["certificate"].encode(), "cert"),
                 (chain_path, chain.encode(), "chain"), (root_path, root.encode(), "chain")]
        write_many_atomic([(path, data, 0o644) for path, data, _ in files], follow_folder=True)
        ctx.log.info("ca_cert_signed", serial=cert["serial"], not_after=cert["not_after"])
        return Done({"cert_path": str(cert_path), "chain_path": str(chain_path),
                     "root_path": str(root_path),
                     "serial": cert["serial"], "fingerprint_sha256": cert["fingerprint_sha256"],
                     "not_after": cert["not_after"], "expires": _readable(cert["not_after"]),
                     "names": ", ".join(cert.get("names") or [])},
                    kept=tuple(a for path, data, kind in files
                               for a in keep(ctx, path, kind, data)))


def _readable(instant: str) -> str:
    """``2027-05-31T11:41:54.000000Z`` as a person reads it: ``2027-05-31 11:41:54 UTC``
    (the CA's text unchanged when it is no ISO instant)."""
    try:
        when = parse_instant(str(instant))
    except ValueError:
        return str(instant)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
