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


def test_valid_parameters_never_import_jsonschema(tmp_path: Path) -> None:
    """jsonschema (the reference validator, ~0.15 s to import) is imported only to explain
    parameters the compiled validator refused, so a run whose parameters are valid (and
    whose pipeline comes from the spec cache) does not pay for it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from certwright.engine.model.params import check_params\n"
        f"schema = {SCHEMA!r}\n"
        "check_params('t', schema, {'n': 1})\n"
        "print('jsonschema' in sys.modules)\n"
        "try:\n"
        "    check_params('t', schema, {'n': 'x'})\n"
        "except Exception as exc:\n"
        "    print('jsonschema' in sys.modules, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"CERTWRIGHT_CACHE_DIR": str(tmp_path),
                                          "PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert out[0] == "False"
    assert out[1].startswith("True step 't': bad parameters: n: ")
