"""ACME problem documents (RFC 8555 section 6.7, RFC 7807): :class:`AcmeProblem`.

Everything the ACME server refuses is raised as an :class:`AcmeProblem` and answered as
``application/problem+json`` with the ``urn:ietf:params:acme:error:`` type, a human
``detail`` and, where one identifier failed, ``subproblems`` naming it. The CA's own
refusals (:class:`~certwright.ca.errors.ApiError` from the issuing core) are translated by
:func:`from_api_error`, so a CSR refused by the policy reads the same in both protocols.

Hazard: ``detail`` reaches the client verbatim: never put a secret in it.
"""
from __future__ import annotations

from typing import Any

from certwright.ca.errors import ApiError

URN = "urn:ietf:params:acme:error:"

#: The HTTP status of each problem type (RFC 8555 section 6.7 and Boulder's practice).
STATUS: dict[str, int] = {
    "accountDoesNotExist": 400, "alreadyRevoked": 400, "badCSR": 400, "badNonce": 400,
    "badPublicKey": 400, "badRevocationReason": 400, "badSignatureAlgorithm": 400,
    "caa": 403, "compound": 403, "connection": 400, "dns": 400,
    "externalAccountRequired": 400, "incorrectResponse": 403, "invalidContact": 400,
    "malformed": 400, "orderNotReady": 403, "rateLimited": 429, "rejectedIdentifier": 400,
    "serverInternal": 500, "tls": 400, "unauthorized": 403, "unsupportedContact": 400,
    "unsupportedIdentifier": 400, "userActionRequired": 403, "badReplacement": 409,
    "notFound": 404, "conflict": 409, "alreadyReplaced": 409,
}

#: The issuing core's error codes, as ACME problem types.
_FROM_API: dict[str, str] = {
    "bad_csr": "badCSR", "weak_key": "badPublicKey", "key_compromised": "badPublicKey",
    "public_suffix": "rejectedIdentifier", "unverified_domain": "unauthorized",
    "rate_limited": "rateLimited", "not_found": "malformed", "bad_request": "malformed",
    "idempotency_key_reused": "conflict", "bad_reason": "badRevocationReason",
}


class AcmeProblem(Exception):
    """A refusal: ``kind`` is the short problem type (``badNonce``), ``detail`` says what
    was wrong; ``identifier`` (a DNS name) puts it in a subproblem; ``extra`` adds fields
    (``algorithms`` for badSignatureAlgorithm); ``headers`` go on the response."""

    def __init__(self, kind: str, detail: str, *, identifier: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.identifier = identifier
        self.status = status or STATUS.get(kind, 400)
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The problem document."""
        doc: dict[str, Any] = {"type": URN + self.kind, "detail": self.detail,
                               "status": self.status, **self.extra}
        if self.identifier is not None:
            doc["subproblems"] = [{"type": URN + self.kind, "detail": self.detail,
                                   "identifier": {"type": "dns", "value": self.identifier}}]
        return doc


def from_api_error(exc: ApiError) -> AcmeProblem:
    """The ACME problem for a refusal of the issuing core (the name it names, if any)."""
    kind = _FROM_API.get(exc.code, "malformed")
    name = exc.details.get("domain") or exc.details.get("name")
    headers = {}
    if exc.details.get("retry_after") is not None:
        headers["Retry-After"] = str(exc.details["retry_after"])
    return AcmeProblem(kind, exc.message, identifier=name if isinstance(name, str) else None,
                       headers=headers)


def limit(limiter: Any, name: str, key: str) -> None:
    """Spend a token of the CA's rate limit ``name`` for ``key``; rateLimited (429, with
    Retry-After) when it is empty."""
    try:
        limiter.hit(name, key)
    except ApiError as exc:
        raise from_api_error(exc) from None
