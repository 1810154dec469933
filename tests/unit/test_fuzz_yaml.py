"""The YAML loader under property-based fuzzing (the fault campaign, part d).

Searched by hypothesis, with bounded and derandomized examples (the same ones on every
run, no deadline): text made of YAML's own syntax, plain values dumped and read back,
alias trees of drawn shape, and the bundled pipelines mutated at any node. Whatever the
input, ``load_yaml`` and ``load_pipeline_text`` either return or raise SpecError, never
anything else; every problem carries a location inside the text (``file:line:col``,
1-based); the work a load reports in its LoadStats stays within the budgets of
engine/model/yamlsafe.py (a refused load may pass a budget by the one alias that crossed
it, no more).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certwright.engine.model.loader import bundled_pipelines, load_pipeline_text
from certwright.engine.model.yamlsafe import (
    MAX_DEPTH,
    MAX_EXPANDED_BYTES,
    MAX_NODES,
    LoadStats,
    load_yaml,
)
from certwright.errors import SpecError

FILE = "fuzz.yaml"
FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# YAML's indicators and whitespace, weighted up against the rest of Unicode
SYNTAX = st.sampled_from([*"-?:,[]{}#&*!|>'\"%@`\n\n  \t\\.<=~",
                          "- ", ": ", "&a ", "*a", "<<: ", "!!str ", "!!python/name:x ",
                          "---\n", "...\n", "${", "}", "\r\n", "\ufeff"])
YAMLISH = st.lists(st.one_of(SYNTAX, st.characters(), st.text(max_size=4)),
                   max_size=80).map("".join)


def _check_located(exc: SpecError, text: str) -> None:
    """Every problem points inside ``text``: the file's name, a 1-based line and column."""
    assert exc.problems, "a SpecError without a problem"
    lines = text.count("\n") + text.count("\r") + 2
    for p in exc.problems:
        assert p.loc is not None, f"a problem without a location: {p.render()}"
        assert p.loc.file == FILE, p.render()
        assert 1 <= p.loc.line <= lines, p.render()
        assert p.loc.col >= 1, p.render()
        assert str(p.loc) in p.render()


def _check_bounded(stats: LoadStats, text: str, refused: bool) -> None:
    """The work a load did stays within its budgets (refused: one alias's worth over)."""
    slack = 2 if refused else 1
    assert stats.depth <= MAX_DEPTH
    assert stats.nodes_counted <= slack * MAX_NODES
    assert stats.bytes_expanded <= slack * MAX_EXPANDED_BYTES
    assert stats.nodes_built <= stats.events
    # the scanner reads the text once, each event stands for at most a few characters
    assert stats.chars_scanned <= len(text) + 1
    assert stats.events <= 4 * (len(text) + 4)


def _load(text: str) -> tuple[Any, SpecError | None, LoadStats]:
    stats = LoadStats()
    try:
        value = load_yaml(text, FILE, stats).value
    except SpecError as exc:
        return None, exc, stats
    return value, None, stats


@FUZZ
@given(YAMLISH)
def test_any_text_loads_or_is_refused_with_a_location(text: str) -> None:
    value, exc, stats = _load(text)
    _check_bounded(stats, text, exc is not None)
    if exc is not None:
        _check_located(exc, text)
    else:
        json.dumps(value)  # every value a load returns is plain data


@FUZZ
@given(YAMLISH)
def test_any_text_as_a_pipeline_is_refused_with_a_location(text: str) -> None:
    try:
        load_pipeline_text(text, FILE)
    except SpecError as exc:
        _check_located(exc, text)


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) |
    st.floats(allow_nan=False),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=30)


@FUZZ
@given(PLAIN, st.booleans())
def test_plain_values_come_back_as_they_were_dumped(value: Any, flow: bool) -> None:
    """What PyYAML's safe emitter writes (block or flow style) loads, and reads as PyYAML's
    safe_load reads it: as it was dumped, but for what the emitter writes wrongly (a NEL,
    U+0085, raw inside quotes, where the scanner reads it as a line break)."""
    text = yaml.safe_dump({"v": value}, default_flow_style=flow, allow_unicode=True)
    got, exc, _ = _load(text)
    assert exc is None, f"{text!r}: {exc}"
    assert got == yaml.safe_load(text)
    if "\x85" not in text:
        assert got == {"v": value}


@st.composite
def alias_trees(draw: st.DrawFn) -> tuple[str, int, int]:
    """A chain of anchored lists, each referring to the one before ``fan`` times: the text,
    and the nodes and bytes it expands to (as the loader counts them)."""
    levels = draw(st.integers(1, 8))
    fan = draw(st.integers(1, 12))
    leaf = draw(st.integers(0, 3000))
    lines = [f"a0: &a0 {'x' * leaf}" if leaf else "a0: &a0 ''"]
    # the root mapping, key a0 and its value
    nodes, size, total_nodes, total_bytes = 1, leaf, 3, 2 + leaf
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * fan)
        lines.append(f"a{i}: &a{i} [{refs}]")
        nodes, size = 1 + fan * nodes, fan * size
        total_nodes += 1 + nodes
        total_bytes += len(f"a{i}") + size
    return "\n".join(lines) + "\n", total_nodes, total_bytes


