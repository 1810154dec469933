"""The CA's pages in the real Chromium, on a desktop (1200 px) and a phone (390 px).

Each page is screenshotted at both widths (kept under ``test-artifacts/``) and checked by
:meth:`tests.browser.chromium.Views.check` (lang, viewport, axe-core, no sideways
scrolling); each test then asserts what that page must say: which account asked (masked),
when the link expires in words and in UTC by the CA's clock, which button is the safe one.
GET never confirms; the forms POST with the token as before.
"""
from __future__ import annotations

import re
from urllib.parse import urljoin

import httpx

from certwright.clock import FakeClock
from tests.browser.chromium import Views, views  # noqa: F401  (fixture)
from tests.support.ca import (  # noqa: F401  (fixtures)
    SmtpSink,
    active_account,
    ca_server,
    fake_clock,
    http,
    make_csr,
    questions,
    smtp_sink,
    verified_domain,
)

DOMAIN = "example.test"
#: FakeClock starts at 2026-01-01 00:00 UTC; links live 48 hours.
LINK_EXPIRES = "3 Jan 2026 00:00 UTC"


def probe_link(http: httpx.Client, sink: SmtpSink, auth: dict[str, str],
               domain: str = DOMAIN) -> str:
    http.post("/api/v1/domains", json={"domain": domain}, headers=auth).raise_for_status()
    http.post(f"/api/v1/domains/{domain}/probes", json={"local_part": "postmaster"},
              headers=auth).raise_for_status()
    return sink.last_to(f"postmaster@{domain}").link()


def domain_status(http: httpx.Client, auth: dict[str, str], domain: str = DOMAIN) -> str:
    rows = http.get("/api/v1/domains", headers=auth).json()
    return str(next(r for r in rows if r["domain"] == domain)["status"])


def assert_buttons(page, safe: str, reject: str) -> None:  # type: ignore[no-untyped-def]
    """Two real buttons with accessible names; the safe one primary, the other secondary,
    and they look different."""
    yes = page.get_by_role("button", name=safe)
    no = page.get_by_role("button", name=reject)
    assert yes.count() == 1 and no.count() == 1
    assert "primary" in (yes.get_attribute("class") or "").split()
    assert "secondary" in (no.get_attribute("class") or "").split()
    look = "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color]"
    assert yes.evaluate(look) != no.evaluate(look)


def test_domain_link_page_names_the_account_and_the_expiry(  # type: ignore[no-untyped-def]
        views: Views, http: httpx.Client, smtp_sink: SmtpSink,
        fake_clock: FakeClock) -> None:
    """The probe link's page: the domain, the masked account that asked, 'expires in 47
    hours' by the CA's clock, verify primary and reject secondary; clicking verifies."""
    acct = active_account(http, smtp_sink)
    link = probe_link(http, smtp_sink, acct.auth)
    fake_clock.advance(minutes=30)
    views.check("domain-link", link)
    page = views.desktop
    assert page.title() == f"Verify {DOMAIN} · certwright CA"
    assert page.locator("#subject").inner_text() == DOMAIN
    assert page.locator("#account").inner_text() == "q***@mailhost.test"
    assert acct.email not in page.content()
    assert page.locator("#expires").inner_text() == f"expires in 47 hours, {LINK_EXPIRES}"
    assert_buttons(page, "Verify this domain", "I did not ask for this")
    assert domain_status(http, acct.auth) == "pending"

    page.get_by_role("button", name="Verify this domain").click()
    page.wait_for_selector("#result")
    views.check("domain-verified")
    assert "verified" in page.locator("#result").inner_text()
    assert page.locator("#next a").count() >= 1
    assert domain_status(http, acct.auth) == "verified"


def test_domain_link_rejected(views: Views, http: httpx.Client,  # type: ignore[no-untyped-def]
                              smtp_sink: SmtpSink) -> None:
    """'I did not ask for this' cancels the request and says so."""
    acct = active_account(http, smtp_sink)
    link = probe_link(http, smtp_sink, acct.auth)
    views.desktop.goto(link)
    views.desktop.get_by_role("button", name="I did not ask for this").click()
    views.desktop.wait_for_selector("#result")
    views.check("domain-rejected")
    assert "cancelled" in views.desktop.locator("#result").inner_text()
    assert domain_status(http, acct.auth) != "verified"


