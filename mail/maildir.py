"""A Maildir that is safe to share between a delivering MTA and several waiting steps.

Layout: ``<path>/{tmp,new,cur}`` holds messages, one file each. certwright's bookkeeping
lives in a separate ``books`` folder (the state dir's, :mod:`certwright.mail.books`; the
Maildir itself when none is given): ``<books>/.quarantine`` is a Maildir for messages moved
aside (never deleted) with a ``reasons/<name>.reason`` sidecar each, and
``<books>/certwright-processed.sqlite3`` is the :class:`ProcessedLog` of older versions
(takes are the store's now: :mod:`certwright.mail.ledger`).

Hazards this module is written against:

* **Partial files.** A message is written to ``tmp/``, fsynced, then hard-linked into
  ``new/`` (link never overwrites an existing name) and the folder fsynced; a reader of
  ``new/`` never sees a half-written message. A crash leaves at most a stray ``tmp/`` file.
  Deliveries running at once in one process share the fsync of ``new/``.
* **Races.** Several processes may list, read and move the same message at once. A file
  can vanish between ``list_new`` and ``read``/``move_*``: those raise
  :class:`FileNotFoundError`, which callers treat as "someone else took it".
* **Huge files.** :meth:`Maildir.read` refuses a file over its cap without reading it
  whole (:class:`MessageTooLarge`).
"""
from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import secrets
import socket
import threading
import time
from pathlib import Path

import structlog

from certwright.atomic import fsync_dir, write_file
from certwright.errors import CertwrightError
from certwright.mail.books import PROCESSED_LOG, ProcessedLog, carry_over

log = structlog.get_logger(__name__)

#: Files larger than this are refused by :meth:`Maildir.read` (the parser's own limit is
#: lower, 10240000 bytes; this cap only keeps a runaway file out of memory).
DEFAULT_MAX_READ = 16 * 1024 * 1024
QUARANTINE = ".quarantine"

_counter = itertools.count(1)
_counter_lock = threading.Lock()


class MessageTooLarge(CertwrightError):
    """A Maildir file is larger than the reader's cap; it was not read."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        self.name, self.size, self.limit = name, size, limit
        super().__init__(f"message too large: {name} has {size} bytes (limit {limit})")


def unique_name() -> str:
    """A fresh Maildir file name: ``<sec>.M<usec>P<pid>Q<n>R<rand>.<host>``.

    Unique across threads (counter), processes (pid) and pid reuse (random bits); ``/``
    and ``:`` in the host name are escaped as the Maildir convention asks.
    """
    now = time.time()
    with _counter_lock:
        n = next(_counter)
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"
    return (f"{int(now)}.M{int((now % 1) * 1_000_000):06d}P{os.getpid()}Q{n}"
            f"R{secrets.token_hex(4)}.{host}")


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _FolderSync:
    """Group commit of one folder's fsync across threads.

    :meth:`sync` returns once an fsync of the folder that *began after the call* has
    completed: a caller whose link is already in the folder waits for the fsync under
    way to end (it may have begun before the link), then either one fsync covers every
    caller waiting by then, or it runs that fsync itself. A failed fsync raises in the
    thread that ran it; the others try again.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._asked = 0  # tickets handed out
        self._done = 0  # every ticket up to this one is covered by a completed fsync
        self._running = False

    def sync(self) -> None:
        with self._cond:
            self._asked += 1
            ticket = self._asked
            while True:
                if self._done >= ticket:
                    return
                if not self._running:
                    self._running = True
                    covers = self._asked
                    break
                self._cond.wait()
        try:
            fsync_dir(self.path)
        except BaseException:
            with self._cond:
                self._running = False
                self._cond.notify_all()
            raise
        with self._cond:
            self._done = max(self._done, covers)
            self._running = False
            self._cond.notify_all()


_folder_syncs: dict[str, _FolderSync] = {}
_folder_syncs_lock = threading.Lock()


def _folder_sync(path: str) -> _FolderSync:
    with _folder_syncs_lock:
        sync = _folder_syncs.get(path)
        if sync is None:
            sync = _folder_syncs[path] = _FolderSync(path)
        return sync


