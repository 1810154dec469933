"""One IMAP mailbox read by several daemons: its identity in the store, and who routes a message.

Each daemon spools an IMAP account into a Maildir of its own state dir
(:mod:`certwright.mail.imap`), so the spool's path cannot name the mailbox in the store's
marks (:mod:`certwright.mail.ledger`): two daemons would each take a message under their
own path. The spool says which mailbox it mirrors instead, in a file of its own
(:data:`IDENTITY_FILE`: ``imap://USER@HOST:PORT/MAILBOX``, written at each start), and a
message's marks name that mailbox and the UIDVALIDITY its spool name carries
(``<uidvalidity>.<uid>.imap``): :func:`spool_box`, e.g.
``imap://certs@mail.example.org:993/INBOX;UIDVALIDITY=1700000000`` (RFC 5092's form). The
same on every daemon whatever its state dir; the spool name (the mark of the file) is the
same too. A Maildir without that file is no IMAP spool and keeps its path's id.

Who routes a message (:class:`Claim`): the daemon that fetched it first. Before a fetched
message goes into its spool, a daemon claims it in the store, in one transaction: the
claim ``("mail-claim:<box>", <spool name>)`` is inserted if absent (``INSERT OR IGNORE`` on
SQLite, ``ON CONFLICT DO NOTHING`` on PostgreSQL, both under the store's write lock), and
when it was, the holder ``("mail-claim-holder:<box>", "<spool name> <spool id>")`` with it.
Exactly one daemon inserts the claim and routes the message; the others find it and hold
their copy unrouted (``MailRouter.hold`` of :mod:`certwright.engine.daemon.mailroute`), and
put it aside as taken elsewhere once a step took the message. The holder mark lets a
daemon that crashed after its claim know, when it fetches the message again, that the
claim is its own. The spool id (:data:`SPOOL_ID_FILE`) is made once per spool, at random.

Hazards: the identity file is rewritten when the account's URL changes (another host name
for the same server gives another id: name the server the same way on every daemon). A
UIDVALIDITY change renumbers the mailbox: its messages are new to the store under the new
box. The claim costs one commit per fetched message and two rows of the ``processed``
table, kept as the marks are; the store's read of the holder mark comes first, so a
message fetched again after a crash costs no commit.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from certwright.atomic import write_atomic, write_new

__all__ = ["CLAIM_SOURCE", "HOLDER_SOURCE", "IDENTITY_FILE", "SPOOL_ID_FILE", "Claim",
           "mailbox_url", "spool_box", "spool_identity", "uidvalidity_of", "write_identity"]

IDENTITY_FILE = "certwright-imap-mailbox"  # in the spool: the mailbox's URL, one line
SPOOL_ID_FILE = "certwright-spool-id"  # in the spool: this spool's random id
CLAIM_SOURCE = "mail-claim:"  # + the box: ident is the spool name; the first insert routes
HOLDER_SOURCE = "mail-claim-holder:"  # + the box: ident "<spool name> <spool id>"

_SPOOL_NAME = re.compile(r"^(\d+)\.(\d+)\.imap$")


def mailbox_url(user: str, host: str, port: int, mailbox: str) -> str:
    """The mailbox's identity: ``imap://USER@HOST:PORT/MAILBOX`` (host in lower case,
    INBOX in upper case as IMAP compares it; user and mailbox percent-encoded)."""
    box = "INBOX" if mailbox.upper() == "INBOX" else mailbox
    return f"imap://{quote(user, safe='')}@{host.lower()}:{port}/{quote(box, safe='/')}"


def uidvalidity_of(name: str) -> str | None:
    """The UIDVALIDITY in spool name ``<uidvalidity>.<uid>.imap``, or None for another name."""
    m = _SPOOL_NAME.match(name)
    return m.group(1) if m else None


def write_identity(spool: Path, url: str) -> None:
    """Say in ``spool`` which mailbox it mirrors (atomically; left alone when it says so)."""
    if spool_identity(spool) != url:
        write_atomic(spool / IDENTITY_FILE, (url + "\n").encode(), 0o600)


def spool_identity(spool: Path) -> str | None:
    """The mailbox URL ``spool`` mirrors, or None when it is no IMAP spool."""
    try:
        text = (Path(spool) / IDENTITY_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


def spool_box(identity: str, name: str) -> str | None:
    """The box of the marks of message ``name`` of the spool of mailbox ``identity``
    (``<identity>;UIDVALIDITY=<n>``), or None when ``name`` is no spool name."""
    validity = uidvalidity_of(name)
    return None if validity is None else f"{identity};UIDVALIDITY={validity}"


def _spool_id(spool: Path) -> str:
    """This spool's id, made at random the first time (safe when two threads race)."""
    path = spool / SPOOL_ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    fresh = secrets.token_hex(8)
    try:
        write_new(path, (fresh + "\n").encode(), 0o600)
    except FileExistsError:
        return path.read_text().strip()
    return fresh


class Claim:
    """Claims the messages of one spool (mailbox ``identity``) in ``store``: a store with
    ``is_processed`` and ``transaction()`` (its ``Tx.mark_processed``)."""

    def __init__(self, store: Any, spool: Path, identity: str) -> None:
        self.store = store
        self.identity = identity
        self.spool_id = _spool_id(Path(spool))

    def claim(self, name: str) -> bool:
        """True when this spool routes message ``name`` (its claim, new or from before a
        crash), False when another daemon claimed it first. Store faults propagate."""
        box = spool_box(self.identity, name)
        if box is None:
            return True  # not a spool name: nobody else can have it
        holder = (HOLDER_SOURCE + box, f"{name} {self.spool_id}")
        if self.store.is_processed(*holder):
            return True
        with self.store.transaction() as tx:
            if not tx.mark_processed(CLAIM_SOURCE + box, name, None):
                return False
            tx.mark_processed(*holder, None)
        return True
