"""certwright.atomic: modes from the first byte, symlinks refused or not followed, a
failure leaves the target as it was, and the folder is fsynced."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certwright import atomic


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for one test (restored after it)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_to(value: int) -> None:
        os.umask(value)
    yield set_to
    os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


class Fsyncs:
    """Counts os.fsync calls on regular files and on folders, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            self.calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
            real(fd)
        monkeypatch.setattr(os, "fsync", fsync)


def test_write_atomic_writes_data_with_exact_mode_and_leaves_no_temp(tmp_path: Path,
                                                                      umask: Any) -> None:
    """The target holds the data with the mode asked for, whatever the umask; nothing else
    is left in the folder."""
    umask(0o077)
    atomic.write_atomic(tmp_path / "cert.pem", b"public", 0o644)
    assert (tmp_path / "cert.pem").read_bytes() == b"public"
    assert mode_of(tmp_path / "cert.pem") == 0o644
    assert entries(tmp_path) == ["cert.pem"]


@pytest.mark.parametrize(("mode", "mask"), [(0o600, 0o000), (0o644, 0o077)])
def test_mode_is_set_before_the_first_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           umask: Any, mode: int, mask: int) -> None:
    """When the first write happens the temporary file already has exactly its mode (a
    secret is never readable by others, not even empty); the failing write then removes
    the temporary file and leaves the target as it was."""
    umask(mask)
    target = tmp_path / "server.key"
    target.write_bytes(b"old")
    seen: list[int] = []

    def failing_write(fd: int, data: Any) -> int:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError, match="No space left on device"):
        atomic.write_atomic(target, b"new secret", mode)
    monkeypatch.undo()
    assert seen == [mode]
    assert target.read_bytes() == b"old"
    assert entries(tmp_path) == ["server.key"]


