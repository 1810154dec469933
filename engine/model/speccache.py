"""A cache of parsed pipelines: what a one-shot command would otherwise parse on every start.

A daemon parses its pipelines once; ``certwright run`` is a new process each time and would
parse the YAML, walk it, and check each step's parameters against its schema again (tens of
milliseconds, more than the CA's answers for a certificate). :func:`find_spec` and
:func:`keep_spec` keep the finished :class:`PipelineSpec` as a pickle under
``<cache_dir>/pipelines/<key>.pickle``, where :func:`cache_key` is a digest of certwright's
version, the interpreter's cache tag, the file's name, its text and the names of the
registered steps: an edited file, another version of certwright or a new plugin is a new
key, so an entry is never used for anything but the exact text it was made from.

Contracts: only a valid spec is kept (a file with problems is parsed, and reported, every
time). A missing, unreadable, corrupt or foreign entry is ignored (and the next keep
replaces it); a failed write is dropped: the cache holds nothing that the file does not.

Hazards: an entry is a pickle, and loading a pickle runs code. Entries are written 0600 in
folders made 0700, and one is read only when it and its folder belong to this user and no
one else can write them, so only this user can plant one (who can run code as themselves
anyway). Old keys are never pruned; one entry is a few tens of KB per pipeline version.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from certwright import __version__
from certwright.atomic import write_atomic
from certwright.engine.model.spec import PipelineSpec

__all__ = ["cache_key", "default_cache_dir", "find_spec", "is_private", "keep_spec"]


def cache_key(text: str, filename: str, steps: Iterable[str] = (), *,
              version: str = __version__) -> str:
    """The entry name for ``text`` read from ``filename`` with these step names registered."""
    digest = hashlib.sha256()
    for part in (version, sys.implementation.cache_tag or "", filename, *sorted(steps)):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(text.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$CERTWRIGHT_CACHE_DIR``, else ``/var/cache/certwright`` as root, else
    ``$XDG_CACHE_HOME/certwright`` (``~/.cache/certwright``)."""
    if os.environ.get("CERTWRIGHT_CACHE_DIR"):
        return Path(os.environ["CERTWRIGHT_CACHE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/cache/certwright")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "certwright"


def _entry(cache_dir: Path, key: str) -> Path:
    return cache_dir / "pipelines" / f"{key}.pickle"


def is_private(path: Path) -> bool:
    """True when ``path`` is this user's and no one else may write it."""
    try:
        info = path.stat()
    except OSError:
        return False
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def find_spec(cache_dir: Path, key: str) -> PipelineSpec | None:
    """The kept spec of ``key``, or None (missing, unreadable, corrupt, not private)."""
    path = _entry(cache_dir, key)
    if not (is_private(path.parent) and is_private(path)):
        return None
    try:
        # Only our own 0600 files in our own 0700 folder are loaded (module docstring).
        spec = pickle.loads(path.read_bytes())  # noqa: S301
    except Exception:  # noqa: BLE001 - any damage (truncation, an old class layout) = a miss
        return None
    return spec if isinstance(spec, PipelineSpec) else None


def keep_spec(cache_dir: Path, key: str, spec: PipelineSpec) -> None:
    """Keep ``spec`` under ``key``; any failure (read-only, full disk) is dropped."""
    path = _entry(cache_dir, key)
    with contextlib.suppress(OSError, pickle.PicklingError, TypeError, AttributeError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL), 0o600)
