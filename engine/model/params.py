"""Check a step's rendered parameters against its JSON Schema, with a readable error.

Two validators per schema: a compiled one (fastjsonschema: the schema turned into Python
code, ~15x faster) answers "valid?" on the hot path; only when it says no does jsonschema,
the reference implementation, list every error with its path. jsonschema has the last
word: fastjsonschema asserts ``format`` where jsonschema (by default) does not, so a value
the first refuses and the second accepts passes.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import fastjsonschema
import jsonschema
from jsonschema import Draft202012Validator

from certwright.errors import PermanentError

_Fast = Callable[[Any], Any]


@lru_cache(maxsize=256)
def _validators(schema_json: str) -> tuple[_Fast | None, Draft202012Validator]:
    schema = json.loads(schema_json)
    fast: _Fast | None
    try:
        fast = fastjsonschema.compile(schema, use_default=False)
    except fastjsonschema.JsonSchemaDefinitionException:
        fast = None  # a schema it cannot compile is checked by jsonschema alone
    return fast, Draft202012Validator(schema)


# Step schemas are class attributes that live as long as the process: key them by identity
# (keeping a reference, so an id is never reused) and serialise each one only once.
_BY_ID: dict[int, tuple[Mapping[str, Any], _Fast | None, Draft202012Validator]] = {}


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
        fast, full = _validators(json.dumps(schema, sort_keys=True, default=str))
        found = _BY_ID[id(schema)] = (schema, fast, full)
    _, fast, validator = found
    if fast is not None:
        try:
            fast(params)
            return
        except fastjsonschema.JsonSchemaException:
            pass  # let jsonschema decide, and say why
    errors = sorted(validator.iter_errors(dict(params)), key=lambda e: list(e.path))
    if errors:
        parts = []
        for e in errors:
            where = ".".join(str(p) for p in e.path) or "(parameters)"
            parts.append(f"{where}: {wording(e)}")
        raise PermanentError(f"step {step!r}: bad parameters: " + "; ".join(parts))
