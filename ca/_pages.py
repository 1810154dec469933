"""HTML pages for people: the confirmation and probe links, certificate pages.

Mail scanners open links within seconds of delivery, so a GET only shows what would be
confirmed; each choice is a form that POSTs to the same URL with the token in a hidden
field. Everything interpolated is HTML-escaped.

Private to :mod:`certwright.ca.app`, whose responses these are (it imports FastAPI).
"""
from __future__ import annotations

from html import escape
from typing import Any

from fastapi.responses import HTMLResponse

_STYLE = ("body{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.5}"
          "button{font-size:1.1em;margin:.3em .6em .3em 0;padding:.4em 1em}"
          "pre{background:#f4f4f4;padding:1em;overflow-x:auto}")


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A complete HTML document; ``body`` must already be escaped."""
    html = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=robots content=noindex><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>")
    return HTMLResponse(html, status_code=status, headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY"})


def _form(action_url: str, token: str, action: str, label: str, name: str) -> str:
    return (f'<form method=post action="{escape(action_url)}" style="display:inline">'
            f'<input type=hidden name=token value="{escape(token)}">'
            f'<input type=hidden name=action value="{action}">'
            f'<button type=submit name=choice value="{action}" id="{name}">'
            f'{escape(label)}</button></form>')


def link_page(info: dict[str, Any], action_url: str, token: str) -> HTMLResponse:
    """The page a link opens: what is being confirmed and the two choices."""
    if info["kind"] == "domain":
        title = f"Verify {info['domain']}"
        what = (f"<p>An account asked to verify the domain <strong id=subject>"
                f"{escape(info['domain'])}</strong>; this mail went to "
                f"{escape(info['address'])}.</p>")
        yes = _form(action_url, token, "verify", "Verify this domain", "verify")
    else:
        title = "Confirm your account"
        what = (f"<p>Someone asked for a CA account for <strong id=subject>"
                f"{escape(info['address'])}</strong>.</p>")
        yes = _form(action_url, token, "verify", "Confirm my account", "verify")
    no = _form(action_url, token, "reject", "I did not ask for this", "reject")
    body = (f"{what}<p>Nothing has changed yet: choose below. This link works once and "
            f"expires at {escape(info['expires_at'])}.</p><p>{yes}{no}</p>")
    return page(title, body)


def result_page(result: dict[str, Any]) -> HTMLResponse:
    """The page after a choice was POSTed."""
    subject = escape(result.get("domain") or "your account")
    status = result["status"]
    if status == "rejected":
        return page("Request cancelled", f"<p id=result>Thank you. The request for "
                    f"{subject} was cancelled and recorded; nothing was verified.</p>")
    if status == "already_verified":
        return page("Already verified", f"<p id=result>{subject} was verified already. "
                    "Nothing else to do.</p>")
    what = "The domain is now verified" if result["kind"] == "domain" \
        else "Your account is now active; you can log in"
    return page("Verified", f"<p id=result>{what}: {subject}.</p>")


def error_page(status: int, code: str, message: str) -> HTMLResponse:
    titles = {"link_expired": "This link has expired", "link_used": "This link was used",
              "link_cancelled": "This request was cancelled", "bad_token": "Wrong token",
              "not_found": "No such request"}
    return page(titles.get(code, "Error"), f"<p id=error data-code={escape(code)}>"
                f"{escape(message)}</p>", status)


def certificate_page(view: dict[str, Any]) -> HTMLResponse:
    names = ", ".join(view["names"])
    revoked = "<p><strong>This certificate is revoked.</strong></p>" if view["revoked"] else ""
    body = (f"{revoked}<p>Names: {escape(names)}<br>Serial: <code>{escape(view['serial'])}"
            f"</code><br>SHA256 Fingerprint: <code>{escape(view['fingerprint_sha256'])}</code>"
            f"<br>Valid {escape(view['not_before'])} to {escape(view['not_after'])}</p>"
            f"<pre>{escape(view['certificate'])}</pre>")
    return page(f"Certificate for {view['names'][0]}", body)
