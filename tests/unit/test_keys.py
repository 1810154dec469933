"""key.generate and csr.generate: files, modes, reuse, refusals, CSR contents."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certwright.clock import SystemClock
from certwright.engine.plugins.step import Done, StepContext
from certwright.errors import PermanentError
from certwright.steps.keys import CsrGenerate, KeyGenerate, validate_dns_name


def ctx(tmp_path: Path, **params: Any) -> StepContext:
    return StepContext(run_id="r1", pipeline="t", state="s", step_id="x",
                       idempotency_key="r1:1:0", attempt=1, params=params,
                       run_dir=tmp_path / "run", state_dir=tmp_path, clock=SystemClock())


def outputs(result: Any) -> dict[str, Any]:
    if not isinstance(result, Done):
        raise AssertionError(f"expected Done, got {result!r}")
    return dict(result.outputs)


def test_ec_key_default_is_p256_pkcs8_0600_in_0700_folder(tmp_path: Path) -> None:
    """Default key.generate writes an unencrypted PKCS#8 P-256 key 0600 in a new 0700 folder."""
    out = outputs(KeyGenerate().run(ctx(tmp_path)))
    path = tmp_path / "run" / "server.key"
    assert out["path"] == str(path)
    assert (out["type"], out["bits_or_curve"], out["reused"]) == ("ec", "P-256", False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(data, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert len(out["public_key_sha256"]) == 64
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_ec_p384(tmp_path: Path) -> None:
    """curve P-384 gives a secp384r1 key."""
    out = outputs(KeyGenerate().run(ctx(tmp_path, curve="P-384")))
    key = serialization.load_pem_private_key(Path(out["path"]).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert out["bits_or_curve"] == "P-384"


def test_rsa_key_of_requested_size(tmp_path: Path) -> None:
    """type rsa, bits 2048 gives a 2048-bit RSA key."""
    out = outputs(KeyGenerate().run(ctx(tmp_path, type="rsa", bits=2048, path="rsa.key")))
    key = serialization.load_pem_private_key(Path(out["path"]).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert (out["type"], out["bits_or_curve"]) == ("rsa", 2048)


@pytest.mark.parametrize("bits", [1024, 2047, 8192])
def test_rsa_size_outside_rule_refused_naming_it(tmp_path: Path, bits: int) -> None:
    """An RSA size outside 2048..4096 is a PermanentError naming the size and the rule."""
    with pytest.raises(PermanentError) as err:
        KeyGenerate().run(ctx(tmp_path, type="rsa", bits=bits))
    assert str(bits) in str(err.value) and "2048 to 4096" in str(err.value)
    assert not (tmp_path / "run" / "server.key").exists()


def test_second_call_reuses_the_key(tmp_path: Path) -> None:
    """A repeat call with the same request reuses the file unchanged."""
    first = outputs(KeyGenerate().run(ctx(tmp_path)))
    before = Path(first["path"]).read_bytes()
    second = outputs(KeyGenerate().run(ctx(tmp_path)))
    assert second["reused"] is True
    assert second["public_key_sha256"] == first["public_key_sha256"]
    assert Path(first["path"]).read_bytes() == before


def test_existing_key_of_other_kind_is_refused_not_overwritten(tmp_path: Path) -> None:
    """An existing P-256 key where P-384 is asked for is refused and left alone."""
    first = outputs(KeyGenerate().run(ctx(tmp_path)))
    before = Path(first["path"]).read_bytes()
    with pytest.raises(PermanentError, match="already holds a EC P-256 key"):
        KeyGenerate().run(ctx(tmp_path, curve="P-384"))
    assert Path(first["path"]).read_bytes() == before


def test_existing_non_key_file_is_refused(tmp_path: Path) -> None:
    """A file that is not a key at the path is refused, not replaced."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    (folder / "server.key").write_bytes(b"hello")
    os.chmod(folder / "server.key", 0o600)
    with pytest.raises(PermanentError, match="does not hold a PEM private key"):
        KeyGenerate().run(ctx(tmp_path))
    assert (folder / "server.key").read_bytes() == b"hello"


def test_symlinked_key_path_refused(tmp_path: Path) -> None:
    """A symlink at the key path is refused (O_NOFOLLOW semantics)."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    (folder / "server.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermanentError, match="symlink"):
        KeyGenerate().run(ctx(tmp_path))
    assert not (tmp_path / "elsewhere").exists()


def test_world_writable_folder_refused(tmp_path: Path) -> None:
    """A key folder writable by others is refused."""
    folder = tmp_path / "run"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(PermanentError, match="writable by group or others"):
        KeyGenerate().run(ctx(tmp_path))
    assert not (folder / "server.key").exists()


def test_leftover_temp_file_of_crashed_attempt_is_replaced(tmp_path: Path) -> None:
    """A temp file left by a crash with the same idempotency key does not block the key."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    tmp = folder / ".server.key.r1_1_0.tmp"
    tmp.write_bytes(b"partial")
    out = outputs(KeyGenerate().run(ctx(tmp_path)))
    assert out["reused"] is False
    assert not tmp.exists()
    serialization.load_pem_private_key((folder / "server.key").read_bytes(), password=None)


# -- CSR ------------------------------------------------------------------------------------

def test_csr_has_cn_san_and_valid_sha256_signature(tmp_path: Path) -> None:
    """The CSR's CN is the first name, SAN lists all names, signed SHA-256 by the key."""
    key_out = outputs(KeyGenerate().run(ctx(tmp_path)))
    out = outputs(CsrGenerate().run(ctx(tmp_path, key=key_out["path"],
                                        domains=["Example.Test", "www.example.test",
                                                 "*.api.example.test"])))
    assert out["domains"] == ["example.test", "www.example.test", "*.api.example.test"]
    csr = x509.load_pem_x509_csr(Path(out["path"]).read_bytes())
    assert csr.is_signature_valid
    assert csr.signature_hash_algorithm is not None
    assert csr.signature_hash_algorithm.name == "sha256"
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "example.test"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == out["domains"]
    key = serialization.load_pem_private_key(Path(key_out["path"]).read_bytes(), None)
    assert csr.public_key() == key.public_key()


def test_csr_single_domain_and_reuse(tmp_path: Path) -> None:
    """``domain`` works; a repeat call reuses the same CSR file byte for byte."""
    KeyGenerate().run(ctx(tmp_path))
    first = outputs(CsrGenerate().run(ctx(tmp_path, domain="example.test")))
    before = Path(first["path"]).read_bytes()
    second = outputs(CsrGenerate().run(ctx(tmp_path, domain="example.test")))
    assert (first["reused"], second["reused"]) == (False, True)
    assert Path(second["path"]).read_bytes() == before


def test_csr_with_other_names_is_rewritten(tmp_path: Path) -> None:
    """An existing CSR for different names is replaced by one for the requested names."""
    KeyGenerate().run(ctx(tmp_path))
    CsrGenerate().run(ctx(tmp_path, domain="example.test"))
    out = outputs(CsrGenerate().run(ctx(tmp_path, domains=["other.test"])))
    csr = x509.load_pem_x509_csr(Path(out["path"]).read_bytes())
    assert out["reused"] is False
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["other.test"]


@pytest.mark.parametrize(("bad", "rule"), [
    ("exa_mple.test", "letters, digits or hyphens"),
    ("-bad.test", "letters, digits or hyphens"),
    ("a..test", "letters, digits or hyphens"),
    ("www.*.example.test", "whole leftmost label"),
    ("f*o.example.test", "whole leftmost label"),
    ("*.test", "two labels after"),
    ("localhost", "at least two labels"),
    ("192.168.0.1", "IP address"),
    ("x" * 64 + ".test", "letters, digits or hyphens"),
])
def test_bad_names_refused(tmp_path: Path, bad: str, rule: str) -> None:
    """Names breaking the LDH/wildcard rules are refused with the rule named; no CSR."""
    KeyGenerate().run(ctx(tmp_path))
    with pytest.raises(PermanentError, match=rule):
        CsrGenerate().run(ctx(tmp_path, domains=["example.test", bad]))
    assert not (tmp_path / "run" / "server.csr").exists()


def test_duplicate_and_missing_names_refused(tmp_path: Path) -> None:
    """The same name twice, or no name at all, is refused."""
    KeyGenerate().run(ctx(tmp_path))
    with pytest.raises(PermanentError, match="listed twice"):
        CsrGenerate().run(ctx(tmp_path, domains=["example.test", "EXAMPLE.test"]))
    with pytest.raises(PermanentError, match="no domain"):
        CsrGenerate().run(ctx(tmp_path, domains=[]))


def test_csr_needs_a_key(tmp_path: Path) -> None:
    """A missing key file is a PermanentError naming the path."""
    with pytest.raises(PermanentError, match="does not exist"):
        CsrGenerate().run(ctx(tmp_path, key=str(tmp_path / "nokey.pem"), domain="example.test"))


def test_validate_dns_name_normalises() -> None:
    """Names are lower-cased and a trailing dot dropped."""
    assert validate_dns_name("WWW.Example.TEST.") == "www.example.test"
    assert validate_dns_name("xn--bcher-kva.example") == "xn--bcher-kva.example"
