"""JSON API routes the CA's edge (:class:`ca.acme.front.AcmeFront`) answers itself, past
the web framework's layers: ``POST /api/v1/confirmations``, the one request a daemon
makes for every mail it takes (``ca.verify`` and ``ca.activate``), where the framework's
validation, routing, thread hop and exception layers cost about twice the work itself.

A quick route answers only what it answers exactly as the framework's route does: the
same model checks the body (``ConfirmIn``), the same service call does the work in a
thread, the answer is the same JSON, and an :class:`ApiError` is worded as the app's
handler words it. Anything else it hands back (``None``), and the framework's route
answers the request as before: a body that is not JSON or that the model refuses (its
422, worded in one place), and an error nobody foresaw (the work is one transaction, so
what failed changed nothing). The edge gives every answer its request id, log line and
status count, as the app's middleware does.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from certwright.ca.acme.app import Reply
from certwright.ca.errors import ApiError

#: a quick route: the body and the request's headers (lower-case names) -> its answer, or
#: None for the framework's route to answer
QuickRoute = Callable[[bytes, Mapping[str, str]], Awaitable[Reply | None]]
Offload = Callable[..., Awaitable[Any]]


def json_reply(status: int, content: Any, headers: Mapping[str, str] | None = None) -> Reply:
    """The answer Starlette's ``JSONResponse(content, status, headers)`` sends (its own
    encoding and headers, so the two cannot drift apart)."""
    sent = JSONResponse(content, status_code=status, headers=dict(headers) if headers else None)
    return Reply(status, list(sent.raw_headers), bytes(sent.body))


def api_error_reply(exc: ApiError) -> Reply:
    """An ApiError as the app's handler answers it on ``/api/``."""
    retry = exc.details.get("retry_after")
    return json_reply(exc.status, exc.body(),
                      {"Retry-After": str(retry)} if retry is not None else None)


def _is_json(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


def model_route(model: type[BaseModel], work: Callable[[Any], Any],
                offload: Offload) -> QuickRoute:
    """A route whose JSON body ``model`` checks and whose answer is ``work(body)`` (run in
    a thread by ``offload``), 200 and its JSON, or the ApiError it raised."""
    async def route(body: bytes, headers: Mapping[str, str]) -> Reply | None:
        if not _is_json(headers):
            return None
        try:
            given = model.model_validate_json(body)
        except ValidationError:
            return None  # the framework's 422, worded in one place
        try:
            out = await offload(work, given)
        except ApiError as exc:
            return api_error_reply(exc)
        except Exception:  # noqa: BLE001 - rolled back: the framework's route answers it
            return None
        return json_reply(200, out)
    return route
