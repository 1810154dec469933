"""Safe file installation for ``install.files`` and the rollback of ``install.check``.

The lineage idea of certbot's ``storage.py``, for plain files a server reads directly:

1. the files about to be replaced are copied into ``<dir>/.certwright/versions/<stamp>/``
   with a ``meta.json`` naming the certificate that replaced them;
2. when files are replaced, the new ones are staged (fsynced) in
   ``<dir>/.certwright/staging/`` so the deploy can always be finished; then the marker
   ``<dir>/.certwright/pending`` is written (for a first install, with nothing to keep,
   recovery removes a half-written deploy instead and the step's retry installs again);
3. each target is replaced atomically (:mod:`certwright.atomic`: temp file in the target
   folder created with ``O_EXCL|O_NOFOLLOW``, write, fsync, ``rename``), key first; then
   the folder is fsynced;
4. the marker is removed.

A crash leaves either no marker (nothing or everything switched) or a marker with complete
staging; :func:`recover` finishes that deploy, or rolls it back to the saved version when
the staging copies do not match the marker, and logs which.

Hazards: the target folder must not be writable by anyone else and neither it nor any
target may be a symlink, or another user could redirect our writes (the checks, in
:mod:`steps._install_layout`, use ``lstat`` and ``O_NOFOLLOW``). Version folders hold
private keys: ``.certwright`` is 0700. One install into a folder at a time (:func:`locked`).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509

from certwright import atomic
from certwright.atomic import fsync_dir
from certwright.clock import Clock
from certwright.errors import PermanentError, StepError
from certwright.steps._install_layout import (
    MODES,
    ROLES,
    Files,
    Layout,
    check_folder,
    check_target,
    leaf_fingerprint,
    read_file,
    sha256_hex,
)

TMP_TAG = "certwright-tmp"  # temp files ".<name>.certwright-tmp": ours, under the lock


def write_atomic(target: Path, data: bytes, mode: int) -> None:
    """Replace ``target`` with ``data`` (``mode``) atomically; a crash leaves old or new."""
    write_many_atomic([(target, data, mode)])


def write_many_atomic(items: list[tuple[Path, bytes, int]]) -> None:
    """Replace several targets atomically each, in order, with one round of syncing
    (:func:`certwright.atomic.write_many_atomic`); StepError when that fails. A crash
    leaves each target old or new (the caller's pending marker says which set was meant)."""
    try:
        atomic.write_many_atomic(items, tag=TMP_TAG)
    except OSError as exc:
        where = _failed_target(items, exc)
        raise StepError(f"install: writing {where} failed: {exc.strerror or exc}") from exc


def _failed_target(items: list[tuple[Path, bytes, int]], exc: OSError) -> Path | str:
    """The target whose file ``exc`` is about (its temp name or its own), else the last."""
    name = os.path.basename(str(exc.filename or ""))
    for target, _, _ in items:
        if name in (target.name, f".{target.name}.{TMP_TAG}"):
            return target
    return items[-1][0] if items else ""


# -- versions ------------------------------------------------------------------------------

def save_version(layout: Layout, current: Files, replaced_by: str, clock: Clock) -> Path | None:
    """Copy the current files into a new version folder; None if there were none."""
    present = {r: d for r, d in current.items() if d is not None}
    if not present:
        return None
    check_folder(layout.meta, "metadata folder", create_mode=0o700)
    check_folder(layout.versions, "versions folder", create_mode=0o700)
    stamp = clock.now().strftime("%Y%m%dT%H%M%S.%fZ")
    serial = _serial(present.get("cert") or b"")
    base = f"{stamp}-{serial}" if serial else stamp
    for n in range(1, 1000):
        folder = layout.versions / (base if n == 1 else f"{base}.{n}")
        try:
            os.mkdir(folder, 0o700)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - a thousand versions in one microsecond
        raise StepError(f"install: cannot name a new version folder under {layout.versions}")
    for role, data in present.items():
        write_atomic(folder / layout.names[role], data, MODES[role])
    meta = {"created": clock.now().isoformat(), "replaced_by_cert_sha256": replaced_by,
            "cert_sha256": leaf_fingerprint(present.get("cert") or b""),
            "files": {r: layout.names[r] for r in present}}
    write_atomic(folder / "meta.json", json.dumps(meta, indent=2).encode(), 0o600)
    fsync_dir(layout.versions)
    return folder


def _serial(pem: bytes) -> str:
    try:
        return format(x509.load_pem_x509_certificates(pem)[0].serial_number, "x")[:32]
    except (ValueError, IndexError):
        return ""


def list_versions(layout: Layout) -> list[Path]:
    """Version folders, newest first (their names start with a UTC timestamp)."""
    try:
        entries = [p for p in layout.versions.iterdir()
                   if p.is_dir() and not p.is_symlink() and (p / "meta.json").is_file()]
    except FileNotFoundError:
        return []
    return sorted(entries, key=lambda p: p.name, reverse=True)


def load_version(folder: Path) -> tuple[dict[str, Any], dict[str, bytes | None]]:
    """A version's meta and files by role (roles it did not have are None)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        names = dict(meta["files"])
        files: dict[str, bytes | None] = dict.fromkeys(ROLES)
        for role, name in names.items():
            files[role] = (folder / name).read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"install: version folder {folder} is unreadable: {exc}") from exc
    return meta, files


def prune_versions(layout: Layout, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest version folders; returns those deleted."""
    doomed = list_versions(layout)[max(keep, 0):]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    if doomed:
        fsync_dir(layout.versions)
    return doomed


# -- the switch, and recovery from a crash in the middle of it -----------------------------

LOCK_WAIT = 30.0  # seconds to wait for another install into the same folder


@contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Hold ``<dir>/.certwright/lock`` (flock) so two runs never switch one folder at once.

    Raises StepError (retryable) when another process holds it for ``LOCK_WAIT`` seconds.
    The lock goes with the process, so a crash never leaves it held.
    """
    check_folder(layout.meta, "metadata folder", create_mode=0o700)
    fd = os.open(layout.meta / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StepError(f"install: {layout.dir} is being installed into by another "
                                    f"process (lock {layout.meta / 'lock'} held)") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)

def switch(layout: Layout, files: Files, previous: Files, version: str, log: Any) -> None:
    """Make the targets hold ``files`` (None removes a target), crash-safely.

    ``previous`` (the files before the switch) and ``version`` (the folder holding them,
    "" if none) go into the pending marker so that :func:`recover` can roll back.
    """
    check_folder(layout.meta, "metadata folder", create_mode=0o700)
    if layout.staging.exists():
        shutil.rmtree(layout.staging)
    if any(d is not None for d in previous.values()):
        # Staged copies let recover() finish this deploy. With nothing installed before,
        # rolling back (removing what was half written) is as good, and the step's retry
        # installs again: no staging, six fsyncs fewer.
        os.mkdir(layout.staging, 0o700)
        write_many_atomic([(layout.staging / role, data, 0o600)
                           for role, data in files.items() if data is not None])
    marker = {"version": version,
              "files": {r: sha256_hex(d) if d is not None else None for r, d in files.items()},
              "previous": {r: sha256_hex(d) if d is not None else None
                           for r, d in previous.items()}}
    write_atomic(layout.pending, json.dumps(marker).encode(), 0o600)
    _apply(layout, files)
    _finish(layout)
    log.debug("install_switched", dir=str(layout.dir))


def _apply(layout: Layout, files: Files) -> None:
    """Replace (or remove) each target, key first; the folder is fsynced once at the end,
    which is enough: until the pending marker goes, recover() redoes or undoes all."""
    removed: set[Path] = set()
    writes: list[tuple[Path, bytes, int]] = []
    for role in ROLES:
        data = files.get(role)
        target = layout.path(role)
        check_target(target)
        if data is None:
            if read_file(target) is not None:
                target.unlink()
                removed.add(target.parent)
        elif read_file(target) != data or stat.S_IMODE(os.lstat(target).st_mode) != MODES[role]:
            writes.append((target, data, MODES[role]))  # ROLES order: key first
    write_many_atomic(writes)
    for folder in sorted(removed - {t.parent for t, _, _ in writes}):
        fsync_dir(folder)


def _finish(layout: Layout) -> None:
    layout.pending.unlink()
    fsync_dir(layout.meta)
    shutil.rmtree(layout.staging, ignore_errors=True)


def recover(layout: Layout, log: Any) -> str:
    """Finish or roll back a deploy a crash left half done; "" when there was none.

    Returns "finished" or "rolled_back". Raises PermanentError when neither is possible
    (staging damaged and no saved version), leaving the marker for a person to look at.
    """
    try:
        marker = json.loads(layout.pending.read_text(encoding="utf-8"))
        wanted: dict[str, str | None] = dict(marker["files"])
        version = str(marker.get("version") or "")
        previous: dict[str, str | None] = dict(marker.get("previous") or {})
    except FileNotFoundError:
        return ""
    except (OSError, ValueError, KeyError, TypeError):
        wanted, version, previous = {}, "", {}
    staged: dict[str, bytes | None] = {}
    complete = bool(wanted)
    for role, digest in wanted.items():
        if digest is None:
            staged[role] = None
            continue
        data = read_file(layout.staging / role)
        if data is None or sha256_hex(data) != digest:
            complete = False
            break
        staged[role] = data
    if complete:
        _apply(layout, staged)
        _finish(layout)
        log.warning("install_pending_finished", dir=str(layout.dir),
                    reason="a previous deploy was interrupted; it was completed")
        return "finished"
    if version:
        _, old = load_version(layout.versions / version)
    elif previous and all(d is None for d in previous.values()):
        old = dict.fromkeys(ROLES)  # nothing was installed before: undo means remove
    else:
        raise PermanentError(
            f"install: found an interrupted deploy in {layout.dir} (marker {layout.pending}) "
            "whose staged files are damaged and whose previous files were not saved; check "
            "the installed files by hand, then remove the marker")
    _apply(layout, old)
    _finish(layout)
    log.warning("install_pending_rolled_back", dir=str(layout.dir), version=version,
                reason="a previous deploy was interrupted and its staged files were damaged")
    return "rolled_back"
