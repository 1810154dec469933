"""The CA's API docs work offline: Swagger UI comes from a package, not from a CDN.

Chromium runs with every host name but 127.0.0.1 resolving to nothing, as on a machine with
no route out; every request the page makes is recorded, and none may leave loopback.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser.chromium import OFFLINE, artifacts_dir, launch
from tests.support.ca import ca_server, fake_clock, http, smtp_sink  # noqa: F401  (fixtures)


@pytest.fixture
def offline_page() -> Iterator[tuple[Any, list[str]]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw, OFFLINE)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requested: list[str] = []
            page.on("request", lambda req: requested.append(req.url))
            yield page, requested
        finally:
            browser.close()


def outside(urls: list[str]) -> list[str]:
    return [u for u in urls if urlsplit(u).scheme not in ("data", "blob", "about")
            and urlsplit(u).hostname != "127.0.0.1"]


def test_swagger_ui_renders_offline(offline_page: tuple[Any, list[str]],
                                    http: httpx.Client) -> None:
    """/docs renders the operations of the API with the network cut, loading nothing
    from outside loopback."""
    page, requested = offline_page
    response = page.goto(f"{http.base_url}/docs")
    assert response is not None and response.status == 200
    page.wait_for_selector("#swagger-ui .opblock", timeout=20_000)
    assert page.locator("#swagger-ui .opblock").count() >= 10
    assert page.get_by_text("/api/v1/certificates").first.is_visible()
    page.screenshot(path=str(artifacts_dir("api-docs") / "swagger-1200.png"), full_page=False)
    assert not outside(requested), outside(requested)
    assert any(u.endswith(".js") for u in requested)


def test_no_redoc(http: httpx.Client) -> None:
    """No /redoc: ReDoc would fetch its logo from its vendor's CDN."""
    assert http.get("/redoc").status_code == 404
