"""ACME orders, authorizations, challenges and finalize (RFC 8555 sections 7.4, 7.5, 7.1.6).

Contract:

* newOrder takes DNS identifiers only (a wildcard's authorization is for its base name and
  offers dns-01 alone), refuses what the CA never certifies (not a DNS name, a public
  suffix) with ``rejectedIdentifier`` naming it, and reuses a valid authorization of the
  same account for the same name until it expires.
* A challenge is validated once, in the request that answers it (synchronously, so the
  answer already says valid or invalid); answering it again returns its state. Only the
  account that owns the authorization may answer it.
* Finalize issues through the CA's issuing core (:meth:`Issuing.sign`: the same policy
  checks, store, issuance mail and CRL as the mail process) under the idempotency key
  ``acme-order:ID``, so a retried finalize never issues twice. The CSR must name exactly
  the order's identifiers (``badCSR`` naming the first that differs). CAA is checked
  then, at issuance (:mod:`.caa`).
"""
from __future__ import annotations

from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.ca.acme.caa import check_caa
from certwright.ca.acme.eab import mail_verified
from certwright.ca.acme.jws import Verified, b64decode
from certwright.ca.acme.problems import AcmeProblem, from_api_error, limit
from certwright.ca.acme.renewal import check_replaces
from certwright.ca.acme.service import AcmeService
from certwright.ca.acme.validate import (
    key_authorization,
    validate_dns01,
    validate_http01,
    validate_tlsalpn01,
)
from certwright.ca.errors import ApiError
from certwright.ca.signer import CSRRejected, refuse_public_suffix, valid_dns_name
from certwright.clock import format_instant
from certwright.domains import normalize_domain

log = structlog.get_logger("ca.acme")
Answer = tuple[int, dict[str, Any], dict[str, str]]
RETRY = {"Retry-After": "1"}
MAX_IDENTIFIERS = 100


def _identifiers(payload: dict[str, Any]) -> list[str]:
    """The order's DNS names (normalised, no repeats); problems name the bad one."""
    raw = payload.get("identifiers")
    if not isinstance(raw, list) or not raw:
        raise AcmeProblem("malformed", "newOrder needs a non-empty identifiers list")
    if len(raw) > MAX_IDENTIFIERS:
        raise AcmeProblem("rejectedIdentifier", f"{len(raw)} identifiers; at most "
                          f"{MAX_IDENTIFIERS} per order")
    if "notBefore" in payload or "notAfter" in payload:
        raise AcmeProblem("malformed", "notBefore and notAfter are not supported: the CA "
                          "sets the validity")
    names: list[str] = []
    for ident in raw:
        if not isinstance(ident, dict) or ident.get("type") != "dns":
            raise AcmeProblem("unsupportedIdentifier", f"identifier {ident!r}: only type "
                              '"dns" is supported')
        value = ident.get("value")
        name = normalize_domain(value) if isinstance(value, str) else ""
        if not valid_dns_name(name, wildcard=True):
            raise AcmeProblem("rejectedIdentifier", f"{value!r} is not a DNS name the CA "
                              "certifies", identifier=str(value))
        try:
            refuse_public_suffix(name)
        except CSRRejected as exc:
            raise AcmeProblem("rejectedIdentifier", exc.message, identifier=name) from None
        names.append(name)
    return list(dict.fromkeys(names))


def new_order(acme: AcmeService, req: Verified) -> Answer:
    """Create an order and its authorizations (reusing the account's valid ones)."""
    account = req.account or {}
    names = _identifiers(req.payload or {})
    replaces = (req.payload or {}).get("replaces")
    if replaces is not None and not isinstance(replaces, str):
        raise AcmeProblem("malformed", "replaces must be a certificate identifier string")
    limit(acme.ca.limiter, "acme_order.account", account["id"])
    now = format_instant(acme.now())
    authz_ids = []
    with acme.store.transaction():
        if replaces is not None:
            check_replaces(acme, account, replaces, names)
        for name in names:
            base, wildcard = name.removeprefix("*."), name.startswith("*.")
            found = acme.store.reusable_authz(account["id"], base, wildcard, now)
            if found is not None:
                authz_ids.append(found["id"])
                continue
            lapses = mail_verified(acme, account, base)
            if lapses is not None:  # verified by the mail probe: no challenge (eab.py)
                authz_ids.append(acme.store.create_authz(
                    account["id"], base, wildcard, min(lapses, acme.later(
                        acme.config["acme_authz_days"])), [], status="valid"))
                continue
            kinds = [k for k in acme.challenge_types if k == "dns-01" or not wildcard]
            if not kinds:
                raise AcmeProblem("rejectedIdentifier", f"{name}: no challenge type the CA "
                                  "offers can validate a wildcard", identifier=name)
            authz_ids.append(acme.store.create_authz(
                account["id"], base, wildcard, acme.later(acme.config["acme_order_days"]),
                kinds))
        order_id = acme.store.create_order(
            account["id"], [{"type": "dns", "value": n} for n in names], authz_ids,
            acme.later(acme.config["acme_order_days"]), replaces)
    log.info("acme_order_created", account_id=account["id"], order_id=order_id,
             names=",".join(names))
    order = acme.store.find_order(order_id) or {}
    return 201, acme.order_view(order), {"Location": acme.url("order", order_id)}


