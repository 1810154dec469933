"""External account binding (RFC 8555 section 7.3.4): ACME accounts bound to CA accounts,
and the CA account's mail-probe verifications standing in for challenges.

* A CA account (logged in: a bearer token of the JSON API) makes a key with
  ``POST /acme/eab-keys``: ``{"kid", "hmac_key"}`` (32 random bytes, base64url). A key
  binds one ACME account, once, within ``acme_eab_key_days`` (7) of its making.
* newAccount's ``externalAccountBinding`` is a JWS (HS256/384/512, verified by josepy)
  whose protected header names the key (``kid``) and the newAccount URL, and whose payload
  is the account's own JWK. ``acme_eab_required`` makes it mandatory (and says so in the
  directory's meta).
* An order of a bound account for a name under a domain its CA account verified by the
  mail probe, while that verification lasts, gets a valid authorization without a
  challenge when ``acme_mail_verification`` (the CA's policy: true by default) allows.

Hazard: the HMAC keys are kept in the CA's store as they are (a MAC needs the key); the
store is a 0600 file in the CA's 0700 folder, like the CA's own private keys.
"""
from __future__ import annotations

import base64
import json
import secrets
from datetime import timedelta
from typing import Any

from josepy.errors import DeserializationError
from josepy.jwk import JWKOct
from josepy.jws import JWS

from certwright.ca.acme.jws import Verified, _parse, b64decode
from certwright.ca.acme.problems import AcmeProblem
from certwright.ca.acme.service import AcmeService
from certwright.clock import format_instant, parse_instant

MAC_ALGORITHMS = ("HS256", "HS384", "HS512")


def create_key(acme: AcmeService, ca_account_id: str) -> dict[str, str]:
    """A new EAB key of the CA account: its kid and its HMAC key (shown once)."""
    kid = "eab_" + secrets.token_urlsafe(12)
    raw = secrets.token_bytes(32)
    expires = acme.now() + timedelta(days=int(acme.config["acme_eab_key_days"]))
    acme.store.create_eab_key(kid, ca_account_id, base64.urlsafe_b64encode(raw).decode(),
                              format_instant(expires))
    acme.ca.store.record("acme_eab_key_created", ca_account_id, kid)
    return {"kid": kid, "hmac_key": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}


def bind(acme: AcmeService, req: Verified, eab: Any) -> str | None:
    """The CA account that the binding ``eab`` names (None without one); raises
    externalAccountRequired, malformed or unauthorized. Marks the key used in the
    caller's transaction."""
    if eab is None:
        if acme.config["acme_eab_required"]:
            raise AcmeProblem("externalAccountRequired", "this CA binds every ACME account "
                              "to a CA account: POST /acme/eab-keys (logged in) for a key")
        return None
    inner, protected = _parse(json.dumps(eab).encode())
    if protected.get("alg") not in MAC_ALGORITHMS or "nonce" in protected:
        raise AcmeProblem("malformed", "the externalAccountBinding must be a MAC (HS256, "
                          "HS384 or HS512) with no nonce")
    if protected.get("url") != acme.url("new-account"):
        raise AcmeProblem("malformed", "the externalAccountBinding's url is not newAccount's")
    key = acme.store.find_eab_key(str(protected.get("kid")))
    now = acme.now()
    if key is None or key["bound_to"] is not None or parse_instant(key["expires"]) <= now:
        raise AcmeProblem("unauthorized", "the externalAccountBinding's kid is unknown, "
                          "used or expired")
    mac = JWKOct(key=base64.urlsafe_b64decode(key["hmac_key"]))
    try:
        ok = JWS.from_json(inner).verify(mac)
    except (DeserializationError, ValueError, TypeError):
        ok = False
    if not ok:
        raise AcmeProblem("unauthorized", "the externalAccountBinding's MAC does not verify")
    try:
        bound_jwk = json.loads(b64decode(inner["payload"], "the binding's payload"))
    except ValueError:
        raise AcmeProblem("malformed", "the binding's payload is not a JWK") from None
    if bound_jwk != req.jwk.to_partial_json():
        raise AcmeProblem("malformed", "the externalAccountBinding binds another key than "
                          "the account's")
    if not acme.store.use_eab_key(key["kid"], req.thumbprint):
        raise AcmeProblem("unauthorized", "the externalAccountBinding's kid is used")
    return str(key["ca_account_id"])


def mail_verified(acme: AcmeService, account: dict[str, Any], base: str) -> str | None:
    """When the account's CA account verified ``base`` (or a domain above it) by the mail
    probe and that still counts: the instant the verification lapses; else None."""
    ca_account = account.get("ca_account_id")
    if not ca_account or not acme.config["acme_mail_verification"]:
        return None
    labels = base.split(".")
    candidates = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    for domain in acme.ca.issuing.list_domains(ca_account, candidates):
        if domain["status"] == "verified":
            return str(domain["verification_expires"])
    return None
