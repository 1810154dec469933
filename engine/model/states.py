"""The loader's state half: states, steps, transitions and conditions from YAML nodes.

Private to ``engine.loader``. Every function here records problems in a :class:`Ctx`
instead of raising, so that one load reports everything wrong with a file at once; a
function returns None (or skips a part) where the input was too broken to build from.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Callable

import jsonschema

from certwright.errors import Location, Problem
from certwright.engine.model.params import wording
from certwright.engine.model.spec import (NO_RETRY, Condition, LoopSpec, RetryPolicy, StateSpec, StepSpec,
                         TimeoutSpec, TransitionSpec, parse_duration)
from certwright.engine.model.yamlsafe import YNode, problem
from certwright.engine.plugins.registry import Registry

ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STATE_KEYS = ("description", "run", "wait", "next", "on_error", "timeout", "retry", "final")
STEP_KEYS = ("step", "id", "with", "retry", "timeout", "when")
RETRY_KEYS = ("max_attempts", "initial_delay", "max_delay", "multiplier", "jitter")
WAIT_KINDS = ("mail", "file", "until")
PAIR_OPS = ("equals", "not_equals", "matches", "in")
OPS = PAIR_OPS + ("truthy", "falsy", "all", "any", "not")
NOT_IN_FINAL = ("run", "wait", "next", "timeout", "retry", "on_error")
NOT_IN_LOOP = ("run", "wait", "next")


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
        self._names = registry.names()
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

    def number(self, node: YNode, what: str, ok: Callable[[float], bool], rule: str) -> float | None:
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


def _retry_policy(ctx: Ctx, node: YNode, what: str) -> RetryPolicy:
    if not ctx.mapping(node, f"{what}: retry"):
        return NO_RETRY
    ctx.keys(node, RETRY_KEYS, f"{what}: retry")
    base = RetryPolicy()
    fields: dict[str, Any] = {}
    for key, _, vnode in node.entries():
        label = f"{what}: retry.{key}"
        if key == "max_attempts":
            fields[key] = ctx.integer(vnode, label, 1)
        elif key in ("initial_delay", "max_delay"):
            fields[key] = ctx.duration(vnode, label)
        elif key == "multiplier":
            fields[key] = ctx.number(vnode, label, lambda x: x >= 1, ">= 1")
        elif key == "jitter":
            fields[key] = ctx.number(vnode, label, lambda x: 0 <= x <= 1, "from 0 to 1")
    return RetryPolicy(**{k: (getattr(base, k) if fields.get(k) is None else fields[k])
                          for k in RETRY_KEYS})


def _schema_errors(ctx: Ctx, what: str, name: str, params: YNode | None,
                   fallback: Location) -> None:
    """Check ``params`` against the step's schema; a step that cannot be imported is skipped."""
    try:
        schema = ctx.registry.schema(name)
    except ImportError:
        return  # the name is known but its module is missing here: check at run time
    value = params.value if params is not None else {}
    validator = jsonschema.Draft202012Validator(dict(schema))
    for err in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.path))):
        if isinstance(err.instance, str) and "${" in err.instance:
            continue  # a template: resolved and checked at run time
        node = params
        for part in err.absolute_path:
            if node is None:
                break
            if node.is_map:
                node = node.get(part) or node
            elif node.is_seq and isinstance(part, int) and part < len(node.items):
                node = node.items[part]
        where = ".".join(str(p) for p in err.absolute_path)
        ctx.add(node or fallback,
                f"{what}: bad parameter{' ' + where if where else 's'}: {wording(err)}")


def _step(ctx: Ctx, state: str, item: YNode) -> StepSpec | None:
    what = f"state {state!r}"
    params: YNode | None = None
    extra: dict[str, Any] = {}
    if item.is_scalar:
        name_node = item
    elif item.is_map:
        ctx.keys(item, STEP_KEYS, f"{what}: step")
        found = item.get("step")
        if found is None:
            ctx.add(item, f"{what}: a step needs 'step: NAME'")
            return None
        name_node, params = found, item.get("with")
    else:
        ctx.add(item, f"{what}: a step is a name or a mapping with 'step:'")
        return None
    name = ctx.text_of(name_node, f"{what}: step name")
    if name is None:
        return None
    step_id = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if item.is_map:
        if (id_node := item.get("id")) is not None:
            given = ctx.text_of(id_node, f"{what}: step id")
            if given is not None and not ID.match(given):
                ctx.add(id_node, f"{what}: step id {given!r} must match {ID.pattern}")
            step_id = given or step_id
        if params is not None and not ctx.mapping(params, f"{what}: step {name!r}: with"):
            params = None
        if (rnode := item.get("retry")) is not None:
            extra["retry"] = _retry_policy(ctx, rnode, f"{what}: step {name!r}")
        if (tnode := item.get("timeout")) is not None:
            extra["timeout"] = ctx.duration(tnode, f"{what}: step {name!r}: timeout")
        if (wnode := item.get("when")) is not None:
            ctx.templated.append((wnode, f"{what}: step {step_id!r}: when", "all"))
            extra["when"] = condition(ctx, state, wnode)
    return _checked_step(ctx, state, name, name_node, step_id, params, item.loc, extra)


