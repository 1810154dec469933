"""Guards: evaluate a :class:`engine.spec.Condition` against a run's namespace. No eval."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from certwright.engine.model.spec import Condition
from certwright.engine.model.template import render


def truthy(value: Any) -> bool:
    """YAML-ish truth: empty, 0, false, no, off, none and null strings are false."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off", "none", "null")
    return bool(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return truthy(a) == truthy(b)
    if a == b:
        return True
    return str(a) == str(b)


def evaluate(cond: Condition, namespace: Mapping[str, Any]) -> bool:
    """True when ``cond`` holds; raises template.UnresolvedReference for unknown names."""
    op, args = cond.op, cond.args

    def val(x: Any) -> Any:
        return render(x, namespace)

    if op == "equals":
        return _same(val(args[0]), val(args[1]))
    if op == "not_equals":
        return not _same(val(args[0]), val(args[1]))
    if op == "truthy":
        return truthy(val(args[0]))
    if op == "falsy":
        return not truthy(val(args[0]))
    if op == "matches":
        return re.search(str(args[1]), str(val(args[0]))) is not None
    if op == "in":
        options = val(args[1])
        return any(_same(val(args[0]), o) for o in options)
    if op == "all":
        return all(evaluate(c, namespace) for c in args)
    if op == "any":
        return any(evaluate(c, namespace) for c in args)
    if op == "not":
        return not evaluate(args[0], namespace)
    raise ValueError(f"unknown condition {op!r}")
