r"""IMAP as a mail source of the daemon: IMAP4 over TLS with IDLE, into a local Maildir spool.

``imaps://USER@HOST[:PORT]/MAILBOX?password_file=FILE[&cafile=PEM][&name=ACCOUNT]``: the
daemon logs in (TLS always, certificate and host name checked), selects the mailbox and
fetches every message without the keyword ``$Certwright``. Each is delivered into the spool
Maildir ``<state_dir>/imap/<ACCOUNT>/`` (ACCOUNT defaults to ``USER@HOST``) under the name
``<uidvalidity>.<uid>.imap`` and routed like any Maildir message (see
:mod:`certwright.engine.daemon.mailroute`), so ``wait.mail`` steps simply name that
Maildir. Then the message is flagged ``$Certwright`` on the server, and ``\Seen`` too when
it claims to be the CA's (:mod:`certwright.mail.claims`): a person's mail in a shared
mailbox stays unread.
Nothing is ever deleted or expunged on the server.

Several daemons on one mailbox (one store): the spool says which IMAP mailbox it mirrors,
so a message's marks in the store name that mailbox, not the spool's path, on every daemon
(:mod:`certwright.mail.imapbox`). With a ``store``, a fetched message is claimed in the
store before it goes into the spool: the daemon whose claim is first routes it; every
other one holds its copy in ``new/`` unrouted (``mail_claimed_elsewhere``; a run whose
lease it holds may still take it there) and flags it as usual, so it is not fetched again.
Once a step anywhere took the message, the copies left are moved aside into the spool's
quarantine (``mail_taken_elsewhere``, :meth:`MailRouter.hold`).

Waiting: IDLE (RFC 2177) when the server offers it, re-issued every ``idle_timeout``
seconds (servers drop idlers after 30 minutes), else a NOOP poll. A message that arrives during
a sync is reported (``EXISTS``) with whatever command was running then, never again: the
source syncs once more before it idles. Failures (refused
connection, TLS or login error, a dropped connection) are logged and retried with
exponential back-off: 1 s, 2 s, 4 s ... capped at 5 minutes, reset after a good session.

Crash safety: claim, then deliver (atomic, by link: a name that exists already is not
written again), then flag. A crash between delivery and flag delivers nothing twice: on
the next pass the message is still unflagged, its spool name exists, and it is only
flagged. A crash between claim and delivery: the message is fetched again, and the claim
found to be this spool's own (its holder mark). A message larger than
the parser's limit is not downloaded: it is logged (``mail_hostile``) and flagged.

A message the server refuses to serve (FETCH answered NO, e.g. a file it cannot open) is
logged with the server's words (``imap_fetch_refused``), not flagged and not asked for
again in that session; the messages after it go on as usual, and the next session tries
it again. BAD and BYE end the session (a retry with back-off), as any protocol failure.

Hazards: imaplib (before 3.14) has no IDLE; it is done here on the TLS socket directly
(``select`` + ``pending()``), only between commands, so imaplib's own buffered reader
never holds bytes of the IDLE exchange. The password is never logged (the URL is shown
without it).
"""
from __future__ import annotations

import contextlib
import imaplib
import os
import re
import select
import ssl
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from certwright.errors import InputError
from certwright.mail.claims import Claims
from certwright.mail.imapbox import Claim, mailbox_url, write_identity
from certwright.mail.maildir import Maildir
from certwright.mail.parse import HostileMail, MailLimits, parse_message

log = structlog.get_logger("certwright.imap")

KEYWORD = "$Certwright"
BACKOFF_START, BACKOFF_CAP = 1.0, 300.0
_SAFE = re.compile(r"[^A-Za-z0-9@._-]")
_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class FetchRefused(imaplib.IMAP4.error):
    """The server answered a FETCH of one message with NO; ``reason`` has its words."""

    def __init__(self, uid: str, what: str, typ: str, data: list[Any] | None) -> None:
        words = b" ".join(x if isinstance(x, bytes) else str(x).encode()
                          for x in data or []).decode(errors="replace")
        self.uid, self.reason = uid, f"{typ} {words}"[:300]
        super().__init__(f"UID FETCH {uid} {what}: {self.reason}")


