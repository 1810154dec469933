"""ACME Renewal Information (RFC 9773) on the client side: certIDs and renewalInfo reads.

:func:`cert_id` names a certificate as RFC 9773 section 4.1 says; :func:`fetch_renewal_info`
reads the CA's suggested window for it and gives what the inventory keeps in a record's
``ari`` (:func:`certwright.steps.inventory.renewal_instant` picks an instant inside the
window). The read is an unauthenticated GET, so the daemon can repeat it without the
account's key.

Hazards: the answer is outside input. A window that does not parse, ends before it
starts, or a body that is not JSON is an :class:`AriError` (the caller keeps what it had
and tries later), never a schedule. ``Retry-After`` is bounded to
[:data:`MIN_RECHECK`, :data:`MAX_RECHECK`] so that a CA asking every second (or every
year) neither hammers it nor forgets a moved window; RFC 9773 section 4.3 suggests
re-checking at least daily-ish, and the default without one is :data:`DEFAULT_RECHECK`.
"""
from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import requests
from cryptography import x509

from certwright.clock import format_instant, parse_instant
from certwright.errors import CertwrightError
from certwright.steps.acme.network import retry_after_seconds

DEFAULT_RECHECK = 6 * 3600.0  # seconds, when the CA sends no Retry-After
MIN_RECHECK = 60.0
MAX_RECHECK = 7 * 86400.0
TIMEOUT = 10.0  # seconds for one renewalInfo GET: the daemon waits for it


class AriError(CertwrightError):
    """The renewalInfo of a certificate could not be read (network, status or body)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cert_id(cert: x509.Certificate) -> str:
    """The certificate's RFC 9773 certID: base64url(AKI keyIdentifier) "." base64url(the
    serial's DER INTEGER content, a leading zero kept). AriError without an AKI keyId."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise AriError("the certificate has no authority key identifier: no ARI certID") from exc
    if aki.key_identifier is None:
        raise AriError("the certificate's authority key identifier has no keyIdentifier")
    serial = cert.serial_number
    der = serial.to_bytes(serial.bit_length() // 8 + 1, "big")  # DER: a sign bit of 0
    return f"{_b64(aki.key_identifier)}.{_b64(der)}"


def serial_of(ident: str) -> str | None:
    """The serial (hex, as the inventory writes it) inside a certID; None if unreadable."""
    try:
        _aki, serial = ident.split(".")
        return format(int.from_bytes(_unb64(serial), "big"), "x")
    except ValueError:
        return None


def fetch_renewal_info(base_url: str, cert: x509.Certificate, now: datetime, *,
                       verify: str | bool = True,
                       session: requests.Session | None = None) -> dict[str, Any]:
    """GET ``base_url/certID`` and return the record's ``ari``: ``suggestedWindow``
    (``start``, ``end``), ``explanationURL`` when given, ``cert_id``, ``url``, ``checked`` and
    ``next_check`` (``now`` plus the bounded Retry-After). AriError on any failure."""
    ident = cert_id(cert)
    url = f"{base_url.rstrip('/')}/{ident}"
    try:
        resp = (session or requests).get(url, timeout=TIMEOUT, verify=verify)
    except requests.RequestException as exc:
        raise AriError(f"GET {url}: network error: {exc}") from exc
    if resp.status_code != 200:  # the only answer with a window
        raise AriError(f"GET {url}: the CA answered {resp.status_code}: {resp.text[:200]}")
    try:
        body = resp.json()
        window = body["suggestedWindow"]
        start, end = parse_instant(str(window["start"])), parse_instant(str(window["end"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise AriError(f"GET {url}: no readable suggestedWindow in the answer: {exc}") from exc
    if end < start:
        raise AriError(f"GET {url}: the suggested window ends ({window['end']}) before it "
                       f"starts ({window['start']})")
    wait = min(max(retry_after_seconds(resp, DEFAULT_RECHECK), MIN_RECHECK), MAX_RECHECK)
    out: dict[str, Any] = {
        "suggestedWindow": {"start": format_instant(start), "end": format_instant(end)},
        "cert_id": ident, "url": url, "checked": format_instant(now),
        "next_check": format_instant(now + timedelta(seconds=wait))}
    explanation = body.get("explanationURL") if isinstance(body, dict) else None
    if isinstance(explanation, str) and explanation:
        out["explanationURL"] = explanation
    return out
