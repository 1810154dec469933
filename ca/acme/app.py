"""The ACME server's HTTP routes (RFC 8555): :class:`AcmeApp`.

A request comes in as an :class:`AcmeRequest` (method, path, headers, the whole body,
already read and bounded by the CA's edge, :mod:`.front`) and goes out as a
:class:`Reply`. Every answer carries a fresh ``Replay-Nonce``, ``Link:
<directory>;rel="index"`` and ``Cache-Control: no-store``; every refusal is a problem
document (:mod:`.problems`), an unexpected error too (``serverInternal``, logged with its
traceback). POSTs are verified (:mod:`.jws`) on the event loop; the work (store writes,
validation, which connects to the applicant's server, issuance) runs in a thread pool.
Reads (POST-as-GET of an account, its orders, an order, an authorization, a certificate)
are answered on the event loop from the committed state (``AcmeService.committed``, the
store's read connection, which never waits for a writer): a thread hop costs more than
such a read, and a read that finds it must write (an order whose authorizations all
became valid is stored as ready) is done again in the pool.

The routes are matched here, not by a web framework: a path is looked up in a table of
fixed paths, then in a few patterns with one or two parameters. A path under ``/acme/``
that no route takes is a 404 ``malformed`` problem; a route asked with another method a
405 with ``Allow``.

Routes: ``GET directory``, ``HEAD|GET new-nonce``, ``POST`` new-account, acct/ID,
acct/ID/orders, key-change, new-order, order/ID, order/ID/finalize, authz/ID, chall/ID,
cert/SERIAL[/N], revoke-cert; ``GET renewal-info/CERTID`` (RFC 9773); ``POST eab-keys`` (a CA
account's bearer token: a key for external account binding).
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import structlog

from certwright.ca.acme import accounts, certs, eab, orders, renewal
from certwright.ca.acme.jws import Verified, verify_request
from certwright.ca.acme.problems import AcmeProblem
from certwright.ca.acme.service import AcmeService
from certwright.ca.acme.store import NeedsWriter
from certwright.ca.errors import ApiError
from certwright.ca.service import CAService

log = structlog.get_logger("ca.acme")
JOSE = "application/jose+json"
PREFIX = "/acme"


@dataclass(frozen=True)
class AcmeRequest:
    """One request to the ACME server: ``path`` is the whole path (``/acme/...``),
    ``headers`` by lower-case name, ``client`` the peer's address."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client: str
    params: dict[str, str] | None = None


