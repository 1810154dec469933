"""``${...}`` references: find them (for validation) and resolve them (at run time).

No ``eval``: a reference is a dotted name looked up in a namespace of plain dicts.
``$${`` escapes a literal ``${``. A value that is exactly one reference keeps the referenced
value's type (``"${count}"`` with count=3 gives 3); otherwise the result is a string.

Names: ``NAME`` or ``inputs.NAME`` (a run input), ``steps.ID.KEY`` (an output of an earlier
step), ``run.id``, ``run.dir``, ``run.state_dir``, ``run.pipeline``, ``run.state``,
``env.NAME`` (the process environment).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

REF = re.compile(r"(?<!\$)\$\{\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*\}")
_ESCAPE = "$${"
RUN_FIELDS = ("id", "dir", "state_dir", "pipeline", "state")


class UnresolvedReference(KeyError):
    """A ``${name}`` whose name has no value."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"${{{self.name}}} has no value"


def references(value: Any) -> list[str]:
    """Every reference name in ``value`` (strings, nested lists and dicts), in order."""
    out: list[str] = []
    if isinstance(value, str):
        out.extend(m.group(1) for m in REF.finditer(value))
    elif isinstance(value, Mapping):
        for v in value.values():
            out.extend(references(v))
    elif isinstance(value, (list, tuple)):
        for v in value:
            out.extend(references(v))
    return out


def lookup(namespace: Mapping[str, Any], name: str) -> Any:
    """Look a dotted name up; a bare NAME is tried as ``inputs.NAME`` too."""
    parts = name.split(".")
    node: Any = namespace
    for i, part in enumerate(parts):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            continue
        if i == 0 and "inputs" in namespace and isinstance(namespace["inputs"], Mapping) \
                and part in namespace["inputs"]:
            node = namespace["inputs"][part]
            continue
        raise UnresolvedReference(name)
    return node


def render(value: Any, namespace: Mapping[str, Any],
           get: Callable[[Mapping[str, Any], str], Any] = lookup) -> Any:
    """Resolve every reference in ``value``; raises :class:`UnresolvedReference`."""
    if isinstance(value, str):
        m = REF.fullmatch(value.strip()) if value.strip() == value else None
        if m:
            return get(namespace, m.group(1))

        def sub(match: re.Match[str]) -> str:
            found = get(namespace, match.group(1))
            return "" if found is None else str(found)

        return REF.sub(sub, value).replace(_ESCAPE, "${")
    if isinstance(value, Mapping):
        return {k: render(v, namespace, get) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render(v, namespace, get) for v in value]
    return value
