"""The CA's issuing: domains, probes, verification, signing, certificates, the CRL.

:class:`Issuing` holds what it works with (the store, the signer, the outbox, the clock,
the config, the probe policy). Every public method returns a JSON-able value or raises
:class:`ApiError`.

Contract: a certificate is issued at most once per (account, idempotency key): the
look-up, the signing and the insert happen in one store transaction, and a repeat with
the same key returns the stored certificate (a different CSR under the same key is 409).
The issuance mail is written to the outbox (:mod:`certwright.ca.outbox`) in that same
transaction and sent after the commit; its failure never undoes the issuance.

A probe is made at most once per (account, idempotency key), the same way: look-up and
insert in one transaction; the same key for another address is 409.

Hazards: a probe whose mail is refused for good (5xx) is deleted again (502); one whose
mail meets a transient failure stands, its mail retried by the outbox. A domain
verification lapses ``verification_days`` after it was made, judged at each use by the
clock: a domain can be verified for one request and pending for the next.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.ca.errors import ApiError
from certwright.ca.outbox import Outbox
from certwright.ca.signer import (
    REASONS,
    CSRRejected,
    Signer,
    inspect_csr,
    refuse_public_suffix,
    valid_dns_name,
)
from certwright.ca.store import CAStore
from certwright.ca.weakkeys import Blocklist
from certwright.clock import Clock, format_instant, parse_instant
from certwright.domains import normalize_domain

log = structlog.get_logger("ca.issuing")

# CA/B Forum BR 6.3.2 as amended by ballot SC-081: maximum subscriber validity by the
# date a certificate is issued. pkilint applies the same schedule.
BR_SCHEDULE: tuple[tuple[datetime, int], ...] = (
    (parse_instant("2029-03-15T00:00:00Z"), 47),
    (parse_instant("2027-03-15T00:00:00Z"), 100),
    (parse_instant("2026-03-15T00:00:00Z"), 200),
)


def spki_sha256(key: Any) -> str:
    """Hex SHA-256 of a public key's DER SubjectPublicKeyInfo (how compromised keys are
    known)."""
    return hashlib.sha256(key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def br_max_days(when: datetime) -> int:
    """The longest validity (days) the Baseline Requirements allow for issuance at ``when``."""
    return next((days for start, days in BR_SCHEDULE if when >= start), 398)


@functools.lru_cache(maxsize=4096)
def _verification_end(verified_at: str, days: int) -> tuple[datetime, str]:
    """When a verification made at ``verified_at`` lapses: (instant, formatted). Cached:
    a domain list parses the same few instants on every request."""
    until = parse_instant(verified_at) + timedelta(days=days)
    return until, format_instant(until)


POLICIES: dict[str, tuple[str, ...]] = {
    "cacert": ("root", "hostmaster", "postmaster", "admin", "webmaster"),
    "cabf": ("admin", "administrator", "webmaster", "hostmaster", "postmaster"),
}


@dataclass(frozen=True)
class ProbePolicy:
    """Which local parts of a domain a probe may mail (see :data:`POLICIES`)."""

    name: str
    local_parts: tuple[str, ...]

    @classmethod
    def named(cls, name: str) -> ProbePolicy:
        """The policy called ``name``; ValueError for an unknown one."""
        if name not in POLICIES:
            raise ValueError(f"unknown probe policy {name!r}; choose from {sorted(POLICIES)}")
        return cls(name, POLICIES[name])


def _refuse_suffix(domain: str) -> None:
    """ApiError(422, public_suffix) when ``domain`` is a public suffix (never verified)."""
    try:
        refuse_public_suffix(domain)
    except CSRRejected as exc:
        raise ApiError(422, exc.code, exc.message, field="domain",
                       suffix=exc.details["suffix"]) from None


class Issuing:
    """Domains, probes and certificates of the CA's accounts (see the module contract)."""

    def __init__(self, *, store: CAStore, signer: Signer, outbox: Outbox, clock: Clock,
                 config: dict[str, Any], public_url: str, policy: ProbePolicy,
                 blocklist: Blocklist | None = None) -> None:
        self.store = store
        self.signer = signer
        self.outbox = outbox
        self.clock = clock
        self.config = config
        self.public_url = public_url
        self.policy = policy
        self.blocklist = blocklist

    def _domain_view(self, row: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
        verified_at = row["verified_at"]
        expires = None
        status = "pending"
        if verified_at:
            until, expires = _verification_end(verified_at, self.config["verification_days"])
            status = "verified" if (now or self.clock.now()) < until else "pending"
        return {"domain": row["domain"], "status": status, "verified_at": verified_at,
                "verification_expires": expires}

    # -- domains -------------------------------------------------------------------------
    def add_domain(self, account_id: str, domain: str) -> tuple[dict[str, Any], bool]:
        """Add a domain (idempotent); returns (view, created)."""
        domain = normalize_domain(domain)
        if not valid_dns_name(domain):
            raise ApiError(422, "bad_request", f"{domain!r} is not a domain name",
                           field="domain")
        _refuse_suffix(domain)
        created = self.store.add_domain(account_id, domain)
        if created:
            log.info("domain_added", account_id=account_id, domain=domain)
        row = self.store.find_domain(account_id, domain)
        return self._domain_view(row or {}), created

    def list_domains(self, account_id: str,
                     names: list[str] | None = None) -> list[dict[str, Any]]:
        """The account's domains (all, or those in ``names``), from committed state; never
        waits for a writer, so it may run on the event loop."""
        now = self.clock.now()
        return [self._domain_view(r, now) for r in self.store.domains(account_id, names)]

    def delete_domain(self, account_id: str, domain: str) -> None:
        """Remove a domain from the account (its verification goes with it)."""
        domain = normalize_domain(domain)
        if not self.store.delete_domain(account_id, domain):
            raise ApiError(404, "unknown_domain", f"{domain} is not on this account")
        log.info("domain_deleted", account_id=account_id, domain=domain)

    def _owned_domain(self, account_id: str, domain: str) -> dict[str, Any]:
        domain = normalize_domain(domain)
        row = self.store.find_domain(account_id, domain)
        if row is None:
            raise ApiError(404, "unknown_domain", f"{domain} is not on this account; "
                           "POST /api/v1/domains first", domain=domain)
        return row

    def mark_verified(self, account_id: str, domain: str, link_id: str) -> bool | None:
        """Record ``domain`` as verified by the probe ``link_id`` (a followed link): False
        when it now is, True when it was verified already (nothing changes), None when
        the domain is no longer on the account. Runs inside the caller's store
        transaction, which also closes the link."""
        row = self.store.find_domain(account_id, domain)
        if row is None:
            return None
        if self._domain_view(row)["status"] == "verified":
            return True
        self.store.verify_domain(account_id, domain, link_id)
        return False

    # -- probes --------------------------------------------------------------------------
    def probe(self, account_id: str, domain: str, local_part: str,
              idem_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Mail a verification link to ``local_part@domain``; returns (view, created)."""
        local_part = local_part.strip().lower()
        allowed = self.policy.local_parts
        if local_part not in allowed:
            raise ApiError(422, "bad_local_part", f"{local_part!r} is not allowed; the "
                           f"{self.policy.name} policy allows {', '.join(allowed)}",
                           allowed=list(allowed))
        row = self._owned_domain(account_id, domain)
        _refuse_suffix(row["domain"])  # a row an older CA let in is never probed
        address = f"{local_part}@{row['domain']}"
        expires = self.clock.now() + timedelta(hours=self.config["link_hours"])
        # The look-up, the insert and the probe's mail in one transaction: a repeat of the
        # key that runs at the same time (a client retrying) finds this probe instead of
        # colliding, and the link and its mail commit together.
        with self.store.transaction():
            seen = self.store.find_link_by_key(account_id, idem_key) if idem_key else None
            if seen:
                return self._repeat_probe(seen, address), False
            link_id, token = self.store.create_link("domain", account_id, address, expires,
                                                    domain=row["domain"], idem_key=idem_key)
            url = f"{self.public_url}/domains/verify/{link_id}?token={token}"
            message = self.outbox.enqueue(
                address, f"Verify {row['domain']} for a certwright CA account", (
                    f"An account of the certwright CA asked to verify the domain "
                    f"{row['domain']}.\n\nIf that was you (or someone you trust), open this "
                    f"link within {self.config['link_hours']} hours and choose \"Verify this "
                    f'domain":\n\n{url}\n\nIf not, open it and choose "I did not ask for '
                    'this".\n'), kind="domain_probe", ref=link_id)
        delivery = self.outbox.deliver(message)  # a transient failure stays queued
        if delivery.status == "failed":
            self.store.delete_link(link_id)
            log.warning("probe_undeliverable", account_id=account_id, address=address)
            raise ApiError(502, "mail_undeliverable", f"mail to {address} not delivered: "
                           f"{delivery.reason}", reason=delivery.reason)
        self.store.record("probe_sent", account_id, link_id, address)
        log.info("probe_sent", account_id=account_id, probe_id=link_id, address=address)
        return {"probe_id": link_id, "address": address,
                "expires_at": format_instant(expires)}, True

    @staticmethod
    def _repeat_probe(seen: dict[str, Any], address: str) -> dict[str, Any]:
        """The probe made before under the same key; 409 when it was for another address
        (another domain or local part), as signing answers for another CSR."""
        if seen["kind"] != "domain" or seen["address"] != address:
            raise ApiError(409, "idempotency_key_reused", "this idempotency key was used for "
                           "a probe of another address", probe_id=seen["id"])
        return {"probe_id": seen["id"], "address": seen["address"],
                "expires_at": seen["expires_at"]}

    # -- certificates --------------------------------------------------------------------
    def _cert_view(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"serial": row["serial"], "certificate": row["cert_pem"],
                "chain": self.signer.chain_pem, "fingerprint_sha256": row["fingerprint"],
                "not_before": row["not_before"], "not_after": row["not_after"],
                "names": row["names"].split(","), "revoked": row["revoked_at"] is not None}

    def _check_names(self, account_id: str, names: list[str]) -> None:
        # Only the account's domains that could cover a name: each name's base and the
        # domains above it (not every domain of the account, which may be thousands).
        candidates: set[str] = set()
        for name in names:
            labels = name.removeprefix("*.").split(".")
            candidates.update(".".join(labels[i:]) for i in range(len(labels)))
        verified = [d["domain"] for d in self.list_domains(account_id, sorted(candidates))
                    if d["status"] == "verified"]
        for name in names:
            base = name.removeprefix("*.")
            if not any(base == d or base.endswith("." + d) for d in verified):
                hint = f" (a wildcard needs {base} verified)" if base != name else ""
                raise ApiError(422, "unverified_domain", f"{base} is not verified for this "
                               f"account{hint}", domain=base)

    def sign(self, account_id: str, csr_pem: str, idem_key: str, days: int | None = None, *,
             authorize: Callable[[list[str]], None] | None = None,
             mail_to: str | None = None) -> tuple[dict[str, Any], bool]:
        """Issue (once per key) a certificate for the CSR; returns (view, created). The
        ACME server passes ``authorize`` (raises ApiError unless its validations cover the
        names; else the account's verified domains must) and ``mail_to`` (its contact)."""
        if not idem_key:
            raise ApiError(422, "bad_request", "an idempotency_key is required (field or "
                           "Idempotency-Key header)", field="idempotency_key")
        now = self.clock.now()
        cap = min(self.config["max_days"], br_max_days(now))
        days = self.config["default_days"] if days is None else days
        if not 1 <= days <= cap:
            raise ApiError(422, "bad_request", f"days={days}; 1 to {cap} allowed", field="days")
        csr_sha = hashlib.sha256(csr_pem.strip().encode()).hexdigest()
        bound = log.bind(account_id=account_id, idempotency_key=idem_key)
        seen = self.store.find_certificate(account_id=account_id, idem_key=idem_key)
        if seen:
            return self._repeat(seen, csr_sha), False
        try:
            csr, names = inspect_csr(csr_pem, self.blocklist)
        except CSRRejected as exc:
            bound.info("csr_refused", reason=exc.code, message=exc.message)
            raise ApiError(422, exc.code, exc.message, **exc.details) from None
        self._refuse_compromised(csr)
        (authorize or functools.partial(self._check_names, account_id))(names)
        with self.store.transaction():
            seen = self.store.find_certificate(account_id=account_id, idem_key=idem_key)
            if seen:  # a concurrent request with the same key won
                return self._repeat(seen, csr_sha), False
            issued = self.signer.issue(csr, names, now=now, days=days)
            row = {"serial": issued.serial, "account_id": account_id, "idem_key": idem_key,
                   "csr_sha256": csr_sha, "names": ",".join(names), "cert_pem": issued.pem,
                   "fingerprint": issued.fingerprint,
                   "not_before": format_instant(issued.cert.not_valid_before_utc),
                   "not_after": format_instant(issued.cert.not_valid_after_utc),
                   "created_at": format_instant(now)}
            self.store.insert_certificate(row)
            self.store.record("cert_issued", account_id, issued.serial, ",".join(names))
            message = self._mail_issued(account_id, row, mail_to)  # commits with the cert
        bound.info("cert_issued", serial=issued.serial, names=",".join(names), days=days)
        if message is not None:
            self.outbox.deliver(message)  # else the outbox's sender retries it
        return self._cert_view({**row, "revoked_at": None}), True

    def _repeat(self, seen: dict[str, Any], csr_sha: str) -> dict[str, Any]:
        if seen["csr_sha256"] != csr_sha:
            raise ApiError(409, "idempotency_key_reused", "this idempotency key was used for a "
                           "different CSR", serial=seen["serial"])
        return self._cert_view(seen)

    def _mail_issued(self, account_id: str, row: dict[str, Any],
                     mail_to: str | None = None) -> str | None:
        """Enqueue the issuance notice (inside the caller's transaction); its row id."""
        account = None if mail_to else self.store.find_account(account_id=account_id)
        address = mail_to or (account["email"] if account else None)
        if address is None:
            return None
        first = row["names"].split(",")[0]
        return self.outbox.enqueue(
            address, f"Your certificate for {first} (serial {row['serial']})", (
                f"The CA signed a certificate for {row['names'].replace(',', ', ')}.\n\n"
                f"Serial: {row['serial']}\nSHA256 Fingerprint: {row['fingerprint']}\n"
                f"Valid until: {row['not_after']}\n\n"
                f"{self.public_url}/certificates/{row['serial']}\n\n"
                "If you did not ask for it, revoke it and tell the CA's operator.\n"),
            kind="cert_issued", ref=row["serial"])

    def find_certificate(self, account_id: str, idem_key: str) -> dict[str, Any]:
        """What was issued for the key (committed state; safe on the event loop)."""
        row = self.store.find_certificate(account_id=account_id, idem_key=idem_key,
                                          committed=True)
        if row is None:
            raise ApiError(404, "not_found", f"nothing issued for idempotency key {idem_key!r}")
        return self._cert_view(row)

    def certificate(self, serial: str) -> dict[str, Any]:
        """A certificate by serial (committed state; safe on the event loop)."""
        row = self.store.find_certificate(serial=serial.lower(), committed=True)
        if row is None:
            raise ApiError(404, "not_found", f"no certificate with serial {serial}")
        return self._cert_view(row)

    def revoke(self, account_id: str, serial: str, reason: str) -> dict[str, Any]:
        """Revoke one of the account's certificates. A repeat changes nothing and answers
        with the first revocation's date and reason (``already: true``). After
        keyCompromise the certificate's key is refused in every later CSR."""
        flag = REASONS.get(reason.replace("_", "").replace(" ", "").lower())
        if flag is None:
            raise ApiError(422, "bad_reason", f"unknown revocation reason {reason!r}",
                           allowed=sorted({f.value for f in REASONS.values()}))
        row = self.store.find_certificate(serial=serial.lower())
        if row is None or row["account_id"] != account_id:
            raise ApiError(404, "not_found", f"no certificate {serial} on this account")
        spki = None
        if flag is x509.ReasonFlags.key_compromise:
            spki = spki_sha256(x509.load_pem_x509_certificate(row["cert_pem"].encode())
                               .public_key())
        revoked = self.store.revoke(row["serial"], flag.value, spki)
        row = self.store.find_certificate(serial=row["serial"]) or row
        if revoked:
            log.info("cert_revoked", account_id=account_id, serial=row["serial"],
                     reason=flag.value)
        return {"serial": row["serial"], "status": "revoked", "already": not revoked,
                "reason": row["revoke_reason"], "revoked_at": row["revoked_at"]}

    def _refuse_compromised(self, csr: x509.CertificateSigningRequest) -> None:
        """ApiError(422, key_compromised) when the CSR's key was revoked for keyCompromise."""
        seen = self.store.find_compromised_key(spki_sha256(csr.public_key()))
        if seen is not None:
            raise ApiError(422, "key_compromised", f"the CSR's public key is that of "
                           f"certificate {seen['serial']}, revoked for keyCompromise on "
                           f"{seen['revoked_at']}; make a new key", serial=seen["serial"])

    def crl_der(self) -> bytes:
        """The CRL (DER) of every revoked certificate, signed now by the intermediate."""
        now = self.clock.now()
        revoked = [(r["serial"], parse_instant(r["revoked_at"]), r["revoke_reason"])
                   for r in self.store.revoked()]
        return self.signer.crl(revoked, now=now, days=self.config["crl_days"],
                               number=int(now.timestamp()))
