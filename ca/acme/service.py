"""The ACME server's shared objects and its resource views: :class:`AcmeService`.

It holds what every ACME request uses (the CA's :class:`~certwright.ca.service.CAService`,
the ``acme_*`` tables, the nonce book, the resolver, the settings) and renders accounts,
orders, authorizations and challenges as RFC 8555 JSON objects with their URLs. The work
itself lives in :mod:`.accounts` (accounts, key change), :mod:`.orders` (orders,
authorizations, challenges, finalize) and :mod:`.certs` (download, revocation).

Settings (docs/ca-limits.md): ``acme_http01_port``, ``acme_tlsalpn01_port``,
``acme_resolver``, ``acme_challenges``, ``acme_terms_of_service``, ``acme_caa_identities``,
``acme_caa``, ``acme_order_days``, ``acme_authz_days``, ``acme_ari_retry_hours``,
``acme_eab_required``, ``acme_eab_key_days``, ``acme_mail_verification``.
"""
from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from certwright.ca.acme.jws import KeyCache
from certwright.ca.acme.nonces import NonceBook
from certwright.ca.acme.problems import AcmeProblem
from certwright.ca.acme.store import AcmeStore, CommittedAcmeStore
from certwright.ca.acme.validate import Resolver
from certwright.ca.errors import SettingError
from certwright.ca.service import CAService
from certwright.clock import format_instant, parse_instant

#: Every challenge type the server can validate.
CHALLENGE_TYPES = ("http-01", "dns-01", "tls-alpn-01")

#: The ACME settings and their defaults (merged into the CA's config).
ACME_DEFAULTS: dict[str, Any] = {
    "acme_http01_port": 80,          # where http-01 GETs go
    "acme_tlsalpn01_port": 443,      # where tls-alpn-01 handshakes go
    "acme_resolver": "system",       # or "HOST:PORT" of a DNS server
    "acme_challenges": list(CHALLENGE_TYPES),
    "acme_terms_of_service": None,   # a URL shown in the directory's meta
    "acme_caa_identities": [],       # the CA's names in CAA issue records
    "acme_caa": True,                # check CAA (RFC 8659) at finalize
    "acme_order_days": 7,            # a pending order or authorization lives this long
    "acme_authz_days": 30,           # a valid authorization is reused this long
    "acme_ari_retry_hours": 6,       # Retry-After of a renewalInfo answer
    "acme_eab_required": False,      # every account bound to a CA account
    "acme_eab_key_days": 7,          # an unused EAB key lapses after this
    "acme_mail_verification": True,  # a bound account's mail-verified domains need no challenge
}


def _port(config: dict[str, Any], key: str) -> int:
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise SettingError(f"{key} {value!r}: expected a port number (1 to 65535)")
    return value


