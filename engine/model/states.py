"""The loader's state half: states, their transitions, timeouts and retry loops.

Private to ``engine.model.loader``; the steps of a state are built by
``engine.model.stepspecs``. Every function here records problems in a :class:`Ctx`
instead of raising, so that one load reports everything wrong with a file at once; a
function returns None (or skips a part) where the input was too broken to build from.
"""
from __future__ import annotations

from typing import Any

from certwright.engine.model.context import Ctx
from certwright.engine.model.spec import LoopSpec, StateSpec, StepSpec, TimeoutSpec, TransitionSpec
from certwright.engine.model.stepspecs import condition, parse_step, parse_wait
from certwright.engine.model.yamlsafe import YNode

STATE_KEYS = ("description", "run", "wait", "next", "on_error", "timeout", "retry", "final")
NOT_IN_FINAL = ("run", "wait", "next", "timeout", "retry", "on_error")
NOT_IN_LOOP = ("run", "wait", "next")


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
    if (wnode := node.get("wait")) is not None and (wstep := parse_wait(ctx, name, wnode)):
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
        fields["steps"] = [s for s in (parse_step(ctx, name, i) for i in vnode.items) if s]
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
