"""Weak-key tests for subscriber keys: ROCA, Fermat factorisation, and a blocklist of
keys whose private halves are public (Debian's weak keys, keys from documentation).

* ROCA (CVE-2017-15361): Infineon's RSALib built primes as ``k*M + (65537^a mod M)`` with
  ``M`` a primorial, so a vulnerable modulus ``N`` is, for every small prime ``p`` of the
  published list, congruent mod ``p`` to an element of the subgroup of ``Z_p^*`` generated
  by 65537. A random modulus passes all 38 tests with probability about 2^-154 (the
  detector of Nemec et al., https://github.com/crocs-muni/roca, ``detect.py``).
* Fermat: a modulus whose primes are close together, ``|p - q| < ~2 * N^(1/4)``, falls to
  Fermat's method within a few rounds; we try :data:`FERMAT_ROUNDS`.

* Blocklist (:class:`Blocklist`): Debian's OpenSSL of 2006-2008 (CVE-2008-0166) drew
  keys from 32,767 seeds per size and architecture, so every one of them is known. No
  package ships those lists any more; ``badkeys`` (https://badkeys.info) keeps them with
  other compromised keys and downloads them on ``badkeys --update-bl`` into its cache
  folder, ``$XDG_CACHE_HOME/badkeys/`` (``~/.cache/badkeys/``). The CA reads that
  format, or a text file of hashes (see :meth:`Blocklist.load`), from the path in its
  settings (``weak_key_blocklist``, or ``ca serve --weak-key-blocklist``) or else from
  badkeys' folder of the user running it (:func:`find_blocklist`).

Hazard: a blocklist may be large (badkeys' is hundreds of MB): it is memory-mapped and
searched in place, never read whole; the CA keeps it open until it closes.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
from functools import cache
from math import isqrt
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric import ec, rsa

FERMAT_ROUNDS = 100
ROCA_GENERATOR = 65537
# The primes of the ROCA fingerprint (detect.py ``primes``).
ROCA_PRIMES: tuple[int, ...] = (
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83,
    89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
)


@cache
def _subgroup(prime: int) -> frozenset[int]:
    """The powers of 65537 modulo ``prime``."""
    g = ROCA_GENERATOR % prime
    seen, x = {1}, g
    while x not in seen:
        seen.add(x)
        x = x * g % prime
    return frozenset(seen)


def roca_vulnerable(modulus: int) -> bool:
    """True when ``modulus`` has the ROCA fingerprint (see module docstring)."""
    return all(modulus % p in _subgroup(p) for p in ROCA_PRIMES)


def fermat_factor(modulus: int, rounds: int = FERMAT_ROUNDS) -> tuple[int, int] | None:
    """Factors ``(p, q)`` of ``modulus`` found by Fermat's method within ``rounds``, or None."""
    if modulus <= 3 or modulus % 2 == 0:
        return None
    a = isqrt(modulus)
    if a * a < modulus:
        a += 1
    for _ in range(rounds):
        b2 = a * a - modulus
        b = isqrt(b2)
        if b * b == b2:
            p, q = a - b, a + b
            return (p, q) if p > 1 else None
        a += 1
    return None


# -- the blocklist -------------------------------------------------------------------------
RECORD = 16         # badkeys' blocklist.dat: 15 bytes of SHA-256, then a list id
HASH_BYTES = 15


class BlocklistError(ValueError):
    """A blocklist that cannot be used; the message names the file and what is wrong."""


def key_hash(key: Any) -> bytes | None:
    """The first 15 bytes of the SHA-256 of the key's number as badkeys computes it (the
    RSA modulus, the EC x coordinate, as big-endian bytes); None for other key types."""
    if isinstance(key, rsa.RSAPublicKey):
        number = key.public_numbers().n
    elif isinstance(key, ec.EllipticCurvePublicKey):
        number = key.public_numbers().x
    else:
        return None
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return hashlib.sha256(raw).digest()[:HASH_BYTES]


