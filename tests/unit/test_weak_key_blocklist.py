"""The weak-key blocklist on its own: both formats, keys on it and off it, every bad
file named with what is wrong, and where the CA looks for one."""
from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certwright.ca.weakkeys import Blocklist, BlocklistError, find_blocklist
from tests.support.blocklists import key_hash, write_badkeys_cache, write_text_blocklist

RSA_LISTED = rsa.generate_private_key(65537, 2048).public_key()
RSA_OTHER = rsa.generate_private_key(65537, 2048).public_key()
EC_LISTED = ec.generate_private_key(ec.SECP256R1()).public_key()
EC_OTHER = ec.generate_private_key(ec.SECP256R1()).public_key()


def test_badkeys_cache_folder(tmp_path: Path) -> None:
    """badkeys' blocklist.dat (found through its folder or by name) holds the listed RSA
    and EC keys, named by the list badkeysdata.json gives their id; others pass."""
    folder = write_badkeys_cache(tmp_path / "badkeys", [RSA_LISTED, EC_LISTED])
    for path in (folder, folder / "blocklist.dat"):
        with Blocklist.load(path) as blocklist:
            assert blocklist.match(RSA_LISTED) == "debianssl"
            assert blocklist.match(EC_LISTED) == "debianssl"
            assert blocklist.match(RSA_OTHER) is None
            assert blocklist.match(EC_OTHER) is None
            assert len(blocklist) == 502


def test_badkeys_without_metadata_names_the_id(tmp_path: Path) -> None:
    """Without badkeysdata.json beside it, a hit is named by its list id."""
    folder = write_badkeys_cache(tmp_path / "badkeys", [RSA_LISTED], list_id=9)
    (folder / "badkeysdata.json").unlink()
    with Blocklist.load(folder / "blocklist.dat") as blocklist:
        assert blocklist.match(RSA_LISTED) == "id9"


def test_text_file(tmp_path: Path) -> None:
    """One hex SHA-256 per line (full or truncated to 15 bytes), comments ignored."""
    path = write_text_blocklist(tmp_path / "weak.txt", [RSA_LISTED])
    with path.open("a") as out:
        out.write(key_hash(EC_LISTED)[:15].hex().upper() + "  # truncated, upper case\n")
    with Blocklist.load(path) as blocklist:
        assert blocklist.match(RSA_LISTED) == "weak.txt"
        assert blocklist.match(EC_LISTED) == "weak.txt"
        assert blocklist.match(RSA_OTHER) is None


def test_bad_files_are_named(tmp_path: Path) -> None:
    """A missing path, a blocklist.dat of the wrong size, a text line that is no hex
    hash and bad metadata each raise BlocklistError naming the file and the fault."""
    with pytest.raises(BlocklistError, match=r"nowhere\.txt: no such file"):
        Blocklist.load(tmp_path / "nowhere.txt")
    (tmp_path / "blocklist.dat").write_bytes(b"x" * 17)
    with pytest.raises(BlocklistError, match=r"blocklist\.dat: 17 bytes.*multiple of 16"):
        Blocklist.load(tmp_path / "blocklist.dat")
    (tmp_path / "bad.txt").write_text("# fine\nnot-a-hash\n")
    with pytest.raises(BlocklistError, match=r"bad\.txt:2: .*hex"):
        Blocklist.load(tmp_path / "bad.txt")
    folder = write_badkeys_cache(tmp_path / "meta", [RSA_LISTED])
    (folder / "badkeysdata.json").write_text("{")
    with pytest.raises(BlocklistError, match=r"badkeysdata\.json"):
        Blocklist.load(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlocklistError, match=r"no blocklist\.dat"):
        Blocklist.load(tmp_path / "empty")


def test_where_the_ca_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit path wins (and must exist); otherwise badkeys' own cache folder
    ($XDG_CACHE_HOME/badkeys) when it holds a blocklist; otherwise none."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert find_blocklist(tmp_path / "ca", None) is None
    cache = write_badkeys_cache(tmp_path / "cache" / "badkeys", [RSA_LISTED])
    assert find_blocklist(tmp_path / "ca", None) == cache
    text = write_text_blocklist(tmp_path / "ca-list.txt", [RSA_LISTED])
    assert find_blocklist(tmp_path / "ca", str(text)) == text
    (tmp_path / "ca").mkdir()
    write_text_blocklist(tmp_path / "ca" / "relative.txt", [RSA_LISTED])
    assert find_blocklist(tmp_path / "ca", "relative.txt") == tmp_path / "ca" / "relative.txt"
    with pytest.raises(BlocklistError, match=r"missing\.txt: no such file"):
        find_blocklist(tmp_path / "ca", "missing.txt")
