"""Making sure a Maildir exists, without making one an MTA cannot deliver into.

A Maildir outside the state dir belongs to the MTA that delivers into it: certwright
creates it only with the owner, group and mode the operator configured
(:class:`MaildirPolicy`, the daemon's ``maildir_owner``/``maildir_group``/``maildir_mode``);
otherwise it refuses (:class:`MaildirMissing`) with a sentence saying how to create it.
A folder made with the process's defaults under ``/var/mail`` (setgid ``mail``) ended up
``drwx--S--- root mail``, which Postfix could not deliver into. A Maildir inside the state
dir (the embedded mail server's) is certwright's own and is created 0700.

An existing Maildir is never changed (its missing ``cur``/``new``/``tmp`` are made with its
own owner and mode).
"""
from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from certwright.errors import CertwrightError
from certwright.mail.maildir import Maildir

__all__ = ["MaildirMissing", "MaildirPolicy", "prepare_maildir"]


class MaildirMissing(CertwrightError):
    """A Maildir does not exist and may not be created (or could not be)."""


@dataclass(frozen=True)
class MaildirPolicy:
    """Owner (user name or uid), group (name or gid) and mode for a Maildir certwright
    creates; with none of them set it creates none outside the state dir."""

    owner: str | None = None
    group: str | None = None
    mode: int | None = None

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.owner, self.group, self.mode))


def _uid(owner: str | None) -> int:
    if owner is None:
        return -1
    try:
        return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise MaildirMissing(f"maildir_owner {owner!r} is no user on this system") from None


def _gid(group: str | None) -> int:
    if group is None:
        return -1
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise MaildirMissing(f"maildir_group {group!r} is no group on this system") from None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _how(path: Path) -> str:
    subs = " ".join(str(path / s) for s in ("cur", "new", "tmp"))
    return (f"create it for the MTA that delivers into it, e.g. `install -d -o USER -g GROUP "
            f"-m 0700 {path} {subs}` (USER: the account the MTA delivers as, for Postfix "
            f"virtual mailboxes its virtual_uid_maps), or set maildir_owner, maildir_group "
            f"and maildir_mode in the daemon's config to let certwright create it")


def prepare_maildir(md: Maildir, *, state_dir: Path, policy: MaildirPolicy) -> None:
    """Make sure ``md`` and its ``cur``/``new``/``tmp`` exist (see the module doc).

    Raises :class:`MaildirMissing` saying how to create it when it is missing outside the
    state dir and ``policy`` is not configured, or when creating it fails. Repeat-safe.
    """
    path = md.path
    if path.is_dir():
        st = path.stat()
        for sub in (md.cur, md.new, md.tmp):
            if not sub.is_dir():
                _make(sub, st.st_uid, st.st_gid, st.st_mode & 0o7777)
        return
    if _inside(path, state_dir):
        md.ensure()
        return
    if not policy.configured:
        raise MaildirMissing(f"the Maildir {path} does not exist; {_how(path)}")
    uid, gid = _uid(policy.owner), _gid(policy.group)
    mode = 0o700 if policy.mode is None else policy.mode
    if not path.parent.is_dir():
        raise MaildirMissing(f"the Maildir {path} cannot be created: its folder "
                             f"{path.parent} does not exist; {_how(path)}")
    for folder in (path, md.cur, md.new, md.tmp):
        _make(folder, uid, gid, mode)


def _make(folder: Path, uid: int, gid: int, mode: int) -> None:
    """Create ``folder`` with exactly ``mode`` (no umask, no setgid inherited) and owner."""
    try:
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            return  # another process made it first: theirs stands
        if uid != -1 or gid != -1:
            os.chown(folder, uid, gid)
        os.chmod(folder, mode)
    except OSError as exc:
        raise MaildirMissing(f"cannot create the Maildir folder {folder}: "
                             f"{exc.strerror or exc}; {_how(folder.parent)}") from None
