"""Verifying the JWS of an ACME request (RFC 8555 section 6.2): :func:`verify_request`.

Order of checks (each refusal an :class:`AcmeProblem` of its RFC type):

1. the body is a flattened JWS JSON object (``protected``, ``payload``, ``signature``,
   no unprotected ``header``, no ``signatures`` list): else ``malformed``;
2. ``alg`` is an asymmetric algorithm we accept (:data:`ALGORITHMS`; never ``none``, never
   an HMAC): else ``badSignatureAlgorithm`` listing the accepted ones;
3. ``nonce`` is present and one this server issued and nobody used: else ``badNonce``
   (the answer carries a fresh nonce, as every answer does);
4. ``url`` is exactly the URL the request was sent to: else ``unauthorized``;
5. exactly one of ``jwk`` (newAccount, revokeCert by the certificate's key) and ``kid``
   (everything else; an account URL of this server, of a ``valid`` account): else
   ``malformed``, ``accountDoesNotExist`` or ``unauthorized``;
6. the signature verifies with that key (josepy's algorithm, over the signing input as
   it was sent; no cryptography of ours): else ``malformed``.

A nonce is spent at step 3 whatever happens later, so a request is never replayed.

An account's key is parsed and checked once per process: :class:`KeyCache` keeps the JWK
and its thumbprint by the key's JSON text (a key change stores another text, so it is
never served stale); the account itself (its status, its current key) is read from the
store on every request.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from josepy.errors import DeserializationError
from josepy.jwa import JWASignature
from josepy.jwk import JWK

from certwright.ca.acme.nonces import NonceBook
from certwright.ca.acme.problems import AcmeProblem
from certwright.ca.acme.store import AcmeStore
from certwright.ca.signer import CSRRejected, check_key

#: The signature algorithms accepted (RFC 8555 section 6.2: asymmetric only).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512")


@dataclass(frozen=True)
class Verified:
    """A request whose JWS verified: its payload (None for POST-as-GET), the key that
    signed it, its thumbprint, the account (None when it was signed by a ``jwk``), its
    protected header and the client's address."""

    payload: dict[str, Any] | None
    jwk: JWK
    thumbprint: str
    account: dict[str, Any] | None
    protected: dict[str, Any]
    client: str = ""  # the peer's address (rate limits), set by the app


def b64decode(text: str, what: str) -> bytes:
    """base64url without padding, as JOSE writes it; ``malformed`` naming ``what``."""
    if not isinstance(text, str) or "=" in text:
        raise AcmeProblem("malformed", f"{what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise AcmeProblem("malformed", f"{what} is not base64url") from None


def thumbprint(jwk: JWK) -> str:
    """The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK."""
    return base64.urlsafe_b64encode(jwk.thumbprint()).rstrip(b"=").decode()


def load_jwk(obj: Any) -> JWK:
    """A public JWK from its JSON object; ``malformed`` for a private or unusable one."""
    if not isinstance(obj, dict) or obj.get("kty") not in ("RSA", "EC"):
        raise AcmeProblem("badPublicKey", "the jwk must be an RSA or EC public key")
    if "d" in obj or "p" in obj:
        raise AcmeProblem("malformed", "the jwk holds a private key; send the public key")
    try:
        key = JWK.from_json(obj)
    except (DeserializationError, ValueError, TypeError) as exc:
        raise AcmeProblem("badPublicKey", f"the jwk cannot be read: {exc}") from None
    if not isinstance(key, JWK):
        raise AcmeProblem("badPublicKey", "the jwk is not a key")
    try:  # the same rules as a certificate's key: RSA 2048-4096, e=65537, P-256/P-384
        check_key(serialization.load_der_public_key(key.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)))
    except CSRRejected as exc:
        raise AcmeProblem("badPublicKey", f"account key refused: {exc.message}") from None
    return key


class KeyCache:
    """Parsed account keys and their thumbprints by their JSON text, at most ``size``
    (the oldest dropped first). Safe to share between threads: a race parses a key
    twice, never serves a wrong one."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._keys: dict[str, tuple[JWK, str]] = {}

    def load(self, obj: Any) -> tuple[JWK, str]:
        """The key of a stored account's ``jwk`` and its thumbprint; as :func:`load_jwk`."""
        text = json.dumps(obj, sort_keys=True)
        found = self._keys.get(text)
        if found is None:
            key = load_jwk(obj)
            found = (key, thumbprint(key))
            while len(self._keys) >= self._size:
                self._keys.pop(next(iter(self._keys)), None)
            self._keys[text] = found
        return found