def get_order(acme: AcmeService, req: Verified, order_id: str) -> Answer:
    order = acme.own(acme.store.find_order(order_id), req.account, "order")
    view = acme.order_view(order)
    return 200, view, RETRY if view["status"] in ("pending", "processing") else {}


def get_authz(acme: AcmeService, req: Verified, authz_id: str) -> Answer:
    """Read an authorization, or deactivate it (``{"status": "deactivated"}``)."""
    authz = acme.own(acme.store.find_authz(authz_id), req.account, "authorization")
    payload = req.payload or {}
    if payload:
        if payload != {"status": "deactivated"}:
            raise AcmeProblem("malformed", "an authorization can only be deactivated")
        if acme.authz_status(authz) not in ("pending", "valid"):
            raise AcmeProblem("malformed", f"the authorization is "
                              f"{acme.authz_status(authz)}; it cannot be deactivated")
        acme.store.set_authz(authz_id, "deactivated")
        authz["status"] = "deactivated"
    view = acme.authz_view(authz)
    return 200, view, RETRY if view["status"] == "pending" else {}


def answer_challenge(acme: AcmeService, req: Verified, challenge_id: str) -> Answer:
    """Validate the challenge (once) and record the result on its authorization."""
    chall = acme.store.find_challenge(challenge_id)
    if chall is None:
        raise AcmeProblem("malformed", "no such challenge", status=404)
    authz = acme.own(acme.store.find_authz(chall["authz_id"]), req.account, "challenge")
    links = {"Link": f'<{acme.url("authz", authz["id"])}>;rel="up"'}
    if req.payload is None or chall["status"] != "pending" or \
            acme.authz_status(authz) != "pending":
        return 200, acme.challenge_view(chall), links  # POST-as-GET, or answered already
    name = authz["identifier"]
    key_auth = key_authorization(chall["token"], req.thumbprint)
    try:
        if chall["type"] == "http-01":
            problem = validate_http01(name, chall["token"], key_auth,
                                      resolver=acme.resolver, port=acme.http01_port)
        elif chall["type"] == "tls-alpn-01":
            problem = validate_tlsalpn01(name, key_auth, resolver=acme.resolver,
                                         port=acme.tlsalpn01_port)
        else:
            problem = validate_dns01(name, key_auth, resolver=acme.resolver)
    except AcmeProblem as exc:
        problem = exc
    now = format_instant(acme.now())
    with acme.store.transaction():
        if problem is None:
            acme.store.set_challenge(challenge_id, "valid", validated=now)
            # a valid authorization is reused for acme_authz_days from now
            acme.store.set_authz(authz["id"], "valid",
                                 expires=acme.later(acme.config["acme_authz_days"]))
        else:
            acme.store.set_challenge(challenge_id, "invalid", error=problem.body())
            acme.store.set_authz(authz["id"], "invalid")
    log.info("acme_challenge_validated" if problem is None else "acme_challenge_failed",
             challenge=chall["type"], name=name, detail=None if problem is None else
             problem.detail)
    return 200, acme.challenge_view(acme.store.find_challenge(challenge_id) or chall), links


def finalize(acme: AcmeService, req: Verified, order_id: str) -> Answer:
    """Issue the order's certificate for the CSR through the CA's issuing core."""
    account = req.account or {}
    order = acme.own(acme.store.find_order(order_id), account, "order")
    status = acme.order_status(order)
    if status != "ready":
        raise AcmeProblem("orderNotReady", f"the order is {status}, not ready")
    csr_b64 = (req.payload or {}).get("csr")
    der = b64decode(csr_b64 if isinstance(csr_b64, str) else "", "csr")
    try:
        pem = x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM).decode()
    except ValueError as exc:
        raise AcmeProblem("badCSR", f"the csr is not a DER PKCS#10 request: {exc}") from None
    wanted = [i["value"] for i in order["identifiers"]]
    if acme.config["acme_caa"]:
        for name in wanted:
            refused = check_caa(name, resolver=acme.resolver,
                                identities=list(acme.config["acme_caa_identities"]))
            if refused is not None:
                raise refused

    def authorize(names: list[str]) -> None:
        extra = [n for n in names if n not in wanted]
        missing = [n for n in wanted if n not in names]
        if extra or missing:
            which = (extra or missing)[0]
            raise ApiError(400, "bad_csr", f"the CSR {'names' if extra else 'lacks'} {which}"
                           f", {'not in' if extra else 'of'} the order", name=which)

    contact = next((c.removeprefix("mailto:") for c in account.get("contact") or []), None)
    try:
        issued, _ = acme.ca.issuing.sign(account["id"], pem, f"acme-order:{order_id}",
                                         authorize=authorize, mail_to=contact)
    except ApiError as exc:
        raise from_api_error(exc) from None
    acme.store.set_order(order_id, "valid", serial=issued["serial"])
    order = acme.store.find_order(order_id) or order
    return 200, acme.order_view(order), {"Location": acme.url("order", order_id)}


def account_orders(acme: AcmeService, req: Verified, account_id: str) -> Answer:
    """The account's orders (RFC 8555 section 7.1.2.1): their URLs, all on one page."""
    if (req.account or {}).get("id") != account_id:
        raise AcmeProblem("unauthorized", "these are another account's orders")
    urls = [acme.url("order", o["id"]) for o in acme.store.account_orders(account_id)]
    return 200, {"orders": urls}, {}
