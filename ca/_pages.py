"""HTML pages for people: the confirmation and probe links, results, errors, certificates.

Mail scanners open links within seconds of delivery, so a GET only shows what would be
confirmed; each choice is a form that POSTs to the same URL with the token in a hidden
field (the token is the only credential: there is no session, so no CSRF token).
Everything interpolated is HTML-escaped; the style is inline (no request but the page's).

Every page has one layout (:func:`page`): ``lang``, a viewport for phones, a header
linking home, one ``<main>``. Times are words and UTC by the CA's injected clock
(:func:`expiry_words`: "expires in 47 hours, 3 Dec 2026 23:35 UTC"); the account that
asked for a domain probe is shown masked (:func:`mask_email`), as the page reaches the
domain's postmaster, not the account's holder. The safe choice is the ``primary``
button, the refusal the ``secondary`` one.

Private to :mod:`certwright.ca.app`, whose responses these are (it imports FastAPI).
"""
from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from fastapi.responses import HTMLResponse

from certwright.ca._page_style import STYLE
from certwright.clock import parse_instant

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SITE = "certwright CA"
_HOME = '<a href="/">About this CA</a>'
# The pages load nothing (inline style, no script) and post only to themselves.
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def utc_words(when: datetime) -> str:
    """``3 Dec 2026 23:35 UTC``: to the minute, English month names whatever the locale."""
    at = when.astimezone(UTC)
    return f"{at.day} {_MONTHS[at.month - 1]} {at.year} {at:%H:%M} UTC"


def _span(seconds: int) -> str:
    """A duration in words, rounded down (a page never promises more time than is left)."""
    minutes, hours = seconds // 60, seconds // 3600
    if minutes < 1:
        return "less than a minute"
    if hours < 1:
        return f"{minutes} minute{'s' * (minutes != 1)}"
    if hours < 2:
        rest = minutes - 60
        return f"1 hour {rest} minute{'s' * (rest != 1)}" if rest else "1 hour"
    if seconds <= 72 * 3600:
        return f"{hours} hours"
    return f"{seconds // 86400} days"


def expiry_words(at: datetime, now: datetime) -> str:
    """``expires in 47 hours, 3 Dec 2026 23:35 UTC`` (or ``expired 5 hours ago, ...``)."""
    seconds = int((at - now).total_seconds())
    words = f"expires in {_span(seconds)}" if seconds >= 0 else f"expired {_span(-seconds)} ago"
    return f"{words}, {utc_words(at)}"


