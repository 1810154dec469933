"""The loader's step half: steps, waits, retry policies and ``when:`` conditions.

Private to the loader (``engine.model.states`` calls it for each state). Every function
records problems in a :class:`Ctx` instead of raising and returns None where the input
was too broken to build from. A step's parameters are checked against its own JSON
Schema; a step whose module cannot be imported here counts as known but unchecked.
"""
from __future__ import annotations

import re
from typing import Any

from certwright.engine.model.context import ID, Ctx, did_you_mean
from certwright.engine.model.params import wording
from certwright.engine.model.spec import NO_RETRY, Condition, RetryPolicy, StepSpec
from certwright.engine.model.yamlsafe import YNode
from certwright.errors import Location

STEP_KEYS = ("step", "id", "with", "retry", "timeout", "when")
RETRY_KEYS = ("max_attempts", "initial_delay", "max_delay", "multiplier", "jitter")
WAIT_KINDS = ("mail", "file", "until")
PAIR_OPS = ("equals", "not_equals", "matches", "in")
OPS = (*PAIR_OPS, "truthy", "falsy", "all", "any", "not")


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
    # imported here: a pipeline read from the spec cache is not parsed, and a one-shot
    # run then never imports jsonschema (~0.15 s)
    import jsonschema
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


def parse_step(ctx: Ctx, state: str, item: YNode) -> StepSpec | None:
    """One item of a state's ``run:`` list (a name, or a mapping with ``step:``)."""
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
        ctx.add(name_node, f"{what}: unknown step {name!r}", did_you_mean(name, ctx.step_names))
    else:
        _schema_errors(ctx, f"{what}: step {name!r}", name, params, loc)
    if params is not None:
        ctx.templated.append((params, f"{what}: step {step_id!r}", "all"))
    ctx.step_ids.add(step_id)
    return StepSpec(name=name, id=step_id, params=params.value if params is not None else {},
                    loc=loc, **extra)


def parse_wait(ctx: Ctx, state: str, node: YNode) -> StepSpec | None:
    """A state's ``wait:`` (exactly one of mail, file, until) as its ``wait.KIND`` step."""
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