def _check_name(name: str) -> None:
    """Refuse names that could escape the folder (``../x``, ``a/b``) or are hidden."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise ValueError(f"not a Maildir file name: {name!r}")


class Maildir:
    """One Maildir folder (``cur``, ``new``, ``tmp``).

    All methods are safe to call from several threads and processes at once. Methods that
    touch a message by name raise :class:`FileNotFoundError` when it is gone (another
    reader moved it), and :class:`ValueError` for a name with a path separator in it.
    """

    def __init__(self, path: Path | str, *, max_read: int = DEFAULT_MAX_READ,
                 books: Path | str | None = None) -> None:
        self.path = Path(path)
        self.max_read = max_read
        self.books = Path(books) if books is not None else self.path

    # Computed once: every look at a message joins one of them (a Path built per call was
    # a percent of the daemon's CPU during the cacert benchmark). ``path`` is not changed.
    @functools.cached_property
    def new(self) -> Path:
        return self.path / "new"

    @functools.cached_property
    def cur(self) -> Path:
        return self.path / "cur"

    @functools.cached_property
    def tmp(self) -> Path:
        return self.path / "tmp"

    def ensure(self) -> None:
        """Create ``cur``, ``new`` and ``tmp`` (mode 0700) if missing; a repeat is a no-op."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in (self.cur, self.new, self.tmp):
            sub.mkdir(mode=0o700, exist_ok=True)

    def deliver(self, raw: bytes, *, name: str | None = None) -> str:
        """Store ``raw`` as a new message and return its file name in ``new/``.

        Atomic: written to ``tmp/`` (:func:`certwright.atomic.write_file`: 0600 from the
        start, O_EXCL, fsynced), hard-linked into ``new/`` and unlinked from ``tmp/``, then
        ``new/`` fsynced before returning (one fsync of the folder covers every delivery
        linked before it began, so concurrent deliveries share it). Each call delivers a
        new copy, except with ``name``: the message is delivered under that name, once (if
        ``new/<name>`` exists it counts as delivered; the IMAP spool names messages by
        UID). After a crash the message is either wholly in ``new/`` or not there at all;
        ``tmp/`` is not fsynced, so a crash may leave a stray link of a delivered message
        there (readers never look in ``tmp/``). Missing folders are created.
        """
        if name is not None:
            _check_name(name)
        final = unique_name() if name is None else name
        base = os.fspath(self.path)
        tmp_path = f"{base}/tmp/{final if name is None else unique_name()}"  # noqa: S108 - the Maildir's tmp/
        new_path = f"{base}/new/{final}"
        try:
            write_file(tmp_path, raw, 0o600)
        except FileNotFoundError:
            self.ensure()
            write_file(tmp_path, raw, 0o600)
        try:
            try:
                os.link(tmp_path, new_path)  # never replaces an existing file, unlike rename
            except FileNotFoundError:
                if not os.path.exists(tmp_path):
                    raise
                self.ensure()  # new/ went missing
                os.link(tmp_path, new_path)
            os.unlink(tmp_path)
        except OSError as exc:
            if isinstance(exc, FileExistsError) and name is not None:
                _unlink_quietly(tmp_path)  # delivered under this name already
            elif isinstance(exc, FileExistsError) or not os.path.exists(tmp_path):
                _unlink_quietly(tmp_path)
                raise
            else:
                os.rename(tmp_path, new_path)  # file systems without hard links
        _folder_sync(f"{base}/new").sync()
        return final

    def _list(self, folder: Path) -> list[str]:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith("."))

    def list_new(self) -> list[str]:
        """Names in ``new/``, oldest first (names start with the delivery time)."""
        return self._list(self.new)

    def list_cur(self) -> list[str]:
        """Names in ``cur/`` (with their ``:2,<flags>`` info), sorted."""
        return self._list(self.cur)

    def locate(self, name: str) -> Path:
        """The path of message ``name`` in ``new/`` or ``cur/``; FileNotFoundError if neither."""
        _check_name(name)
        for folder in (self.new, self.cur):
            candidate = folder / name
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"no message {name!r} in {self.path}")

    def read(self, name: str) -> bytes:
        """The bytes of message ``name`` (looked up in ``new/`` then ``cur/``).

        Raises :class:`MessageTooLarge` for a file over ``max_read`` bytes without reading it
        (the size is checked on the open file, and at most ``max_read + 1`` bytes are read
        in case it grows), :class:`FileNotFoundError` if it vanished.
        """
        path = self.locate(name)
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > self.max_read:
                raise MessageTooLarge(name, size, self.max_read)
            data = fh.read(self.max_read + 1)
        if len(data) > self.max_read:
            raise MessageTooLarge(name, len(data), self.max_read)
        return data

    @staticmethod
    def cur_name(name: str, flags: str = "S") -> str:
        """The name :meth:`move_to_cur` gives message ``name`` in ``cur/``."""
        return f"{name}:2,{''.join(sorted(set(flags)))}"

    def move_to_cur(self, name: str, flags: str = "S", *, sync: bool = True) -> str:
        """Move ``new/<name>`` to ``cur/<name>:2,<flags>`` and return the new name.

        Repeat-safe: if the message is already in ``cur/`` under that name, returns it.
        Raises FileNotFoundError when it is in neither place (another process took it).
        ``sync=False`` skips the fsync of ``cur/``: for a caller that recorded the take
        durably first (the store's marks, :mod:`certwright.mail.ledger`), so a move lost to
        a power cut is redone by whoever finds the message back in ``new/``.
        """
        _check_name(name)
        target = self.cur_name(name, flags)
        try:
            os.rename(self.new / name, self.cur / target)
        except FileNotFoundError:
            if (self.cur / target).exists():
                return target
            raise
        if sync:
            fsync_dir(self.cur)
        return target

    def finish_taken(self, name: str) -> bool:
        """Move a message the store says was taken (its unsynced move to ``cur/``
        lost to a power cut) on to ``cur/``; False when it is gone already."""
        try:
            self.move_to_cur(name)
            return True
        except FileNotFoundError:
            return False

    def quarantine(self) -> Maildir:
        """The quarantine Maildir in the books folder (created on first use, 0700)."""
        self.books.mkdir(mode=0o700, parents=True, exist_ok=True)
        sub = Maildir(self.books / QUARANTINE, max_read=self.max_read)
        sub.ensure()
        (sub.path / "reasons").mkdir(mode=0o700, exist_ok=True)
        (sub.path / "maildirfolder").touch(mode=0o600, exist_ok=True)
        return sub

    def move_aside(self, name: str, reason: str) -> Path:
        """Move message ``name`` (from ``new/`` or ``cur/``) into ``.quarantine/new/``.

        The reason (one line) is written first to ``.quarantine/reasons/<name>.reason``,
        so a crash leaves at worst a reason without its message, and the next attempt
        overwrites it. Never deletes anything. Returns the quarantined message's path;
        raises FileNotFoundError when the message is gone.
        """
        source = self.locate(name)
        sub = self.quarantine()
        reason_line = " ".join(reason.split())[:1000] + "\n"
        reason_path = sub.path / "reasons" / f"{name}.reason"
        tmp_reason = sub.tmp / f"{name}.reason.{secrets.token_hex(4)}"
        write_file(tmp_reason, reason_line.encode(), 0o600)
        os.replace(tmp_reason, reason_path)
        target = sub.new / name
        try:
            try:
                os.rename(source, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self._copy_aside(source, sub, name)  # the books are on another filesystem
        except FileNotFoundError:
            reason_path.unlink(missing_ok=True)
            raise
        fsync_dir(sub.new)
        fsync_dir(sub.path / "reasons")
        log.warning("mail_moved_aside", file=name, reason=reason_line.strip(),
                    quarantine=str(sub.path))
        return target

    @staticmethod
    def _copy_aside(source: Path, sub: Maildir, name: str) -> None:
        """Move across filesystems: a durable copy linked into ``sub/new``, then the
        original unlinked (FileNotFoundError, and no copy, if someone took it first)."""
        tmp = sub.tmp / f"{name}.{secrets.token_hex(4)}"
        write_file(tmp, source.read_bytes(), 0o600)
        try:
            os.link(tmp, sub.new / name)
        finally:
            os.unlink(tmp)
        try:
            os.unlink(source)
        except FileNotFoundError:
            os.unlink(sub.new / name)
            raise

    def processed_log(self) -> ProcessedLog:
        """The :class:`ProcessedLog` in the books folder; one an older version left in the
        Maildir itself is carried over first (:func:`certwright.mail.books.carry_over`)."""
        target = self.books / PROCESSED_LOG
        if self.books != self.path and not target.exists():
            carry_over(self.path / PROCESSED_LOG, target)
            self.books.mkdir(mode=0o700, parents=True, exist_ok=True)
        return ProcessedLog(target)

    def legacy_log(self) -> ProcessedLog | None:
        """The processed log an older version kept for this Maildir (carried over as
        :meth:`processed_log` does), or None when there is none: it is read, never
        written (:mod:`certwright.mail.ledger`)."""
        if (self.books / PROCESSED_LOG).exists() or (
                self.books != self.path and (self.path / PROCESSED_LOG).is_file()):
            return self.processed_log()
        return None
