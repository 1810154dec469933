"""HTTP client of the built-in CA's JSON API (keep-alive ``http.client`` connections).

Errors are :class:`CAError` (a :class:`engine.errors.StepError`) saying what was tried,
where, and what the CA answered: ``POST http://127.0.0.1:1234/api/v1/certificates: 422
unverified_domain: example.org is not verified for this account``. A 4xx answer other
than 408/429 is permanent (``retryable=False``); 5xx, 408, 429 and network failures are
retryable, except 502 ``mail_undeliverable`` (the MTA refused the CA's mail with a 5xx).
Secrets (passphrases, tokens) never appear in error messages or logs.

Connections are plain ``http.client`` ones kept alive in a pool per CA (TLS verified with
the same trust store as httpx); a CA behind a proxy named in the environment is reached
through httpx, which honours HTTP(S)_PROXY and NO_PROXY.
"""
from __future__ import annotations

import http.client
import json as _json
import select
import ssl
import threading
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlencode, urlsplit
from urllib.request import getproxies

import httpx
import structlog

from certwright.ca._neterrors import network_reason
from certwright.errors import StepError

log = structlog.get_logger("certwright.ca.client")

_RETRYABLE_4XX = (408, 429)
USER_AGENT = "certwright-ca-client/1"
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
LINK_KINDS = {"account/confirm": "account", "domains/verify": "domain"}


