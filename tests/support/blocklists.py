"""Weak-key blocklists built in the tests, in the two formats the CA reads, computed here
the way ``badkeys`` computes them (independently of the CA's code):

* badkeys' cache folder (what ``badkeys --update-bl`` writes): ``blocklist.dat``, sorted
  16-byte records, each the first 15 bytes of the SHA-256 of the key's number (RSA
  modulus, EC x coordinate) as big-endian bytes, then one byte naming the list in
  ``badkeysdata.json``;
* a text file: one hex SHA-256 of the same bytes per line, ``#`` comments allowed.
"""
from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa


def key_number(public_key: Any) -> int:
    """The number badkeys hashes: the RSA modulus or the EC x coordinate."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_numbers().n
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_numbers().x
    raise TypeError(type(public_key))


def key_hash(public_key: Any) -> bytes:
    n = key_number(public_key)
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).digest()


def write_text_blocklist(path: Path, public_keys: list[Any]) -> Path:
    lines = ["# weak keys of the test", ""]
    lines += [key_hash(k).hex() for k in public_keys]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_badkeys_cache(folder: Path, public_keys: list[Any], *, list_id: int = 7,
                        name: str = "debianssl", filler: int = 500) -> Path:
    """A badkeys cache folder holding ``public_keys`` (list ``list_id`` called ``name``)
    among ``filler`` random records of another list."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [secrets.token_bytes(15) + bytes([1]) for _ in range(filler)]
    records += [key_hash(k)[:15] + bytes([list_id]) for k in public_keys]
    (folder / "blocklist.dat").write_bytes(b"".join(sorted(records)))
    (folder / "badkeysdata.json").write_text(json.dumps({"bkformat": 0, "blocklists": [
        {"id": 1, "name": "keypair"}, {"id": list_id, "name": name}]}))
    return folder
