"""The CA's ASGI app: JSON API under /api/v1, link pages, CA certificates and CRL.

Errors are always JSON ``{"error": code, "message": text, ...details}`` under /api and
HTML pages elsewhere (a path that matches no route, or not with that method, is a page
for a browser, which asks for text/html, and JSON for any other client). Request bodies
are never logged (they hold passphrases, answers, tokens); link URLs are logged without
their query string (which holds the token).
"""

import secrets
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import structlog
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certwright.ca import _pages
from certwright.ca._openapi import PemFile, PkixCert, PkixCrl, allowed_methods, errors, repeat
from certwright.ca._openapi import install as install_openapi
from certwright.ca.acme.app import create_acme_app
from certwright.ca.acme.front import AcmeFront, outermost
from certwright.ca.errors import ApiError
from certwright.ca.httpcounts import CountStatuses, StatusCounts
from certwright.ca.httpguard import BodyGuard
from certwright.ca.quickroutes import model_route
from certwright.ca.service import CAService
from certwright.clock import Clock
from certwright.domains import normalize_domain

log = structlog.get_logger("ca.app")
#: The header that makes a probe or a signing request safe to repeat.
IdemHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=200)
    answer: str = Field(min_length=1, max_length=200)


class JoinIn(BaseModel):
    email: str = Field(max_length=254)
    name: str = Field(max_length=200)
    passphrase: str = Field(max_length=1000)
    questions: list[Question] = Field(min_length=5, max_length=5)


class ConfirmIn(BaseModel):
    request_id: str = Field(max_length=100)
    token: str = Field(max_length=200)
    action: str = "verify"


class LoginIn(BaseModel):
    email: str = Field(max_length=254)
    passphrase: str = Field(max_length=1000)


class RecoveryIn(BaseModel):
    email: str = Field(max_length=254)


class RecoveryAnswerIn(BaseModel):
    # The question is the session's, never the caller's: an unknown field is refused.
    model_config = ConfigDict(extra="forbid")
    recovery_id: str = Field(max_length=100)
    answer: str = Field(max_length=200)
    new_passphrase: str = Field(max_length=1000)


class DomainIn(BaseModel):
    domain: str = Field(max_length=253)


class ProbeIn(BaseModel):
    local_part: str = Field(max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=200)


class SignIn(BaseModel):
    csr: str = Field(max_length=65536)
    idempotency_key: str | None = Field(default=None, max_length=200)
    days: int | None = None


class RevokeIn(BaseModel):
    reason: str = Field(default="unspecified", max_length=50)


class _RequestLog:
    """Pure ASGI middleware: a request id (the client's ``X-Request-Id`` or a random one)
    bound to the log context, one ``http_request`` log line per request, and the id sent
    back as ``X-Request-Id``. (Not ``@app.middleware("http")``: Starlette's
    BaseHTTPMiddleware runs every request through a task group and memory streams, which
    cost more CPU than the rest of a cheap request.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:64]
                break
        rid = rid or secrets.token_hex(6)
        id_header = (b"x-request-id", rid.encode("latin-1"))
        started = time.monotonic()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            await self.app(scope, receive, send_with_id)
            log.info("http_request", method=scope["method"], path=scope["path"],
                     status=status, ms=round((time.monotonic() - started) * 1000, 1))


def _client(request: Request) -> str:
    """The client's address (the peer of the connection; no proxy header is trusted)."""
    return request.client.host if request.client else "unknown"


