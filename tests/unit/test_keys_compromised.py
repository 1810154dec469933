"""Keys revoked for keyCompromise: recorded in the state dir, a note beside each file, never
reused by key.generate (a new key is made, the old one kept aside), refused by csr.generate."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from certwright.clock import SystemClock
from certwright.engine.plugins.step import Done, StepContext
from certwright.errors import PermanentError
from certwright.steps.keys import CsrGenerate, KeyGenerate
from certwright.steps.keys_compromised import (
    find_compromised,
    mark_compromised,
    note_path,
    registry_path,
)


def ctx(tmp_path: Path, **params: Any) -> StepContext:
    return StepContext(run_id="r2", pipeline="t", state="s", step_id="x",
                       idempotency_key="r2:1:0", attempt=1, params=params,
                       run_dir=tmp_path / "run", state_dir=tmp_path / "state",
                       clock=SystemClock())


def outputs(result: Any) -> dict[str, Any]:
    if not isinstance(result, Done):
        raise AssertionError(f"expected Done, got {result!r}")
    return dict(result.outputs)


def _compromise(tmp_path: Path, key_file: Path, digest: str) -> None:
    mark_compromised(tmp_path / "state", digest, name="example.test", serial="0abc",
                     revoked_at="2026-12-01T10:00:00Z", key_paths=[key_file])


def test_a_compromised_key_is_found_and_a_note_lies_beside_it(tmp_path: Path) -> None:
    out = outputs(KeyGenerate().run(ctx(tmp_path)))
    key_file = Path(out["path"])
    assert find_compromised(tmp_path / "state", out["public_key_sha256"]) is None
    _compromise(tmp_path, key_file, out["public_key_sha256"])
    seen = find_compromised(tmp_path / "state", out["public_key_sha256"])
    assert seen is not None and seen["serial"] == "0abc" and seen["name"] == "example.test"
    assert key_file.exists()  # kept: the server still has it until the next certificate
    note = note_path(key_file).read_text()
    assert "keyCompromise" in note and "0abc" in note and "2026-12-01" in note
    assert registry_path(tmp_path / "state").exists()


def test_key_generate_makes_a_new_key_instead_of_reusing_a_compromised_one(
        tmp_path: Path) -> None:
    first = outputs(KeyGenerate().run(ctx(tmp_path)))
    key_file = Path(first["path"])
    old_pem = key_file.read_bytes()
    _compromise(tmp_path, key_file, first["public_key_sha256"])
    again = outputs(KeyGenerate().run(ctx(tmp_path)))
    assert again["reused"] is False
    assert again["public_key_sha256"] != first["public_key_sha256"]
    assert again["set_aside"] == str(key_file) + ".compromised"
    assert Path(again["set_aside"]).read_bytes() == old_pem  # kept, under a clear name
    serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert outputs(KeyGenerate().run(ctx(tmp_path)))["reused"] is True  # the new one


def test_csr_generate_refuses_a_compromised_key(tmp_path: Path) -> None:
    out = outputs(KeyGenerate().run(ctx(tmp_path)))
    _compromise(tmp_path, Path(out["path"]), out["public_key_sha256"])
    with pytest.raises(PermanentError, match=r"revoked for keyCompromise on 2026-12-01.*0abc"):
        CsrGenerate().run(ctx(tmp_path, key=out["path"], domains=["example.test"]))


def test_a_damaged_registry_is_an_error_naming_it(tmp_path: Path) -> None:
    """A key is judged before reuse; a registry that cannot be read stops it."""
    outputs(KeyGenerate().run(ctx(tmp_path)))
    (tmp_path / "state").mkdir()
    registry_path(tmp_path / "state").write_text("{not json")
    with pytest.raises(PermanentError, match=r"compromised-keys.json"):
        KeyGenerate().run(ctx(tmp_path))
