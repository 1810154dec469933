"""Check a step's rendered parameters against its JSON Schema, with a readable error.

Two validators per schema: a compiled one (fastjsonschema: the schema turned into Python
code, ~15x faster) answers "valid?" on the hot path; only when it says no does jsonschema,
the reference implementation, list every error with its path. jsonschema has the last
word: fastjsonschema asserts ``format`` where jsonschema (by default) does not, so a value
the first refuses and the second accepts passes.

The compiled validator's code object is kept in the cache folder
(:func:`engine.model.speccache.default_cache_dir`, ``schemas/<digest>.marshal``, the digest
naming certwright's and fastjsonschema's versions, the interpreter's cache tag and the
schema), so a one-shot command does not generate and compile it again on every start. Like
the spec cache, an entry is code: it is read only from a private folder of this user's, and
any damage is a miss (the validator is compiled and the entry replaced).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import marshal
import sys
import types
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastjsonschema

if TYPE_CHECKING:
    import jsonschema
    from jsonschema import Draft202012Validator

from certwright import __version__
from certwright.atomic import write_atomic
from certwright.engine.model import speccache
from certwright.errors import PermanentError

_Fast = Callable[[Any], Any]


def _generate(schema: Mapping[str, Any]) -> types.CodeType | None:
    try:
        source = fastjsonschema.compile_to_code(dict(schema), use_default=False)
    except fastjsonschema.JsonSchemaDefinitionException:
        return None  # a schema it cannot compile is checked by jsonschema alone
    return compile(source, "<fastjsonschema>", "exec")


def _run(code: types.CodeType) -> _Fast | None:
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - our own generated code (module docstring)
    fast = namespace.get("validate")
    return fast if callable(fast) else None


def compiled_validator(schema: Mapping[str, Any], schema_json: str,
                       cache_dir: Path | None = None) -> _Fast | None:
    """fastjsonschema's validator of ``schema`` (``schema_json`` is its canonical JSON),
    from the kept code object in ``cache_dir`` when there is a good one, else compiled
    (and kept). None when fastjsonschema cannot compile the schema."""
    key = hashlib.sha256("\0".join((__version__, fastjsonschema.VERSION,
                                    sys.implementation.cache_tag or "", schema_json)).encode())
    path = (cache_dir or speccache.default_cache_dir()) / "schemas" / f"{key.hexdigest()}.marshal"
    if speccache.is_private(path.parent) and speccache.is_private(path):
        try:
            kept = marshal.loads(path.read_bytes())  # noqa: S302 - private folder, see above
            fast = _run(kept) if isinstance(kept, types.CodeType) else None
        except Exception:  # noqa: BLE001 - any damage (truncated, foreign) is a miss
            fast = None
        if fast is not None:
            return fast
    code = _generate(schema)
    if code is None:
        return None
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, marshal.dumps(code), 0o600)
    return _run(code)


@lru_cache(maxsize=256)
def _validators(schema_json: str) -> tuple[_Fast | None, str]:
    return compiled_validator(json.loads(schema_json), schema_json), schema_json


@lru_cache(maxsize=256)
def _reference(schema_json: str) -> Draft202012Validator:
    """jsonschema's validator of the schema, built (and jsonschema imported, ~0.15 s)
    only when the compiled one says no or there is none: a valid run never pays it."""
    from jsonschema import Draft202012Validator
    return Draft202012Validator(json.loads(schema_json))


# Step schemas are class attributes that live as long as the process: key them by identity
# (keeping a reference, so an id is never reused) and serialise each one only once.
_BY_ID: dict[int, tuple[Mapping[str, Any], _Fast | None, str]] = {}


def wording(err: jsonschema.ValidationError) -> str:
    """A schema error in words: jsonschema's own message, except for a choice between
    required keys (``oneOf``/``anyOf`` of ``required``), where it would say only that
    ``{}`` "is not valid under any of the given schemas"."""
    alternatives = err.validator_value if err.validator in ("oneOf", "anyOf") else None
    if (isinstance(alternatives, list) and isinstance(err.instance, dict) and alternatives
            and all(isinstance(a, dict) and set(a) == {"required"} for a in alternatives)):
        keys = [k for a in alternatives for k in a["required"]]
        names = ", ".join(repr(k) for k in keys)
        given = [k for k in keys if k in err.instance]
        if not given:
            return f"needs {'one' if err.validator == 'oneOf' else 'at least one'} of {names}"
        if err.validator == "oneOf":
            return f"takes only one of {names}, not {' and '.join(repr(k) for k in given)}"
    return str(err.message)


def check_params(step: str, schema: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Raise PermanentError listing every way ``params`` break ``schema``."""
    found = _BY_ID.get(id(schema))
    if found is None or found[0] is not schema:
        fast, schema_json = _validators(json.dumps(schema, sort_keys=True, default=str))
        found = _BY_ID[id(schema)] = (schema, fast, schema_json)
    _, fast, schema_json = found
    if fast is not None:
        try:
            fast(params)
            return
        except fastjsonschema.JsonSchemaException:
            pass  # let jsonschema decide, and say why
    errors = sorted(_reference(schema_json).iter_errors(dict(params)), key=lambda e: list(e.path))
    if errors:
        parts = []
        for e in errors:
            where = ".".join(str(p) for p in e.path) or "(parameters)"
            parts.append(f"{where}: {wording(e)}")
        raise PermanentError(f"step {step!r}: bad parameters: " + "; ".join(parts))
