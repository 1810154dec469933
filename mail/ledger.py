"""What says a message of a Maildir was taken: the store's ``processed`` table (and an older
version's processed log, read only).

A mail step takes a message by returning the message's marks (:meth:`Ledger.marks`) with
its result; the engine writes them with ``Tx.mark_processed`` in the very transaction that
records the step's outcome, and moves the file to ``cur/`` only after that commit. So the
store is the one place that says a message was taken, for every process on it (a
foreground ``run``, the daemon, several daemons), and taking a mail costs no commit of its
own. A take is two marks:

* ``("mail:<box>", message_id)``: this Message-ID was taken from the mailbox. Its unique
  key settles two takers: the engine whose insert finds it taken records nothing of that
  result and calls the step again, which then sees the message taken.
* ``("mail-file:<box>", name)``: it was taken from this very file. A message still in
  ``new/`` whose file mark is committed is one whose move to ``cur/`` did not happen (a
  crash after the commit, or a power cut undid the unsynced rename): the move is finished
  (:meth:`taken`). The same Message-ID in another file is a duplicate (:meth:`seen`).

``<box>`` names the mailbox as its bookkeeping folder does (:func:`books.mailbox_id`: its
folder name and a hash of its resolved path), the same for every process of one host. An
IMAP spool names the IMAP mailbox instead, with the UIDVALIDITY of the message's spool name
(:func:`certwright.mail.imapbox.spool_box`), the same for every daemon that reads that
mailbox whatever its state dir; the spool path's marks (older versions') are read as well.

Older versions recorded takes in a processed log of their own per Maildir
(:class:`certwright.mail.books.ProcessedLog`, one commit and fsync per mail). When one
exists it is read as well, never written, so an upgrade loses no take: a run resumed after
the upgrade finds the mail it took before (:meth:`find_by_key`), and a message that log
knows is neither taken again nor refused as a duplicate of itself.

Hazards: the store's read (``Store.is_processed``) sees committed marks only: two steps
that judge one message at once both return it, and the engine's insert decides. Without a
store (``processed`` None: a step called outside an engine) only the old log is read.
"""
from __future__ import annotations

from collections.abc import Callable

from certwright.mail.books import ProcessedLog, mailbox_id
from certwright.mail.imapbox import spool_box, spool_identity
from certwright.mail.maildir import Maildir

__all__ = ["FILE_SOURCE", "MESSAGE_SOURCE", "Ledger", "Mark", "Processed"]

#: ``Store.is_processed(source, ident)``: whether a mark was committed.
Processed = Callable[[str, str], bool]
#: ``(source, ident)``, as ``Tx.mark_processed`` takes it.
Mark = tuple[str, str]

MESSAGE_SOURCE = "mail:"  # + the mailbox: ident is the Message-ID (or sha256:<hex>)
FILE_SOURCE = "mail-file:"  # + the mailbox: ident is the file's name in new/


class Ledger:
    """The takes of one Maildir, as the store (``processed``) and an old log record them."""

    def __init__(self, md: Maildir, processed: Processed | None) -> None:
        box = mailbox_id(md.path)
        self._path_sources = (MESSAGE_SOURCE + box, FILE_SOURCE + box)
        self._imap = spool_identity(md.path)  # None: a Maildir that is no IMAP spool
        self._processed = processed
        self.legacy: ProcessedLog | None = md.legacy_log()

    @property
    def shared(self) -> bool:
        """Whether this is an IMAP spool (its marks name the IMAP mailbox, not the path)."""
        return self._imap is not None

    def sources(self, name: str) -> tuple[str, str]:
        """The message's and the file's mark sources for message ``name``."""
        box = spool_box(self._imap, name) if self._imap is not None else None
        if box is None:
            return self._path_sources
        return MESSAGE_SOURCE + box, FILE_SOURCE + box

    def marks(self, message_id: str, name: str) -> tuple[Mark, Mark]:
        """The marks that take ``message_id`` from file ``name``, for a step's result."""
        message_source, file_source = self.sources(name)
        return (message_source, message_id), (file_source, name)

    def _committed(self, which: int, ident: str, name: str) -> bool:
        """Whether the mark ``which`` (0: message, 1: file) of ``ident`` was committed, under
        the message's sources or, for an IMAP spool, its path's (an older version's)."""
        if self._processed is None:
            return False
        shared = self.sources(name)[which]
        return self._processed(shared, ident) or (
            shared != self._path_sources[which]
            and self._processed(self._path_sources[which], ident))

    def taken(self, message_id: str, name: str) -> str | None:
        """Who took this very file already ("" when the store says so: it keeps no step
        key), or None when it was not taken."""
        if self._committed(1, name, name):
            return ""
        return self.legacy.taken(message_id, name) if self.legacy is not None else None

    def seen(self, message_id: str, name: str) -> bool:
        """True if ``message_id`` was taken from a file other than ``name`` (a duplicate)."""
        if self._committed(0, message_id, name) and not self._committed(1, name, name):
            return True
        return self.legacy is not None and self.legacy.seen(message_id, name)

    def find_by_key(self, step_key: str) -> tuple[str, str] | None:
        """``(message_id, name)`` an older version's step with ``step_key`` took, or None.

        Only the old log answers: a take in the store is committed with its step's result,
        so no step is ever called again after it."""
        return self.legacy.find_by_key(step_key) if self.legacy is not None else None
