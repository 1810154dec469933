"""What one pipeline load collects, and the checks every part of the loader shares.

:class:`Ctx` gathers problems instead of raising, so that one load reports everything
wrong with a file at once (each with its location, source line and, where one is close,
a "did you mean"); it also keeps the step ids, transition targets and template strings
that are checked once the whole file has been read. Private to the loader's modules.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from certwright.engine.model.spec import parse_duration
from certwright.engine.model.yamlsafe import YNode, problem
from certwright.engine.plugins.registry import Registry
from certwright.errors import Location, Problem

ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def did_you_mean(word: str, options: list[str]) -> str | None:
    """``did you mean 'x'?`` for the closest option (also trying dotted parts swapped)."""
    close = difflib.get_close_matches(word, options, n=1)
    if not close and "." in word:
        swapped = ".".join(reversed(word.split(".")))
        close = difflib.get_close_matches(swapped, options, n=1)
    return f"did you mean {close[0]!r}?" if close else None


class Ctx:
    """What one load collects: problems, step ids, transition targets, template strings."""

    def __init__(self, text: str, filename: str, registry: Registry) -> None:
        self.text, self.filename, self.registry = text, filename, registry
        self.problems: list[Problem] = []
        self.step_ids: set[str] = set()
        # (state, what, target name, node) for every edge, checked once all states are known
        self.targets: list[tuple[str, str, str, YNode]] = []
        # (node holding templates, context for messages, references allowed)
        self.templated: list[tuple[YNode, str, str]] = []
        self.step_names = registry.names()  # every step the registry knows
        # set when an edge (next, on_error, timeout, retry) could not be built: graph checks
        # would then report only follow-on noise
        self.edges_broken = False

    def add(self, where: YNode | Location | None, message: str, hint: str | None = None) -> None:
        loc = where.loc if isinstance(where, YNode) else where
        self.problems.append(problem(self.text, loc, message, hint))

    def keys(self, node: YNode, allowed: tuple[str, ...], what: str) -> None:
        """Report each key of mapping ``node`` not in ``allowed``."""
        for key, knode, _ in node.entries():
            if key not in allowed:
                self.add(knode, f"{what}: unknown key {key!r}",
                         did_you_mean(str(key), list(allowed)) or f"allowed: {', '.join(allowed)}")

    def mapping(self, node: YNode, what: str) -> bool:
        if not node.is_map:
            self.add(node, f"{what} must be a mapping")
            return False
        return True

    def text_of(self, node: YNode, what: str) -> str | None:
        if not (node.is_scalar and isinstance(node.value, str)):
            self.add(node, f"{what} must be text, not {type(node.value).__name__}")
            return None
        return str(node.value)

    def integer(self, node: YNode, what: str, minimum: int) -> int | None:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            self.add(node, f"{what} must be a whole number >= {minimum}, not {v!r}")
            return None
        return v

    def number(self, node: YNode, what: str, ok: Callable[[float], bool],
               rule: str) -> float | None:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(float(v)):
            self.add(node, f"{what} must be a number {rule}, not {v!r}")
            return None
        return float(v)

    def duration(self, node: YNode, what: str) -> float | None:
        try:
            return parse_duration(node.value)
        except ValueError as exc:
            self.add(node, f"{what}: {exc}")
            return None

    def target(self, state: str, what: str, node: YNode) -> str | None:
        name = self.text_of(node, f"state {state!r}: {what}")
        if name is not None:
            self.targets.append((state, what, name, node))
        return name