class CAError(StepError):
    """The CA refused or could not be reached; ``status``/``code`` are None for network errors."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 body: dict[str, Any] | None = None, retryable: bool | None = None,
                 retry_after: float | None = None) -> None:
        if retryable is None:
            retryable = status is None or status >= 500 or status in _RETRYABLE_4XX
        super().__init__(message, retryable=retryable, retry_after=retry_after)
        self.status = status
        self.code = code
        self.body = body or {}


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, with the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def _readable(sock: Any) -> bool:
    """True when ``sock`` has data or EOF waiting (or cannot be polled)."""
    try:
        if hasattr(select, "poll"):  # no FD_SETSIZE limit, unlike select()
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _Direct:
    """Keep-alive ``http.client`` connections to one origin, shared by threads.

    About a third of httpx's CPU per request (~160 vs ~590 us on loopback). A connection
    is used by one request at a time; idle ones wait in a LIFO list. One that the server
    closed while idle is dropped before use (it reads as readable), and a request whose
    reused connection turns out closed (the race with the server's keep-alive timeout)
    is sent once more on a new connection — it never reached the server's application.
    """

    MAX_IDLE = 32

    def __init__(self, base_url: str, verify: bool) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme.lower() == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self.is_closed = False

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if not self.https:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if self._ssl is None:  # the same trust store and rules as httpx (certifi, SSL_CERT_*)
            self._ssl = httpx.create_ssl_context(verify=self.verify)
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                           context=self._ssl)

    def _checkout(self) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if conn.sock is not None and not _readable(conn.sock):
                return conn
            conn.close()  # an idle connection is readable only when closed (or broken)

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self.is_closed and len(self._idle) < self.MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> tuple[int, bytes]:
        """(status, body) of one request; raises OSError or http.client.HTTPException."""
        target = self.prefix + target
        while True:
            conn = self._checkout()
            reused = conn is not None
            if conn is None:
                conn = self._connect(timeout)
            elif conn.sock is not None and conn.sock.gettimeout() != timeout:
                conn.sock.settimeout(timeout)
            conn.timeout = timeout
            try:
                conn.request(method, target, body, headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused:
                    continue  # closed by the server while idle: a new connection, once
                raise
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._checkin(conn)
            return resp.status, data

    def close(self) -> None:
        with self._lock:
            self.is_closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Proxied:
    """httpx, for a CA reached through a proxy from the environment (HTTP(S)_PROXY)."""

    def __init__(self, base_url: str, verify: bool) -> None:
        self._http = httpx.Client(base_url=base_url, verify=verify,
                                  limits=httpx.Limits(max_connections=32,
                                                      max_keepalive_connections=32))

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> tuple[int, bytes]:
        resp = self._http.request(method, target, content=body, headers=headers,
                                  timeout=timeout)
        return resp.status_code, resp.content

    def close(self) -> None:
        self._http.close()


_Transport = _Direct | _Proxied
_NETWORK_ERRORS = (OSError, http.client.HTTPException, httpx.HTTPError)



def _new_http(base_url: str, verify: bool) -> _Transport:
    scheme = urlsplit(base_url).scheme.lower()
    proxies = getproxies()
    if proxies.get(scheme) or proxies.get("all"):
        return _Proxied(base_url, verify)
    return _Direct(base_url, verify)


_POOLS: dict[tuple[str, bool], _Transport] = {}
_POOLS_LOCK = threading.Lock()


def _shared_http(base_url: str, verify: bool) -> _Transport:
    """One connection pool per CA and process, shared by threads."""
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, json: Any = None,
              params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
              auth: bool = True) -> Any:
        where = f"{method} {self.base_url}{path}"
        hdrs = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if headers:
            hdrs.update(headers)
        if auth and self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        body = None
        if json is not None:
            body = _json.dumps(json, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        target = quote(path, safe=_PATH_SAFE)
        if params:
            target += "?" + urlencode(params)
        try:
            status, data = self._http.request(method, target, body, hdrs, self._timeout)
        except _NETWORK_ERRORS as exc:
            log.info("ca_network_error", where=where, error=repr(exc))
            raise CAError(f"{where}: cannot reach {self._hostport()}: "
                          f"{network_reason(exc)}") from None
        if status == 204:
            return None
        try:
            answer = _json.loads(data)
        except ValueError:
            answer = None
        if 200 <= status < 300 and answer is not None:
            return answer
        if not isinstance(answer, dict):
            snippet = data.decode("utf-8", "replace")[:200].replace("\n", " ")
            raise CAError(f"{where}: {status} (not JSON: {snippet!r})", status=status)
        code = str(answer.get("error", "error"))
        message = str(answer.get("message", ""))
        rules = answer.get("rules")
        if isinstance(rules, list):
            message += ": " + "; ".join(str(r.get("message", r)) for r in rules)
        # A 429 or 503 says when to come back (the CA puts its Retry-After in the body too).
        wait = answer.get("retry_after") if status in (429, 503) else None
        # mail_undeliverable: the MTA refused for good, its words in the message (the CA's
        # outbox retries a 4xx itself and never answers so)
        retryable = False if code == "mail_undeliverable" else None
        raise CAError(f"{where}: {status} {code}: {message}", status=status, code=code,
                      body=answer, retry_after=wait if isinstance(wait, int | float) else None,
                      retryable=retryable)

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

    def _hostport(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    def login(self, email: str, passphrase: str) -> str:
        """Log in; keeps and returns the 1-hour API token."""
        body = self._call("POST", "/api/v1/login", auth=False,
                          json={"email": email, "passphrase": passphrase})
        self.token = str(body["token"])
        self.account_id = body.get("account_id")
        self.token_expires = body.get("expires")
        return self.token

    def start_recovery(self, email: str) -> dict[str, Any]:
        """Open a recovery session: ``{"recovery_id", "question", "expires_at"}`` (the
        same for an email without an account)."""
        return dict(self._call("POST", "/api/v1/recovery", auth=False, json={"email": email}))

    def answer_recovery(self, recovery_id: str, answer: str, new_passphrase: str) -> None:
        """Answer the session's question, setting ``new_passphrase``; CAError 403
        ``bad_answer`` (with ``attempts_left``), 410 ``recovery_expired``, 429
        ``recovery_locked``, 422 ``passphrase_rejected``."""
        self._call("POST", "/api/v1/recovery/answer", auth=False, json={
            "recovery_id": recovery_id, "answer": answer, "new_passphrase": new_passphrase})

    def add_domain(self, domain: str) -> dict[str, Any]:
        return dict(self._call("POST", "/api/v1/domains", json={"domain": domain}))

    def domains(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/domains"))

    def domain(self, domain: str) -> dict[str, Any] | None:
        """One domain of the account (status, verification dates), or None if not added."""
        try:
            return dict(self._call("GET", f"/api/v1/domains/{domain}"))
        except CAError as exc:
            if exc.status == 404:
                return None
            raise

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
        """Revoke one of the account's certificates for an RFC 5280 ``reason``; the answer
        has ``revoked_at``, ``reason`` and ``already`` (a repeat: the first date and reason
        stand). CAError 404 ``not_found`` (not this account's), 422 ``bad_reason``."""
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
