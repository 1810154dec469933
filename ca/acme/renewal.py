"""ACME Renewal Information (RFC 9773): certificate identifiers, suggested windows, and
the checks on ``replaces`` in newOrder.

Contract:

* :func:`cert_id` is ``base64url(AKI keyIdentifier) "." base64url(DER serial bytes)``
  (section 4.1: the serial's two's-complement bytes, a leading zero kept);
  :func:`parse_cert_id` inverts it and raises ``malformed`` for anything else.
* :func:`suggested_window`: the operator's window when one is set (``certwright ca
  renewal-window``); for a revoked certificate a window that has ended (renew now);
  otherwise from two thirds to five sixths of the lifetime, so renewals come in its last
  third and a day or more before the end.
* The answer carries ``Retry-After`` (``acme_ari_retry_hours``, 6 by default): when a
  client should ask again.
"""
from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509

from certwright.ca.acme.problems import AcmeProblem
from certwright.clock import format_instant, parse_instant

if TYPE_CHECKING:
    from certwright.ca.acme.service import AcmeService


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or "=" in text or not all(c.isalnum() or c in "-_" for c in text):
        raise ValueError(text)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def serial_bytes(serial: int) -> bytes:
    """The DER INTEGER content of a positive serial (a leading zero when the top bit is
    set)."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


def cert_id(cert: x509.Certificate) -> str:
    """The RFC 9773 identifier of ``cert``; ValueError when it has no AKI keyIdentifier."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    if aki.key_identifier is None:
        raise ValueError("the certificate's AKI has no keyIdentifier")
    return f"{_b64(aki.key_identifier)}.{_b64(serial_bytes(cert.serial_number))}"


def parse_cert_id(text: str) -> tuple[bytes, int]:
    """(keyIdentifier, serial) of a certID; AcmeProblem(malformed) saying what is wrong."""
    aki_part, _, serial_part = text.partition(".")
    try:
        aki, serial = _unb64(aki_part), _unb64(serial_part)
    except ValueError:
        raise AcmeProblem("malformed", f"{text[:100]!r} is not a certificate identifier "
                          "(base64url keyIdentifier, a dot, base64url serial)") from None
    if not serial or serial[0] & 0x80:
        raise AcmeProblem("malformed", "the certificate identifier's serial is not a "
                          "positive DER integer")
    return aki, int.from_bytes(serial, "big")


def suggested_window(row: dict[str, Any], operator: dict[str, Any] | None
                     ) -> tuple[str, str]:
    """(start, end) for the certificate ``row`` (see the module contract)."""
    if operator is not None:
        return operator["start"], operator["end"]
    if row["revoked_at"] is not None:
        revoked = parse_instant(row["revoked_at"])
        return format_instant(revoked - timedelta(days=1)), format_instant(revoked)
    born, dies = parse_instant(row["not_before"]), parse_instant(row["not_after"])
    life = dies - born
    return format_instant(born + life * 2 / 3), format_instant(born + life * 5 / 6)


def check_window(start: datetime, end: datetime) -> str | None:
    """Why (start, end) is not a window, or None."""
    if end <= start:
        return f"--end {format_instant(end)} is not after --start {format_instant(start)}"
    return None


def find_certificate(acme: AcmeService, ident: str) -> dict[str, Any] | None:
    """The CA's certificate that ``ident`` names (its AKI must be the intermediate's)."""
    aki, serial = parse_cert_id(ident)
    if aki != acme.issuer_key_id:
        return None
    return acme.ca.store.find_certificate(serial=format(serial, "x"), committed=True)


def renewal_info(acme: AcmeService, ident: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The suggested window of the certificate ``ident``, and its Retry-After."""
    row = find_certificate(acme, ident)
    if row is None:
        raise AcmeProblem("malformed", f"no certificate {ident} issued by this CA",
                          status=404)
    start, end = suggested_window(row, acme.store.find_window(row["serial"]))
    retry = int(float(acme.config["acme_ari_retry_hours"]) * 3600)
    return {"suggestedWindow": {"start": start, "end": end}}, {"Retry-After": str(retry)}


def check_replaces(acme: AcmeService, account: dict[str, Any], ident: str,
                   names: list[str]) -> None:
    """Refuse ``replaces`` unless it names one of the account's certificates, sharing a
    name with the order, that no live order replaces yet (run inside the newOrder
    transaction)."""
    row = find_certificate(acme, ident)
    if row is None:
        raise AcmeProblem("malformed", f"replaces: no certificate {ident} issued by this CA")
    if row["account_id"] != account["id"]:
        raise AcmeProblem("unauthorized", "replaces: the certificate is another account's")
    if not set(row["names"].split(",")) & set(names):
        raise AcmeProblem("malformed", "replaces: the certificate shares no identifier "
                          "with this order")
    if acme.store.replacing_order(ident) is not None:
        raise AcmeProblem("alreadyReplaced", f"certificate {ident} is replaced by another "
                          "order already", status=409)
