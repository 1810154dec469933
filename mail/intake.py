"""The one mail intake: how a message in a Maildir's ``new/`` is read, checked and identified.

The daemon's router (:mod:`certwright.engine.daemon.mailroute`) and the ``wait.mail`` and
``notify.check`` steps (:mod:`certwright.steps.mail`) meet the same messages; both take
them in through :class:`Intake`, in this order:

1. :meth:`Intake.admit`: the parse cache (:mod:`certwright.mail.cache`), else read
   (:meth:`Maildir.read` refuses a file over its cap unread), parse (:func:`parse`:
   Postfix-like limits, only our own mail server's ``Authentication-Results`` trusted),
   the Message-ID (``sha256:<hex>`` of the bytes for a message without one), and into the
   cache, so whoever comes next parses it no more. Hostile mail is moved aside when it
   claims to be the CA's (:mod:`certwright.mail.claims`); anyone else's is left alone
   (:class:`Foreign`): a mailbox may be shared with people.
2. :meth:`Intake.finish_taken`: the store says the message was taken from this very file
   already (a crash between the commit of the take and the move to ``cur/``, or a power
   cut that undid the move): the move is finished.
3. :meth:`Intake.refuse_duplicate`: its Message-ID was taken from another file: moved
   aside as a duplicate.

What a caller does between the stages stays with it: the router offers a message to the
waiting runs before the duplicate check (latency; a step checks again before taking), a
step leaves mail for other recipients alone before any look at the takes. Moving aside
(:meth:`Intake.set_aside`) logs ``mail_<kind>`` (warning: ``file``, ``reason``, and what the
caller passes) through the caller's logger, so each log line carries the caller's bindings.

Hazards: a message can vanish at any point (another process took it): nothing here raises
``FileNotFoundError`` for it; the result says "gone" (None, False, ``moved=False``). Nothing
is ever deleted. The parse cache is process-wide (see its module); what was taken is the
store's record, read through ``processed`` (:class:`certwright.mail.ledger.Ledger`, which
also reads an older version's processed log).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from certwright.mail import cache as mailcache
from certwright.mail.claims import Claims
from certwright.mail.ledger import Ledger, Processed
from certwright.mail.maildir import Maildir, MessageTooLarge
from certwright.mail.parse import HostileMail, ParsedMail, parse_message

__all__ = ["AUTHSERV_ID", "DUPLICATE", "HOSTILE", "TRUSTED_AUTHSERV_IDS", "Admitted", "Foreign",
           "Intake", "Refused", "parse"]

#: The authserv-id (RFC 8601) our own mail server writes into ``Authentication-Results``.
AUTHSERV_ID = "certwright.local"
#: The only ``Authentication-Results`` the parser believes: our own server's.
TRUSTED_AUTHSERV_IDS = (AUTHSERV_ID,)

HOSTILE, DUPLICATE = "hostile", "duplicate"


def parse(raw: bytes) -> ParsedMail:
    """Parse ``raw`` as every intake does; raises :class:`HostileMail` saying why not."""
    return parse_message(raw, trusted_authserv_ids=TRUSTED_AUTHSERV_IDS)


@dataclass(frozen=True)
class Admitted:
    """A message that parsed cleanly, with its Message-ID (or content hash)."""

    mail: ParsedMail
    message_id: str


@dataclass(frozen=True)
class Refused:
    """A message moved aside as ``kind`` for ``reason``; ``moved`` is False when it had
    vanished before it could be moved (someone else took it)."""

    kind: str
    reason: str
    moved: bool


@dataclass(frozen=True)
class Foreign:
    """A message that does not parse (``reason``) and does not claim to be the CA's: it is
    someone else's business and stays where it is."""

    reason: str


class Intake:
    """The intake of one Maildir for one caller, logging through ``log``; ``processed`` is
    the store's ``is_processed`` (None: no store, see :mod:`certwright.mail.ledger`).

    Cheap to make (one per message is fine); safe in several threads and processes at once
    as :class:`Maildir` and the store are.
    """

    def __init__(self, md: Maildir, log: Any, claims: Claims | None = None,
                 processed: Processed | None = None) -> None:
        self.md = md
        self.log = log
        self.claims = claims or Claims()
        self.ledger = Ledger(md, processed)

    def _head(self, name: str) -> bytes:
        """The first bytes of a message too large to read whole ("" when gone)."""
        try:
            with open(self.md.locate(name), "rb") as fh:
                return fh.read(65536)
        except FileNotFoundError:
            return b""

    def admit(self, name: str) -> Admitted | Refused | Foreign | None:
        """Parse message ``name`` of ``new/`` once per process (stage 1).

        None when it is gone; :class:`Refused` (``hostile``) when it is too large or does
        not parse and claims to be the CA's, after moving it aside with the reason;
        :class:`Foreign` when such a message does not claim to be the CA's (left alone).
        """
        cached = mailcache.get(self.md.new, name)
        if cached is not None:
            return Admitted(*cached)
        try:
            raw = self.md.read(name)
        except FileNotFoundError:
            return None  # another process took it between list and read
        except MessageTooLarge as exc:
            if self.claims.claim_raw(self._head(name)) is None:
                return Foreign(str(exc))
            return self.set_aside(name, str(exc), kind=HOSTILE)
        try:
            mail = parse(raw)
        except HostileMail as exc:
            if self.claims.claim_raw(raw) is None:
                return Foreign(exc.reason)
            return self.set_aside(name, exc.reason, kind=HOSTILE)
        message_id = mail.message_id or "sha256:" + hashlib.sha256(raw).hexdigest()
        mailcache.put(self.md.new, name, mail, message_id, len(raw))
        return Admitted(mail, message_id)

    def finish_taken(self, name: str, message_id: str, *, own_key: str | None = None) -> bool:
        """True when the message was taken from this very file already (stage 2).

        Its move to ``cur/`` was lost (a crash or a power cut after the take's commit): the
        move is finished here (``mail_move_finished``) and the caller treats the message as
        gone. A take under ``own_key`` (an older version's log) is the caller's own and is
        left to it (False).
        """
        owner = self.ledger.taken(message_id, name)
        if owner is None or (own_key is not None and owner == own_key):
            return False
        if self.md.finish_taken(name):
            self.log.info("mail_move_finished", file=name, taken_by=owner or "the store")
        return True

    def refuse_duplicate(self, name: str, message_id: str) -> Refused | None:
        """Move the message aside when its Message-ID was taken from another file (stage 3);
        None when it is no duplicate."""
        if not self.ledger.seen(message_id, name):
            return None
        return self.set_aside(name, f"duplicate: Message-ID {message_id} was already taken",
                              kind=DUPLICATE, message_id=message_id)

    def set_aside(self, name: str, reason: str, *, kind: str | None = None,
                  **fields: Any) -> Refused:
        """Move message ``name`` into the quarantine with ``reason``.

        With ``kind``, ``mail_<kind>`` is logged first (warning, with ``fields``); the move
        itself logs ``mail_moved_aside``. ``moved`` is False when the message was gone.
        """
        if kind is not None:
            event = "mail_" + kind  # mail_hostile, mail_duplicate, ... (names, not messages)
            self.log.warning(event, file=name, reason=reason, **fields)
        try:
            self.md.move_aside(name, reason)
        except FileNotFoundError:
            return Refused(kind or "aside", reason, moved=False)
        return Refused(kind or "aside", reason, moved=True)
