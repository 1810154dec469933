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


def check_params(step: str, schema: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Raise PermanentError listing every way ``params`` break ``schema``."""
    validator = _validator(json.dumps(schema, sort_keys=True, default=str))
    errors = sorted(validator.iter_errors(dict(params)), key=lambda e: list(e.path))
    if errors:
        parts = []
        for e in errors:
            where = ".".join(str(p) for p in e.path) or "(parameters)"
            parts.append(f"{where}: {e.message}")
        raise PermanentError(f"step {step!r}: bad parameters: " + "; ".join(parts))
