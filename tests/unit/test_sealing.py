"""The store key: its file, refused when unsafe, and the sealed values it makes."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from certwright.errors import InputError, StoreError
from certwright.state.sealing import (
    PREFIX,
    Sealer,
    generate_key_file,
    is_sealed,
    load_key_file,
    open_sealed,
)


def test_keygen_writes_a_private_key_that_loads_and_is_never_overwritten(
        tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    made = generate_key_file(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert len(base64.b64decode(path.read_bytes())) == 32
    loaded = load_key_file(path, "test")
    assert loaded.key_id == made.key_id and len(made.key_id) == 16
    before = path.read_bytes()
    with pytest.raises(InputError, match="never overwritten"):
        generate_key_file(path)
    assert path.read_bytes() == before


def test_a_key_file_is_refused_when_missing_open_to_others_linked_or_not_a_key(
        tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"does not exist.*store keygen"):
        load_key_file(tmp_path / "none", "test")
    path = tmp_path / "store.key"
    generate_key_file(path)
    path.chmod(0o640)
    with pytest.raises(InputError, match=r"group or others.*0640.*chmod 600"):
        load_key_file(path, "test")
    path.chmod(0o600)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(InputError, match="cannot open"):
        load_key_file(link, "test")
    with pytest.raises(InputError, match="not a regular file"):
        load_key_file(tmp_path, "test")
    short = tmp_path / "short.key"
    short.write_bytes(base64.b64encode(b"x" * 16))
    short.chmod(0o600)
    with pytest.raises(InputError, match="holds no store key"):
        load_key_file(short, "test")


def test_a_raw_32_byte_key_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "raw.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"\x07" * 32)
    os.close(fd)
    assert load_key_file(path, "test").key_id == Sealer(b"\x07" * 32, "x").key_id


def test_sealed_values_open_only_with_their_key_and_their_label() -> None:
    one, two = Sealer(b"\x01" * 32, "one"), Sealer(b"\x02" * 32, "two")
    text = one.seal(b"secret bytes", "secrets/r1")
    assert is_sealed(text) and text.startswith(PREFIX + one.key_id + ":")
    assert b"secret" not in base64.b64decode(text.rsplit(":", 1)[1])
    assert one.open(text, "secrets/r1") == b"secret bytes"
    assert one.seal(b"secret bytes", "secrets/r1") != text  # a fresh nonce each time
    with pytest.raises(StoreError, match="altered, or copied"):
        one.open(text, "secrets/r2")
    with pytest.raises(StoreError, match=f"store key {one.key_id}, not"):
        two.open(text, "secrets/r1")
    with pytest.raises(StoreError, match="no store key is configured"):
        open_sealed(text, "secrets/r1", None)
    flipped = text[:-6] + ("A" if text[-6] != "A" else "B") + text[-5:]
    with pytest.raises(StoreError, match=r"altered|damaged"):
        one.open(flipped, "secrets/r1")
    with pytest.raises(StoreError, match="damaged"):
        one.open(PREFIX + one.key_id + ":***", "secrets/r1")


def test_a_sealer_never_shows_its_key() -> None:
    key = b"\x05" * 32
    sealer = Sealer(key, "somewhere")
    assert key.hex() not in repr(sealer) and base64.b64encode(key).decode() not in repr(sealer)
    with pytest.raises(InputError, match="32 bytes, not 5"):
        Sealer(b"short", "here")
