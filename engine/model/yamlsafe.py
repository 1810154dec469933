"""Hostile-input-proof YAML: PyYAML's safe parser plus positions, limits and strictness.

``load_yaml(text, filename)`` returns a tree of :class:`YNode` (every key and value with its
1-based line and column) or raises :class:`engine.errors.SpecError` with located problems.

Hazards this module exists for (PyYAML's ``safe_load`` has all of them):

* **Alias bombs** ("billion laughs"): a few hundred bytes of nested aliases expand to
  billions of nodes when walked. We never expand: an alias shares the anchored node, and
  the size it *would* expand to is counted against ``MAX_NODES`` as it is read. Nodes
  are not enough: one 900 KB string referred to 2,000 times is 2,000 nodes but 1.8 GB of
  text to every consumer that walks the values (templates, the journal), so the bytes of
  scalars with aliases expanded are counted too, against ``MAX_EXPANDED_BYTES``.
* **Deep nesting**: PyYAML's composer and constructor recurse, so ``[[[[...`` 10,000 deep
  raises RecursionError (or worse). We compose iteratively from the event stream and stop
  at ``MAX_DEPTH`` before anything deep is built.
* **Duplicate keys**: PyYAML keeps the last one silently; we reject the second.
* **Tags**: only the standard scalar and collection tags are accepted; nothing is ever
  constructed from any other tag (``!!python/object/apply:...``), so no code runs.
* **Size**: texts over ``MAX_BYTES`` are refused before parsing.

What a load examined (characters, events, nodes) is counted in a :class:`LoadStats` when
one is passed in, so tests and benchmarks can check that a hostile document is refused
after a bounded amount of work rather than timing it.

Timestamps stay strings (``2001-12-14`` is not turned into a ``date``), so that every value
is JSON-able. Merge keys (``<<: *defaults``) are supported; explicit keys win over merged.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from certwright.errors import Location, Problem, SpecError

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 20_000
# bytes of scalar text once aliases are expanded: four times the largest file, so a file
# without aliases always fits and aliases may still share a block a few times over
MAX_EXPANDED_BYTES = 4 * MAX_BYTES

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
SEQ, MAP, TIMESTAMP, MERGE = _T + "seq", _T + "map", _T + "timestamp", _T + "merge"
_SCALAR_TAGS = {STR, INT, FLOAT, BOOL, NULL, TIMESTAMP, "!"}

Kind = Literal["scalar", "seq", "map"]


@dataclass
class LoadStats:
    """The work one load did, filled in as it goes (also when the document is refused).

    * ``bytes_read``: bytes of the file read (``load_pipeline``; 0 when refused on its size).
    * ``chars_scanned``: characters PyYAML's scanner consumed, and ``tokens`` the tokens
      it made: it looks ahead up to 1024 characters for a possible simple key, so both run
      ahead of the refusal point (and ``[[[[...`` costs about a thousand tokens, each
      checked against every open flow level: bounded, but the slowest refusal here).
    * ``events``: parser events consumed; ``depth``: the deepest nesting opened.
    * ``nodes_built``: YNode objects created; ``nodes_counted``: nodes counted against
      ``MAX_NODES``, aliases expanded (an alias bomb counts many and builds few).
    * ``bytes_expanded``: UTF-8 bytes of scalar text (keys and values) counted against
      ``MAX_EXPANDED_BYTES``, aliases expanded (a refused load counts the alias that
      crossed the budget, so this ends at most one alias's size above it).
    """

    bytes_read: int = 0
    chars_scanned: int = 0
    tokens: int = 0
    events: int = 0
    depth: int = 0
    nodes_built: int = 0
    nodes_counted: int = 0
    bytes_expanded: int = 0


@dataclass(eq=False)
class YNode:
    """One YAML node with its position.

    * ``kind``: ``"scalar"``, ``"seq"`` or ``"map"``.
    * ``loc``: where the node starts (for a mapping, its first key; for an anchored node,
      the anchor).
    * ``items`` (seq): child nodes; ``pairs`` (map): ``(key node, value node)`` in file
      order, merged keys included after the explicit ones.
    * ``value``: the plain Python value (str, int, float, bool, None, list, dict).

    An alias yields the very node it refers to, so a node may appear in several places of
    the tree; ``value`` is computed once and shared. Treat values as read-only.
    """

    kind: Kind
    loc: Location
    scalar: Any = None
    items: list[YNode] = field(default_factory=list)
    pairs: list[tuple[YNode, YNode]] = field(default_factory=list)
    size: int = 1  # nodes this one expands to, aliases included
    text_bytes: int = 0  # bytes of scalar text it expands to, aliases included
    tag: str = ""  # resolved tag of a scalar (MERGE marks a plain ``<<`` key)
    _value: Any = field(default=None, repr=False)
    _built: bool = field(default=False, repr=False)

    @property
    def value(self) -> Any:
        """The plain Python value (depth is bounded by MAX_DEPTH, so recursion is safe)."""
        if not self._built:
            if self.kind == "scalar":
                self._value = self.scalar
            elif self.kind == "seq":
                self._value = [n.value for n in self.items]
            else:
                self._value = {k.value: v.value for k, v in self.pairs}
            self._built = True
        return self._value

    @property
    def is_map(self) -> bool:
        return self.kind == "map"

    @property
    def is_seq(self) -> bool:
        return self.kind == "seq"

    @property
    def is_scalar(self) -> bool:
        return self.kind == "scalar"

    def get(self, key: Any) -> YNode | None:
        """The value node under ``key`` in a mapping, or None."""
        for k, v in self.pairs:
            if k.scalar == key and k.kind == "scalar":
                return v
        return None

    def key_node(self, key: Any) -> YNode | None:
        """The key node itself (to point at a key rather than its value), or None."""
        for k, _ in self.pairs:
            if k.scalar == key and k.kind == "scalar":
                return k
        return None

    def entries(self) -> Iterator[tuple[Any, YNode, YNode]]:
        """``(key value, key node, value node)`` for each pair of a mapping."""
        for k, v in self.pairs:
            yield k.value, k, v


def _utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (as read from the file; surrogates count as in it)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", errors="surrogatepass"))


MAX_SHOWN_LINE = 300  # characters of a source line shown under a problem


def source_line(text: str, line: int) -> str | None:
    """The text of 1-based ``line`` of ``text``; None when out of range or longer than
    :data:`MAX_SHOWN_LINE` (a megabyte-long line would drown the message)."""
    lines = text.splitlines()
    shown = lines[line - 1] if 1 <= line <= len(lines) else None
    return shown if shown is not None and len(shown) <= MAX_SHOWN_LINE else None


def problem(text: str, loc: Location | None, message: str, hint: str | None = None) -> Problem:
    """A Problem at ``loc`` with its source line filled in from ``text``."""
    return Problem(loc, message, hint, source_line(text, loc.line) if loc else None)


class _Builder:
    """Composes YNodes from parser events with an explicit stack (no recursion)."""

    def __init__(self, text: str, filename: str, stats: LoadStats) -> None:
        self.text, self.filename, self.stats = text, filename, stats
        self.anchors: dict[str, YNode] = {}
        self.open_anchors: set[str] = set()
        self.resolver = Resolver()
        self.constructor = SafeConstructor()

    def loc(self, mark: Any) -> Location:
        return Location(self.filename, mark.line + 1, mark.column + 1)

    def fail(self, loc: Location, message: str, hint: str | None = None) -> SpecError:
        return SpecError([problem(self.text, loc, message, hint)])

    def count(self, n: int, text_bytes: int, loc: Location, alias: str | None = None) -> None:
        """Count ``n`` nodes and ``text_bytes`` bytes of text (an alias: what it expands
        to) against the budgets; SpecError at ``loc``, naming the alias, past either."""
        self.stats.nodes_counted += n
        self.stats.bytes_expanded += text_bytes
        what = f"alias *{alias} ({n} nodes, {text_bytes} bytes of text): " if alias else ""
        if self.stats.nodes_counted > MAX_NODES:
            raise self.fail(loc, f"{what}document too large: more than {MAX_NODES} nodes once "
                                 "aliases are expanded", "is this an alias bomb?")
        if self.stats.bytes_expanded > MAX_EXPANDED_BYTES:
            raise self.fail(loc, f"{what}document too large: more than {MAX_EXPANDED_BYTES} "
                                 "bytes of text once aliases are expanded",
                            "refer to a large value once, not many times")

    def scalar(self, ev: yaml.ScalarEvent) -> YNode:
        loc = self.loc(ev.start_mark)
        tag = ev.tag
        if tag is not None and tag not in _SCALAR_TAGS:
            raise self.fail(loc, f"tag {tag!r} is not allowed",
                            "only plain YAML values: strings, numbers, booleans, null")
        if tag is None:
            tag = self.resolver.resolve(yaml.ScalarNode, ev.value,  # type: ignore[no-untyped-call]
                                        ev.implicit)
        if tag in (TIMESTAMP, "!", MERGE):
            value = ev.value
        else:
            try:
                value = self.constructor.construct_object(yaml.ScalarNode(tag, ev.value))
            except (ConstructorError, ValueError) as exc:
                raise self.fail(loc, f"{ev.value!r} is not a valid {tag.rsplit(':', 1)[-1]}: "
                                     f"{exc}") from None
        self.stats.nodes_built += 1
        return YNode("scalar", loc, value, tag=tag, text_bytes=_utf8_len(ev.value))

    def finish_map(self, node: YNode, merges: list[YNode]) -> None:
        """Check duplicate keys and apply merge keys (explicit keys win)."""
        seen: dict[Any, YNode] = {}
        pairs: list[tuple[YNode, YNode]] = []
        for k, v in node.pairs:
            if k.kind != "scalar":
                raise self.fail(k.loc, "mapping keys must be plain values, not lists or mappings")
            try:
                first = seen.get(k.scalar)
            except TypeError:  # pragma: no cover - scalars are hashable
                first = None
            if first is not None:
                raise self.fail(k.loc, f"duplicate key {k.scalar!r}",
                                f"first defined at line {first.loc.line}, column {first.loc.col}")
            seen[k.scalar] = k
            pairs.append((k, v))
        for m in merges:
            sources = m.items if m.is_seq else [m]
            for src in sources:
                if not src.is_map:
                    raise self.fail(src.loc,
                                    "'<<' (merge key) needs a mapping or a list of mappings")
                for k, v in src.pairs:
                    if k.scalar not in seen:
                        seen[k.scalar] = k
                        pairs.append((k, v))
        node.pairs = pairs


def _frames(builder: _Builder, loader: yaml.SafeLoader) -> YNode | None:
    """Drive the parser and build the single document's root (None for an empty stream)."""
    # stack entries: [node, anchor, pending key (maps), merge sources (maps)]
    stack: list[list[Any]] = []
    root: YNode | None = None
    documents = 0
    stats = builder.stats
    while loader.check_event():
        ev = loader.get_event()  # type: ignore[no-untyped-call]
        stats.events += 1
        if isinstance(ev, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise builder.fail(builder.loc(ev.start_mark),
                                   "only one YAML document is allowed per file")
            continue
        if isinstance(ev, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)):
            continue
        done: YNode | None = None
        if isinstance(ev, yaml.AliasEvent):
            loc = builder.loc(ev.start_mark)
            if ev.anchor in builder.open_anchors:
                raise builder.fail(loc, f"alias *{ev.anchor} refers to a node that contains it")
            target = builder.anchors.get(ev.anchor or "")
            if target is None:
                raise builder.fail(loc, f"undefined alias *{ev.anchor}")
            builder.count(target.size, target.text_bytes, loc, ev.anchor)
            done = target
        elif isinstance(ev, yaml.ScalarEvent):
            builder.count(1, _utf8_len(ev.value), builder.loc(ev.start_mark))
            done = builder.scalar(ev)
            if ev.anchor:
                builder.anchors[ev.anchor] = done
        elif isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            loc = builder.loc(ev.start_mark)
            if len(stack) >= MAX_DEPTH:
                raise builder.fail(loc, f"nesting deeper than {MAX_DEPTH} levels")
            expected = SEQ if isinstance(ev, yaml.SequenceStartEvent) else MAP
            if ev.tag is not None and ev.tag not in (expected, "!"):
                raise builder.fail(loc, f"tag {ev.tag!r} is not allowed",
                                   "only plain YAML lists and mappings")
            builder.count(1, 0, loc)
            if ev.anchor:
                builder.open_anchors.add(ev.anchor)
            kind: Kind = "seq" if expected == SEQ else "map"
            stack.append([YNode(kind, loc), ev.anchor, None, []])
            stats.nodes_built += 1
            stats.depth = max(stats.depth, len(stack))
            continue
        elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            node, anchor, _, merges = stack.pop()
            if node.is_map:
                builder.finish_map(node, merges)
                node.size = 1 + sum(k.size + v.size for k, v in node.pairs)
                node.text_bytes = sum(k.text_bytes + v.text_bytes for k, v in node.pairs)
            else:
                node.size = 1 + sum(n.size for n in node.items)
                node.text_bytes = sum(n.text_bytes for n in node.items)
            if anchor:
                builder.open_anchors.discard(anchor)
                builder.anchors[anchor] = node
            done = node
        if done is None:  # pragma: no cover - every event kind is handled above
            continue
        if not stack:
            root = done
            continue
        parent = stack[-1]
        pnode: YNode = parent[0]
        if pnode.is_seq:
            pnode.items.append(done)
        elif parent[2] is None:
            parent[2] = done
        else:
            key: YNode = parent[2]
            parent[2] = None
            if key.tag == MERGE:
                parent[3].append(done)
            else:
                pnode.pairs.append((key, done))
    return root


def load_yaml(text: str, filename: str, stats: LoadStats | None = None) -> YNode:
    """Parse one YAML document safely; raises SpecError with a located problem.

    An empty document gives a null scalar at 1:1. Repeat calls are independent; nothing
    is cached between them and nothing outside ``text`` is read. ``stats``, if given, is
    filled with the work done (see :class:`LoadStats`), whether the load succeeds or not.
    """
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_BYTES:
        raise SpecError([problem(text, Location(filename, 1, 1),
                                 f"file too large: {size} bytes (the limit is {MAX_BYTES})")])
    builder = _Builder(text, filename, stats if stats is not None else LoadStats())
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        root = _frames(builder, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = builder.loc(mark) if mark else Location(filename, 1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        hint = exc.context if exc.problem and exc.context else None
        raise SpecError([problem(text, loc, f"YAML syntax error: {what}", hint)]) from None
    except yaml.reader.ReaderError as exc:
        before = text[:exc.position]
        loc = Location(filename, before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1)
        raise SpecError([problem(text, loc, f"character U+{exc.character:04X} is not allowed "
                                            "in YAML")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([problem(text, Location(filename, 1, 1), f"YAML error: {exc}")]) from None
    finally:
        if loader is not None:
            builder.stats.chars_scanned = loader.index
            builder.stats.tokens = loader.tokens_taken + len(loader.tokens)
            loader.dispose()
    return root if root is not None else YNode("scalar", Location(filename, 1, 1), None)
