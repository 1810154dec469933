"""ACME accounts: newAccount, account update and deactivation, key change (RFC 8555
sections 7.3.1 to 7.3.6).

Contract: one account per key (its RFC 7638 thumbprint); newAccount with a known key
answers that account (200) and changes nothing; ``onlyReturnExisting`` never creates.
A deactivated account is refused on every later request (``unauthorized``), for good. A
key change is atomic: the new key is checked to be no other account's inside the same
store transaction that moves the account to it.
"""
from __future__ import annotations

import json
from typing import Any

from josepy import b64 as jose_b64
from josepy.jws import JWS

from certwright.ca.acme import eab
from certwright.ca.acme.jws import ALGORITHMS, Verified, _parse, load_jwk, thumbprint
from certwright.ca.acme.problems import AcmeProblem, limit
from certwright.ca.acme.service import AcmeService
from certwright.mail.addresses import HostileMail, parse_address_list

Answer = tuple[int, dict[str, Any], dict[str, str]]


def _contacts(value: Any) -> list[str]:
    """The contact list, each a ``mailto:`` of one valid address; else invalidContact or
    unsupportedContact."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise AcmeProblem("invalidContact", "contact must be a list of mailto: URLs")
    out = []
    for contact in value[:10]:
        scheme, _, address = contact.partition(":")
        if scheme.lower() != "mailto":
            raise AcmeProblem("unsupportedContact", f"contact {contact!r}: only mailto: "
                              "URLs are supported")
        try:
            parsed = parse_address_list(address)
        except HostileMail:
            parsed = []
        if "?" in address or len(parsed) != 1 or parsed[0] != address.rpartition("@")[0] \
                + "@" + address.rpartition("@")[2].lower():
            raise AcmeProblem("invalidContact", f"contact {contact!r} is not one mail "
                              "address")
        out.append(f"mailto:{address}")
    return out


def new_account(acme: AcmeService, req: Verified) -> Answer:
    """Create the key's account, or answer the one it has."""
    payload = req.payload or {}
    found = acme.store.find_account(thumbprint=req.thumbprint)
    if found is None:
        if payload.get("onlyReturnExisting") is True:
            raise AcmeProblem("accountDoesNotExist", "no account holds this key")
        if acme.config["acme_terms_of_service"] and payload.get(
                "termsOfServiceAgreed") is not True:
            raise AcmeProblem("userActionRequired", "agree to the terms of service "
                              f"({acme.config['acme_terms_of_service']}) first")
        contact = _contacts(payload.get("contact"))
        limit(acme.ca.limiter, "acme_account.client", req.client)
        with acme.store.transaction():  # the key is used only if the account is made
            ca_account = eab.bind(acme, req, payload.get("externalAccountBinding"))
            row = acme.store.create_account(req.thumbprint, req.jwk.to_partial_json(),
                                            contact, ca_account)
        acme.ca.store.record("acme_account_created", row["id"], req.thumbprint)
        status = 201
    else:
        row, status = found, 200
    location = acme.url("acct", row["id"])
    return status, acme.account_view(row), {"Location": location}


def update_account(acme: AcmeService, req: Verified, account_id: str) -> Answer:
    """POST to the account URL: read it (empty payload), change its contact, or
    deactivate it (``status: deactivated``)."""
    account = req.account or {}
    if account.get("id") != account_id:
        raise AcmeProblem("unauthorized", "the kid is not this account's URL")
    payload = req.payload or {}
    changes: dict[str, Any] = {}
    if "contact" in payload:
        changes["contact"] = _contacts(payload["contact"])
    if "status" in payload:
        if payload["status"] != "deactivated":
            raise AcmeProblem("malformed", "an account's status can only be set to "
                              '"deactivated"')
        changes["status"] = "deactivated"
    if changes:
        acme.store.update_account(account_id, **changes)
        if changes.get("status") == "deactivated":
            acme.ca.store.record("acme_account_deactivated", account_id)
    row = acme.store.find_account(account_id=account_id) or account
    return 200, acme.account_view({**row, **changes}), {}


def key_change(acme: AcmeService, req: Verified, url: str) -> Answer:
    """Move the account to the key of the inner JWS (RFC 8555 section 7.3.5)."""
    account = req.account or {}
    inner, protected = _parse(json.dumps(req.payload or {}).encode())
    if protected.get("alg") not in ALGORITHMS:
        raise AcmeProblem("badSignatureAlgorithm", "the inner JWS's alg is not accepted",
                          algorithms=list(ALGORITHMS))
    if "jwk" not in protected or "kid" in protected or "nonce" in protected:
        raise AcmeProblem("malformed", "the inner JWS must carry the new key as jwk, and "
                          "no kid or nonce")
    if protected.get("url") != url:
        raise AcmeProblem("malformed", "the inner JWS's url is not the keyChange URL")
    new_key = load_jwk(protected["jwk"])
    try:
        ok = JWS.from_json(inner).verify(new_key)
    except Exception:  # noqa: BLE001  (a key of another type than alg, a bad encoding)
        ok = False
    if not ok:
        raise AcmeProblem("malformed", "the inner JWS's signature does not verify with its jwk")
    try:
        body = json.loads(jose_b64.b64decode(inner["payload"]))
    except ValueError:
        raise AcmeProblem("malformed", "the inner payload is not JSON") from None
    if not isinstance(body, dict) or body.get("account") != acme.url("acct", account["id"]):
        raise AcmeProblem("malformed", "the inner payload's account is not the signer's")
    try:
        old_ok = load_jwk(body.get("oldKey")).thumbprint() == req.jwk.thumbprint()
    except AcmeProblem:
        old_ok = False
    if not old_ok:
        raise AcmeProblem("malformed", "the inner payload's oldKey is not the account's key")
    new_print = thumbprint(new_key)
    with acme.store.transaction():
        holder = acme.store.find_account(thumbprint=new_print)
        if holder is not None:
            raise AcmeProblem("conflict", "the new key is another account's", status=409,
                              headers={"Location": acme.url("acct", holder["id"])})
        acme.store.update_account(account["id"], jwk=new_key.to_partial_json(),
                                  thumbprint=new_print)
    acme.ca.store.record("acme_key_changed", account["id"], new_print)
    row = acme.store.find_account(account_id=account["id"]) or account
    return 200, acme.account_view(row), {}