def mask_email(address: str) -> str:
    """``j***@example.test``: enough to recognise one's own account, not to harvest it."""
    local, at, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if at else "***"


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A complete HTML document in the CA's layout; ``body`` must already be escaped."""
    full = title if title == _SITE else f"{title} · {_SITE}"
    html = ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<meta name=robots content=noindex><title>{escape(full)}</title>"
            f"<style>{STYLE}</style></head><body>"
            '<header class=site><a href="/">certwright CA</a></header>'
            f"<main><h1>{escape(title)}</h1>{body}</main>"
            '<footer><a href="/docs">API</a> · <a href="/ca/root.crt">Root certificate</a>'
            "</footer></body></html>")
    return HTMLResponse(html, status_code=status, headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY", "Content-Security-Policy": _CSP})


def _form(action_url: str, token: str, action: str, label: str, kind: str) -> str:
    """One choice: a form POSTing the token and the action, with one labelled button."""
    return (f'<form method=post action="{escape(action_url)}">'
            f'<input type=hidden name=token value="{escape(token)}">'
            f'<input type=hidden name=action value="{action}">'
            f'<button type=submit class={kind} name=choice value="{action}" id="{action}">'
            f"{escape(label)}</button></form>")


def link_page(info: dict[str, Any], action_url: str, token: str,
              now: datetime) -> HTMLResponse:
    """The page a link opens: what is being confirmed, who asked, until when, two choices."""
    expires = escape(expiry_words(parse_instant(info["expires_at"]), now))
    if info["kind"] == "domain":
        title = f"Verify {info['domain']}"
        asked = escape(mask_email(info.get("account_email") or ""))
        what = (f"<p>The CA account <strong id=account>{asked}</strong> asked to verify "
                f"the domain <strong id=subject>{escape(info['domain'])}</strong>, so that "
                f"it may get certificates for it. This mail went to "
                f"<span class=wrap>{escape(info['address'])}</span>, an address that "
                "only the domain's administrators should read.</p>"
                "<p>If you look after this domain and expected this, verify it. If not, "
                "reject it: nothing is verified, and the refusal is recorded.</p>")
        yes = _form(action_url, token, "verify", "Verify this domain", "primary")
    else:
        title = "Confirm your account"
        what = (f"<p>Someone asked for an account at this CA for <strong id=subject "
                f"class=wrap>{escape(info['address'])}</strong>.</p>"
                "<p>If it was you, confirm it. If not, reject it: no account is opened.</p>")
        yes = _form(action_url, token, "verify", "Confirm my account", "primary")
    no = _form(action_url, token, "reject", "I did not ask for this", "secondary")
    body = (f"{what}<p class=status>Nothing has changed yet. This link works once and "
            f"<span id=expires>{expires}</span>.</p><div class=choices>{yes}{no}</div>")
    return page(title, body)


def result_page(result: dict[str, Any]) -> HTMLResponse:
    """The page after a choice was POSTed: what happened, in a sentence, and what next."""
    domain = result.get("domain")
    subject = escape(domain) if domain else "your account"
    status = result["status"]
    close = "Nothing else to do: you can close this page."
    if status == "rejected":
        what = (f"The request to verify {subject} was cancelled and recorded; nothing was "
                "verified." if domain else "The account request was cancelled and recorded;"
                " no account was opened.")
        return page("Request cancelled", f"<p id=result>{what}</p>"
                    f"<p id=next>{close} {_HOME}</p>")
    if status == "already_verified":
        what = f"{subject} was verified already." if domain else \
            "Your account at this CA is active already."
        return page("Already verified", f"<p id=result>{what[0].upper()}{what[1:]}</p>"
                    f"<p id=next>{close} {_HOME}</p>")
    if domain:
        return page("Domain verified", f"<p id=result>{subject} is now verified for the "
                    "account that asked.</p><p id=next>The certwright run that asked for "
                    f"it goes on by itself to get its certificate. {close} {_HOME}</p>")
    return page("Account confirmed", "<p id=result>Your account at this CA is now active."
                "</p><p id=next>Next, verify a domain and get its certificate: "
                '<a href="/#get-a-certificate">how to get a certificate from this CA</a>.'
                "</p>")


# What a person can do about each refusal a link or page can meet: (title, what to do).
_ERRORS: dict[str, tuple[str, str]] = {
    "link_expired": ("This link has expired", (
        "Links work for 48 hours. Ask for a new one: the run or the person that asked can "
        "have the CA send a new mail, which replaces this one.")),
    "link_used": ("This link was used", (
        "Nothing to do: this request was answered already. If you did not answer it, "
        "tell the CA's operator.")),
    "link_cancelled": ("This request was cancelled", (
        "Ask for a new link: the request can be made again.")),
    "bad_token": ("Wrong token", (
        "Open the link from the mail again, whole: a link broken across two lines loses "
        "part of its token. A few wrong tries cancel the request.")),
    "not_found": ("No such request", (
        "Open the link from the mail again, whole: a link broken across two lines is cut "
        "short. If it still fails, the request no longer exists; ask for a new one.")),
    "rate_limited": ("Too many requests", "Wait a minute, then try again."),
}
_UNKNOWN_ERROR = ("Something went wrong", (
    "Go back and try again; if it keeps failing, tell the CA's operator the error code "
    "below."))


#: What an HTTP refusal outside the API says to a person.
HTTP_WORDS = {404: "there is no page at this address",
              405: "this page cannot be used that way"}


def wants_page(path: str, accept: str) -> bool:
    """Whether a refusal outside /api goes to a browser (it asks for HTML) as a page;
    everything else, and everything under /api, gets the JSON error."""
    return not path.startswith("/api/") and "text/html" in accept.lower()


def error_page(status: int, code: str, message: str) -> HTMLResponse:
    """A refusal as a page in the same layout: what happened, the status, what to do."""
    title, todo = _ERRORS.get(code, _UNKNOWN_ERROR)
    text = message.strip() or title
    text = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
    body = (f"<p id=error data-code={escape(code)}>{escape(text)}</p>"
            f"<p id=next>{escape(todo)} {_HOME}</p>"
            f"<p id=status class=status>HTTP {status} · error code "
            f"<code>{escape(code)}</code></p>")
    return page(title, body, status)


def certificate_page(view: dict[str, Any], now: datetime) -> HTMLResponse:
    """One certificate: its names, serial, fingerprint, validity in words, and its PEM."""
    not_before, not_after = parse_instant(view["not_before"]), parse_instant(view["not_after"])
    names = "".join(f"<li>{escape(n)}</li>" for n in view["names"])
    revoked = ("<p class=notice><strong>This certificate is revoked.</strong> Clients that "
               "check the CA's revocation list refuse it.</p>") if view["revoked"] else ""
    body = (f"{revoked}<dl><dt>Names</dt><dd><ul class=names>{names}</ul></dd>"
            f"<dt>Serial</dt><dd><code class=wrap>{escape(view['serial'])}</code></dd>"
            "<dt>SHA-256 fingerprint</dt><dd><code class=wrap>"
            f"{escape(view['fingerprint_sha256'])}</code></dd>"
            f"<dt>Valid</dt><dd id=validity>since {utc_words(not_before)}; <span id=expires>"
            f"{escape(expiry_words(not_after, now))}</span></dd></dl>"
            "<h2 id=pem-title>The certificate (PEM)</h2>"
            f"<pre tabindex=0 aria-labelledby=pem-title>{escape(view['certificate'])}</pre>"
            f'<p>Issued under this CA\'s <a href="/ca/root.crt">root certificate</a>.</p>')
    return page(f"Certificate for {view['names'][0]}", body)


def home_page(public_url: str) -> HTMLResponse:
    """What this CA is, how to get a certificate from it, where its API and root are."""
    url = escape(public_url)
    body = ("<p>A private certificate authority that verifies domains by mail (the "
            "CAcert process): it mails a link to an administrative address of the domain, "
            "and a person follows it.</p>"
            "<h2 id=get-a-certificate>Get a certificate</h2>"
            "<p>With certwright, one command joins this CA, confirms the account, has each "
            "domain verified and installs the certificate:</p>"
            f"<pre tabindex=0 aria-label=Command>certwright run cacert -d example.org "
            f"--set ca={url}</pre>"
            '<p>Trust anchor: <a href="/ca/root.crt">/ca/root.crt</a>. API: '
            '<a href="/docs">/docs</a> (the document itself: '
            '<a href="/openapi.json">/openapi.json</a>).</p>')
    return page(_SITE, body)