@dataclass(frozen=True)
class Reply:
    """An answer: status, raw headers (lower-case names) and the whole body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


Handler = Callable[[AcmeRequest], Awaitable[Reply]]
THREADS = 40  # as many as the framework's own thread pool had
_CHARSET = ("text/",)  # media types that get "; charset=utf-8", as web frameworks do


class AcmeApp:
    """The ACME server of the CA ``svc``; raises SettingError for a bad ``acme_*``
    setting. ``await app.handle(request)`` answers one request, whatever happens."""

    def __init__(self, svc: CAService) -> None:
        self.acme = acme = AcmeService(svc)
        #: the threads the work runs in (a slow applicant's server holds one while its
        #: http-01 GET lasts); threads start as work comes and live as long as the process
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="acme")
        post = self._post
        key_change_url = acme.url("key-change")
        self._fixed: dict[str, dict[str, Handler]] = {
            "/directory": {"GET": self._directory},
            "/new-nonce": {"GET": self._new_nonce, "HEAD": self._new_nonce},
            "/new-account": {"POST": post(accounts.new_account, jwk=True, kid=False)},
            "/key-change": {"POST": post(lambda a, r: accounts.key_change(
                a, r, key_change_url))},
            "/new-order": {"POST": post(orders.new_order)},
            "/revoke-cert": {"POST": self._revoke},
            "/eab-keys": {"POST": self._eab_keys},
        }
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"/acct/(?P<account_id>[^/]+)"),
             {"POST": post(accounts.update_account, reads=True)}),
            (re.compile(r"/acct/(?P<account_id>[^/]+)/orders"),
             {"POST": post(orders.account_orders, reads=True)}),
            (re.compile(r"/order/(?P<order_id>[^/]+)"),
             {"POST": post(orders.get_order, reads=True)}),
            (re.compile(r"/order/(?P<order_id>[^/]+)/finalize"),
             {"POST": post(orders.finalize)}),
            (re.compile(r"/authz/(?P<authz_id>[^/]+)"),
             {"POST": post(orders.get_authz, reads=True)}),
            (re.compile(r"/chall/(?P<challenge_id>[^/]+)"),
             {"POST": post(orders.answer_challenge)}),
            (re.compile(r"/cert/(?P<serial>[^/]+)"), {"POST": self._certificate}),
            (re.compile(r"/cert/(?P<serial>[^/]+)/(?P<alt>[0-9]+)"),
             {"POST": self._certificate}),
            (re.compile(r"/renewal-info/(?P<cert_id>[^/]+)"),
             {"GET": self._renewal_info}),
        ]
        for methods in (*self._fixed.values(), *(m for _, m in self._patterns)):
            if "GET" in methods:  # HEAD wherever GET, as HTTP has it
                methods.setdefault("HEAD", methods["GET"])

    def close(self) -> None:
        """Let the worker threads go (work already running finishes, nothing queued is
        started): the server stopped."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- dispatch ------------------------------------------------------------------------
    async def handle(self, request: AcmeRequest) -> Reply:
        """The answer to ``request``: the route's, or a problem document."""
        try:
            handler, params = self._route(request)
            return await handler(replace(request, params=params))
        except AcmeProblem as exc:
            return self._problem(exc)
        except Exception:  # answered, and logged with its traceback
            log.exception("acme_internal_error", method=request.method, path=request.path)
            return self._problem(AcmeProblem("serverInternal", "the server failed to "
                                             "answer this request; it has been logged"))

    def _route(self, request: AcmeRequest) -> tuple[Handler, dict[str, str]]:
        path = request.path.removeprefix(PREFIX)
        methods, params = self._fixed.get(path), {}
        if methods is None:
            for pattern, candidate in self._patterns:
                found = pattern.fullmatch(path)
                if found:
                    methods, params = candidate, found.groupdict()
                    break
        if methods is None:
            raise AcmeProblem("malformed", f"no ACME resource at {request.path}", status=404)
        handler = methods.get(request.method)
        if handler is None:
            raise AcmeProblem("malformed", f"{request.method} is not allowed at "
                              f"{request.path}; ACME resources take POST", status=405,
                              headers={"Allow": ", ".join(sorted(methods))})
        return handler, params

    # -- answers -------------------------------------------------------------------------
    def _answer(self, status: int, body: Any, extra: dict[str, str] | None = None,
                media: str | None = "application/json") -> Reply:
        acme = self.acme
        headers = {"replay-nonce": acme.nonces.issue(), "cache-control": "no-store",
                   "link": f'<{acme.url("directory")}>;rel="index"'}
        for name, value in (extra or {}).items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key == "link" else value
        content = (body if isinstance(body, str) else json.dumps(body)).encode()
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if not (status < 200 or status in (204, 304)):
            raw.append((b"content-length", str(len(content)).encode()))
        if media is not None:
            charset = "; charset=utf-8" if media.startswith(_CHARSET) else ""
            raw.append((b"content-type", f"{media}{charset}".encode()))
        return Reply(status, raw, content)

    def _problem(self, exc: AcmeProblem) -> Reply:
        return self._answer(exc.status, exc.body(), exc.headers, "application/problem+json")

    async def _verified(self, request: AcmeRequest, *, jwk: bool = False,
                        kid: bool = True) -> Verified:
        if request.headers.get("content-type", "").split(";")[0].strip() != JOSE:
            raise AcmeProblem("malformed", f"Content-Type must be {JOSE}", status=415)
        acme = self.acme
        req = verify_request(request.body, url=acme.ca.public_url + request.path,
                             nonces=acme.nonces, store=acme.store,
                             account_url=acme.account_prefix, jwk_allowed=jwk,
                             kid_allowed=kid, keys=acme.keys)
        return replace(req, client=request.client)

    async def offload(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``work(*args, **kwargs)`` in a thread of the pool, in a copy of this request's
        context (its log context: the request id), awaited on the event loop."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: context.run(work, *args, **kwargs))

    def _post(self, work: Callable[..., Any], *, jwk: bool = False, kid: bool = True,
              reads: bool = False) -> Handler:
        """A POST route doing ``work(acme, verified, **params)``; with ``reads``, a
        POST-as-GET (no payload) is first tried on the event loop over the committed
        state, and goes to the thread pool only if it would write."""
        async def endpoint(request: AcmeRequest) -> Reply:
            req = await self._verified(request, jwk=jwk, kid=kid)
            params = request.params or {}
            if reads and req.payload is None:
                try:
                    return self._answer(*work(self.acme.committed, req, **params))
                except NeedsWriter:
                    pass  # e.g. an order whose status changed: stored by the writer
            return self._answer(*await self.offload(work, self.acme, req, **params))
        return endpoint

    # -- the routes that are not plain POSTs ---------------------------------------------
    async def _directory(self, request: AcmeRequest) -> Reply:
        return self._answer(200, self.acme.directory())

    async def _new_nonce(self, request: AcmeRequest) -> Reply:
        return self._answer(200 if request.method == "HEAD" else 204, "", media=None)

    async def _certificate(self, request: AcmeRequest) -> Reply:
        params = request.params or {}
        req = await self._verified(request)
        pem, extra = certs.chain(self.acme.committed, req, params["serial"],
                                 int(params.get("alt", 0)))  # reads only: on the loop
        return self._answer(200, pem, extra, "application/pem-certificate-chain")

    async def _revoke(self, request: AcmeRequest) -> Reply:
        req = await self._verified(request, jwk=True, kid=True)
        await self.offload(certs.revoke, self.acme, req)
        return self._answer(200, "", None, "text/plain")

    async def _renewal_info(self, request: AcmeRequest) -> Reply:
        body, extra = renewal.renewal_info(self.acme, (request.params or {})["cert_id"])
        return self._answer(200, body, extra)

    async def _eab_keys(self, request: AcmeRequest) -> Reply:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            ca_account = self.acme.ca.accounts.authenticate(
                token.strip() if scheme.lower() == "bearer" else "")
        except ApiError as exc:
            raise AcmeProblem("unauthorized", exc.message, status=401) from None
        return self._answer(201, await self.offload(eab.create_key, self.acme, ca_account))


def create_acme_app(svc: CAService) -> AcmeApp:
    """The ACME app of the CA ``svc`` (:class:`AcmeApp`)."""
    return AcmeApp(svc)