class ImapAccount:
    """A parsed IMAP URL (the password is read from its file when connecting)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "imaps":
            raise InputError(f"IMAP URL {self._shown(url)}: only imaps:// (TLS) is supported")
        if not parts.hostname or not parts.username:
            raise InputError(f"IMAP URL {self._shown(url)}: needs USER@HOST")
        query = parse_qs(parts.query)
        self.host = parts.hostname
        self.port = parts.port or 993
        self.user = unquote(parts.username)
        self.mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
        self._password = unquote(parts.password) if parts.password else None
        self.password_file = query.get("password_file", [None])[0]
        self.cafile = query.get("cafile", [None])[0]
        if self._password is None and not self.password_file:
            raise InputError(f"IMAP URL {self._shown(url)}: give ?password_file=FILE")
        name = query.get("name", [f"{self.user}@{self.host}"])[0]
        self.name = _SAFE.sub("_", name)[:100] or "account"
        self.shown = f"imaps://{self.user}@{self.host}:{self.port}/{self.mailbox}"
        self.identity = mailbox_url(self.user, self.host, self.port, self.mailbox)

    @staticmethod
    def _shown(url: str) -> str:
        p = urlsplit(url)
        return f"{p.scheme}://{p.username or ''}@{p.hostname or ''}{p.path}"

    def password(self) -> str:
        """The password (from the file, first line); raises InputError when unreadable."""
        if self._password is not None:
            return self._password
        try:
            return Path(str(self.password_file)).read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise InputError(f"{self.shown}: cannot read the password file: {exc}") from None


class ImapSource:
    """One IMAP account feeding its spool Maildir and the daemon's router (a thread);
    ``store`` (its ``is_processed`` and ``transaction``) claims each message first, when
    several daemons may read the mailbox (None: every message is routed)."""

    def __init__(self, url: str, state_dir: Path, router: Any, *, cafile: Path | None = None,
                 idle_timeout: float = 300.0, limits: MailLimits = MailLimits(),
                 store: Any = None) -> None:
        self.account = ImapAccount(url)
        self._store = store
        self._claim: Claim | None = None
        self.md = Maildir(Path(state_dir) / "imap" / self.account.name)
        self.router = router
        self.cafile = self.account.cafile or (str(cafile) if cafile else None)
        self.idle_timeout = idle_timeout
        self.limits = limits
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delivered: set[str] = set()
        self.counts = {"fetched": 0, "flagged": 0, "sessions": 0, "errors": 0}
        self.log = log.bind(imap=self.account.shown)

    def start(self) -> None:
        """Create the spool, route what it holds, and start the IMAP thread."""
        self.md.ensure()
        write_identity(self.md.path, self.account.identity)
        if self._store is not None:
            self._claim = Claim(self._store, self.md.path, self.account.identity)
        for folder in (self.md.new, self.md.cur, self.md.path / ".quarantine" / "new"):
            if folder.is_dir():
                self._delivered.update(n.split(":", 1)[0] for n in os.listdir(folder))
        for name in self.md.list_new():
            self._route(name)
        self._thread = threading.Thread(target=self._run, name=f"imap-{self.account.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to leave (it ends IDLE with DONE and logs out); waits 15 s."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    # -- the session loop ---------------------------------------------------------------
    def _run(self) -> None:
        delay = BACKOFF_START
        while not self._stop.is_set():
            try:
                self._session()
                delay = BACKOFF_START
            except Exception as exc:  # noqa: BLE001 - any failure: back off and reconnect
                self.counts["errors"] += 1
                self.log.warning("imap_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                                 retry_in=delay)
                self._stop.wait(delay)
                delay = min(BACKOFF_CAP, delay * 2)

    def _connect(self) -> imaplib.IMAP4_SSL:
        ctx = ssl.create_default_context(cafile=self.cafile)
        c = imaplib.IMAP4_SSL(self.account.host, self.account.port, ssl_context=ctx,
                              timeout=30)
        c.login(self.account.user, self.account.password())
        typ, data = c.select(_quote(self.account.mailbox))
        if typ != "OK":
            raise imaplib.IMAP4.error(f"SELECT {self.account.mailbox}: {data!r}")
        return c

    def _session(self) -> None:
        c = self._connect()
        self.counts["sessions"] += 1
        self.log.info("imap_connected", mailbox=self.account.mailbox)
        try:
            idle = b"IDLE" in b" ".join(x if isinstance(x, bytes) else str(x).encode()
                                       for x in c.capabilities)
            refused: set[str] = set()  # UIDs whose FETCH was answered NO in this session
            while not self._stop.is_set():
                _forget_news(c)
                self._sync(c, refused)
                if _news(c):
                    continue  # mail came during the sync: the server will not say so again
                if idle:
                    self._idle(c)
                else:
                    self._stop.wait(30)
                    c.noop()
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone already
                c.logout()

    def _uidvalidity(self, c: imaplib.IMAP4_SSL) -> str:
        _, data = c.response("UIDVALIDITY")
        if data and data[0]:
            return data[0].decode() if isinstance(data[0], bytes) else str(data[0])
        _, data = c.status(_quote(self.account.mailbox), "(UIDVALIDITY)")
        m = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
        return m.group(1).decode() if m else "0"

    def _sync(self, c: imaplib.IMAP4_SSL, refused: set[str]) -> None:
        """Fetch, spool, route and flag every message without our keyword, but those in
        ``refused`` (added to when the server refuses a FETCH)."""
        validity = self._uidvalidity(c)
        typ, data = c.uid("SEARCH", "UNKEYWORD", KEYWORD, "NOT", "DELETED")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID SEARCH: {data!r}")
        uids = [u.decode() for u in (data[0] or b"").split()]
        for uid in uids:
            if self._stop.is_set():
                return
            name = f"{validity}.{uid}.imap"
            ours = name in self._delivered  # spooled before: only the flags are missing
            if uid in refused:
                continue  # refused in this session already: the next session tries again
            if name not in self._delivered:
                try:
                    raw = self._fetch(c, uid)  # None: too large, not downloaded, left unread
                except FetchRefused as exc:
                    # One message the server cannot serve must not stop the others: it
                    # stays unflagged, so the next session fetches it again (asking
                    # twice in one session makes some servers, e.g. Dovecot, hang up).
                    refused.add(uid)
                    self.counts["errors"] += 1
                    self.log.warning("imap_fetch_refused", uid=uid, reason=exc.reason)
                    continue
                if raw is not None:
                    ours = self._claimed(raw)
                    here = self._claimed_here(name)  # before the spool: steps look there
                    self._deliver(name, raw)
                    self._route(name, here)
            # A person's mail in a shared mailbox stays unread: only our keyword, so that
            # it is not fetched again.
            flags = f"(\\Seen {KEYWORD})" if ours else f"({KEYWORD})"
            typ, data = c.uid("STORE", uid, "+FLAGS.SILENT", flags)
            if typ != "OK":
                raise imaplib.IMAP4.error(f"UID STORE {uid}: {data!r}")
            self.counts["flagged"] += 1

    def _fetch(self, c: imaplib.IMAP4_SSL, uid: str) -> bytes | None:
        """The message ``uid``, or None when it is too large to download.

        FetchRefused (with the server's words) when the server answers a FETCH with NO;
        imaplib raises for BAD and BYE itself. A size the answer does not give is an
        error too, never 0 (which would let any size through).
        """
        typ, data = c.uid("FETCH", uid, "(RFC822.SIZE)")
        if typ != "OK":
            raise FetchRefused(uid, "(RFC822.SIZE)", typ, data)
        size = _size_in(data, uid)
        if size is None:
            raise imaplib.IMAP4.error(f"UID FETCH {uid} (RFC822.SIZE): no size in the "
                                      f"answer {str(data)[:200]}")
        if size > self.limits.max_message_size:
            self.log.warning("mail_hostile", uid=uid, reason=f"message too large: {size} "
                             f"bytes (limit {self.limits.max_message_size}); not downloaded")
            return None
        typ, data = c.uid("FETCH", uid, "(BODY.PEEK[])")
        if typ != "OK":
            raise FetchRefused(uid, "(BODY.PEEK[])", typ, data)
        for item in data or []:
            if isinstance(item, tuple) and len(item) == 2:
                self.counts["fetched"] += 1
                return bytes(item[1])
        raise imaplib.IMAP4.error(f"UID FETCH {uid}: no body in {str(data)[:200]}")

    def _claimed(self, raw: bytes) -> bool:
        """Whether ``raw`` claims to be the CA's, by the router's claims (mail.claims)."""
        claims = getattr(self.router, "claims", None) or Claims()
        try:
            return claims.claim(parse_message(raw, limits=self.limits)) is not None
        except HostileMail:
            return claims.claim_raw(raw) is not None

    def _claimed_here(self, name: str) -> bool:
        """Whether this daemon routes spool message ``name`` (the store's claim decides)."""
        return self._claim is None or self._claim.claim(name)

    def _route(self, name: str, here: bool | None = None) -> None:
        """Route spool message ``name`` when this daemon's claim is first, else hold it
        (another daemon routes it; :meth:`MailRouter.hold`)."""
        if here is None:
            here = self._claimed_here(name)
        if here:
            self.router.route(self.md, name)
        else:
            self.router.hold(self.md, name)

    def _deliver(self, name: str, raw: bytes) -> None:
        """Atomically put ``raw`` into the spool's ``new/`` as ``name`` (once)."""
        self.md.deliver(raw, name=name)
        self._delivered.add(name)

    def _idle(self, c: imaplib.IMAP4_SSL) -> bool:
        """IDLE until the mailbox changes, ``idle_timeout`` passes or stop; True on change."""
        tag: bytes = c._new_tag()  # noqa: SLF001 - imaplib (< 3.14) has no IDLE of its own
        c.send(tag + b" IDLE\r\n")
        sock: Any = c.sock
        buf, changed, done_at = b"", False, None
        deadline = time.monotonic() + self.idle_timeout
        while True:
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                line = line.rstrip(b"\r")
                if line.startswith(tag):
                    if not line[len(tag):].strip().upper().startswith(b"OK"):
                        raise imaplib.IMAP4.error(f"IDLE: {line[:200]!r}")
                    return changed
                if line.startswith(b"*") and (line.upper().endswith(b"EXISTS")
                                              or line.upper().endswith(b"RECENT")):
                    changed = True
            now = time.monotonic()
            if done_at is None and (changed or self._stop.is_set() or now >= deadline):
                c.send(b"DONE\r\n")
                done_at = now
            if done_at is not None and now - done_at > 30:
                raise imaplib.IMAP4.abort("no answer to DONE within 30 s")
            if not sock.pending():
                ready, _, _ = select.select([sock], [], [], 0.5)
                if not ready:
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                raise imaplib.IMAP4.abort("the server closed the connection during IDLE")
            buf += chunk


_NEWS = ("EXISTS", "RECENT")


def _forget_news(c: imaplib.IMAP4_SSL) -> None:
    """Drop the mailbox-size news imaplib kept from earlier answers (the sync comes next)."""
    for what in _NEWS:
        c.untagged_responses.pop(what, None)


def _news(c: imaplib.IMAP4_SSL) -> bool:
    """Whether an answer since :func:`_forget_news` said the mailbox grew: a message that
    came after the sync's SEARCH is reported once, with whatever command was running, and
    an IDLE begun after that would wait for it until its timeout."""
    return any(what in c.untagged_responses for what in _NEWS)


def _size_in(data: list[Any] | None, uid: str) -> int | None:
    """The RFC822.SIZE of message ``uid`` in a FETCH answer (lines about other messages,
    which a server may send unasked, are skipped); None when it is not there."""
    for item in data or []:
        if isinstance(item, bytes):
            has_uid, has_size = _UID.search(item), _SIZE.search(item)
            if has_uid and has_size and has_uid.group(1).decode() == uid:
                return int(has_size.group(1))
    return None


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'