class AcmeService:
    """One CA's ACME server state (see the module docstring)."""

    def __init__(self, svc: CAService) -> None:
        self.ca = svc
        self.config = {**ACME_DEFAULTS, **{k: v for k, v in svc.config.items()
                                           if k.startswith("acme_")}}
        self.http01_port = _port(self.config, "acme_http01_port")
        self.tlsalpn01_port = _port(self.config, "acme_tlsalpn01_port")
        self.resolver = Resolver.from_setting(self.config["acme_resolver"])
        unknown = set(self.config["acme_challenges"]) - set(CHALLENGE_TYPES)
        if unknown:
            raise SettingError(f"acme_challenges: unknown type(s) {sorted(unknown)}; "
                               f"choose from {list(CHALLENGE_TYPES)}")
        self.challenge_types = tuple(self.config["acme_challenges"])
        self.store = AcmeStore(svc.store)
        self.nonces = NonceBook()
        self.keys = KeyCache()  # the accounts' parsed keys (jws.py)
        self.base = f"{svc.public_url}/acme"
        #: the AKI keyIdentifier of every certificate the CA issues (RFC 9773 certIDs)
        self.issuer_key_id = x509.SubjectKeyIdentifier.from_public_key(
            svc.signer.intermediate.public_key()).digest
        #: this service over the committed state (a read-only store): for reads on the
        #: event loop, which raise NeedsWriter where they would write (ca/acme/app.py)
        self.committed = copy.copy(self)
        self.committed.store = CommittedAcmeStore(svc.store)

    # -- time and URLs -------------------------------------------------------------------
    def now(self) -> datetime:
        return self.ca.clock.now()

    def later(self, days: int) -> str:
        return format_instant(self.now() + timedelta(days=days))

    def url(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    @property
    def account_prefix(self) -> str:
        return self.url("acct", "")

    def directory(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"website": self.ca.public_url,
                                "caaIdentities": list(self.config["acme_caa_identities"]),
                                "externalAccountRequired":
                                    bool(self.config["acme_eab_required"])}
        if self.config["acme_terms_of_service"]:
            meta["termsOfService"] = self.config["acme_terms_of_service"]
        return {"newNonce": self.url("new-nonce"), "newAccount": self.url("new-account"),
                "newOrder": self.url("new-order"), "revokeCert": self.url("revoke-cert"),
                "keyChange": self.url("key-change"),
                "renewalInfo": self.url("renewal-info"), "meta": meta}

    # -- views ---------------------------------------------------------------------------
    def account_view(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"status": row["status"], "contact": row["contact"],
                "orders": self.url("acct", row["id"], "orders")}

    def challenge_view(self, row: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {"type": row["type"], "url": self.url("chall", row["id"]),
                                "token": row["token"], "status": row["status"]}
        if row["validated"]:
            view["validated"] = row["validated"]
        if row["error"]:
            view["error"] = row["error"]
        return view

    def authz_view(self, row: dict[str, Any]) -> dict[str, Any]:
        challenges = self.store.challenges(row["id"])
        if row["status"] == "valid":  # only the challenge that validated it
            challenges = [c for c in challenges if c["status"] == "valid"] or challenges
        view: dict[str, Any] = {
            "identifier": {"type": "dns", "value": row["identifier"]},
            "status": self.authz_status(row), "expires": row["expires"],
            "challenges": [self.challenge_view(c) for c in challenges]}
        if row["wildcard"]:
            view["wildcard"] = True
        return view

    def authz_status(self, row: dict[str, Any]) -> str:
        """The status now (a pending or valid authorization past ``expires`` is expired)."""
        if row["status"] in ("pending", "valid") and parse_instant(row["expires"]) <= self.now():
            return "expired"
        return str(row["status"])

    def order_status(self, order: dict[str, Any]) -> str:
        """The order's status now, from its authorizations (stored when it changed)."""
        status = str(order["status"])
        if status == "pending":
            states = {self.authz_status(a) for a in self.store.order_authz(order["id"])}
            if states - {"pending", "valid"}:
                status = "invalid"
            elif states == {"valid"}:
                status = "ready"
        if status in ("pending", "ready") and parse_instant(order["expires"]) <= self.now():
            status = "invalid"
        if status != order["status"]:
            self.store.set_order(order["id"], status)
            order["status"] = status
        return status

    def order_view(self, order: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {
            "status": self.order_status(order), "expires": order["expires"],
            "identifiers": order["identifiers"],
            "authorizations": [self.url("authz", a["id"])
                               for a in self.store.order_authz(order["id"])],
            "finalize": self.url("order", order["id"], "finalize")}
        if order["serial"]:
            view["certificate"] = self.url("cert", order["serial"])
        if order["error"]:
            view["error"] = order["error"]
        if order["replaces"]:
            view["replaces"] = order["replaces"]
        return view

    def own(self, row: dict[str, Any] | None, account: dict[str, Any] | None,
            what: str) -> dict[str, Any]:
        """``row`` when it exists and belongs to ``account``; else 404 or unauthorized."""
        if row is None:
            raise AcmeProblem("malformed", f"no such {what}", status=404)
        if account is None or row["account_id"] != account["id"]:
            raise AcmeProblem("unauthorized", f"this {what} belongs to another account")
        return row
