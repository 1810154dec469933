"""ACME certificate download and revocation (RFC 8555 sections 7.4.2 and 7.6).

Download: ``application/pem-certificate-chain``, the certificate and the intermediate;
``/cert/SERIAL/1`` is the alternate chain that adds the root (for clients that want the
whole path), announced by a ``Link: rel="alternate"`` header. Only the account that
ordered it may download it (POST-as-GET).

Revocation: signed by the account that ordered the certificate (``kid``) or by the
certificate's own key (``jwk``: whoever holds the key may revoke). It goes through the
issuing core's :meth:`Issuing.revoke`, so the CRL and the keyCompromise blocklist are the
mail process's; a second revocation is ``alreadyRevoked``. Reasons are RFC 5280 codes;
those the Baseline Requirements let a subscriber choose (0, 1, 3, 4, 5) are accepted.
"""
from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.ca.acme.jws import Verified, b64decode
from certwright.ca.acme.problems import AcmeProblem, from_api_error
from certwright.ca.acme.service import AcmeService
from certwright.ca.errors import ApiError

#: RFC 5280 reason codes a subscriber may give, and the issuing core's names for them.
REASON_CODES = {0: "unspecified", 1: "keyCompromise", 3: "affiliationChanged",
                4: "superseded", 5: "cessationOfOperation"}


def chain(acme: AcmeService, req: Verified, serial: str, alternate: int = 0
          ) -> tuple[str, dict[str, str]]:
    """(the PEM chain, headers) of one of the account's certificates."""
    row = acme.ca.store.find_certificate(serial=serial.lower(), committed=True)
    acme.own(row, req.account, "certificate")
    if alternate not in (0, 1):
        raise AcmeProblem("malformed", f"no alternate chain {alternate}", status=404)
    signer = acme.ca.signer
    pem = (row or {})["cert_pem"] + signer.pem("intermediate")
    if alternate:
        pem += signer.pem("root")
    other = acme.url("cert", serial) + ("" if alternate else "/1")
    return pem, {"Link": f'<{other}>;rel="alternate"'}


def revoke(acme: AcmeService, req: Verified) -> None:
    """Revoke the certificate in the payload (see the module docstring)."""
    payload = req.payload or {}
    der = b64decode(payload.get("certificate") or "", "certificate")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise AcmeProblem("malformed", "certificate is not a DER X.509 certificate") from None
    reason = payload.get("reason", 0)
    if reason not in REASON_CODES or isinstance(reason, bool):
        raise AcmeProblem("badRevocationReason", f"reason {reason!r}; a subscriber may give "
                          f"{sorted(REASON_CODES)}")
    serial = format(cert.serial_number, "x")
    row = acme.ca.store.find_certificate(serial=serial)
    if row is None or row["cert_pem"].strip() != cert.public_bytes(
            serialization.Encoding.PEM).decode().strip():
        raise AcmeProblem("malformed", "this CA did not issue that certificate", status=404)
    if req.account is not None:
        if row["account_id"] != req.account["id"]:
            raise AcmeProblem("unauthorized", "the certificate was ordered by another "
                              "account; sign with its key to revoke it")
    elif _spki(req.jwk.key) != _spki(cert.public_key()):
        raise AcmeProblem("unauthorized", "the jwk is not the certificate's key")
    if row["revoked_at"] is not None:
        raise AcmeProblem("alreadyRevoked", f"certificate {serial} was revoked on "
                          f"{row['revoked_at']}")
    try:
        done = acme.ca.issuing.revoke(row["account_id"], serial, REASON_CODES[reason])
    except ApiError as exc:
        raise from_api_error(exc) from None
    if done["already"]:
        raise AcmeProblem("alreadyRevoked", f"certificate {serial} was revoked on "
                          f"{done['revoked_at']}")


def _spki(key: Any) -> bytes:
    public = key.public_key() if hasattr(key, "public_key") else key
    return bytes(public.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
