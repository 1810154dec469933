"""The CA's OpenAPI document: every status an endpoint can answer, and 405's ``Allow``.

FastAPI documents a route's success and (its own shape of) 422. The rest is derived here
from the routes themselves when the document is first asked for, so it cannot drift
from the code:

* 408 and 431 for every route: the HTTP edge answers them before any route runs (request
  headers too slow, ``header_timeout``, or a body too slow, ``body_timeout``; headers too
  large, ``headers_too_large``; :mod:`certwright.ca.headerguard`, :mod:`.httpguard`);
* 401 for every route that depends on the bearer-token dependency;
* 400 (not JSON), 413 and 422 for every route that reads a body, 422 for every route
  with parameters;
* whatever a route declares with ``responses=errors(...)``: the refusals of its own
  logic (404 unknown domain, 409 idempotency key reused, 410 link used, 429 rate limit,
  502 mail undeliverable), and ``responses=repeat(...)`` for a 200 next to a 201.

Every error status is documented with one schema, :class:`Error` (``{"error": code,
"message": text, ...details}``), which is what the app's exception handlers send.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.routing import Match
from starlette.types import Scope

ERROR_REF = {"$ref": "#/components/schemas/Error"}
DESCRIPTIONS: dict[int, str] = {
    400: "The body is not JSON, or not UTF-8 (`bad_request`)",
    401: "No valid bearer token (`unauthorized`), or a wrong email or passphrase "
         "(`bad_credentials`)",
    403: "Refused for this caller: a wrong token or answer, or an account not confirmed",
    404: "No such thing on this account (`unknown_domain`, `not_found`)",
    409: "In conflict with what exists: an idempotency key used for another request "
         "(`idempotency_key_reused`), an account that exists",
    410: "The link expired, was used or was cancelled (`link_expired`, `link_used`, "
         "`link_cancelled`)",
    408: "The request headers or body did not arrive in time (`header_timeout`, "
         "`body_timeout`); the connection is closed",
    413: "The request body is larger than this endpoint accepts",
    422: "An input is wrong; `message` names it and what is allowed (`bad_request`, "
         "`bad_csr`, `weak_key`, `public_suffix`, `unverified_domain`, ...)",
    431: "The request headers are larger than the CA takes (`headers_too_large`); the "
         "connection is closed",
    429: "Too many requests from this client or for this account; retry after the "
         "seconds in Retry-After",
    502: "The CA could not deliver its mail (`mail_undeliverable`); `reason` says why",
}


class Error(BaseModel):
    """Every refusal of the API: a stable code, a sentence, and details by code."""

    model_config = ConfigDict(extra="allow", title="Error")
    error: str
    message: str


class PkixCert(Response):
    media_type = "application/pkix-cert"


class PemFile(Response):
    media_type = "application/x-pem-file"


class PkixCrl(Response):
    media_type = "application/pkix-crl"


def _error_response(status: int) -> dict[str, Any]:
    return {"description": DESCRIPTIONS.get(status, "Refused"),
            "content": {"application/json": {"schema": ERROR_REF}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the error statuses its own logic answers."""
    return {status: _error_response(status) for status in statuses}


def repeat(description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a 200 beside a route's 201: the same request made again."""
    return {200: {"description": description,
                  "content": {"application/json": {"schema": {"type": "object"}}}}}


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def _has_params(dependant: Dependant) -> bool:
    return bool(dependant.path_params or dependant.query_params or dependant.header_params
                or dependant.body_params) or any(_has_params(d)
                                                 for d in dependant.dependencies)


def derived_statuses(route: APIRoute, auth: Callable[..., Any]) -> set[int]:
    """The error statuses a route answers by its shape (see the module docstring)."""
    statuses = {408, 431}  # the HTTP edge's, before any route
    if _depends_on(route.dependant, auth):
        statuses.add(401)
    if route.body_field is not None:
        statuses |= {400, 413, 422}
    if _has_params(route.dependant):
        statuses.add(422)
    return statuses


def install(app: FastAPI, *, auth: Callable[..., Any]) -> None:
    """Make ``app.openapi`` document the derived statuses (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        for route in app.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            statuses = derived_statuses(route, auth)
            for method in route.methods or ():
                responses = doc["paths"][route.path_format][method.lower()]["responses"]
                for status in statuses:
                    responses.setdefault(str(status), _error_response(status))
                for status, response in responses.items():
                    if status.isdigit() and int(status) >= 400:
                        response["content"] = {"application/json": {"schema": ERROR_REF}}
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = Error.model_json_schema()
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at the request's path (for a 405's Allow)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)