def _checked_step(ctx: Ctx, state: str, name: str, name_node: YNode, step_id: str,
                  params: YNode | None, loc: Location, extra: dict[str, Any]) -> StepSpec:
    what = f"state {state!r}"
    if name not in ctx.registry:
        ctx.add(name_node, f"{what}: unknown step {name!r}", did_you_mean(name, ctx._names))
    else:
        _schema_errors(ctx, f"{what}: step {name!r}", name, params, loc)
    if params is not None:
        ctx.templated.append((params, f"{what}: step {step_id!r}", "all"))
    ctx.step_ids.add(step_id)
    return StepSpec(name=name, id=step_id, params=params.value if params is not None else {},
                    loc=loc, **extra)


def _wait(ctx: Ctx, state: str, node: YNode) -> StepSpec | None:
    what = f"state {state!r}: wait"
    if not ctx.mapping(node, what):
        return None
    ctx.keys(node, WAIT_KINDS, what)
    kinds = [(k, kn, v) for k, kn, v in node.entries() if k in WAIT_KINDS]
    if len(kinds) != 1:
        ctx.add(kinds[1][1] if kinds else node,
                f"{what} needs exactly one of: {', '.join(WAIT_KINDS)}")
        return None
    kind, knode, vnode = kinds[0]
    if kind == "until":
        params = YNode("map", vnode.loc, pairs=[(YNode("scalar", vnode.loc, "at"), vnode)])
    elif ctx.mapping(vnode, f"{what}.{kind}"):
        params = vnode
    else:
        return None
    return _checked_step(ctx, state, f"wait.{kind}", knode, "wait", params, knode.loc, {})


def condition(ctx: Ctx, state: str, node: YNode) -> Condition | None:
    """A ``when:`` mapping as a Condition (nested ones too); None after a problem."""
    what = f"state {state!r}: when"
    if not node.is_map or len(node.pairs) != 1:
        ctx.add(node, f"{what}: a condition is a mapping with exactly one of: {', '.join(OPS)}")
        return None
    op, knode, vnode = next(node.entries())
    if op not in OPS:
        ctx.add(knode, f"{what}: unknown condition {op!r}", did_you_mean(str(op), list(OPS)))
        return None
    args: tuple[Any, ...]
    if op in PAIR_OPS:
        if not vnode.is_seq or len(vnode.items) != 2:
            ctx.add(vnode, f"{what}: {op} takes a list of two values")
            return None
        first, second = vnode.items
        args = (first.value, second.value)
        if op == "matches":
            pattern = ctx.text_of(second, f"{what}: matches regex")
            if pattern is not None and "${" not in pattern:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    ctx.add(second, f"{what}: bad regex {pattern!r}: {exc}")
        if op == "in" and not second.is_seq and not (
                isinstance(second.value, str) and "${" in second.value):
            ctx.add(second, f"{what}: 'in' needs a list of values as its second item")
    elif op in ("all", "any"):
        if not vnode.is_seq or not vnode.items:
            ctx.add(vnode, f"{what}: {op} takes a non-empty list of conditions")
            return None
        parts = [condition(ctx, state, c) for c in vnode.items]
        if any(p is None for p in parts):
            return None
        args = tuple(parts)
    elif op == "not":
        inner = condition(ctx, state, vnode)
        if inner is None:
            return None
        args = (inner,)
    else:
        args = (vnode.value,)
    return Condition(str(op), args, knode.loc)


def _next(ctx: Ctx, state: str, node: YNode) -> tuple[TransitionSpec, ...]:
    what = f"state {state!r}"
    if node.is_scalar:
        to = ctx.target(state, "next", node)
        return (TransitionSpec(to, None, node.loc),) if to else ()
    if not node.is_seq or not node.items:
        ctx.add(node, f"{what}: next must be a state name or a non-empty list of "
                      "{to: STATE, when: CONDITION}")
        return ()
    out: list[TransitionSpec] = []
    for i, item in enumerate(node.items):
        when_node: YNode | None = None
        if item.is_scalar:
            to_node: YNode | None = item
        elif item.is_map:
            ctx.keys(item, ("to", "when"), f"{what}: next item")
            to_node, when_node = item.get("to"), item.get("when")
            if to_node is None:
                ctx.add(item, f"{what}: next item needs 'to: STATE'")
        else:
            ctx.add(item, f"{what}: a next item is a state name or {{to: STATE, when: ...}}")
            continue
        if when_node is None and i < len(node.items) - 1:
            ctx.add(item, f"{what}: only the last item of 'next' may leave out 'when'",
                    "the items after it could never be taken")
        cond = None
        if when_node is not None:
            ctx.templated.append((when_node, f"{what}: when", "all"))
            cond = condition(ctx, state, when_node)
        to = ctx.target(state, "next", to_node) if to_node is not None else None
        if to is not None:
            out.append(TransitionSpec(to, cond, item.loc))
    return tuple(out)


