"""Where ``install.files`` puts files, and the checks that make writing there safe.

:class:`Layout` names the target folder, each role's file (key, cert, chain, fullchain)
and the ``.certwright`` metadata folder beside them; :func:`check_folder` and
:func:`check_target` refuse what another user could use to redirect our writes;
:func:`read_file` and :func:`matches` read what is installed.

Hazards: the target folder must not be writable by anyone else, nor owned by anyone but
root or the user running certwright, and neither it nor any target may be a symlink (the
checks use ``lstat`` and ``O_NOFOLLOW``); nor may any folder above it be a symlink, or be
owned or (without the sticky bit) writable by another user, who could then put a folder
of their own in its place between two writes (OpenSSH's StrictModes rule); the checks are
repeated by the writes themselves (:mod:`certwright.atomic` opens the folder without
following a symlink). Version folders hold private keys: ``.certwright`` is 0700.
"""
from __future__ import annotations

import hashlib
import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certwright.errors import PermanentError

ROLES = ("key", "cert", "chain", "fullchain")  # also the write order: key before cert
MODES = {"key": 0o600, "cert": 0o644, "chain": 0o644, "fullchain": 0o644}
DEFAULT_NAMES = {"key": "server.key", "cert": "server.crt", "chain": "chain.pem",
                 "fullchain": "fullchain.pem"}
META_DIR = ".certwright"

Files = Mapping[str, bytes | None]  # role -> content, None for "absent"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leaf_fingerprint(pem: bytes) -> str:
    """SHA-256 (hex) of the DER of the first certificate in ``pem``; "" if none."""
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError):
        return ""
    return sha256_hex(cert.public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class Layout:
    """Where the installed files live: the target folder and each role's file name."""

    dir: Path
    names: Mapping[str, str]

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> Layout:
        if not p.get("dir"):
            raise PermanentError("install: parameter 'dir' (the target folder) is required")
        names = {r: str(p.get(f"{r}_name") or DEFAULT_NAMES[r]) for r in ROLES}
        for role, name in names.items():
            if "/" in name or name in (".", "..", META_DIR) or not name:
                raise PermanentError(f"install: {role}_name {name!r} must be a plain file name")
        if len(set(names.values())) != len(names):
            raise PermanentError(f"install: file names must differ, got {names}")
        return cls(Path(str(p["dir"])), names)

    def path(self, role: str) -> Path:
        return self.dir / self.names[role]

    @property
    def meta(self) -> Path:
        return self.dir / META_DIR

    @property
    def versions(self) -> Path:
        return self.meta / "versions"

    @property
    def staging(self) -> Path:
        return self.meta / "staging"

    @property
    def pending(self) -> Path:
        return self.meta / "pending"


# -- folder and file safety ----------------------------------------------------------------

def _unsafe_mode(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _owners(me: str) -> str:
    return "root" if me == "root" else f"root or {me}"


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def check_parents(folder: Path, what: str) -> None:
    """Refuse ``folder`` when a folder above it is a symlink, or is owned by someone other
    than root or us, or is group/world-writable without the sticky bit: whoever controls
    a parent can swap ``folder`` for one of their own. Parents that do not exist yet are
    not checked (:func:`check_folder` creates only under a safe parent)."""
    me = _user(os.geteuid())
    for parent in reversed(Path(os.path.abspath(folder)).parents):  # "/" first
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise PermanentError(
                f"{what} {folder} is reached through a symlink: {parent} is a symlink (to "
                f"{os.readlink(parent)}); refusing to write through it: give the real path, "
                f"{os.path.realpath(folder)}")
        if not _trusted_owner(st):
            raise PermanentError(
                f"{what} {folder}: the folder above it, {parent} is owned by "
                f"{_user(st.st_uid)}, who could put a folder of their own in its place; "
                f"chown it to {_owners(me)}, or choose another folder")
        if _unsafe_mode(st) and not st.st_mode & stat.S_ISVTX:
            raise PermanentError(
                f"{what} {folder}: the folder above it, {parent} is writable by group or "
                f"others (mode {stat.S_IMODE(st.st_mode):04o}) without the sticky bit; "
                "chmod go-w it first, or choose another folder")


def check_folder(folder: Path, what: str, *, create_mode: int | None = None) -> None:
    """Refuse a symlinked, non-folder or group/world-writable ``folder``.

    When it is missing and ``create_mode`` is given, create it with that mode provided its
    parent exists, is a real folder and is not group/world-writable; else PermanentError.
    Also refused, before anything is written: a folder owned by someone other than root or
    the user running certwright, and one whose parents are unsafe (:func:`check_parents`).
    """
    check_parents(folder, what)
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        if create_mode is None:
            raise PermanentError(f"{what} {folder} does not exist") from None
        try:
            pst = os.lstat(folder.parent)
        except FileNotFoundError:
            raise PermanentError(f"{what} {folder} does not exist, nor does its parent; "
                                 "create it first") from None
        if stat.S_ISLNK(pst.st_mode) or not stat.S_ISDIR(pst.st_mode) or _unsafe_mode(pst):
            raise PermanentError(f"{what} {folder} does not exist and its parent is a symlink, "
                                 "not a folder, or writable by group/others; "
                                 "create it first") from None
        try:
            os.mkdir(folder, create_mode)
        except FileExistsError:
            pass
        except OSError as exc:
            raise PermanentError(f"cannot create {what} {folder}: {exc.strerror}") from exc
        os.chmod(folder, create_mode)  # the umask filters mkdir's mode
        st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode):
        raise PermanentError(f"{what} {folder} is a symlink; refusing to write through it")
    if not stat.S_ISDIR(st.st_mode):
        raise PermanentError(f"{what} {folder} exists but is not a folder")
    if _unsafe_mode(st):
        raise PermanentError(f"{what} {folder} is writable by group or others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); chmod go-w it first")
    if not _trusted_owner(st):
        me = _user(os.geteuid())
        raise PermanentError(
            f"{what} {folder} is owned by {_user(st.st_uid)}, not by {_owners(me)} (who runs "
            f"certwright), so its owner could replace the installed files later; "
            f"chown {me} {folder}, or choose another folder")


def check_target(path: Path) -> None:
    """Refuse a target that is a symlink or not a regular file (missing is fine)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise PermanentError(f"install target {path} is a symlink; refusing to replace it")
    if not stat.S_ISREG(st.st_mode):
        raise PermanentError(f"install target {path} exists but is not a regular file")


def read_file(path: Path) -> bytes | None:
    """The bytes of a regular file, None if missing (symlinks are not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PermanentError(f"install: cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def read_current(layout: Layout) -> dict[str, bytes | None]:
    return {r: read_file(layout.path(r)) for r in ROLES}


def matches(layout: Layout, files: Files) -> bool:
    """True if every target already holds exactly ``files`` with the right modes."""
    for role in ROLES:
        want = files.get(role)
        path = layout.path(role)
        have = read_file(path)
        if have != want:
            return False
        if want is not None and stat.S_IMODE(os.lstat(path).st_mode) != MODES[role]:
            return False
    return True
