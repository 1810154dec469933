"""The CA's outgoing mail: confirmation links, domain probes, issuance notices.

Delivery is synchronous with a short timeout, so the API can answer 502
``mail_undeliverable`` with the SMTP reason while the user waits. Route:

1. the smarthost, when configured (``host, port``): every message goes there;
2. else the recipient domain's MX hosts in preference order (dnspython);
3. else, when the domain has no MX record, the domain itself (RFC 5321 5.1 implicit MX).

Sessions are kept alive and reused, up to ``max_sessions`` per host at once, so concurrent
senders do not queue behind one another. A session used within ``FRESH_S`` is reused
without a NOOP probe, but its first reply (to MAIL) must come within ``PROBE_S``; an
older one is probed with NOOP first. A session found dead before the message content
went out is replaced by a new connection once. With PIPELINING (RFC 2920) MAIL, RCPT
and DATA go out in one write. The message itself is built by :mod:`certwright.ca.message`.

Hazard: no retry queue here (the CA's :mod:`certwright.ca.outbox` retries). A message that
fails is reported to the caller (``MailError.permanent`` tells a 5xx from what may pass
later); nothing is sent twice by this module on its own: once the content went out, a lost
connection is reported, not retried (the server may have taken the message).
"""
from __future__ import annotations

import contextlib
import re
import smtplib
import threading
import time
from datetime import datetime

import structlog

from certwright.ca.message import MessageBuilder
from certwright.clock import Clock, SystemClock

log = structlog.get_logger("ca.outmail")

IDLE_S = 30.0  # a kept SMTP session unused this long is closed rather than reused
PROBE_S = 2.0  # how long a NOOP (or a fresh session's MAIL reply) may take before it counts as dead
FRESH_S = 1.0  # a session used this recently is not probed with NOOP before reuse
MAX_SESSIONS = 4  # kept sessions per host (a small pool: MX hosts limit connections per client)

_LEADING_DOT = re.compile(rb"(?m)^\.")


class MailError(Exception):
    """Mail could not be delivered; ``reason`` is the SMTP or network reason.

    ``permanent``: the last host refused with a 5xx reply (or the domain takes no mail),
    so trying again will not help; otherwise (refused connection, timeout, 4xx) it may.
    """

    def __init__(self, recipient: str, reason: str, *, permanent: bool = False) -> None:
        super().__init__(f"mail to {recipient} not delivered: {reason}")
        self.recipient = recipient
        self.reason = reason
        self.permanent = permanent


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


def _text(reply: bytes | str) -> str:
    """An SMTP reply's text (smtplib hands it over as bytes, some of its errors as str)."""
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


class _Session:
    """A kept SMTP session: the connection, when it was last used, which close() it predates."""

    __slots__ = ("content_sent", "generation", "smtp", "used")

    def __init__(self, smtp: smtplib.SMTP, used: float, generation: int) -> None:
        self.smtp = smtp
        self.used = used
        self.generation = generation
        self.content_sent = False


class _HostPool:
    """The kept sessions of one host: idle ones (last used on top) and how many are open."""

    def __init__(self) -> None:
        self.idle: list[_Session] = []
        self.open = 0
        self.cond = threading.Condition()