def test_failed_fsync_leaves_the_target_as_it_was(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An fsync that fails (an I/O error) raises; the old file is untouched, no temp stays."""
    target = tmp_path / "account.json"
    target.write_bytes(b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        atomic.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert entries(tmp_path) == ["account.json"]


def test_failed_rename_leaves_the_target_as_it_was(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename that fails removes the temporary file; the target keeps its content."""
    target = tmp_path / "order.json"
    target.write_bytes(b"old")

    def failing(tmp: str, path: Path, dir_fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(atomic, "_publish", failing)
    with pytest.raises(OSError, match="Input/output error"):
        atomic.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert entries(tmp_path) == ["order.json"]


def test_symlink_at_the_temporary_name_is_refused(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A symlink planted at the (random) temporary name is not written through: the write
    fails and the file the link points at is untouched."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: "f" * (2 * n))
    (tmp_path / f".target.{'f' * 16}.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        atomic.write_atomic(tmp_path / "target", b"data")
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "target").exists()


def test_symlink_at_a_tagged_temporary_name_is_removed_not_followed(tmp_path: Path) -> None:
    """A leftover under the caller's own temporary name, even a symlink, is removed (the
    link, not what it points at) before the temporary file is created."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / ".target.run-1.tmp").symlink_to(victim)
    atomic.write_atomic(tmp_path / "target", b"data", tag="run-1.tmp")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "target").read_bytes() == b"data"
    assert entries(tmp_path) == ["target", "victim"]


def test_symlinked_folder_is_refused_unless_allowed(tmp_path: Path) -> None:
    """A folder whose last component is a symlink is refused (nothing written through it);
    ``follow_folder=True`` writes into the folder it points at."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError) as err:  # noqa: PT011 - its errno is checked, not its text
        atomic.write_atomic(tmp_path / "link" / "f", b"data")
    assert err.value.errno in (errno.ELOOP, errno.ENOTDIR)
    with pytest.raises(OSError) as err:  # noqa: PT011 - as above
        atomic.write_new(tmp_path / "link" / "k", b"data")
    assert err.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert entries(real) == []
    atomic.write_atomic(tmp_path / "link" / "f", b"data", 0o644, follow_folder=True)
    assert (real / "f").read_bytes() == b"data"


def test_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    """A symlink at the target name is replaced by the file; its destination is untouched."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "target").symlink_to(victim)
    atomic.write_atomic(tmp_path / "target", b"data")
    assert not (tmp_path / "target").is_symlink()
    assert (tmp_path / "target").read_bytes() == b"data"
    assert victim.read_bytes() == b"precious"


def test_write_atomic_fsyncs_the_file_then_the_folder(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """One fsync of the file's data, then one of the folder (after the rename)."""
    fsyncs = Fsyncs(monkeypatch)
    atomic.write_atomic(tmp_path / "f", b"data")
    assert fsyncs.calls == ["file", "dir"]


def test_write_many_syncs_all_then_renames_in_order_then_the_folder_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file is fsynced before any rename; renames follow the order given; the folder is
    fsynced once at the end."""
    events: list[str] = []
    real_fsync, real_publish = os.fsync, atomic._publish

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def publish(tmp: str, target: Path, dir_fd: int) -> None:
        events.append(f"rename:{target.name}")
        real_publish(tmp, target, dir_fd)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(atomic, "_publish", publish)
    atomic.write_many_atomic([(tmp_path / "key", b"k", 0o600), (tmp_path / "cert", b"c", 0o644),
                              (tmp_path / "chain", b"ch", 0o644)])
    assert events == ["fsync-file"] * 3 + ["rename:key", "rename:cert", "rename:chain",
                                           "fsync-dir"]
    assert [mode_of(tmp_path / n) for n in ("key", "cert", "chain")] == [0o600, 0o644, 0o644]


def test_write_many_failing_part_way_keeps_the_rest_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename failing part way leaves earlier targets new, later ones old, and no
    temporary file behind."""
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(b"old")
    real = atomic._publish

    def publish(tmp: str, target: Path, dir_fd: int) -> None:
        if target.name == "b":
            raise OSError(errno.EIO, "Input/output error")
        real(tmp, target, dir_fd)
    monkeypatch.setattr(atomic, "_publish", publish)
    with pytest.raises(OSError, match="Input/output error"):
        atomic.write_many_atomic([(tmp_path / n, b"new", 0o600) for n in ("a", "b", "c")])
    assert [(tmp_path / n).read_bytes() for n in ("a", "b", "c")] == [b"new", b"old", b"old"]
    assert entries(tmp_path) == ["a", "b", "c"]


def test_write_many_refuses_a_target_named_twice(tmp_path: Path) -> None:
    """Two writes to one target in one call are refused before anything is written."""
    with pytest.raises(ValueError, match="a target is named twice"):
        atomic.write_many_atomic([(tmp_path / "a", b"1", 0o600), (tmp_path / "a", b"2", 0o600)])
    assert entries(tmp_path) == []


def test_write_new_creates_once_and_never_replaces(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """write_new creates a missing file (mode exact, file and folder fsynced); an existing
    file or symlink at the name raises FileExistsError and stays as it was."""
    fsyncs = Fsyncs(monkeypatch)
    atomic.write_new(tmp_path / "server.key", b"key", 0o600, tag="k.tmp")
    assert fsyncs.calls == ["file", "dir"]
    assert (tmp_path / "server.key").read_bytes() == b"key"
    assert mode_of(tmp_path / "server.key") == 0o600
    with pytest.raises(FileExistsError):
        atomic.write_new(tmp_path / "server.key", b"other", 0o600, tag="k.tmp")
    assert (tmp_path / "server.key").read_bytes() == b"key"
    (tmp_path / "link.key").symlink_to(tmp_path / "missing")
    with pytest.raises(FileExistsError):
        atomic.write_new(tmp_path / "link.key", b"other")
    assert not (tmp_path / "missing").exists()
    assert entries(tmp_path) == ["link.key", "server.key"]


def test_write_file_removes_its_file_on_failure(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """write_file (no rename) creates exclusively, and removes what it created on failure."""
    (tmp_path / "taken").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        atomic.write_file(tmp_path / "taken", b"y", 0o600)
    assert (tmp_path / "taken").read_bytes() == b"x"

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        atomic.write_file(tmp_path / "new", b"y", 0o600)
    assert entries(tmp_path) == ["taken"]


def test_fsync_dir_syncs_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync_dir fsyncs a descriptor of the folder itself."""
    fsyncs = Fsyncs(monkeypatch)
    atomic.fsync_dir(tmp_path)
    assert fsyncs.calls == ["dir"]
