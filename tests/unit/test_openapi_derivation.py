"""ca/_openapi on a small app: the statuses a route answers by its shape are documented
without the route naming them, so a route added later is documented too."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Header
from pydantic import BaseModel

from certwright.ca._openapi import errors, install


class Body(BaseModel):
    name: str


def auth(authorization: Annotated[str | None, Header()] = None) -> str:
    return authorization or ""


def build() -> FastAPI:
    app = FastAPI()

    @app.post("/with-body", responses=errors(409))
    def with_body(body: Body, who: Annotated[str, Depends(auth)]) -> dict[str, str]:
        return {}

    @app.get("/plain")
    def plain() -> dict[str, str]:
        return {}

    install(app, auth=auth)
    return app


def responses(doc: dict, path: str, method: str) -> dict:
    return doc["paths"][path][method]["responses"]


def test_shape_gives_the_statuses() -> None:
    """A route with a body behind the auth dependency documents 400, 401, 413, 422 and
    its own 409, every one with the Error schema; a route without either adds only the
    HTTP edge's 408 and 431, which every route may answer."""
    doc = build().openapi()
    body = responses(doc, "/with-body", "post")
    assert {"200", "400", "401", "408", "409", "413", "422", "431"} <= set(body)
    for status in ("400", "401", "408", "409", "413", "422", "431"):
        assert body[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}
    assert set(responses(doc, "/plain", "get")) == {"200", "408", "431"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "message"]
