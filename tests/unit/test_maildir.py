"""Maildir delivery, listing, moves, quarantine and the processed-message log."""
from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest

from certwright.mail.maildir import Maildir, MessageTooLarge, ProcessedLog


def test_ensure_creates_private_folders(tmp_path: Path) -> None:
    """ensure() creates cur, new and tmp with mode 0700; a repeat is harmless."""
    md = Maildir(tmp_path / "mail")
    md.ensure()
    md.ensure()
    for sub in ("cur", "new", "tmp"):
        assert stat.S_IMODE((tmp_path / "mail" / sub).stat().st_mode) == 0o700


def test_deliver_lands_in_new_and_leaves_tmp_empty(tmp_path: Path) -> None:
    """deliver() puts the bytes in new/ (0600), nothing stays in tmp/."""
    md = Maildir(tmp_path)
    name = md.deliver(b"Subject: x\n\nhello\n")
    assert md.list_new() == [name]
    assert md.read(name) == b"Subject: x\n\nhello\n"
    assert list(md.tmp.iterdir()) == []
    assert stat.S_IMODE((md.new / name).stat().st_mode) == 0o600


def test_names_unique_across_threads(tmp_path: Path) -> None:
    """Concurrent deliveries get distinct names and all arrive."""
    md = Maildir(tmp_path)
    md.ensure()
    names: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(25):
            name = md.deliver(b"x")
            with lock:
                names.append(name)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 200
    assert sorted(md.list_new()) == sorted(names)


def test_read_refuses_oversize_without_reading(tmp_path: Path) -> None:
    """A file over the cap raises MessageTooLarge naming its size."""
    md = Maildir(tmp_path, max_read=100)
    name = md.deliver(b"y" * 101)
    with pytest.raises(MessageTooLarge) as info:
        md.read(name)
    assert info.value.size == 101


def test_vanished_file_raises_file_not_found(tmp_path: Path) -> None:
    """A message gone between list and read raises FileNotFoundError."""
    md = Maildir(tmp_path)
    name = md.deliver(b"x")
    (md.new / name).unlink()
    with pytest.raises(FileNotFoundError):
        md.read(name)
    with pytest.raises(FileNotFoundError):
        md.move_aside(name, "gone")