def _parse(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JWS object, its decoded protected header)."""
    try:
        jws = json.loads(body)
    except ValueError:
        raise AcmeProblem("malformed", "the request body is not JSON (a JWS is "
                          "expected, Content-Type application/jose+json)") from None
    if not isinstance(jws, dict) or "signatures" in jws or "header" in jws:
        raise AcmeProblem("malformed", "a flattened JWS with only a protected header is "
                          "required (RFC 8555 section 6.2)")
    missing = [k for k in ("protected", "payload", "signature") if not isinstance(
        jws.get(k), str)]
    if missing:
        raise AcmeProblem("malformed", f"the JWS has no {', '.join(missing)}")
    try:
        protected = json.loads(b64decode(jws["protected"], "the protected header"))
    except ValueError:
        raise AcmeProblem("malformed", "the protected header is not JSON") from None
    if not isinstance(protected, dict):
        raise AcmeProblem("malformed", "the protected header is not a JSON object")
    return jws, protected


def verify_request(body: bytes, *, url: str, nonces: NonceBook, store: AcmeStore,
                   account_url: str, jwk_allowed: bool = False,
                   kid_allowed: bool = True, keys: KeyCache | None = None) -> Verified:
    """Check ``body`` as a JWS sent to ``url`` (see the module docstring); raises
    AcmeProblem. ``account_url`` is the prefix of this server's account URLs; ``keys``
    keeps the accounts' parsed keys between requests."""
    jws, protected = _parse(body)
    alg = protected.get("alg")
    if alg not in ALGORITHMS:
        raise AcmeProblem("badSignatureAlgorithm", f"alg {alg!r} is not accepted; use one "
                          f"of {', '.join(ALGORITHMS)}", algorithms=list(ALGORITHMS))
    nonce = protected.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise AcmeProblem("badNonce", "the protected header has no nonce")
    if not nonces.consume(nonce):
        raise AcmeProblem("badNonce", "the nonce is not one this server issued, or was "
                          "used already; retry with the Replay-Nonce of this answer")
    if protected.get("url") != url:
        raise AcmeProblem("unauthorized", f"the JWS url {protected.get('url')!r} is not "
                          f"this request's URL {url}")
    has_jwk, has_kid = "jwk" in protected, "kid" in protected
    if has_jwk == has_kid:
        raise AcmeProblem("malformed", "the protected header needs exactly one of jwk and kid")
    account = None
    if has_jwk:
        if not jwk_allowed:
            raise AcmeProblem("malformed", "this request must be signed by an account "
                              "(kid), not a jwk")
        key = load_jwk(protected["jwk"])
        printed = thumbprint(key)
    else:
        if not kid_allowed:
            raise AcmeProblem("malformed", "this request must carry its key as a jwk, not "
                              "a kid")
        kid = protected["kid"]
        account_id = kid.removeprefix(account_url) if isinstance(kid, str) else ""
        account = store.find_account(account_id=account_id) if kid != account_id else None
        if account is None:
            raise AcmeProblem("accountDoesNotExist", f"no account {kid!r} on this server")
        if account["status"] != "valid":
            raise AcmeProblem("unauthorized", f"the account is {account['status']}")
        key, printed = (keys or KeyCache(1)).load(account["jwk"])
    signature = b64decode(jws["signature"], "the signature")
    try:  # josepy's algorithm over the JWS Signing Input as sent (RFC 7515 section 5.2)
        ok = JWASignature.from_json(alg).verify(
            key.key, f"{jws['protected']}.{jws['payload']}".encode("ascii"), signature)
    except Exception:  # noqa: BLE001  (a key of another type than alg, a bad encoding)
        ok = False
    if not ok:
        raise AcmeProblem("malformed", f"the JWS signature does not verify ({alg} with the "
                          f"{'jwk' if has_jwk else 'account key'})")
    raw = b64decode(jws["payload"], "the payload")
    payload = None
    if raw:
        try:
            payload = json.loads(raw)
        except ValueError:
            raise AcmeProblem("malformed", "the payload is not JSON") from None
        if not isinstance(payload, dict):
            raise AcmeProblem("malformed", "the payload is not a JSON object")
    return Verified(payload, key, printed, account, protected)
