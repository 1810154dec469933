"""Keys revoked for keyCompromise: certwright never uses them again.

``certwright revoke --reason keyCompromise`` records the certificate's key in
``<state_dir>/compromised-keys.json`` (by the hex SHA-256 of its DER SubjectPublicKeyInfo,
with the certificate's name, serial and the revocation's instant) and writes a note beside
each file that holds it (``server.key.compromised.txt``). The key files themselves stay
where they are: a web server may still read them until a new certificate is installed.

``key.generate`` asks :func:`refuse_or_set_aside` before it reuses a key file: a
compromised one is renamed to ``<file>.compromised`` (kept, never deleted) and a new key is
made in its place. ``csr.generate`` asks :func:`refuse_compromised` and refuses to put a
compromised key into a CSR (PermanentError naming the revocation).

Contract: :func:`mark_compromised` is repeat-safe and holds an exclusive flock beside the
registry while it reads and rewrites it (atomically), so two revokes at once lose neither
entry. Readers take no lock (the file is replaced whole). A registry that cannot be read is
an error, never an empty registry: a damaged file must not let a compromised key back in.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from certwright.atomic import write_atomic
from certwright.errors import PermanentError

REGISTRY = "compromised-keys.json"
NOTE_SUFFIX = ".compromised.txt"
ASIDE_SUFFIX = ".compromised"


def registry_path(state_dir: Path) -> Path:
    """Where the state dir keeps its compromised keys."""
    return Path(state_dir) / REGISTRY


def note_path(key_file: Path) -> Path:
    """The note written beside a compromised key file."""
    return key_file.with_name(key_file.name + NOTE_SUFFIX)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise PermanentError(f"cannot read the compromised keys in {path}: {exc}; repair or "
                             "restore it (certwright uses no key until it can tell which "
                             "were revoked for keyCompromise)") from exc
    if not isinstance(data, dict):
        raise PermanentError(f"{path} does not hold a JSON object of compromised keys")
    return data


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def find_compromised(state_dir: Path, spki_sha256: str) -> dict[str, Any] | None:
    """The revocation that made this key compromised (name, serial, revoked_at, paths),
    or None. PermanentError when the registry cannot be read."""
    entry = _read(registry_path(state_dir)).get(spki_sha256)
    return dict(entry) if isinstance(entry, dict) else None


def mark_compromised(state_dir: Path, spki_sha256: str, *, name: str, serial: str,
                     revoked_at: str, key_paths: Iterable[Path]) -> list[Path]:
    """Record the key as compromised and write a note beside each of ``key_paths`` that
    exists; returns the notes written. Repeat-safe (the first revocation stays)."""
    path = registry_path(state_dir)
    files = [Path(p) for p in key_paths]
    with _locked(path):
        data = _read(path)
        entry = data.get(spki_sha256) or {"name": name, "serial": serial,
                                          "revoked_at": revoked_at, "paths": []}
        entry["paths"] = sorted({*entry.get("paths", []), *(str(p) for p in files)})
        data[spki_sha256] = entry
        write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode(), 0o644)
    notes = []
    for key_file in files:
        if not key_file.exists():
            continue
        note = note_path(key_file)
        write_atomic(note, (
            f"The key in {key_file.name} (public key sha256 {spki_sha256}) was revoked for "
            f"keyCompromise on {entry['revoked_at']} (certificate {entry['name']}, serial "
            f"{entry['serial']}).\ncertwright will not use it again: the next run for this "
            "certificate makes a new key. Keep it only as long as a server still needs it.\n"
            f"Once {key_file.name} holds a key with another public key (a new certificate was "
            "installed), this note is about the earlier one.\n").encode(), 0o644)
        notes.append(note)
    return notes


def _why(spki_sha256: str, entry: dict[str, Any]) -> str:
    return (f"revoked for keyCompromise on {entry.get('revoked_at')} (certificate "
            f"{entry.get('name')}, serial {entry.get('serial')}; public key sha256 "
            f"{spki_sha256[:16]}...)")


def refuse_compromised(state_dir: Path, spki_sha256: str, where: str) -> None:
    """PermanentError when the key of ``where`` (a key file or CSR) is compromised."""
    entry = find_compromised(state_dir, spki_sha256)
    if entry is not None:
        raise PermanentError(f"the key of {where} was {_why(spki_sha256, entry)}; certwright "
                             "never uses it again: make a new key")


def refuse_or_set_aside(state_dir: Path, spki_sha256: str, key_file: Path) -> Path | None:
    """For ``key.generate``: when the key in ``key_file`` is compromised, rename it to
    ``<file>.compromised`` (a number added if that is taken) and return the new name;
    None when it is not compromised (reuse it)."""
    if find_compromised(state_dir, spki_sha256) is None:
        return None
    aside = key_file.with_name(key_file.name + ASIDE_SUFFIX)
    n = 1
    while aside.exists():
        aside = key_file.with_name(f"{key_file.name}{ASIDE_SUFFIX}.{n}")
        n += 1
    os.rename(key_file, aside)
    return aside