@FUZZ
@given(alias_trees())
def test_alias_trees_are_refused_exactly_past_the_budgets(tree: tuple[str, int, int]) -> None:
    text, nodes, text_bytes = tree
    _, exc, stats = _load(text)
    _check_bounded(stats, text, exc is not None)
    if nodes > MAX_NODES or text_bytes > MAX_EXPANDED_BYTES:
        assert exc is not None, f"{nodes} nodes, {text_bytes} bytes loaded"
        _check_located(exc, text)
        assert "document too large" in str(exc)
    else:
        assert exc is None, f"{nodes} nodes, {text_bytes} bytes refused: {exc}"
        assert stats.nodes_counted == nodes
        assert stats.bytes_expanded == text_bytes


@FUZZ
@given(st.integers(1, MAX_DEPTH + 16).flatmap(
    lambda n: st.lists(st.sampled_from(["[", "{k: ", "- ", "{? k: "]), min_size=n, max_size=n)),
    st.sampled_from(["x", "", "&z 1", "*z"]))
def test_nesting_is_refused_exactly_past_the_depth_limit(opens: list[str], leaf: str) -> None:
    """Flow and block collections nested to a drawn depth: loaded up to MAX_DEPTH levels,
    refused with a location past it (an alias to an anchor it is inside of, refused too)."""
    text, indent = "", 0
    closes: list[str] = []
    for kind in opens:
        if kind == "- " and not closes:  # block sequences only outside flow collections
            text += " " * indent + "-\n"
            indent += 2
            continue
        flow = "[" if kind == "- " else kind  # inside a flow collection, a flow sequence
        text += flow if closes else " " * indent + flow
        closes.append("]" if flow == "[" else "}")
    text += (leaf if closes else " " * indent + leaf) + "".join(reversed(closes)) + "\n"
    _, exc, stats = _load(text)
    _check_bounded(stats, text, exc is not None)
    if exc is not None:
        _check_located(exc, text)
    depth = len(opens)
    if depth > MAX_DEPTH:
        assert exc is not None and "nesting deeper" in str(exc), text
    elif leaf != "*z":
        assert exc is None, f"{text!r}: {exc}"


def _paths(tree: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*at, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*at, i))
    return out


def _pipelines() -> list[Any]:
    return [yaml.safe_load(Path(p).read_text()) for p in bundled_pipelines().values()]


BASES = _pipelines()
HOSTILE_VALUES = PLAIN | st.sampled_from(
    ["${", "${}", "${steps.}", "${steps.nope.out}", "${inputs.nope}", "$${x}", "${a", "x}",
     "0s", "-1d", "99999999999999999999d", "", " ", "\x00", "\u202e", "a" * 300, "new",
     "installed", "failed", "<<", "~", "null", ".nan", "1e999"])


@st.composite
def mutants(draw: st.DrawFn) -> Any:
    """A bundled pipeline with a few of its nodes deleted, replaced, renamed or copied."""
    tree = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(tree) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        action = draw(st.sampled_from(["delete", "replace", "rename", "copy"]))
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = draw(HOSTILE_VALUES)
        elif isinstance(parent, dict):
            new_key = draw(st.text(max_size=10) | st.sampled_from(["on_error", "next", "run",
                                                                   "when", "timeout"]))
            value = parent[last] if action == "copy" else parent.pop(last)
            parent[new_key] = value
        else:
            parent.append(copy.deepcopy(parent[last]))
    return tree


@FUZZ
@given(mutants(), st.booleans())
def test_mutated_pipelines_load_or_are_refused_with_a_location(tree: Any, flow: bool) -> None:
    text = yaml.safe_dump(tree, default_flow_style=flow, allow_unicode=True, sort_keys=False)
    try:
        spec = load_pipeline_text(text, FILE)
    except SpecError as exc:
        _check_located(exc, text)
    else:
        assert spec.initial in spec.states


def test_the_alias_tree_counts_match_the_loader() -> None:
    """The counting alias_trees relies on, checked once by hand: 3 levels of fan 2."""
    text = "a0: &a0 xy\na1: &a1 [*a0, *a0]\na2: &a2 [*a1, *a1]\n"
    _, exc, stats = _load(text)
    assert exc is None
    # the root, keys a0 a1 a2, value a0 (1), a1 (1 + 2), a2 (1 + 2 * 3)
    assert stats.nodes_counted == 1 + 3 + 1 + 3 + 7
    assert stats.bytes_expanded == 6 + 2 + 4 + 8
