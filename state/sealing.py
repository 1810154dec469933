"""Sealing at rest: what the store keeps of a run's secrets and keys is AES-256-GCM sealed.

A store may have a **store key**: 32 random bytes in a file the configuration names
(``store_key:``, ``--store-key FILE`` or ``CERTWRIGHT_STORE_KEY``; ``certwright store
keygen FILE`` makes one). With a key, the store seals a run's secrets (passphrases, tokens)
and the artefacts it keeps (private keys, CSRs, certificates; see ``Tx.put_artefact``)
before they reach a table, and opens them when read. Without one, secrets are kept as
before (in a table of their own, never in the journal) and private keys are not kept in
the store at all: they stay in their files on the host that made them.

A sealed value is text: ``cw-sealed:v1:<key id>:<base64 of nonce + ciphertext + tag>``,
a fresh 96-bit random nonce per value. Each value is sealed with what it is as associated
data (``secrets/<run>`` or ``artefact/<run>/<name>``), so a sealed value copied onto
another row does not open there. The key id (the first 16 hex digits of a SHA-256 over a
label and the key) names which key sealed a value, so a wrong key is told apart from a
tampered value.

Hazards: the key file is the one secret that opens every other; it must be 0600 (a file
group or others can read is refused) and kept out of the store and its backups. Every
daemon and command on the store needs the same key. Losing it loses the sealed secrets
and keys: runs still waiting for mail cannot continue (certificates already installed
keep working). Nothing here logs or shows a key or an opened value.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from certwright.atomic import write_new
from certwright.errors import InputError, StoreError

__all__ = ["KEY_ENV", "PREFIX", "Sealer", "generate_key_file", "is_sealed", "load_key_file"]

KEY_ENV = "CERTWRIGHT_STORE_KEY"
PREFIX = "cw-sealed:v1:"
KEY_BYTES = 32
_NONCE_BYTES = 12
_ID_LABEL = b"certwright store key id\0"


def is_sealed(text: str) -> bool:
    """Whether a stored text is a sealed value (else it was kept in clear)."""
    return text.startswith(PREFIX)


class Sealer:
    """Seals and opens values with one store key (``origin``: where the key came from)."""

    def __init__(self, key: bytes, origin: str) -> None:
        if len(key) != KEY_BYTES:
            raise InputError(f"{origin}: a store key is {KEY_BYTES} bytes, not {len(key)}")
        # imported here: every command imports this module, few of them seal anything
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(_ID_LABEL + key).hexdigest()[:16]
        self.origin = origin

    def __repr__(self) -> str:  # never the key
        return f"Sealer(key_id={self.key_id!r}, origin={self.origin!r})"

    def seal(self, plaintext: bytes, what: str) -> str:
        """``plaintext`` sealed as ``what`` (the associated data), as stored text."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, what.encode())
        return f"{PREFIX}{self.key_id}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def open(self, text: str, what: str) -> bytes:
        """The plaintext of a value sealed as ``what``; StoreError saying why not (another
        key sealed it, or it was altered or moved from another row)."""
        key_id, _, body = text.removeprefix(PREFIX).partition(":")
        if key_id != self.key_id:
            raise StoreError(f"{what} is sealed with store key {key_id}, not with the key "
                             f"of {self.origin} ({self.key_id}): give every process on "
                             f"this store the same key file")
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise StoreError(f"{what}: the sealed value is damaged (not base64)") from None
        from cryptography.exceptions import InvalidTag
        try:
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], what.encode())
        except (InvalidTag, ValueError):
            raise StoreError(f"{what}: the sealed value does not open with store key "
                             f"{key_id}: it was altered, or copied from another "
                             f"row") from None


def open_sealed(text: str, what: str, sealer: Sealer | None) -> bytes:
    """The plaintext of sealed ``text`` (see :meth:`Sealer.open`); StoreError when there is
    no store key to open it with."""
    if sealer is None:
        key_id = text.removeprefix(PREFIX).partition(":")[0]
        raise StoreError(
            f"{what} is sealed with store key {key_id}, and no store key is configured: "
            f"name its file with store_key: in the configuration, --store-key or {KEY_ENV}")
    return sealer.open(text, what)


def _decode_key(data: bytes, where: str) -> bytes:
    """The 32 key bytes of a key file: base64 text (as ``store keygen`` writes) or raw."""
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) == KEY_BYTES:
        return key
    if len(data) == KEY_BYTES:
        return data
    raise InputError(f"store key file {where} holds no store key: expected {KEY_BYTES} "
                     f"bytes in base64 (make one with: certwright store keygen {where})")


def load_key_file(path: Path | str, origin: str) -> Sealer:
    """The :class:`Sealer` of the key file ``path`` (named by ``origin``); InputError when
    it is missing, unreadable, not a regular file, readable by group or others, or holds
    no key."""
    where = Path(path)
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{origin}: store key file {where} does not exist (make one with: "
                         f"certwright store keygen {where})") from None
    except OSError as exc:
        raise InputError(f"{origin}: cannot open store key file {where}: "
                         f"{exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{origin}: store key file {where} is not a regular file")
        if st.st_mode & 0o077:
            raise InputError(f"{origin}: store key file {where} is readable or writable by "
                             f"group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                             f"chmod 600 it")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return Sealer(_decode_key(data, str(where)), f"{origin} {where}")


def generate_key_file(path: Path | str) -> Sealer:
    """Write a new store key (base64 of 32 random bytes) to ``path``, 0600, never over an
    existing file (InputError then); its :class:`Sealer`."""
    where = Path(path)
    key = os.urandom(KEY_BYTES)
    try:
        write_new(where, base64.b64encode(key) + b"\n", mode=0o600)
    except FileExistsError:
        raise InputError(f"{where} exists already; a store key is never overwritten "
                         f"(the values it sealed would no longer open)") from None
    except OSError as exc:
        raise InputError(f"cannot write store key file {where}: {exc.strerror}") from None
    return Sealer(key, str(where))
