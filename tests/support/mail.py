"""Test helpers for mail: message builders (good and hostile) and an SMTP sender."""
from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

CA_BASE = "http://127.0.0.1:8443"
PROBE_PATH = "/domains/verify/p123"


def probe_mail(*, to: str = "postmaster@example.test", sender: str = "ca@ca.example",
               link: str = f"{CA_BASE}{PROBE_PATH}?token=t0k3n",
               subject: str = "Please verify your domain", message_id: str | None = None,
               html: bool = False, extra_text: str = "") -> bytes:
    """A probe mail as the CA sends it, with one verification link."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="ca.example")
    msg["X-Certwright-Kind"] = "domain_probe"
    msg.set_content(f"Hello,\n\nfollow this link to verify:\n{link}\n{extra_text}\n")
    if html:
        msg.add_alternative(f'<html><body><p>Verify: <a href="{link}">here</a></p>'
                            "<script>x='http://evil.example/'</script></body></html>",
                            subtype="html")
    return msg.as_bytes()


def issuance_mail(*, to: str = "admin@example.test", serial: str = "0A:1B:2C",
                  fingerprint: str = "ab" * 32,
                  subject: str = "Your certificate was issued") -> bytes:
    """The CA's notification that a certificate was issued, naming serial and fingerprint."""
    msg = EmailMessage()
    msg["From"] = "ca@ca.example"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="ca.example")
    msg["X-Certwright-Kind"] = "cert_issued"
    msg.set_content(f"A certificate was issued for your account.\n\nSerial: {serial}\n"
                    f"SHA256 Fingerprint: {fingerprint}\n")
    return msg.as_bytes()


def person_mail(*, to: str = "postmaster@example.test", sender: str = "alice@people.example",
                subject: str = "lunch?", body: str = "Shall we meet at noon?\n") -> bytes:
    """A person's mail to a shared mailbox: nothing of the CA's about it."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="people.example")
    msg.set_content(body)
    return msg.as_bytes()


def people_truncated(to: str = "postmaster@example.test") -> bytes:
    """A person's multipart mail cut off before its end (nothing of the CA's in it)."""
    return (truncated_mime(to).replace(b"X-Certwright-Kind: domain_probe\n", b"")
            .replace(b"ca@ca.example", b"bob@people.example")
            .replace(CA_BASE.encode(), b"http://wiki.people.example"))


def html_lure(*, to: str = "postmaster@example.test", shown: str, target: str) -> bytes:
    """Mail claiming to be the CA's whose HTML link shows ``shown`` but points to ``target``."""
    msg = EmailMessage()
    msg["From"] = "ca@ca.example"
    msg["To"] = to
    msg["Subject"] = "Please verify your domain"
    msg["Message-ID"] = make_msgid(domain="ca.example")
    msg["X-Certwright-Kind"] = "domain_probe"
    msg.set_content("Please use the HTML part.\n")
    msg.add_alternative(f'<p>Verify: <a href="{target}">{shown}</a></p>', subtype="html")
    return msg.as_bytes()


def headers(to: str = "postmaster@example.test", message_id: str = "<m1@ca.example>",
            extra: str = "") -> bytes:
    """A plain header block as the CA's (LF line endings, no blank line at the end)."""
    return (f"From: ca@ca.example\nTo: {to}\nSubject: verify\nMessage-ID: {message_id}\n"
            f"X-Certwright-Kind: domain_probe\nMIME-Version: 1.0\n{extra}").encode()


def nested_multipart(depth: int, *, to: str = "postmaster@example.test",
                     closed: bool = True) -> bytes:
    """A message whose multiparts nest ``depth`` deep (the top level counts as one)."""
    out = [headers(to, f"<deep{depth}@ca.example>",
                   'Content-Type: multipart/mixed; boundary="b0"\n') + b"\n"]
    out.extend(f'--b{level - 1}\nContent-Type: multipart/mixed; boundary="b{level}"\n\n'
               .encode() for level in range(1, depth))
    out.append(f"--b{depth - 1}\nContent-Type: text/plain\n\n{CA_BASE}{PROBE_PATH}\n".encode())
    if closed:
        out.extend(f"--b{level}--\n".encode() for level in reversed(range(depth)))
    return b"".join(out)


def truncated_mime(to: str = "postmaster@example.test") -> bytes:
    """A multipart message cut off before its closing boundary."""
    return (headers(to, "<trunc@ca.example>",
                    'Content-Type: multipart/alternative; boundary="zz"\n') + b"\n"
            b"--zz\nContent-Type: text/plain\n\n" + f"{CA_BASE}{PROBE_PATH}\n".encode()
            + b'--zz\nContent-Type: text/html\n\n<a href="')


def big_body(size: int, to: str = "postmaster@example.test") -> bytes:
    """A message with a ``size``-byte body."""
    return headers(to, "<big@ca.example>") + b"\n" + (b"x" * 76 + b"\n") * (size // 77 + 1)


def send(port: int, raw: bytes, *, sender: str = "ca@ca.example",
         to: list[str] | str = "postmaster@example.test") -> dict[str, tuple[int, bytes]]:
    """Send ``raw`` over SMTP to 127.0.0.1:``port``; returns smtplib's refused-recipients.

    Line endings become CRLF first, as SMTP wants (smtplib leaves bytes alone).
    """
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.sendmail(sender, [to] if isinstance(to, str) else to, crlf(raw))


def crlf(raw: bytes) -> bytes:
    """``raw`` with every line ending as CRLF."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def commit_take(store: Any, result: Any, run_id: str = "r1") -> bool:
    """Do for a mail step's result what the engine does: write its marks in one transaction
    (all, or none and False when one is taken), then call its ``after`` (the move)."""
    with store.transaction() as tx:
        if any(store.is_processed(s, i) for s, i in result.marks):
            return False
        for source, ident in result.marks:
            tx.mark_processed(source, ident, run_id)
    if result.after is not None:
        result.after()
    return True