def create_app(ca_dir: Path, *, public_url: str, smarthost: tuple[str, int] | None = None,
               policy: str = "cacert", clock: Clock | None = None,
               mail_from: str = "ca@certwright.invalid",
               settings: dict[str, Any] | None = None,
               weak_key_blocklist: str | None = None) -> FastAPI:
    """Build the app for the CA in ``ca_dir`` (created by ``ca.setup.init_ca``);
    ``settings`` override keys of its config.json (rate limits, HTTP limits)."""
    svc = CAService(ca_dir, public_url=public_url, smarthost=smarthost, policy=policy,
                    clock=clock, mail_from=mail_from, settings=settings,
                    weak_key_blocklist=weak_key_blocklist)
    # The docs pages' scripts and styles are served from the fastapi-offline package, not a
    # CDN: /docs and /redoc work offline and a browser reading them contacts no one else
    # (and no validator: Swagger UI would send the document to validator.swagger.io).
    # No /redoc: ReDoc fetches its logo from its vendor's CDN whatever it is told.
    app = FastAPIOffline(title="certwright CA", version="1", description=__doc__,
                         redoc_url=None, swagger_ui_parameters={"validatorUrl": None})
    app.state.service = svc
    accounts, issuing = svc.accounts, svc.issuing

    # Added first, so it runs inside the request log (which logs its 413 and 408).
    app.add_middleware(BodyGuard, config=svc.config)
    app.add_middleware(_RequestLog)
    # Outermost: every response counted by status class, for /metrics (ca.httpcounts).
    app.state.http_status_counts = counts = StatusCounts()
    app.add_middleware(CountStatuses, counts=counts)
    # ACME (RFC 8555) before all of those: its own edge with the same guard, log and
    # counts, past the framework's layers (ca/acme/front.py); so is the confirmation a
    # daemon posts for every mail it takes, answered as its route below would
    # (ca/quickroutes.py).
    app.state.acme = acme = create_acme_app(svc)

    def confirm_work(body: ConfirmIn) -> dict[str, Any]:  # the route's and the edge's
        accounts.purge_if_due()
        return accounts.confirm(body.request_id, body.token, body.action)
    quick = {("POST", "/api/v1/confirmations"): model_route(ConfirmIn, confirm_work,
                                                            acme.offload)}
    outermost(app, lambda stack: AcmeFront(stack, acme, counts=counts, config=svc.config,
                                           quick=quick))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if request.url.path.startswith("/api/"):
            retry = exc.details.get("retry_after")
            headers = {"Retry-After": str(retry)} if retry is not None else None
            return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
        return _pages.error_page(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        # Never echo pydantic's "input": it may be a passphrase.
        problems = [{"field": ".".join(str(p) for p in e.get("loc", ())),
                     "message": str(e.get("msg", ""))} for e in exc.errors()]
        text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return JSONResponse({"error": "bad_request", "message": text, "problems": problems},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {400: "bad_request", 404: "not_found",
                405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method served at the path, not one route's
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        if _pages.wants_page(request.url.path, request.headers.get("accept", "")):
            page = _pages.error_page(exc.status_code, code, _pages.HTTP_WORDS.get(
                exc.status_code, str(exc.detail)))
            page.headers.update(headers)
            return page
        return JSONResponse({"error": code, "message": str(exc.detail)},
                            status_code=exc.status_code, headers=headers)

    # Cheap reads run on the event loop (no thread hop): authentication and the GET
    # endpoints read committed state through the store's read connection, which never
    # waits for a writer. Everything that writes (a commit is an fsync) or sends mail
    # stays a sync endpoint, run in the threadpool.
    async def account(authorization: Annotated[str | None, Header()] = None) -> str:
        if accounts.purge_due():
            await run_in_threadpool(accounts.purge)
        scheme, _, token = (authorization or "").partition(" ")
        return accounts.authenticate(token.strip() if scheme.lower() == "bearer" else "")

    # type aliases, named as types are (N806 asks for a variable's name)
    def limit(*hits: tuple[str, str]) -> None:
        """Spend a token of each (limit, key); 429 rate_limited when one is empty."""
        for name, key in hits:
            svc.limiter.hit(name, key)

    Account = Annotated[str, Depends(account)]  # noqa: N806
    IdemHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]  # noqa: N806

    # -- accounts ------------------------------------------------------------------------
    # Login, join and recovery answers hash passphrases (scrypt): they are rate-limited
    # first, then run through the gate that bounds concurrent hashes (svc.gate).
    @app.post("/api/v1/accounts", status_code=201,
              responses={**repeat("The account exists with these details already"),
                         **errors(409, 429, 502, 503)})
    async def join(body: JoinIn, request: Request) -> JSONResponse:
        email = body.email.strip().lower()
        await run_in_threadpool(limit, ("join.client", _client(request)),
                                ("join.address", email),
                                ("join.domain", email.rpartition("@")[2]))

        def work() -> tuple[dict[str, Any], bool]:
            accounts.purge_if_due()
            return accounts.join(body.email, body.name, body.passphrase,
                                 [(q.question, q.answer) for q in body.questions])
        out, created = await svc.gate.run(work)
        return JSONResponse(out, status_code=201 if created else 200)

    # (Endpoints returning a JSONResponse themselves skip FastAPI's validation of the
    # answer against the annotation; response_model keeps the published schema.)
    @app.post("/api/v1/confirmations", response_model=dict[str, Any],
              responses=errors(403, 404, 410))
    def confirm(body: ConfirmIn) -> JSONResponse:
        return JSONResponse(confirm_work(body))

    @app.post("/api/v1/login", responses=errors(401, 403, 429, 503))
    async def login(body: LoginIn, request: Request) -> dict[str, Any]:
        await run_in_threadpool(limit, ("login.client", _client(request)),
                                ("login.account", body.email))

        def work() -> dict[str, Any]:
            accounts.purge_if_due()
            return accounts.login(body.email, body.passphrase)
        return await svc.gate.run(work)

    @app.post("/api/v1/recovery", responses=errors(429))
    def recovery(body: RecoveryIn, request: Request) -> dict[str, Any]:
        limit(("recovery.client", _client(request)), ("recovery.account", body.email))
        return svc.recovery.start(body.email)

    @app.post("/api/v1/recovery/answer", responses=errors(403, 410, 429, 503))
    async def recovery_answer(body: RecoveryAnswerIn, request: Request) -> dict[str, Any]:
        client = _client(request)
        await run_in_threadpool(limit, ("recovery_answer.client", client))
        return await svc.gate.run(svc.recovery.answer, body.recovery_id, body.answer,
                                  body.new_passphrase, client)

    # -- domains and probes --------------------------------------------------------------
    @app.post("/api/v1/domains", status_code=201,
              responses=repeat("The domain was on the account already"))
    def add_domain(body: DomainIn, account_id: Account) -> JSONResponse:
        out, created = issuing.add_domain(account_id, body.domain)
        return JSONResponse(out, status_code=201 if created else 200)

    @app.get("/api/v1/domains", response_model=list[dict[str, Any]])
    async def domains(account_id: Account) -> JSONResponse:
        return JSONResponse(issuing.list_domains(account_id))

    @app.get("/api/v1/domains/{domain}", response_model=dict[str, Any],
             responses=errors(404))
    async def domain(domain: str, account_id: Account) -> JSONResponse:
        name = normalize_domain(domain)
        found = issuing.list_domains(account_id, [name])
        if not found:
            raise ApiError(404, "unknown_domain", f"{name} is not on this account",
                           domain=name)
        return JSONResponse(found[0])

    @app.delete("/api/v1/domains/{domain}", status_code=204, responses=errors(404))
    def delete_domain(domain: str, account_id: Account) -> Response:
        issuing.delete_domain(account_id, domain)
        return Response(status_code=204)

    @app.post("/api/v1/domains/{domain}/probes", status_code=201,
              responses={**repeat("The probe made before under this idempotency key"),
                         **errors(404, 409, 429, 502)})
    def probe(domain: str, body: ProbeIn, account_id: Account,
              idempotency_key: IdemHeader = None) -> JSONResponse:
        limit(("probe.account", account_id), ("probe.domain", domain.strip().lower().rstrip(".")))
        out, created = issuing.probe(account_id, domain, body.local_part,
                                     idempotency_key or body.idempotency_key)
        return JSONResponse(out, status_code=201 if created else 200)

    # -- certificates --------------------------------------------------------------------
    @app.post("/api/v1/certificates", status_code=201,
              responses={**repeat("The certificate issued before under this idempotency "
                                  "key"), **errors(409)})
    def sign(body: SignIn, account_id: Account,
             idempotency_key: IdemHeader = None) -> JSONResponse:
        out, created = issuing.sign(account_id, body.csr,
                                    body.idempotency_key or idempotency_key or "", body.days)
        return JSONResponse(out, status_code=201 if created else 200)

    @app.get("/api/v1/certificates", response_model=dict[str, Any], responses=errors(404))
    async def find_certificate(account_id: Account,
                               idempotency_key: Annotated[str, Query(max_length=200)],
                               ) -> JSONResponse:
        return JSONResponse(issuing.find_certificate(account_id, idempotency_key))

    @app.get("/api/v1/certificates/{serial}", response_model=dict[str, Any],
             responses=errors(404))
    async def certificate(serial: str) -> JSONResponse:
        return JSONResponse(issuing.certificate(serial))

    @app.post("/api/v1/certificates/{serial}/revoke", responses=errors(404))
    def revoke(serial: str, body: RevokeIn, account_id: Account) -> dict[str, Any]:
        return issuing.revoke(account_id, serial, body.reason)

    # -- CA material ---------------------------------------------------------------------
    @app.get("/ca/intermediate.crt", response_class=PkixCert)
    def intermediate() -> Response:
        return PkixCert(svc.signer.der("intermediate"))

    @app.get("/ca/root.crt", response_class=PemFile)
    def root() -> Response:
        return PemFile(svc.signer.pem("root"))

    @app.get("/ca/crl", response_class=PkixCrl)
    def crl() -> Response:
        return PkixCrl(issuing.crl_der())

    # -- pages ---------------------------------------------------------------------------
    def link_get(kind: str, link_id: str, token: str, request: Request) -> Response:
        info = accounts.describe_link(link_id, token, kind)
        return _pages.link_page(info, request.url.path, token, svc.clock.now())

    async def link_post(kind: str, link_id: str, request: Request) -> Response:
        form = parse_qs((await request.body()).decode(errors="replace")[:4096])
        token = (form.get("token") or [""])[0]
        action = (form.get("action") or ["verify"])[0]
        result = await run_in_threadpool(accounts.confirm, link_id, token, action, kind)
        return _pages.result_page(result)

    @app.get("/account/confirm/{link_id}", include_in_schema=False)
    def account_page(link_id: str, request: Request, token: str = "") -> Response:
        return link_get("account", link_id, token, request)

    @app.post("/account/confirm/{link_id}", include_in_schema=False)
    async def account_post(link_id: str, request: Request) -> Response:
        return await link_post("account", link_id, request)

    @app.get("/domains/verify/{link_id}", include_in_schema=False)
    def domain_page(link_id: str, request: Request, token: str = "") -> Response:
        return link_get("domain", link_id, token, request)

    @app.post("/domains/verify/{link_id}", include_in_schema=False)
    async def domain_post(link_id: str, request: Request) -> Response:
        return await link_post("domain", link_id, request)

    @app.get("/certificates/{serial}", include_in_schema=False)
    def certificate_page(serial: str) -> Response:
        return _pages.certificate_page(issuing.certificate(serial), svc.clock.now())

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return _pages.home_page(svc.public_url)

    install_openapi(app, auth=account)
    return app
