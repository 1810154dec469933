"""The CA's outgoing mail: confirmation links, domain probes, issuance notices.

Delivery is synchronous with a short timeout, so the API can answer 502
``mail_undeliverable`` with the SMTP reason while the user waits. Route:

1. the smarthost, when configured (``host, port``): every message goes there;
2. else the recipient domain's MX hosts in preference order (dnspython);
3. else, when the domain has no MX record, the domain itself (RFC 5321 5.1 implicit MX).

Hazard: no retry queue. A message that fails is reported to the caller, who may retry;
nothing is sent twice by this module on its own.
"""
from __future__ import annotations

import smtplib
import socket
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import structlog

from engine.clock import Clock, SystemClock

log = structlog.get_logger("ca.outmail")


class MailError(Exception):
    """Mail could not be delivered; ``reason`` is the SMTP or network reason."""

    def __init__(self, recipient: str, reason: str) -> None:
        super().__init__(f"mail to {recipient} not delivered: {reason}")
        self.recipient = recipient
        self.reason = reason


def mx_hosts(domain: str, *, timeout: float = 5.0) -> list[tuple[str, int]]:
    """The SMTP hosts for ``domain``: MX targets by preference, else the domain itself.

    A null MX (RFC 7505, ``0 .``) yields []. Raises MailError if DNS itself fails.
    """
    import dns.exception
    import dns.resolver

    try:
        answer = dns.resolver.resolve(domain, "MX", lifetime=timeout)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return [(domain, 25)]
    except dns.exception.DNSException as exc:
        raise MailError(f"@{domain}", f"MX lookup failed: {exc}") from None
    records = sorted(answer, key=lambda r: r.preference)
    hosts = [str(r.exchange).rstrip(".") for r in records]
    return [(h, 25) for h in hosts if h]


class Mailer:
    """Sends plain-text mail via the smarthost or the recipient's MX."""

    def __init__(self, *, smarthost: tuple[str, int] | None, mail_from: str,
                 clock: Clock | None = None, timeout: float = 10.0) -> None:
        self.smarthost = smarthost
        self.mail_from = mail_from
        self.clock = clock or SystemClock()
        self.timeout = timeout

    def send(self, to: str, subject: str, body: str, *, kind: str) -> None:
        """Deliver one message; raises MailError with the last reason when no host took it."""
        msg = EmailMessage()
        msg["From"] = self.mail_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = format_datetime(self.clock.now())
        msg["Message-ID"] = make_msgid(domain=self.mail_from.rpartition("@")[2] or None)
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Certwright-Kind"] = kind
        msg.set_content(body)
        hosts = [self.smarthost] if self.smarthost else mx_hosts(to.rpartition("@")[2])
        if not hosts:
            raise MailError(to, "the domain publishes a null MX: it accepts no mail")
        reason = "no host tried"
        for host, port in hosts:
            try:
                with smtplib.SMTP(host, port, timeout=self.timeout) as smtp:
                    smtp.send_message(msg, from_addr=self.mail_from, to_addrs=[to])
                log.info("mail_sent", kind=kind, to=to, via=f"{host}:{port}")
                return
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                reason = f"{host}:{port} refused the recipient: {code} {text.decode(errors='replace')}"
            except smtplib.SMTPResponseException as exc:
                reason = f"{host}:{port} said {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
            except (OSError, smtplib.SMTPException, socket.timeout) as exc:
                reason = f"{host}:{port}: {exc or type(exc).__name__}"
            log.warning("mail_attempt_failed", kind=kind, to=to, reason=reason)
        raise MailError(to, reason)
