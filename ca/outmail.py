"""The CA's outgoing mail: confirmation links, domain probes, issuance notices.

Delivery is synchronous with a short timeout, so the API can answer 502
``mail_undeliverable`` with the SMTP reason while the user waits. Route:

1. the smarthost, when configured (``host, port``): every message goes there;
2. else the recipient domain's MX hosts in preference order (dnspython);
3. else, when the domain has no MX record, the domain itself (RFC 5321 5.1 implicit MX).

Sessions are kept alive per host and reused (reconnecting once when one has died).

Hazard: no retry queue. A message that fails is reported to the caller, who may retry;
nothing is sent twice by this module on its own.
"""
from __future__ import annotations

import smtplib
import socket
import threading
import time
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import structlog

from engine.clock import Clock, SystemClock

log = structlog.get_logger("ca.outmail")

IDLE_S = 30.0  # a kept SMTP session unused this long is closed rather than reused
PROBE_S = 2.0  # how long a NOOP may take before a kept session counts as dead


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
        # One kept-alive SMTP session per host (a session per message costs four extra
        # round trips: connect, EHLO, QUIT, close); a lock per host serialises its use.
        self._sessions: dict[tuple[str, int], smtplib.SMTP] = {}
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._used: dict[tuple[str, int], float] = {}

    def _lock(self, host: tuple[str, int]) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(host, threading.Lock())

    def _deliver(self, host: str, port: int, msg: EmailMessage, to: str) -> None:
        """Send over the kept session, opening it (again) when there is none or it died."""
        key = (host, port)
        with self._lock(key):
            for fresh in (False, True):
                smtp = self._sessions.get(key)
                if smtp is not None and not fresh and not self._alive(key, smtp):
                    smtp = None
                if smtp is None or fresh:
                    if smtp is not None:
                        self._sessions.pop(key, None)
                        try:
                            smtp.close()
                        except OSError:
                            pass
                    smtp = smtplib.SMTP(host, port, timeout=self.timeout)
                    self._sessions[key] = smtp
                try:
                    smtp.send_message(msg, from_addr=self.mail_from, to_addrs=[to])
                    self._used[key] = time.monotonic()
                    return
                except smtplib.SMTPServerDisconnected:
                    if fresh:
                        raise
                except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused):
                    try:
                        smtp.rset()  # keep the session usable for the next message
                    except (OSError, smtplib.SMTPException):
                        self._sessions.pop(key, None)
                    raise
                except (OSError, smtplib.SMTPException):
                    self._sessions.pop(key, None)
                    if fresh:
                        raise

    def _alive(self, key: tuple[str, int], smtp: smtplib.SMTP) -> bool:
        """Whether a kept session still answers: dropped after IDLE_S unused, else probed
        with NOOP under a short timeout (a server that went away without closing the
        connection would otherwise block the next message for the full timeout)."""
        if time.monotonic() - self._used.get(key, 0.0) > IDLE_S:
            ok = False
        else:
            sock = smtp.sock
            try:
                if sock is not None:
                    sock.settimeout(PROBE_S)
                ok = smtp.noop()[0] == 250
            except (OSError, smtplib.SMTPException):
                ok = False
            finally:
                if sock is not None:
                    try:
                        sock.settimeout(self.timeout)
                    except OSError:
                        pass
        if not ok:
            self._sessions.pop(key, None)
            try:
                smtp.close()
            except OSError:
                pass
        return ok

    def close(self) -> None:
        """QUIT every kept session."""
        for key, smtp in list(self._sessions.items()):
            self._sessions.pop(key, None)
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass

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
                self._deliver(host, port, msg, to)
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
