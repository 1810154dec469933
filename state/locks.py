"""Process locks: one driver per run, one daemon per store.

``flock`` locks on files in ``<state_dir>/locks``. The kernel drops a lock when its holder
dies, even by SIGKILL, so a crashed process never leaves a stale lock behind. The holder
writes its pid into the file so that a refused process can name it.
"""
from __future__ import annotations

import fcntl
import os
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import RunLocked
from state import names as N


class FileLock:
    """An exclusive, non-blocking flock on ``path``; raises RunLocked naming the holder."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, since = _read_holder(fd)
            os.close(fd)
            raise RunLocked(self.what, pid, since) from None
        os.ftruncate(fd, 0)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.write(fd, f"{os.getpid()} {stamp}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> int | None:
        """The pid holding the lock now, or None if it is free."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)[0]
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
