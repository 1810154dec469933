"""The ACME server's HTTP routes (RFC 8555), a Starlette app the CA mounts at ``/acme``.

Every answer carries a fresh ``Replay-Nonce``, ``Link: <directory>;rel="index"`` and
``Cache-Control: no-store``; every refusal is a problem document (:mod:`.problems`). POSTs
are verified (:mod:`.jws`) on the event loop; the work (store writes, validation, which
connects to the applicant's server, issuance) runs in the thread pool.

:class:`AcmeShortcut` hands ``/acme/...`` requests to this app from inside the CA app's own
middleware (request log, status counts, body guard), past FastAPI's exception layer and
router, which matched every JSON API route before reaching the ``/acme`` mount: the same
scope as the mount gives, at less CPU a request.

Routes: ``GET directory``, ``HEAD|GET new-nonce``, ``POST`` new-account, acct/ID,
acct/ID/orders, key-change, new-order, order/ID, order/ID/finalize, authz/ID, chall/ID,
cert/SERIAL[/N], revoke-cert; ``GET renewal-info/CERTID`` (RFC 9773); ``POST eab-keys`` (a CA
account's bearer token: a key for external account binding).
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from certwright.ca.acme import accounts, certs, eab, orders, renewal
from certwright.ca.acme.jws import Verified, verify_request
from certwright.ca.acme.problems import AcmeProblem
from certwright.ca.acme.service import AcmeService
from certwright.ca.errors import ApiError
from certwright.ca.service import CAService

log = structlog.get_logger("ca.acme")
JOSE = "application/jose+json"


def create_acme_app(svc: CAService) -> Starlette:
    """The ACME app of the CA ``svc``; raises SettingError for a bad ``acme_*`` setting."""
    acme = AcmeService(svc)

    def headers(extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Replay-Nonce": acme.nonces.issue(), "Cache-Control": "no-store",
                "Link": f'<{acme.url("directory")}>;rel="index"', **(extra or {})}

    def answer(status: int, body: Any, extra: dict[str, str] | None = None,
               media: str = "application/json") -> Response:
        all_headers = headers()
        for key, value in (extra or {}).items():
            all_headers[key] = f"{all_headers[key]}, {value}" if key == "Link" else value
        content = body if isinstance(body, str) else json.dumps(body)
        return Response(content, status_code=status, headers=all_headers, media_type=media)

    def problem(exc: AcmeProblem) -> Response:
        return answer(exc.status, exc.body(), exc.headers, "application/problem+json")

    async def verified(request: Request, *, jwk: bool = False, kid: bool = True) -> Verified:
        if request.headers.get("content-type", "").split(";")[0].strip() != JOSE:
            raise AcmeProblem("malformed", f"Content-Type must be {JOSE}", status=415)
        url = acme.ca.public_url + request.url.path
        body = await request.body()
        req = verify_request(body, url=url, nonces=acme.nonces, store=acme.store,
                             account_url=acme.account_prefix, jwk_allowed=jwk,
                             kid_allowed=kid, keys=acme.keys)
        return replace(req, client=request.client.host if request.client else "unknown")


    def post(work: Callable[..., Any], *, jwk: bool = False, kid: bool = True,
             ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                req = await verified(request, jwk=jwk, kid=kid)
                params = dict(request.path_params)
                status, body, extra = await run_in_threadpool(work, acme, req, **params)
            except AcmeProblem as exc:
                return problem(exc)
            return answer(status, body, extra)
        return endpoint

    async def directory(request: Request) -> Response:
        return answer(200, acme.directory())

    async def new_nonce(request: Request) -> Response:
        status = 200 if request.method == "HEAD" else 204
        return Response(status_code=status, headers=headers())

    async def certificate(request: Request) -> Response:
        try:
            req = await verified(request)
            alternate = int(request.path_params.get("alt", 0))
            pem, extra = await run_in_threadpool(certs.chain, acme, req,
                                                 request.path_params["serial"], alternate)
        except AcmeProblem as exc:
            return problem(exc)
        return answer(200, pem, extra, "application/pem-certificate-chain")

    async def revoke(request: Request) -> Response:
        try:
            req = await verified(request, jwk=True, kid=True)
            await run_in_threadpool(certs.revoke, acme, req)
        except AcmeProblem as exc:
            return problem(exc)
        return answer(200, "", None, "text/plain")

    async def key_change(request: Request) -> Response:
        url = acme.url("key-change")
        return await post(lambda a, r: accounts.key_change(a, r, url))(request)

    async def renewal_info(request: Request) -> Response:
        try:
            body, extra = renewal.renewal_info(acme, request.path_params["cert_id"])
        except AcmeProblem as exc:
            return problem(exc)
        return answer(200, body, extra)

    async def eab_keys(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            ca_account = acme.ca.accounts.authenticate(
                token.strip() if scheme.lower() == "bearer" else "")
        except ApiError as exc:
            return problem(AcmeProblem("unauthorized", exc.message, status=401))
        return answer(201, await run_in_threadpool(eab.create_key, acme, ca_account))

    async def not_found(request: Request, exc: Exception) -> Response:
        return problem(AcmeProblem("malformed", f"no ACME resource at {request.url.path}",
                                   status=404))

    async def wrong_method(request: Request, exc: Exception) -> Response:
        return problem(AcmeProblem("malformed", f"{request.method} is not allowed at "
                                   f"{request.url.path}; ACME resources take POST",
                                   status=405))

    routes = [
        Route("/directory", directory, methods=["GET"]),
        Route("/new-nonce", new_nonce, methods=["GET", "HEAD"]),
        Route("/new-account", post(accounts.new_account, jwk=True, kid=False),
              methods=["POST"]),
        Route("/acct/{account_id}", post(accounts.update_account), methods=["POST"]),
        Route("/acct/{account_id}/orders", post(orders.account_orders), methods=["POST"]),
        Route("/key-change", key_change, methods=["POST"]),
        Route("/new-order", post(orders.new_order), methods=["POST"]),
        Route("/order/{order_id}", post(orders.get_order), methods=["POST"]),
        Route("/order/{order_id}/finalize", post(orders.finalize), methods=["POST"]),
        Route("/authz/{authz_id}", post(orders.get_authz), methods=["POST"]),
        Route("/chall/{challenge_id}", post(orders.answer_challenge), methods=["POST"]),
        Route("/cert/{serial}", certificate, methods=["POST"]),
        Route("/cert/{serial}/{alt:int}", certificate, methods=["POST"]),
        Route("/revoke-cert", revoke, methods=["POST"]),
        Route("/renewal-info/{cert_id}", renewal_info, methods=["GET"]),
        Route("/eab-keys", eab_keys, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: wrong_method})
    app.state.acme = acme
    return app


class AcmeShortcut:
    """Pure ASGI middleware: a request under ``/acme/`` goes straight to ``acme`` with the
    scope Starlette's ``Mount("/acme")`` would give it; anything else to ``app``."""

    def __init__(self, app: ASGIApp, acme: ASGIApp) -> None:
        self.app, self.acme = app, acme

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root_path = scope.get("root_path", "")
        path = scope.get("path", "")
        if scope["type"] == "http" and path.removeprefix(root_path).startswith("/acme/"):
            scope = {**scope, "path_params": {}, "endpoint": self.acme,
                     "app_root_path": scope.get("app_root_path", root_path),
                     "root_path": root_path + "/acme"}
            await self.acme(scope, receive, send)
            return
        await self.app(scope, receive, send)
