"""Check a step's rendered parameters against its JSON Schema, with a readable error."""
from __future__ import annotations

from functools import lru_cache
import json
from typing import Any, Mapping

from jsonschema import Draft202012Validator

from engine.errors import PermanentError


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


# Step schemas are class attributes that live as long as the process: key them by identity
# (keeping a reference, so an id is never reused) and serialise each one only once.
_BY_ID: dict[int, tuple[Mapping[str, Any], Draft202012Validator]] = {}


def check_params(step: str, schema: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Raise PermanentError listing every way ``params`` break ``schema``."""
    found = _BY_ID.get(id(schema))
    if found is None or found[0] is not schema:
        found = _BY_ID[id(schema)] = (schema, _validator(json.dumps(schema, sort_keys=True,
                                                                    default=str)))
    validator = found[1]
    errors = sorted(validator.iter_errors(dict(params)), key=lambda e: list(e.path))
    if errors:
        parts = []
        for e in errors:
            where = ".".join(str(p) for p in e.path) or "(parameters)"
            parts.append(f"{where}: {e.message}")
        raise PermanentError(f"step {step!r}: bad parameters: " + "; ".join(parts))