class Blocklist:
    """Keys known to be compromised, looked up by :func:`key_hash`; a context manager.

    Contract: :meth:`load` raises :class:`BlocklistError` naming the file for anything
    it cannot use; :meth:`match` never raises for a key of any type."""

    def __init__(self, name: str, *, records: mmap.mmap | None = None,
                 hashes: frozenset[bytes] = frozenset(),
                 names: dict[int, str] | None = None) -> None:
        self.name = name
        self._records = records
        self._hashes = hashes
        self._names = names or {}

    @classmethod
    def load(cls, path: Path) -> Blocklist:
        """The blocklist at ``path``, one of:

        * badkeys' cache folder, or the ``blocklist.dat`` in it: sorted 16-byte records
          (15 bytes of :func:`key_hash`, one byte of list id); ``badkeysdata.json``
          beside it, when present, names the lists (``debianssl``, ``keypair``, ...);
        * any other file: text, one hex SHA-256 (whole, or its first 15 bytes or more)
          of the same bytes per line; blank lines and ``#`` comments are ignored.
        """
        path = Path(path)
        if path.is_dir():
            if not (path / "blocklist.dat").is_file():
                raise BlocklistError(f"{path}: no blocklist.dat in this folder (run "
                                     "'badkeys --update-bl', or name a file)")
            path = path / "blocklist.dat"
        if not path.exists():
            raise BlocklistError(f"{path}: no such file")
        if path.name == "blocklist.dat":
            return cls._load_badkeys(path)
        return cls._load_text(path)

    @classmethod
    def _load_badkeys(cls, path: Path) -> Blocklist:
        size = path.stat().st_size
        if size == 0 or size % RECORD:
            raise BlocklistError(f"{path}: {size} bytes is not a badkeys blocklist (a "
                                 f"non-empty multiple of {RECORD})")
        names: dict[int, str] = {}
        meta = path.with_name("badkeysdata.json")
        if meta.exists():
            try:
                data = json.loads(meta.read_text())
                names = {int(b["id"]): str(b["name"]) for b in data["blocklists"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BlocklistError(f"{meta}: not badkeys' metadata ({exc})") from None
        fd = os.open(path, os.O_RDONLY)
        try:
            records = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        return cls(str(path), records=records, names=names)

    @classmethod
    def _load_text(cls, path: Path) -> Blocklist:
        hashes = set()
        try:
            lines = path.read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BlocklistError(f"{path}: cannot be read as a text blocklist ({exc})") \
                from None
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                digest = bytes.fromhex(text)
            except ValueError:
                digest = b""
            if not HASH_BYTES <= len(digest) <= 32:
                raise BlocklistError(f"{path}:{number}: {text[:80]!r} is not a hex SHA-256 "
                                     f"(64 hex digits, or at least the first "
                                     f"{2 * HASH_BYTES})")
            hashes.add(digest[:HASH_BYTES])
        return cls(path.name, hashes=frozenset(hashes))

    def __len__(self) -> int:
        if self._records is not None:
            return len(self._records) // RECORD
        return len(self._hashes)

    def match(self, key: Any) -> str | None:
        """The name of the list that holds ``key`` (badkeys' list name, ``id<N>`` for an
        unnamed one, or the text file's name), or None when it is not listed."""
        digest = key_hash(key)
        if digest is None:
            return None
        if self._records is None:
            return self.name if digest in self._hashes else None
        records = self._records
        low, high = 0, len(records) // RECORD - 1
        while low <= high:  # binary search over the sorted records, in place
            middle = (low + high) // 2
            found = records[middle * RECORD:middle * RECORD + HASH_BYTES]
            if found == digest:
                list_id = records[middle * RECORD + HASH_BYTES]
                return self._names.get(list_id, f"id{list_id}")
            if found < digest:
                low = middle + 1
            else:
                high = middle - 1
        return None

    def close(self) -> None:
        """Unmap the file; safe to call twice."""
        if self._records is not None:
            self._records.close()
            self._records = None
        self._hashes = frozenset()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def badkeys_folder() -> Path:
    """Where ``badkeys --update-bl`` puts its blocklist for the user running this."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "badkeys"


def find_blocklist(ca_dir: Path, configured: str | None) -> Path | None:
    """The blocklist the CA in ``ca_dir`` uses: ``configured`` (relative to ``ca_dir``),
    which must exist (BlocklistError otherwise); else badkeys' own folder when it holds
    a blocklist; else None (the caller warns: Debian's weak keys are not refused)."""
    if configured:
        path = Path(ca_dir) / Path(configured).expanduser()
        if not path.exists():
            raise BlocklistError(f"{path}: no such file (the weak-key blocklist named "
                                 "in the CA's settings)")
        return path
    folder = badkeys_folder()
    return folder if (folder / "blocklist.dat").is_file() else None


MISSING_BLOCKLIST = ("no weak-key blocklist is installed, so Debian's weak keys "
                     "(CVE-2008-0166) are not refused: install badkeys' with 'badkeys "
                     "--update-bl', or set weak_key_blocklist in the CA's config.json "
                     "(or ca serve --weak-key-blocklist FILE)")
