"""The kept code of compiled step-parameter validators (``params.compiled_validator``): a
kept entry is used, a damaged one is compiled again and replaced, a schema fastjsonschema
cannot compile gives None (jsonschema alone checks it)."""
from __future__ import annotations

import json
import marshal
from pathlib import Path

import fastjsonschema
import pytest

from certwright.engine.model.params import compiled_validator

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TEXT = json.dumps(SCHEMA, sort_keys=True)


def test_a_compiled_validator_is_kept_and_used(tmp_path: Path) -> None:
    fast = compiled_validator(SCHEMA, TEXT, tmp_path)
    assert fast is not None
    fast({"n": 1})
    with pytest.raises(fastjsonschema.JsonSchemaException):
        fast({"n": "x"})
    [entry] = (tmp_path / "schemas").glob("*.marshal")
    planted = compile("def validate(data, *a, **k):\n    return 'kept'\n", "<t>", "exec")
    entry.write_bytes(marshal.dumps(planted))
    kept = compiled_validator(SCHEMA, TEXT, tmp_path)
    assert kept is not None and kept({"n": "x"}) == "kept"


@pytest.mark.parametrize("garbage", [b"", b"\x00garbage", marshal.dumps(42)])
def test_a_damaged_entry_is_compiled_again(tmp_path: Path, garbage: bytes) -> None:
    compiled_validator(SCHEMA, TEXT, tmp_path)
    [entry] = (tmp_path / "schemas").glob("*.marshal")
    entry.write_bytes(garbage)
    fast = compiled_validator(SCHEMA, TEXT, tmp_path)
    assert fast is not None
    with pytest.raises(fastjsonschema.JsonSchemaException):
        fast({})
    assert entry.read_bytes() != garbage


def test_an_uncompilable_schema_gives_none(tmp_path: Path) -> None:
    bad = {"type": "no-such-type"}
    assert compiled_validator(bad, json.dumps(bad), tmp_path) is None
