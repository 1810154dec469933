"""A hand-driven ACME client for tests of the built-in CA's ACME server: it signs what it
is told with josepy, so a test can send a wrong nonce, a foreign ``url`` or ``kid``, or an
``alg`` the server must refuse."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import josepy as jose
from cryptography.hazmat.primitives.asymmetric import ec

JOSE = "application/jose+json"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_key() -> jose.JWK:
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def sign(key: jose.JWK, payload: Any, protected: dict[str, Any],
         alg: str = "ES256") -> dict[str, str]:
    """A flattened JWS of ``payload`` (None: POST-as-GET) with exactly ``protected``."""
    body = b"" if payload is None else json.dumps(payload).encode()
    header = b64(json.dumps({"alg": alg, **protected}).encode())
    signer = jose.JWASignature.from_json(alg)
    signature = signer.sign(key.key, f"{header}.{b64(body)}".encode())
    return {"protected": header, "payload": b64(body), "signature": b64(signature)}


@dataclass
class Client:
    """One ACME account's view of the server at ``directory``."""

    http: httpx.Client
    directory_url: str
    key: jose.JWK = field(default_factory=new_key)
    kid: str | None = None
    _dir: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> dict[str, Any]:
        if not self._dir:
            self._dir = self.http.get(self.directory_url).json()
        return self._dir

    def nonce(self) -> str:
        return self.http.head(self.dir["newNonce"]).headers["Replay-Nonce"]

    def jwk(self) -> dict[str, Any]:
        return self.key.public_key().to_partial_json()

    def post(self, url: str, payload: Any, *, use_jwk: bool = False,
             header: dict[str, Any] | None = None, alg: str = "ES256",
             key: jose.JWK | None = None) -> httpx.Response:
        """POST a JWS signed by this account (kid), or by its key (jwk)."""
        protected: dict[str, Any] = {"nonce": self.nonce(), "url": url}
        if use_jwk or self.kid is None:
            protected["jwk"] = self.jwk()
        else:
            protected["kid"] = self.kid
        protected.update(header or {})
        body = sign(key or self.key, payload, {k: v for k, v in protected.items()
                                               if v is not None}, alg)
        return self.http.post(url, content=json.dumps(body), headers={"Content-Type": JOSE})

    def register(self, contact: str = "mailto:admin@acme.test") -> httpx.Response:
        r = self.post(self.dir["newAccount"], {"termsOfServiceAgreed": True,
                                               "contact": [contact]}, use_jwk=True)
        if r.status_code in (200, 201):
            self.kid = r.headers["Location"]
        return r

    def thumbprint(self) -> str:
        return b64(self.key.thumbprint())
