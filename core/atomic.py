"""Atomic file writes: the one way certwright writes a file whole.

A write goes into a temporary file in the target's folder, created exclusively
(``O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC``) with its mode set before the first byte, is
fsynced, renamed over the target (or hard-linked to it, for a create-only write), and then
the folder is fsynced. A crash leaves the old file or the new one, never a torn one; a
return means the new file survives a power cut.

* :func:`write_atomic` replaces one file; :func:`write_many_atomic` replaces several, in
  order, with one round of syncing (all written, all fsynced, all renamed, each folder
  fsynced once); :func:`write_new` creates a file only if its name is free (keys).
* :func:`write_file` and :func:`fsync_dir` are the building blocks, for protocols of their
  own (a Maildir writes into ``tmp/`` and links into ``new/``).

The folder is opened once (``O_DIRECTORY``) and the temporary file, the rename and the
fsync all work relative to it, so they hit one folder even if its path is swapped
meanwhile. Unless the caller passes ``follow_folder=True`` (a folder a user named for
public files, which may be a distribution's symlink), a folder whose last path component is
a symlink is refused (``OSError`` ELOOP).

Hazards:

* On a failure (an exception) the temporary files are removed and the targets not yet
  renamed are left as they were. A crash can leave a temporary file behind: a hidden
  ``.<name>.<random>.tmp``, or ``.<name>.<tag>`` when the caller owns a name (``tag``, e.g.
  derived from an idempotency key), which the next write with that tag removes first.
* Only the folder's last path component is checked; whoever may write into the folder can
  still replace what is in it. Callers that write secrets check the folder first.
* Errors are ``OSError`` (``FileExistsError`` when :func:`write_new` finds its target, also
  a symlink there); callers turn them into their own errors. Nothing here logs.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

__all__ = ["create_file", "fsync_dir", "write_all", "write_atomic", "write_file",
           "write_many_atomic", "write_new"]

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

PathLike = Path | str


def fsync_dir(folder: PathLike) -> None:
    """fsync ``folder``, so that names created, renamed or removed in it are durable."""
    fd = os.open(folder, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_file(path: PathLike, mode: int, *, dir_fd: int | None = None) -> int:
    """Create ``path`` exclusively (never through a symlink) with exactly ``mode``; its fd.

    The mode is set before any byte is written (``fchmod`` on top of the umask-filtered
    mode of the creation). Raises ``FileExistsError`` when anything is at ``path``.
    """
    fd = os.open(path, _FILE_FLAGS, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        _remove(path, dir_fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file(path: PathLike, data: bytes, mode: int, *, dir_fd: int | None = None) -> None:
    """Create ``path`` as :func:`create_file` does, write ``data``, fsync and close it.

    On any failure the file is removed. No rename and no folder fsync: the caller
    publishes the file (that is the difference from :func:`write_atomic`).
    """
    fd = create_file(path, mode, dir_fd=dir_fd)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _remove(path, dir_fd)
        raise


def write_atomic(path: PathLike, data: bytes, mode: int = 0o600, *, tag: str | None = None,
                 follow_folder: bool = False) -> None:
    """Replace ``path`` with ``data`` (``mode``) atomically; a crash leaves old or new.

    ``tag`` names the temporary file ``.<name>.<tag>`` (a leftover there is removed first);
    ``follow_folder`` allows a symlinked folder. A symlink at ``path`` itself is replaced,
    never written through.
    """
    write_many_atomic([(Path(path), data, mode)], tag=tag, follow_folder=follow_folder)


def write_many_atomic(items: Iterable[tuple[Path, bytes, int]], *, tag: str | None = None,
                      follow_folder: bool = False) -> None:
    """Replace several targets, each atomically, in the order given.

    Every temporary file is written first, then each is fsynced (on ext4 the first fsync
    commits the data of all of them; the rest find little to do), then each is renamed
    over its target in order, then each folder is fsynced once. A crash or a failure part
    way leaves each target old or new (earlier ones renamed, later ones untouched): a
    caller needing all-or-nothing records which set it meant (install's pending marker).
    Raises ValueError for a target named twice.
    """
    todo = [(Path(p), data, mode) for p, data, mode in items]
    if len({p for p, _, _ in todo}) != len(todo):
        raise ValueError("write_many_atomic: a target is named twice")
    folders: dict[Path, int] = {}
    temps: list[tuple[str, Path, int]] = []  # (temporary name, target, folder fd)
    fds: list[int] = []
    renamed = 0
    try:
        for path, data, mode in todo:
            dir_fd = folders.get(path.parent)
            if dir_fd is None:
                dir_fd = folders[path.parent] = _open_folder(path.parent, follow_folder)
            tmp = _tmp_name(path.name, tag)
            if tag:
                _remove(tmp, dir_fd)  # a leftover of a crash; the caller owns this name
            fds.append(create_file(tmp, mode, dir_fd=dir_fd))
            temps.append((tmp, path, dir_fd))
            write_all(fds[-1], data)
        for fd in fds:
            os.fsync(fd)
        while fds:
            os.close(fds.pop())
        for tmp, path, dir_fd in temps:
            _publish(tmp, path, dir_fd)
            renamed += 1
        for folder in sorted(folders):
            os.fsync(folders[folder])
    except BaseException:
        for tmp, _, dir_fd in temps[renamed:]:
            _remove(tmp, dir_fd)
        raise
    finally:
        for fd in fds:
            os.close(fd)
        for dir_fd in folders.values():
            os.close(dir_fd)


def write_new(path: PathLike, data: bytes, mode: int = 0o600, *, tag: str | None = None,
              follow_folder: bool = False) -> None:
    """Create ``path`` holding ``data`` (``mode``) only if nothing is there yet.

    The complete file is hard-linked to ``path`` (``link`` never replaces a name), so the
    target is created exclusively and never seen half written. Raises ``FileExistsError``
    when something (a file, a symlink) is at ``path``, leaving it alone.
    """
    path = Path(path)
    dir_fd = _open_folder(path.parent, follow_folder)
    try:
        tmp = _tmp_name(path.name, tag)
        if tag:
            _remove(tmp, dir_fd)
        write_file(tmp, data, mode, dir_fd=dir_fd)
        try:
            os.link(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            _remove(tmp, dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _open_folder(folder: Path, follow: bool) -> int:
    return os.open(folder, _DIR_FLAGS | (0 if follow else os.O_NOFOLLOW))


def _tmp_name(name: str, tag: str | None) -> str:
    return f".{name}.{tag}" if tag else f".{name}.{secrets.token_hex(8)}.tmp"


def _publish(tmp: str, target: Path, dir_fd: int) -> None:
    """Rename ``tmp`` over ``target`` (both in the folder open as ``dir_fd``)."""
    os.rename(tmp, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _remove(path: PathLike, dir_fd: int | None) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path, dir_fd=dir_fd)