class Mailer:
    """Sends plain-text mail via the smarthost or the recipient's MX."""

    def __init__(self, *, smarthost: tuple[str, int] | None, mail_from: str,
                 clock: Clock | None = None, timeout: float = 10.0,
                 max_sessions: int = MAX_SESSIONS) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.smarthost = smarthost
        self.mail_from = mail_from
        self.clock = clock or SystemClock()
        self.timeout = timeout
        self.max_sessions = max_sessions
        # Kept-alive SMTP sessions per host (a session per message costs four extra round
        # trips: connect, EHLO, QUIT, close), at most max_sessions of them open at once.
        self._pools: dict[tuple[str, int], _HostPool] = {}
        self._pools_guard = threading.Lock()
        self._generation = 0  # bumped by close(): sessions from before it are not reused
        self.messages = MessageBuilder(mail_from=mail_from, clock=self.clock)

    # -- building -------------------------------------------------------------------------

    def build(self, to: str, subject: str, body: str, *, kind: str) -> bytes:
        """The message as it goes over the wire (CRLF line ends, not dot-stuffed)."""
        return self.messages.build(to, subject, body, kind=kind)[0]

    # -- sessions -------------------------------------------------------------------------

    def _pool(self, key: tuple[str, int]) -> _HostPool:
        with self._pools_guard:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _HostPool()
            return pool

    def _checkout(self, key: tuple[str, int], pool: _HostPool, *,
                  reuse: bool) -> tuple[_Session, bool]:
        """A session for one message and whether it needs its first reply guarded.

        Takes the most recently used idle session (``reuse``), else opens a new one when
        fewer than ``max_sessions`` are open, else waits for one to come back. Raises what
        connecting raises (the slot is given back).
        """
        stale: list[_Session] = []
        session: _Session | None = None
        with pool.cond:
            while True:
                now = time.monotonic()
                while reuse and pool.idle:
                    candidate = pool.idle.pop()
                    if now - candidate.used > IDLE_S or candidate.generation != self._generation:
                        stale.append(candidate)
                        pool.open -= 1
                        continue
                    session = candidate
                    break
                if session is not None:
                    break
                if pool.open < self.max_sessions:
                    pool.open += 1
                    break
                if not reuse and pool.idle:  # make room for the new connection asked for
                    stale.append(pool.idle.pop(0))
                    pool.open -= 1
                    continue
                pool.cond.wait()
        for old in stale:
            self._close_quietly(old.smtp)
        if session is not None:
            if now - session.used <= FRESH_S:
                return session, True
            if self._alive(session.smtp):
                return session, False
            self._close_quietly(session.smtp)  # its slot goes to a new connection
        try:
            smtp = smtplib.SMTP(key[0], key[1], timeout=self.timeout)
            try:
                smtp.ehlo_or_helo_if_needed()
            except BaseException:
                self._close_quietly(smtp)
                raise
        except BaseException:
            with pool.cond:
                pool.open -= 1
                pool.cond.notify()
            raise
        return _Session(smtp, time.monotonic(), self._generation), False

    def _checkin(self, pool: _HostPool, session: _Session, keep: bool) -> None:
        """Give ``session`` back: kept for reuse when ``keep``, else closed."""
        if keep and session.generation != self._generation:  # close() ran meanwhile
            keep = False
            with contextlib.suppress(OSError, smtplib.SMTPException):
                session.smtp.quit()
        if not keep:
            self._close_quietly(session.smtp)
        with pool.cond:
            if keep:
                session.content_sent = False
                pool.idle.append(session)
            else:
                pool.open -= 1
            pool.cond.notify()

    @staticmethod
    def _close_quietly(smtp: smtplib.SMTP) -> None:
        with contextlib.suppress(OSError):
            smtp.close()

    def _alive(self, smtp: smtplib.SMTP) -> bool:
        """Whether a kept session still answers NOOP within PROBE_S (a server that went
        away without closing the connection would otherwise block the next message for
        the full timeout)."""
        try:
            return self._reply_within(smtp, PROBE_S, b"NOOP\r\n")[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def _reply_within(self, smtp: smtplib.SMTP, limit: float | None,
                      command: bytes | None = None) -> tuple[int, bytes]:
        """Send ``command`` (if any) and read one reply, waiting at most ``limit`` seconds."""
        sock = smtp.sock
        if limit is not None and sock is not None:
            sock.settimeout(limit)
        try:
            if command is not None:
                smtp.send(command)
            return smtp.getreply()
        finally:
            if limit is not None and sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(self.timeout)

    # -- sending --------------------------------------------------------------------------

    def _transaction(self, session: _Session, to: str, data: bytes, utf8: bool,
                     guarded: bool) -> None:
        """MAIL, RCPT, DATA and the content over ``session``; raises the smtplib error."""
        smtp = session.smtp
        options = ""
        if utf8:
            if not smtp.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError(
                    "One or more source or delivery addresses require internationalized "
                    "email support, but the server does not advertise the required "
                    "SMTPUTF8 capability")
            options += " SMTPUTF8 BODY=8BITMIME"
        if smtp.has_extn("size"):
            options += f" SIZE={len(data)}"
        encoding = "utf-8" if utf8 else "ascii"
        mail = f"MAIL FROM:{smtplib.quoteaddr(self.mail_from)}{options}\r\n".encode(encoding)
        rcpt = f"RCPT TO:{smtplib.quoteaddr(to)}\r\n".encode(encoding)
        pipelined = smtp.has_extn("pipelining")
        first = mail + rcpt + b"DATA\r\n" if pipelined else mail
        code, text = self._reply_within(smtp, PROBE_S if guarded else None, first)
        if code != 250:
            if pipelined:
                self._skip_replies(smtp, 2)
            raise smtplib.SMTPSenderRefused(code, text, self.mail_from)
        code, text = smtp.getreply() if pipelined else self._reply_within(smtp, None, rcpt)
        if code not in (250, 251):
            if pipelined:
                self._skip_replies(smtp, 1)
            raise smtplib.SMTPRecipientsRefused({to: (code, text)})
        code, text = smtp.getreply() if pipelined else self._reply_within(smtp, None,
                                                                           b"DATA\r\n")
        if code != 354:
            raise smtplib.SMTPDataError(code, text)
        session.content_sent = True
        smtp.send(_LEADING_DOT.sub(b"..", data) + b".\r\n")
        code, text = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, text)

    def _skip_replies(self, smtp: smtplib.SMTP, count: int) -> None:
        """Read the replies to pipelined commands after a refusal; a DATA the server
        accepted anyway (354 with no valid recipient) ends the connection, not a message."""
        for _ in range(count):
            if smtp.getreply()[0] == 354:
                self._close_quietly(smtp)
                return

    def _deliver(self, host: str, port: int, data: bytes, to: str, utf8: bool) -> None:
        """Send over a kept session (or a new one); a session that turns out dead before
        the content went out is replaced by a new connection once."""
        key = (host, port)
        pool = self._pool(key)
        for attempt in (0, 1):
            session, guarded = self._checkout(key, pool, reuse=attempt == 0)
            try:
                self._transaction(session, to, data, utf8, guarded)
            except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused,
                    smtplib.SMTPNotSupportedError):
                keep = session.smtp.sock is not None
                if keep:
                    try:
                        session.smtp.rset()  # keep the session usable for the next message
                        session.used = time.monotonic()
                    except (OSError, smtplib.SMTPException):
                        keep = False
                self._checkin(pool, session, keep)
                raise
            except (OSError, smtplib.SMTPException):
                self._checkin(pool, session, False)
                if attempt or session.content_sent:
                    raise
                continue
            except BaseException:
                self._checkin(pool, session, False)
                raise
            session.used = time.monotonic()
            self._checkin(pool, session, True)
            return

    def close(self) -> None:
        """QUIT every kept session (one in use now is QUIT when its message is done)."""
        with self._pools_guard:
            self._generation += 1
            pools = list(self._pools.values())
        for pool in pools:
            with pool.cond:
                idle, pool.idle = pool.idle, []
                pool.open -= len(idle)
                pool.cond.notify_all()
            for session in idle:
                try:
                    session.smtp.quit()
                except (OSError, smtplib.SMTPException):
                    self._close_quietly(session.smtp)

    def send(self, to: str, subject: str, body: str, *, kind: str,
             message_id: str | None = None, date: datetime | None = None) -> None:
        """Deliver one message; raises MailError with the last reason when no host took it.

        ``message_id`` and ``date`` make a resend the same message (the outbox's rows)."""
        data, utf8 = self.messages.build(to, subject, body, kind=kind, message_id=message_id,
                                         date=date)
        hosts = [self.smarthost] if self.smarthost else mx_hosts(to.rpartition("@")[2])
        if not hosts:
            raise MailError(to, "the domain publishes a null MX: it accepts no mail",
                            permanent=True)
        reason = "no host tried"
        permanent = False
        for host, port in hosts:
            permanent = False
            try:
                self._deliver(host, port, data, to, utf8)
                log.info("mail_sent", kind=kind, to=to, via=f"{host}:{port}")
                return
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                reason = f"{host}:{port} refused the recipient: {code} {_text(text)}"
                permanent = 500 <= code < 600
            except smtplib.SMTPResponseException as exc:
                reason = f"{host}:{port} said {exc.smtp_code} {_text(exc.smtp_error)}"
                permanent = 500 <= exc.smtp_code < 600
            except (TimeoutError, OSError, smtplib.SMTPException) as exc:
                reason = f"{host}:{port}: {exc or type(exc).__name__}"
            log.warning("mail_attempt_failed", kind=kind, to=to, reason=reason)
        raise MailError(to, reason, permanent=permanent)
