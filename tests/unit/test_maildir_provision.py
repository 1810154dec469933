"""A Maildir certwright must create: with the owner, group and mode the operator set, else
refused with a sentence saying how to create it; its own (in the state dir) is made freely."""
from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from certwright.mail.maildir import Maildir
from certwright.mail.provision import MaildirMissing, MaildirPolicy, prepare_maildir


def test_a_missing_maildir_outside_the_state_dir_is_refused_with_how_to_create_it(
        tmp_path: Path) -> None:
    """No owner/mode configured: nothing is created; the error names the folder and the
    command that creates it for an MTA, and the settings that let certwright do it."""
    md = Maildir(tmp_path / "var" / "mail" / "postmaster")
    with pytest.raises(MaildirMissing) as info:
        prepare_maildir(md, state_dir=tmp_path / "state", policy=MaildirPolicy())
    text = str(info.value)
    assert str(md.path) in text and "install -d" in text and "maildir_owner" in text
    assert not md.path.exists()


def test_the_configured_owner_group_and_mode_are_given_to_every_folder(tmp_path: Path) -> None:
    """With maildir_owner/group/mode set the Maildir and its cur/new/tmp get exactly them,
    even under a setgid parent (as /var/mail is), whose group and bit are not inherited."""
    parent = tmp_path / "spool"
    parent.mkdir()
    os.chmod(parent, 0o2775)
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    md = Maildir(parent / "postmaster")
    prepare_maildir(md, state_dir=tmp_path / "state",
                    policy=MaildirPolicy(owner=user, group=group, mode=0o750))
    for folder in (md.path, md.cur, md.new, md.tmp):
        st = folder.stat()
        assert stat.S_IMODE(st.st_mode) == 0o750, folder
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_an_existing_maildir_is_left_as_it_is(tmp_path: Path) -> None:
    """An MTA's Maildir (made by it, with its owner and mode) is not changed."""
    md = Maildir(tmp_path / "box")
    for folder in (md.path, md.cur, md.new, md.tmp):
        folder.mkdir(mode=0o755)
        os.chmod(folder, 0o755)
    prepare_maildir(md, state_dir=tmp_path / "state", policy=MaildirPolicy(mode=0o700))
    assert stat.S_IMODE(md.path.stat().st_mode) == 0o755


def test_a_maildir_inside_the_state_dir_is_certwrights_own(tmp_path: Path) -> None:
    """The embedded mail server's Maildir lives in the state dir: created 0700 freely."""
    md = Maildir(tmp_path / "state" / "mail")
    prepare_maildir(md, state_dir=tmp_path / "state", policy=MaildirPolicy())
    assert stat.S_IMODE(md.new.stat().st_mode) == 0o700


def test_a_bad_owner_is_named(tmp_path: Path) -> None:
    """An owner that is no user on this system is an error naming it."""
    with pytest.raises(MaildirMissing, match="no-such-user-xyz"):
        prepare_maildir(Maildir(tmp_path / "b"), state_dir=tmp_path / "s",
                        policy=MaildirPolicy(owner="no-such-user-xyz"))