def test_path_traversal_names_refused(tmp_path: Path) -> None:
    """Names with separators or leading dots are refused."""
    md = Maildir(tmp_path)
    md.ensure()
    for bad in ("../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="not a Maildir file name"):
            md.read(bad)


def test_move_to_cur_adds_info_and_repeats_safely(tmp_path: Path) -> None:
    """move_to_cur appends :2,S; a second call returns the same name."""
    md = Maildir(tmp_path)
    name = md.deliver(b"x")
    cur = md.move_to_cur(name)
    assert cur == f"{name}:2,S"
    assert md.list_new() == [] and md.list_cur() == [cur]
    assert md.move_to_cur(name) == cur
    assert md.read(cur) == b"x"


def test_move_aside_keeps_message_and_reason(tmp_path: Path) -> None:
    """move_aside puts the message in .quarantine/new with a reason sidecar; nothing lost."""
    md = Maildir(tmp_path)
    name = md.deliver(b"evil")
    target = md.move_aside(name, "bad\nthing")
    assert target == tmp_path / ".quarantine" / "new" / name
    assert target.read_bytes() == b"evil"
    reason = tmp_path / ".quarantine" / "reasons" / f"{name}.reason"
    assert reason.read_text() == "bad thing\n"
    assert (tmp_path / ".quarantine" / "maildirfolder").exists()
    assert md.list_new() == []


def test_processed_log_detects_duplicates(tmp_path: Path) -> None:
    """seen() is True for a Message-ID taken from another file, False for the same file."""
    plog = ProcessedLog(tmp_path / "p.sqlite3")
    assert not plog.seen("<m@x>", "f1")
    assert plog.mark("<m@x>", "f1", "k1")
    assert not plog.seen("<m@x>", "f1")
    assert plog.seen("<m@x>", "f2")
    assert plog.mark("<m@x>", "f1", "k1")  # repeat after a crash
    assert not plog.mark("<m@x>", "f2", "k2")  # first mark wins
    assert plog.find_by_key("k1") == ("<m@x>", "f1")
    assert plog.find_by_key("k2") is None
    assert ProcessedLog(tmp_path / "p.sqlite3").seen("<m@x>", "f3")  # durable


def test_deliver_creates_missing_folders(tmp_path: Path) -> None:
    """deliver() into a Maildir that does not exist yet, or whose new/ went missing,
    creates what is missing and delivers."""
    md = Maildir(tmp_path / "fresh")
    first = md.deliver(b"one")
    assert md.list_new() == [first]
    for name in md.list_new():
        (md.new / name).unlink()
    md.new.rmdir()
    second = md.deliver(b"two")
    assert md.list_new() == [second]
    assert list(md.tmp.iterdir()) == []


def test_deliver_syncs_file_then_links_then_syncs_new(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's data is fsynced before it is linked into new/, and new/ is fsynced
    after the link, before deliver() returns."""
    import certwright.mail.maildir as maildir_mod

    md = Maildir(tmp_path)
    md.ensure()
    events: list[str] = []
    real_fsync, real_link, real_dir = maildir_mod.os.fsync, maildir_mod.os.link, \
        maildir_mod.fsync_dir

    def fsync(fd: int) -> None:
        if stat.S_ISREG(maildir_mod.os.fstat(fd).st_mode):
            events.append("fsync-file")
        real_fsync(fd)

    def link(src: str, dst: str) -> None:
        events.append("link")
        real_link(src, dst)

    def fsync_dir(path: Path | str) -> None:
        events.append(f"fsync-dir:{Path(path).name}")
        real_dir(path)

    monkeypatch.setattr(maildir_mod.os, "fsync", fsync)
    monkeypatch.setattr(maildir_mod.os, "link", link)
    monkeypatch.setattr(maildir_mod, "fsync_dir", fsync_dir)
    md.deliver(b"x")
    assert events == ["fsync-file", "link", "fsync-dir:new"]


def test_concurrent_deliveries_share_the_folder_fsync(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Deliveries at once share fsyncs of new/, yet each returns only after an fsync of
    new/ that began after its link completed."""
    import certwright.mail.maildir as maildir_mod

    md = Maildir(tmp_path)
    md.ensure()
    lock = threading.Lock()
    clock = iter(range(1, 1_000_000))
    syncs: list[tuple[int, int]] = []  # (began, ended)
    linked: dict[str, int] = {}
    returned: dict[str, int] = {}
    real_link, real_dir = maildir_mod.os.link, maildir_mod.fsync_dir

    def tick() -> int:
        with lock:
            return next(clock)

    def link(src: str, dst: str) -> None:
        real_link(src, dst)
        linked[Path(dst).name] = tick()

    def slow_fsync_dir(path: Path | str) -> None:
        began = tick()
        time.sleep(0.02)
        real_dir(path)
        syncs.append((began, tick()))

    monkeypatch.setattr(maildir_mod.os, "link", link)
    monkeypatch.setattr(maildir_mod, "fsync_dir", slow_fsync_dir)

    def work() -> None:
        for _ in range(5):
            name = md.deliver(b"x")
            returned[name] = tick()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(returned) == 40
    assert len(syncs) < 40  # shared
    for name, done in returned.items():
        assert any(linked[name] < began and ended < done for began, ended in syncs), name


def test_failed_folder_fsync_raises_and_next_delivery_syncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing fsync of new/ reaches the delivering caller; a later one fsyncs again."""
    import certwright.mail.maildir as maildir_mod

    md = Maildir(tmp_path)
    md.ensure()
    calls: list[str] = []
    real_dir = maildir_mod.fsync_dir

    def flaky(path: Path | str) -> None:
        calls.append(str(path))
        if len(calls) == 1:
            raise OSError(5, "I/O error")
        real_dir(path)

    monkeypatch.setattr(maildir_mod, "fsync_dir", flaky)
    with pytest.raises(OSError, match="I/O error"):
        md.deliver(b"x")
    md.deliver(b"y")
    assert len(calls) == 2
