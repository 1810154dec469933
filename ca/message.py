"""The CA's outgoing messages as bytes: headers folded, body encoded, ready for SMTP DATA.

The message is built as bytes directly (not through :class:`email.message.EmailMessage`,
which costs about a millisecond a message): RFC 5322 headers, folded at 78 characters
(RFC 2047 encoded words for non-ASCII text), a ``text/plain; charset="utf-8"`` body in
7bit when it is ASCII with short lines, else quoted-printable. A non-ASCII address takes
the slow way (RFC 6532 UTF-8 headers through the email package) and needs SMTPUTF8.

Hazards: a header value with a CR or LF is refused (ValueError), never folded in: it would
let a caller add headers. The result is not dot-stuffed; the SMTP side does that.
"""
from __future__ import annotations

import binascii
import re
import socket
from datetime import datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from io import BytesIO

from certwright.clock import Clock

MAX_LINE = 78  # RFC 5322 2.1.1: lines SHOULD be no longer than 78 characters

_CRLF = b"\r\n"
_SIMPLE_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_FOLD_PIECES = re.compile(r"[ ]+[^ ]*")


def _no_newline(name: str, value: str) -> None:
    if len(value.splitlines()) > 1 or "\r" in value or "\n" in value:
        raise ValueError(f"{name}: header values may not contain linefeed or carriage "
                         "return characters")


def _header(name: str, value: str) -> str:
    """``Name: value`` folded to lines of at most 78 characters, each ending in CRLF.

    Printable ASCII is folded at spaces here; anything else (non-ASCII, control
    characters, a word too long to fit, text that looks like an encoded word) goes
    through the email package's folder, which encodes it per RFC 2047.
    """
    _no_newline(name, value)
    line = f"{name}: {value}"
    if len(line) <= MAX_LINE and not _NOT_PRINTABLE.search(value) and "=?" not in value:
        return line + "\r\n"
    if not _NOT_PRINTABLE.search(value) and "=?" not in value:
        lines: list[str] = []
        current = f"{name}:"
        for piece in _FOLD_PIECES.findall(" " + value):
            if len(current) + len(piece) > MAX_LINE and current != f"{name}:":
                lines.append(current)
                current = piece
            else:
                current += piece
        lines.append(current)
        if all(len(x) <= MAX_LINE and x.strip() for x in lines):
            return "\r\n".join(lines) + "\r\n"
    folded: str = email_policy.SMTP.header_factory(name, value).fold(policy=email_policy.SMTP)
    return folded


def _address_header(name: str, value: str) -> str:
    _no_newline(name, value)
    if _SIMPLE_ADDRESS.fullmatch(value) and len(value) + len(name) + 2 <= MAX_LINE:
        return f"{name}: {value}\r\n"
    folded: str = email_policy.SMTP.header_factory(name, value).fold(policy=email_policy.SMTP)
    return folded


def _text_body(body: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF line ends) for a text body."""
    lines = body.encode("utf-8").splitlines()
    raw = _CRLF.join(lines) + _CRLF
    if raw.isascii() and all(len(x) <= MAX_LINE for x in lines):
        return "7bit", raw
    return "quoted-printable", binascii.b2a_qp(raw, istext=True)


class MessageBuilder:
    """Builds the CA's plain-text messages from ``mail_from``, dated by ``clock``."""

    def __init__(self, *, mail_from: str, clock: Clock) -> None:
        self.mail_from = mail_from
        self.clock = clock
        self._fqdn: str | None = None  # looked up once, only when mail_from has no domain

    def _msgid_domain(self) -> str:
        domain = self.mail_from.rpartition("@")[2]
        if domain:
            return domain
        if self._fqdn is None:
            self._fqdn = socket.getfqdn()
        return self._fqdn

    def build(self, to: str, subject: str, body: str, *, kind: str,
              message_id: str | None = None,
              date: datetime | None = None) -> tuple[bytes, bool]:
        """(message bytes, whether it needs SMTPUTF8: a non-ASCII address).

        The bytes have CRLF line ends and are not dot-stuffed; ``kind`` goes into
        ``X-Certwright-Kind``. ``message_id`` and ``date`` (default: a new Message-ID, the
        clock's now) let a resend be the same message. Raises ValueError for a header
        value with CR or LF."""
        _no_newline("To", to)
        _no_newline("From", self.mail_from)
        date_text = format_datetime(date or self.clock.now())
        msgid = message_id or make_msgid(domain=self._msgid_domain())
        if not (to.isascii() and self.mail_from.isascii()):
            return self._build_international(to, subject, body, kind, date_text, msgid), True
        cte, encoded = _text_body(body)
        head = "".join((
            _address_header("From", self.mail_from),
            _address_header("To", to),
            _header("Subject", subject),
            f"Date: {date_text}\r\n",
            _header("Message-ID", msgid),
            "Auto-Submitted: auto-generated\r\n",
            _header("X-Certwright-Kind", kind),
            "MIME-Version: 1.0\r\n",
            'Content-Type: text/plain; charset="utf-8"\r\n',
            f"Content-Transfer-Encoding: {cte}\r\n\r\n"))
        return head.encode("ascii") + encoded, False

    def _build_international(self, to: str, subject: str, body: str, kind: str, date: str,
                             msgid: str) -> bytes:
        """A message with a non-ASCII address: RFC 6532 UTF-8 headers (rare; the slow way)."""
        msg = EmailMessage()
        msg["From"] = self.mail_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = date
        msg["Message-ID"] = msgid
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Certwright-Kind"] = kind
        msg.set_content(body)
        out = BytesIO()
        BytesGenerator(out, policy=email_policy.SMTPUTF8).flatten(msg, linesep="\r\n")
        return out.getvalue()