def _final(ctx: Ctx, state: str, node: YNode) -> str | None:
    v = node.value
    if v is True or v == "success":
        return "success"
    if v == "failure":
        return "failure"
    if v is False:
        return None
    ctx.add(node, f"state {state!r}: final must be true, success or failure, not {v!r}")
    return "failure"  # meant as final: spare the user follow-on "no final state" problems


def parse_state(ctx: Ctx, name: str, name_node: YNode, node: YNode) -> StateSpec | None:
    """One entry of ``states:`` (``name_node`` its key, ``node`` its value) as a StateSpec."""
    what = f"state {name!r}"
    if not ctx.mapping(node, what):
        return None
    ctx.keys(node, STATE_KEYS, what)
    fields: dict[str, Any] = {}
    for key, _, vnode in node.entries():
        before = len(ctx.problems)
        _state_field(ctx, name, key, vnode, fields)
        if key in ("next", "on_error", "timeout", "retry") and len(ctx.problems) > before:
            ctx.edges_broken = True
    steps = list(fields.pop("steps", []))
    if (wnode := node.get("wait")) is not None and (wstep := _wait(ctx, name, wnode)):
        steps.append(wstep)
    seen: dict[str, StepSpec] = {}
    for step in steps:
        if step.id in seen:
            first = seen[step.id].loc
            ctx.add(step.loc, f"{what}: duplicate step id {step.id!r}",
                    f"first used at line {first.line}; give one an 'id:'" if first else None)
        seen[step.id] = step
    _shape(ctx, name, name_node, node, fields.get("final"))
    return StateSpec(name=name, steps=tuple(steps), loc=name_node.loc, **fields)


def _state_field(ctx: Ctx, name: str, key: Any, vnode: YNode, fields: dict[str, Any]) -> None:
    """Build the StateSpec field for one key of a state into ``fields``."""
    what = f"state {name!r}"
    if key == "description":
        fields["description"] = ctx.text_of(vnode, f"{what}: description") or ""
    elif key == "final":
        fields["final"] = _final(ctx, name, vnode)
    elif key == "run":
        if not vnode.is_seq:
            ctx.add(vnode, f"{what}: run must be a list of steps")
            return
        fields["steps"] = [s for s in (_step(ctx, name, i) for i in vnode.items) if s]
    elif key == "next":
        fields["next"] = _next(ctx, name, vnode)
    elif key == "on_error":
        fields["on_error"] = ctx.target(name, "on_error", vnode)
    elif key == "timeout" and ctx.mapping(vnode, f"{what}: timeout"):
        ctx.keys(vnode, ("after", "at", "to"), f"{what}: timeout")
        after, at, to = vnode.get("after"), vnode.get("at"), vnode.get("to")
        if (after is None and at is None) or to is None:
            ctx.add(vnode, f"{what}: timeout needs 'to' and 'after' or 'at' (or both)")
            return
        secs = ctx.duration(after, f"{what}: timeout.after") if after is not None else None
        when = None
        if at is not None:
            when = ctx.text_of(at, f"{what}: timeout.at")
            if when is not None:
                ctx.templated.append((at, f"{what}: timeout.at", "all"))
        target = ctx.target(name, "timeout.to", to)
        if (secs is not None or when is not None) and target is not None:
            fields["timeout"] = TimeoutSpec(secs, target, vnode.loc, when)
    elif key == "retry" and ctx.mapping(vnode, f"{what}: retry"):
        fields["loop"] = _loop(ctx, name, vnode)


def _loop(ctx: Ctx, state: str, node: YNode) -> LoopSpec | None:
    what = f"state {state!r}: retry"
    ctx.keys(node, ("max", "to", "else"), what)
    max_node, to_node, else_node = node.get("max"), node.get("to"), node.get("else")
    if max_node is None or to_node is None or else_node is None:
        missing = [k for k in ("max", "to", "else") if node.get(k) is None]
        ctx.add(node, f"{what} needs max, to and else (missing: {', '.join(missing)})")
        return None
    count = ctx.integer(max_node, f"{what}.max", 0)
    to = ctx.target(state, "retry.to", to_node)
    other = ctx.target(state, "retry.else", else_node)
    if count is None or to is None or other is None:
        return None
    return LoopSpec(count, to, other, node.loc)


def _shape(ctx: Ctx, name: str, name_node: YNode, node: YNode, final: str | None) -> None:
    """Final states and loop states may not have steps or edges; others need a way on."""
    if final:
        for key in NOT_IN_FINAL:
            if (k := node.key_node(key)) is not None:
                ctx.add(k, f"final state {name!r} cannot have {key!r}",
                        "a final state ends the run; remove it or drop 'final'")
    elif node.get("retry") is not None:
        for key in NOT_IN_LOOP:
            if (k := node.key_node(key)) is not None:
                ctx.add(k, f"state {name!r} is a retry loop and cannot have {key!r}",
                        "a loop state only counts and moves on; put steps in the state it leads to")
    elif node.get("next") is None:
        ctx.add(name_node, f"state {name!r} has no 'next'",
                "add 'next: STATE', a 'retry:' loop, or make it 'final: true'")
