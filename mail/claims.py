"""Which mail is the CA's business: certwright touches only mail that claims to be the CA's.

A mailbox may be shared with people (a ``postmaster@`` Maildir). certwright moves, marks
or quarantines a message only when it **claims to be the CA's**, by any of:

* its ``X-Certwright-Kind`` header (the CA writes one into every message it sends);
* its sender: one of :attr:`Claims.senders` (an address, or ``@domain`` for a domain);
* a link (or, for mail that does not parse, the text) naming one of :attr:`Claims.origins`
  (the CA's base URLs: scheme, host and port).

Every other message stays where it is, unread. A message that claims to be the CA's and
fails a check is moved aside with the reason, whatever the state of the run it was for.

Hazard: a claim is not proof (anyone can write the header); it only decides whether the
message is ours to judge. Mail that claims and fails is quarantined, never followed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from certwright.mail.parse import ParsedMail

__all__ = ["DEFAULT_SENDER", "KIND_HEADER", "Claims"]

#: The built-in CA's sender when its operator sets none (``ca serve --mail-from``).
DEFAULT_SENDER = "ca@certwright.invalid"
KIND_HEADER = "X-Certwright-Kind"

_RAW_KIND = re.compile(rb"(?im)^x-certwright-kind[ \t]*:")
_RAW_FROM = re.compile(rb"(?im)^from[ \t]*:([^\r\n]*)")
_HEAD_LIMIT = 65536  # the raw checks look at this much of a message that did not parse


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url.strip())
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    return (scheme, host, port) if scheme in ("http", "https") and host else None


@dataclass(frozen=True)
class Claims:
    """How to tell the CA's mail: its senders and its origins (see the module doc)."""

    senders: frozenset[str] = field(default_factory=lambda: frozenset({DEFAULT_SENDER}))
    origins: tuple[str, ...] = ()

    @classmethod
    def of(cls, *, senders: tuple[str, ...] = (), origins: tuple[str, ...] = ()) -> Claims:
        """Claims with these senders and origins added to the defaults (blanks ignored)."""
        extra = {s.strip().lower() for s in senders if s and s.strip()}
        return cls(frozenset({DEFAULT_SENDER, *extra}),
                   tuple(dict.fromkeys(o.strip() for o in origins if o and o.strip())))

    def _sender(self, address: str) -> bool:
        address = address.strip().lower()
        return address in self.senders or "@" + address.rpartition("@")[2] in self.senders

    def claim(self, mail: ParsedMail) -> str | None:
        """Why ``mail`` claims to be the CA's (a short phrase), or None when it does not."""
        if mail.ca_kind is not None:
            return f"{KIND_HEADER} header"
        if self._sender(mail.from_addr):
            return f"sender {mail.from_addr}"
        origins = {o for o in (_origin(u) for u in self.origins) if o}
        for link in (*mail.links, *mail.suspicious_links):
            if _origin(link) in origins:
                return "a link to the CA"
        return None

    def claim_raw(self, raw: bytes) -> str | None:
        """As :meth:`claim` for a message that did not parse: its bytes are searched."""
        head = raw[:_HEAD_LIMIT]
        end = head.find(b"\n\n")
        end2 = head.find(b"\r\n\r\n")
        cut = min(x for x in (end, end2, len(head)) if x >= 0)
        headers = head[:cut]
        if _RAW_KIND.search(headers):
            return f"{KIND_HEADER} header"
        for match in _RAW_FROM.finditer(headers):
            value = match.group(1).decode("utf-8", "replace").lower()
            if any(s in value for s in self.senders if "@" in s and not s.startswith("@")):
                return "sender"
        text = head.decode("utf-8", "replace").lower()
        for base in self.origins:
            origin = _origin(base)
            if origin is None:
                continue
            scheme, host, port = origin
            forms = {base.strip().rstrip("/").lower(), f"{scheme}://{host}:{port}"}
            if port == (443 if scheme == "https" else 80):
                forms.add(f"{scheme}://{host}/")
            if any(form in text for form in forms):
                return "a link to the CA"
        return None
