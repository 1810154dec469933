"""A minimal inotify watcher for Maildir ``new/`` folders (Linux), without added latency.

Why not watchdog's observer here: it holds every ``IN_MOVED_FROM`` for 0.5 s to pair it
with an ``IN_MOVED_TO``, in one FIFO queue, so each message a run takes (moved from
``new/`` to ``cur/``) delays every event behind it by up to half a second. This watcher
asks only for ``IN_CREATE`` and ``IN_MOVED_TO`` (a message arriving by link or rename) and
``IN_Q_OVERFLOW`` (then it reports ``None`` and the owner rescans), and calls back at once.

``watch(folder, callback)`` calls ``callback(name)`` for each file appearing in ``folder``
(``callback(None)`` after an overflow) from the watcher's thread. Raises OSError when inotify
is unavailable (the daemon then falls back to watchdog). ``stop()`` is safe to repeat.
``watch(folder, callback, CHANGES)`` also reports files written, removed or moved away, and
folders (the daemon's ``wait.file`` watching); several callbacks may watch one folder, each
told only the events it asked for, and ``unwatch`` drops one again.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import struct
import threading
from collections.abc import Callable

IN_CREATE, IN_MOVED_TO, IN_Q_OVERFLOW, IN_ISDIR = 0x100, 0x080, 0x4000, 0x40000000
IN_CLOSE_WRITE, IN_DELETE, IN_MOVED_FROM, IN_MASK_ADD = 0x008, 0x200, 0x040, 0x20000000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
_HEADER = struct.Struct("iIII")

#: files arriving (by link or rename): what a Maildir's ``new/`` needs
NEW = IN_CREATE | IN_MOVED_TO
#: files renamed in or closed after writing: whole files (the daemon's inbox)
WHOLE = IN_MOVED_TO | IN_CLOSE_WRITE
#: and files written, removed or moved away, and folders too (IN_ISDIR): ``wait.file``
CHANGES = NEW | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_ISDIR
_KERNEL_BITS = CHANGES & ~IN_ISDIR

Callback = Callable[[str | None], None]


class NewFileWatcher:
    """One inotify fd, one thread; callbacks per watched folder."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd = fd
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        # wd -> (events, callback) pairs; replaced, never changed in place, so the watcher
        # thread reads a consistent list without a lock
        self._callbacks: dict[int, tuple[tuple[int, Callback], ...]] = {}
        self._wds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None

    def watch(self, folder: str, callback: Callback, events: int = NEW) -> None:
        """Report files created in or moved into ``folder`` (``events``: also the other
        kinds of :data:`CHANGES`); raises OSError on failure."""
        with self._lock:
            wd = self._add(self._fd, os.fsencode(folder),
                           (events & _KERNEL_BITS) | IN_MASK_ADD)
            if wd < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"inotify_add_watch {folder}: {os.strerror(err)}")
            self._wds[folder] = wd
            self._callbacks[wd] = (*self._callbacks.get(wd, ()), (events, callback))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="certwright-inotify",
                                            daemon=True)
            self._thread.start()

    def unwatch(self, folder: str, callback: Callback) -> None:
        """Stop telling ``callback`` about ``folder``; the last one removes the watch."""
        with self._lock:
            wd = self._wds.get(folder)
            if wd is None:
                return
            left = tuple(p for p in self._callbacks.get(wd, ()) if p[1] is not callback)
            if left:
                self._callbacks[wd] = left
                return
            self._callbacks.pop(wd, None)
            for name in [f for f, w in self._wds.items() if w == wd]:
                del self._wds[name]
            self._rm(self._fd, wd)

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            except OSError:
                return
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size: offset + _HEADER.size + length]
                offset += _HEADER.size + length
                if mask & IN_Q_OVERFLOW:
                    for pairs in list(self._callbacks.values()):
                        for _, cb in pairs:
                            self._call(cb, None)
                    continue
                name = os.fsdecode(raw.rstrip(b"\0"))
                for events, cb in self._callbacks.get(wd, ()):
                    if mask & events & _KERNEL_BITS and (
                            not mask & IN_ISDIR or events & IN_ISDIR):
                        self._call(cb, name)

    @staticmethod
    def _call(cb: Callback, name: str | None) -> None:
        with contextlib.suppress(Exception):  # a callback must not kill the watcher thread
            cb(name)

    def stop(self) -> None:
        if self._stop_w < 0:
            return
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)
        self._stop_w = -1
