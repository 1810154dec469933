"""HTTP client of the built-in CA's JSON API (one persistent ``httpx.Client``).

Errors are :class:`CAError` (a :class:`engine.errors.StepError`) saying what was tried,
where, and what the CA answered: ``POST http://127.0.0.1:1234/api/v1/certificates: 422
unverified_domain: example.org is not verified for this account``. A 4xx answer other
than 408/429 is permanent (``retryable=False``); 5xx, 408, 429 and network failures are
retryable. Secrets (passphrases, tokens) never appear in error messages or logs.
"""
from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import threading

import httpx

from engine.errors import StepError

_RETRYABLE_4XX = (408, 429)
LINK_KINDS = {"account/confirm": "account", "domains/verify": "domain"}


class CAError(StepError):
    """The CA refused or could not be reached; ``status``/``code`` are None for network errors."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 body: dict[str, Any] | None = None, retryable: bool | None = None) -> None:
        if retryable is None:
            retryable = status is None or status >= 500 or status in _RETRYABLE_4XX
        super().__init__(message, retryable=retryable)
        self.status = status
        self.code = code
        self.body = body or {}


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, with the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


_POOLS: dict[tuple[str, bool], httpx.Client] = {}
_POOLS_LOCK = threading.Lock()


def _new_http(base_url: str, verify: bool) -> httpx.Client:
    return httpx.Client(base_url=base_url, verify=verify,
                        headers={"User-Agent": "certwright-ca-client/1"},
                        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))


def _shared_http(base_url: str, verify: bool) -> httpx.Client:
    """One pooled httpx client per CA and process (httpx clients are thread-safe)."""
    with _POOLS_LOCK:
        client = _POOLS.get((base_url, verify))
        if client is None or client.is_closed:
            client = _POOLS[(base_url, verify)] = _new_http(base_url, verify)
        return client


class CAClient:
    """Client of one CA at ``base_url``; keeps the login token after :meth:`login`."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, verify: bool = True,
                 shared: bool = False) -> None:
        """``shared``: use the process-wide connection pool for this CA (steps do; it saves
        building an SSL context and a connection per call). ``close`` then keeps it open."""
        self.base_url = base_url.rstrip("/")
        self._shared = shared
        self._timeout = timeout
        self._http = _shared_http(self.base_url, verify) if shared else _new_http(
            self.base_url, verify)
        self.token: str | None = None
        self.account_id: str | None = None
        self.token_expires: str | None = None

    def close(self) -> None:
        if not self._shared:
            self._http.close()

    def __enter__(self) -> CAClient:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, json: Any = None, params: Any = None,
              headers: dict[str, str] | None = None, auth: bool = True) -> Any:
        where = f"{method} {self.base_url}{path}"
        hdrs = dict(headers or {})
        if auth and self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        try:
            resp = self._http.request(method, path, json=json, params=params, headers=hdrs,
                                      timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise CAError(f"{where}: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.is_success and body is not None:
            return body
        if not isinstance(body, dict):
            snippet = resp.text[:200].replace("\n", " ")
            raise CAError(f"{where}: {resp.status_code} (not JSON: {snippet!r})",
                          status=resp.status_code)
        code = str(body.get("error", "error"))
        message = str(body.get("message", ""))
        rules = body.get("rules")
        if isinstance(rules, list):
            message += ": " + "; ".join(str(r.get("message", r)) for r in rules)
        raise CAError(f"{where}: {resp.status_code} {code}: {message}",
                      status=resp.status_code, code=code, body=body)

    # -- API -----------------------------------------------------------------------------
    def join(self, email: str, name: str, passphrase: str,
             questions: list[dict[str, str]]) -> dict[str, Any]:
        """Create (or, if pending with this passphrase, find) the account."""
        return dict(self._call("POST", "/api/v1/accounts", auth=False, json={
            "email": email, "name": name, "passphrase": passphrase, "questions": questions}))

    def confirm(self, request_id: str, token: str, action: str = "verify") -> dict[str, Any]:
        """Verify or reject a link's request; returns ``{status, kind, domain?}``."""
        return dict(self._call("POST", "/api/v1/confirmations", auth=False, json={
            "request_id": request_id, "token": token, "action": action}))

    def login(self, email: str, passphrase: str) -> str:
        """Log in; keeps and returns the 1-hour API token."""
        body = self._call("POST", "/api/v1/login", auth=False,
                          json={"email": email, "passphrase": passphrase})
        self.token = str(body["token"])
        self.account_id = body.get("account_id")
        self.token_expires = body.get("expires")
        return self.token

    def add_domain(self, domain: str) -> dict[str, Any]:
        return dict(self._call("POST", "/api/v1/domains", json={"domain": domain}))

    def domains(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/domains"))

    def delete_domain(self, domain: str) -> None:
        self._call("DELETE", f"/api/v1/domains/{domain}")

    def probe(self, domain: str, local_part: str,
              idempotency_key: str | None = None) -> dict[str, Any]:
        """Ask the CA to mail a verification link to ``local_part@domain``."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return dict(self._call("POST", f"/api/v1/domains/{domain}/probes",
                               json={"local_part": local_part}, headers=headers))

    def sign(self, csr_pem: str, idempotency_key: str, days: int | None = None) -> dict[str, Any]:
        """Have the CSR signed; the same key always yields the same certificate."""
        body: dict[str, Any] = {"csr": csr_pem, "idempotency_key": idempotency_key}
        if days is not None:
            body["days"] = days
        return dict(self._call("POST", "/api/v1/certificates", json=body))

    def find_certificate(self, idempotency_key: str) -> dict[str, Any] | None:
        """What the CA issued for this key, or None."""
        try:
            return dict(self._call("GET", "/api/v1/certificates",
                                   params={"idempotency_key": idempotency_key}))
        except CAError as exc:
            if exc.status == 404:
                return None
            raise

    def revoke(self, serial: str, reason: str = "unspecified") -> dict[str, Any]:
        return dict(self._call("POST", f"/api/v1/certificates/{serial}/revoke",
                               json={"reason": reason}))

    # -- links ---------------------------------------------------------------------------
    @staticmethod
    def parse_link(url: str) -> tuple[str, str, str]:
        """``(kind, request_id, token)`` of a confirmation or probe link.

        Raises a permanent CAError when the URL is not such a link.
        """
        parts = urlsplit(url.strip())
        path = parts.path.strip("/").split("/")
        kind = LINK_KINDS.get("/".join(path[-3:-1]))
        token = (parse_qs(parts.query).get("token") or [""])[0]
        if not kind or not path[-1] or not token:
            raise CAError(f"not a CA confirmation or probe link: {parts.path!r}",
                          retryable=False)
        return kind, path[-1], token

    def same_origin(self, url: str) -> bool:
        """True when ``url`` has this CA's scheme, host and port."""
        return origin(url) == origin(self.base_url)
