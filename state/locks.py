"""Process locks: one driver per run, one daemon per store. The only module that opens
the lock files.

``flock`` locks on files in ``<state_dir>/locks``. The kernel drops a lock when its holder
dies, even by SIGKILL, so a crashed process never leaves a stale lock behind. The holder
writes its pid into the file so that a refused process can name it.

Two ways to take a run's lock, on the same file and flock, so they exclude each other:
:meth:`FileLock.acquire` (``run``/``resume``/``cancel``: raises RunLocked naming the holder)
and :func:`try_run_lock` (the daemon, on its latency path: None when held, no waiting).

Taking the flock and writing the pid are two steps, so a prober may find the lock held and
the file not yet naming its holder: empty, or still naming an earlier holder that is gone.
It then looks again for up to :data:`HOLDER_WAIT` seconds (trying the lock too, which may
have been held only for an instant by :meth:`FileLock.holder`) rather than report "another
process". A holder clears the file before it lets go, so a pid left behind is a dead one.

Taking a lock writes (the folder, the file, the holder line), so on a full or read-only
file system it fails: with a :class:`state.faults.StoreFault` naming the lock file, as the
store's own failures do. :meth:`FileLock.holder` only reads, so ``status`` works there.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from certwright.errors import RunLocked
from certwright.state import names as N
from certwright.state.faults import StoreFault, kind_of

HOLDER_WAIT = 2.0  # seconds a prober waits for a held lock's file to name a live holder
_HOLDER_POLL = 0.01


class HeldLock:
    """A lock this process holds: an open fd with an exclusive flock on it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        """Clear the holder line, unlock and close; call once."""
        try:
            clear_holder(self.fd)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


class FileLock:
    """An exclusive, non-blocking flock on ``path``; raises RunLocked naming the holder."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._held: HeldLock | None = None

    def acquire(self) -> Self:
        """Take the lock; RunLocked naming the holder, StoreFault when the file cannot be
        written."""
        fd = _open(self.path)
        try:
            _probe(fd, fcntl.LOCK_EX, self.what)
            _write_holder(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        self._held = HeldLock(fd)
        return self

    def release(self) -> None:
        """Let go (a repeat call, or one without ``acquire``, does nothing)."""
        held, self._held = self._held, None
        if held is not None:
            held.release()

    def holder(self) -> int | None:
        """The pid holding the lock now, or None if it is free."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            try:
                _probe(fd, fcntl.LOCK_SH, self.what)
            except RunLocked as exc:
                return exc.pid
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_run_lock(state_dir: Path, run_id: str) -> HeldLock | None:
    """Take ``run_id``'s lock without blocking; None when another process holds it.

    The file and flock of :func:`run_lock`, so the CLI's ``run``/``resume`` and the daemon
    exclude each other. Never raises for a held lock (and never waits for a holder to name
    itself); raises StoreFault if the lock file cannot be created or written. The holder
    line is written without fsync: it only names the holder for messages, the flock
    excludes.
    """
    path = run_lock(state_dir, run_id).path
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        _write_holder(fd, path, sync=False)
    except BaseException:
        os.close(fd)
        raise
    return HeldLock(fd)


def _open(path: Path) -> int:
    """Open (creating) a lock file, 0600, never through a symlink; StoreFault if that
    fails (a full or read-only file system)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise _fault(exc, path) from exc


def _fault(exc: OSError, path: Path) -> StoreFault:
    return StoreFault(kind_of(exc, path) or "unavailable", path, "locking", str(exc))


def _write_holder(fd: int, path: Path, *, sync: bool = True) -> None:
    try:
        write_holder(fd, sync=sync)
    except OSError as exc:
        raise _fault(exc, path) from exc


def write_holder(fd: int, *, sync: bool = True) -> None:
    """Name this process as the holder of the flock held on ``fd``.

    The line overwrites the start of the file before the rest is cut off, so a reader
    never sees it empty once this begins (a longer earlier line's tail is ignored).
    ``sync=False`` skips the fsync (the daemon, on its latency path: the line only names
    the holder for messages; the flock is what excludes).
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{os.getpid()} {stamp}\n".encode()
    os.pwrite(fd, line, 0)
    os.ftruncate(fd, len(line))
    if sync:
        os.fsync(fd)


def clear_holder(fd: int) -> None:
    """Before letting go of the flock: leave no pid behind for the next holder's gap."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)


def _probe(fd: int, mode: int, what: str) -> None:
    """Take ``mode`` on ``fd`` without blocking, or raise RunLocked naming the holder.

    Held, but the file names no live process: the holder is between its flock and its
    pid (or the lock was held for an instant by a shared probe); look again, a while.
    """
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pid, since = _read_holder(fd)
        if (pid is not None and _alive(pid)) or time.monotonic() >= deadline:
            raise RunLocked(what, pid, since)
        time.sleep(_HOLDER_POLL)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
        return (int(text[0]) if text else None), (text[1] if len(text) > 1 else None)
    except (OSError, ValueError):
        return None, None


def run_lock(state_dir: Path, run_id: str) -> FileLock:
    """The lock a process holds while it drives run ``run_id``."""
    return FileLock(Path(state_dir) / N.LOCK_DIR / f"run-{run_id}.lock", f"run {run_id}")


def daemon_lock(state_dir: Path) -> FileLock:
    """The lock the daemon holds while it serves the store in ``state_dir``."""
    return FileLock(Path(state_dir) / N.LOCK_DIR / N.DAEMON_LOCK, f"the store in {state_dir}")