def test_account_link_and_result(views: Views, http: httpx.Client,  # type: ignore[no-untyped-def]
                                 smtp_sink: SmtpSink) -> None:
    """The account confirmation page names the address and the expiry; the result page
    says the account is active, in a sentence, with a link to what to do next."""
    email = "jane@mailhost.test"
    from certwright.ca.passphrase import generate_passphrase
    r = http.post("/api/v1/accounts", json={
        "email": email, "name": "Jane Roe", "passphrase": generate_passphrase("Jane Roe", email),
        "questions": questions()})
    assert r.status_code == 201, r.text
    views.check("account-link", smtp_sink.last_to(email).link())
    page = views.desktop
    assert page.locator("#subject").inner_text() == email
    assert page.locator("#expires").inner_text() == f"expires in 48 hours, {LINK_EXPIRES}"
    assert_buttons(page, "Confirm my account", "I did not ask for this")

    page.get_by_role("button", name="Confirm my account").click()
    page.wait_for_selector("#result")
    views.check("account-confirmed")
    text = page.locator("#result").inner_text()
    assert re.search(r"account .*is (now )?active", text), text
    assert text.endswith("."), text
    href = page.locator("#next a").first.get_attribute("href")
    assert href, "the result page links nowhere"
    response = page.goto(urljoin(page.url, href))
    assert response is not None and response.status == 200


def test_error_pages(views: Views, http: httpx.Client,  # type: ignore[no-untyped-def]
                     smtp_sink: SmtpSink, fake_clock: FakeClock) -> None:
    """Used, expired, unknown links and a wrong token: each a styled page in the same
    layout, with the status, what happened and what to do."""
    acct = active_account(http, smtp_sink)
    used = probe_link(http, smtp_sink, acct.auth)
    http.post("/" + used.split("/", 3)[3].split("?")[0],
              data={"token": used.split("token=")[1], "action": "verify"}).raise_for_status()
    expiring = probe_link(http, smtp_sink, acct.auth, "other.test")
    cases = [("error-used", used, 410, "link_used"),
             ("error-unknown", re.sub(r"verify/[^?]+", "verify/nosuchlink", used), 404,
              "not_found"),
             ("error-expired", expiring, 410, "link_expired")]
    for name, url, status, code in cases:
        if code == "link_expired":
            fake_clock.advance(hours=49)
        views.check(name, url)
        page = views.desktop
        response = page.goto(url)
        assert response is not None and response.status == status, name
        assert page.locator("#error").get_attribute("data-code") == code
        assert page.locator("header a").count() >= 1, f"{name}: not in the site layout"
        assert str(status) in page.locator("#status").inner_text()
        assert page.locator("#next").inner_text().strip(), f"{name}: nothing to do said"
        assert "Times" not in page.evaluate("getComputedStyle(document.body).fontFamily")


def test_certificate_page(views: Views, http: httpx.Client,  # type: ignore[no-untyped-def]
                          smtp_sink: SmtpSink) -> None:
    """The certificate view: names, serial, fingerprint, and its expiry in words and UTC."""
    acct = active_account(http, smtp_sink)
    verified_domain(http, smtp_sink, acct, DOMAIN)
    csr, _ = make_csr([DOMAIN, f"www.{DOMAIN}"])
    cert = http.post("/api/v1/certificates", json={"csr": csr, "idempotency_key": "k1"},
                     headers=acct.auth).json()
    views.check("certificate", f"{http.base_url}/certificates/{cert['serial']}")
    page = views.desktop
    text = page.locator("main").inner_text()
    assert f"www.{DOMAIN}" in text and cert["serial"] in text
    expires = page.locator("#expires").inner_text()
    assert re.fullmatch(r"expires in \d+ days, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d UTC",
                        expires), expires
    assert "T" not in page.locator("#validity").inner_text().replace("UTC", "")


def test_home_page(views: Views, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    """The home page says what the CA is and links the API docs and the root certificate."""
    views.check("home", f"{http.base_url}/")
    assert views.desktop.title() == "certwright CA"
    hrefs = views.desktop.eval_on_selector_all(
        "main a", "as => as.map(a => a.getAttribute('href'))")
    assert "/docs" in hrefs and "/ca/root.crt" in hrefs


def test_unknown_address_is_a_page_for_a_browser(views: Views,  # type: ignore[no-untyped-def]
                                                 http: httpx.Client) -> None:
    """A link cut short (no request id) opened in a browser gets the styled 404 page; a
    client that does not ask for HTML still gets the JSON error."""
    url = f"{http.base_url}/domains/verify/"
    views.check("error-no-page", url)
    page = views.desktop
    assert page.locator("#error").get_attribute("data-code") == "not_found"
    assert "404" in page.locator("#status").inner_text()
    plain = http.get("/domains/verify/")
    assert plain.status_code == 404 and plain.json()["error"] == "not_found"
