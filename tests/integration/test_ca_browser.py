"""The person's path in a real browser (Debian chromium via playwright): open the probe
mail's link, see the domain and both choices, change nothing by looking, verify by click."""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support.ca import (  # noqa: F401  (fixtures)
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    http,
    smtp_sink,
)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOMAIN = "example.test"


@pytest.fixture
def browser_page():  # type: ignore[no-untyped-def]
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing and CI is set")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def domain_status(http: httpx.Client, auth: dict[str, str]) -> str:
    rows = http.get("/api/v1/domains", headers=auth).json()
    return str(next(r for r in rows if r["domain"] == DOMAIN)["status"])


def test_probe_link_in_browser(browser_page, http: httpx.Client,  # type: ignore[no-untyped-def]
                               smtp_sink: SmtpSink) -> None:
    """Loading the link verifies nothing; clicking 'Verify this domain' verifies it."""
    acct = active_account(http, smtp_sink)
    http.post("/api/v1/domains", json={"domain": DOMAIN}, headers=acct.auth).raise_for_status()
    http.post(f"/api/v1/domains/{DOMAIN}/probes", json={"local_part": "postmaster"},
              headers=acct.auth).raise_for_status()
    link = smtp_sink.last_to(f"postmaster@{DOMAIN}").link()

    page = browser_page
    response = page.goto(link)
    assert response is not None and response.status == 200
    assert page.locator("#subject").inner_text() == DOMAIN
    assert page.get_by_role("button", name="Verify this domain").is_visible()
    assert page.get_by_role("button", name="I did not ask for this").is_visible()
    page.reload()
    assert domain_status(http, acct.auth) == "pending"

    page.get_by_role("button", name="Verify this domain").click()
    page.wait_for_selector("#result")
    assert "verified" in page.locator("#result").inner_text()
    assert domain_status(http, acct.auth) == "verified"
    page.go_back()
    page.reload()
    assert "used" in page.content()
