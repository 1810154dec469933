"""Revoking a certificate at an ACME CA (RFC 8555 section 7.6), for ``certwright revoke``.

The request (``revokeCert``: the certificate's DER and the RFC 5280 reason code) is signed
either by the ACME account that the run used (its key under ``<state_dir>/acme/accounts/``,
a ``kid`` JWS) or by the certificate's own private key (a ``jwk`` JWS), which the RFC lets
anyone holding the key use. Which goes first:

* for ``keyCompromise``, the certificate's key when we have it: it proves the key is in the
  hands of whoever asks, and Let's Encrypt accepts keyCompromise only that way;
* otherwise the account; if the account is missing, or the CA says it may not revoke this
  certificate (``unauthorized``), the certificate's key.

Errors: :class:`AlreadyRevoked` when the CA says so (``alreadyRevoked``); PermanentError for
a refusal, StepError when the CA cannot be reached (both say what was tried and where).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, ES384, RS256
from josepy.jwk import JWKEC, JWKRSA

from certwright.errors import CertwrightError, PermanentError
from certwright.steps.acme.client import (
    Account,
    AcmeSession,
    account_folder,
    as_step_error,
    check_directory,
    load_account,
    read_json,
)

KEY_COMPROMISE = 1  # RFC 5280 CRLReason keyCompromise


class AlreadyRevoked(CertwrightError):
    """The CA had revoked the certificate already (it does not say when or why)."""


def _account_of_key(key_file: Path) -> Account:
    """An ``Account`` without a URL whose key is the certificate's: requests sign as jwk."""
    try:
        private = serialization.load_pem_private_key(key_file.read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise PermanentError(f"cannot read the certificate's key {key_file}: {exc}") from exc
    if isinstance(private, ec.EllipticCurvePrivateKey):
        alg = ES384 if private.curve.name == "secp384r1" else ES256
        return Account(key_file.parent, JWKEC(key=private), alg, None)
    if isinstance(private, rsa.RSAPrivateKey):
        return Account(key_file.parent, JWKRSA(key=private), RS256, None)
    raise PermanentError(f"{key_file} holds neither an EC nor an RSA key")


def params_of(inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {"directory": str(inputs.get("directory") or ""),
            "contact": inputs.get("contact") or None,
            "ca_bundle": inputs.get("ca_bundle") or None,
            "allow_insecure": inputs.get("allow_insecure") is True}


class _Unauthorized(PermanentError):
    """The CA does not let this signer revoke the certificate."""


def _send(params: Mapping[str, Any], account: Account, cert: x509.Certificate,
          code: int) -> None:
    directory = str(params["directory"])
    verify: str | bool = str(params["ca_bundle"]) if params.get("ca_bundle") else True
    doing = f"revoking serial {cert.serial_number:x} at {directory}"
    try:
        session = AcmeSession(directory, account, verify)
        session.client.revoke(cert, code)
    except messages.Error as err:
        if err.code == "alreadyRevoked":
            raise AlreadyRevoked(f"{doing}: the CA had revoked it already") from err
        if err.code == "unauthorized":
            raise _Unauthorized(str(as_step_error(err, doing))) from err
        raise as_step_error(err, doing) from err
    except (acme_errors.Error, requests.RequestException) as exc:
        raise as_step_error(exc, doing) from exc


def revoke_at_acme(state_dir: Path, inputs: Mapping[str, Any], cert: x509.Certificate,
                   code: int, key_file: Path | None) -> str:
    """Revoke ``cert`` at the ACME CA the run's ``inputs`` name, with reason ``code``;
    returns what signed the request ("the account" or "the certificate's key").
    See the module for the order and the errors."""
    params = params_of(inputs)
    directory = check_directory(params)
    own = key_file if key_file is not None and key_file.exists() else None
    if code == KEY_COMPROMISE and own is not None:
        _send(params, _account_of_key(own), cert, code)
        return "the certificate's key"
    folder = account_folder(state_dir, directory, params.get("contact"))
    meta = read_json(folder / "account.json") or {}
    if (folder / "account.key").exists() and meta.get("url"):
        try:
            _send(params, load_account(state_dir, params), cert, code)
        except _Unauthorized:
            if own is None:
                raise
        else:
            return "the account"
    elif own is None:
        raise PermanentError(f"no ACME account for {directory} (contact "
                             f"{params.get('contact') or 'none'}) in {folder}, and the "
                             "certificate's key is gone: nothing can sign the revocation")
    _send(params, _account_of_key(own), cert, code)
    return "the certificate's key"
