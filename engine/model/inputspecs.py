"""The loader's input half: ``inputs:`` declarations become :class:`InputSpec`.

Private to the loader. Problems are recorded in a :class:`Ctx` (with the position of the
node at fault) instead of raised. Checked here: names, types (a ``list``'s ``items``
included), enum values, flags, defaults that are no templates (a list's item by item, the
error pointing at the item), and the shortcuts ``first_of`` (an input that is a list's
first item: same type as the items, not required, no default) and ``base_of`` (an input
that is another's value without ``*.``). Cycles among defaults and shortcuts are refused.
"""
from __future__ import annotations

from typing import Any

from certwright.engine.model.context import ID, Ctx, did_you_mean
from certwright.engine.model.inputs import coerce_value, default_order
from certwright.engine.model.spec import INPUT_TYPES, ITEM_TYPES, InputSpec
from certwright.engine.model.template import references
from certwright.engine.model.yamlsafe import YNode

INPUT_KEYS = ("type", "required", "default", "values", "secret", "description", "items",
              "first_of", "base_of")


def parse_inputs(ctx: Ctx, node: YNode | None) -> dict[str, InputSpec]:
    """Every input of the ``inputs:`` mapping that could be built."""
    out: dict[str, InputSpec] = {}
    if node is None or not ctx.mapping(node, "inputs"):
        return out
    nodes: dict[str, YNode] = {}
    for name, knode, vnode in node.entries():
        if not isinstance(name, str) or not ID.match(name):
            ctx.add(knode, f"input name {name!r} must match {ID.pattern}")
            continue
        spec = _input(ctx, name, knode, vnode)
        if spec is not None:
            out[name] = spec
            nodes[name] = vnode
    for name, spec in list(out.items()):
        if not _shortcut_ok(ctx, spec, nodes[name], out):
            del out[name]
    try:
        default_order(out)
    except ValueError as exc:
        ctx.add(node, str(exc))
    return out


def _type(ctx: Ctx, tnode: YNode, what: str, allowed: tuple[str, ...]) -> str | None:
    kind = ctx.text_of(tnode, f"{what}: type")
    if kind is None:
        return None
    if kind not in allowed:
        if kind == "list":
            ctx.add(tnode, f"{what}: a list cannot hold lists")
        else:
            ctx.add(tnode, f"{what}: unknown {'item ' if allowed is ITEM_TYPES else ''}"
                           f"type {kind!r}",
                    did_you_mean(kind, list(allowed)) or f"types: {', '.join(allowed)}")
        return None
    return kind


def _values(ctx: Ctx, kind: str, vnode: YNode | None, node: YNode, knode: YNode,
            what: str) -> tuple[bool, tuple[str, ...] | None]:
    """(ok, values) of an enum; values None for any other type."""
    if kind == "enum":
        if vnode is None or not vnode.is_seq or not vnode.items or not all(
                i.is_scalar and i.value is not None for i in vnode.items):
            ctx.add(vnode or knode, f"{what}: an enum input needs 'values', a non-empty list")
            return False, None
        return True, tuple(str(i.value) for i in vnode.items)
    if vnode is not None:
        ctx.add(node.key_node("values"), f"{what}: 'values' is only for type enum")
    return True, None


def _items(ctx: Ctx, name: str, node: YNode, kind: str, what: str) -> tuple[bool, InputSpec | None]:
    """(ok, item spec) of a list input; the item spec is None for any other type."""
    inode = node.get("items")
    if kind != "list":
        if inode is not None:
            ctx.add(node.key_node("items"), f"{what}: 'items' is only for type list")
        return True, None
    if inode is None:
        ctx.add(node, f"{what}: a list input needs 'items', e.g. items: {{type: hostname}}")
        return False, None
    if not ctx.mapping(inode, f"{what}: items"):
        return False, None
    ctx.keys(inode, ("type", "values"), f"{what}: items")
    item_kind = "string"
    if (tnode := inode.get("type")) is not None:
        found = _type(ctx, tnode, f"{what}: items", ITEM_TYPES)
        if found is None:
            return False, None
        item_kind = found
    ok, values = _values(ctx, item_kind, inode.get("values"), inode, node, f"{what}: items")
    return ok, (InputSpec(name=f"{name}[]", type=item_kind, values=values, loc=inode.loc)
                if ok else None)


def _input(ctx: Ctx, name: str, knode: YNode, node: YNode) -> InputSpec | None:
    what = f"input {name!r}"
    if not ctx.mapping(node, what):
        return None
    ctx.keys(node, (*INPUT_KEYS, "enum"), what)
    kind = "string"
    tnode, vnode, enode = node.get("type"), node.get("values"), node.get("enum")
    if tnode is not None:
        found = _type(ctx, tnode, what, INPUT_TYPES)
        if found is None:
            return None
        kind = found
    if enode is not None:  # the shorthand {enum: [a, b]} means type enum with those values
        if vnode is not None or (kind != "enum" and tnode is not None):
            ctx.add(node.key_node("enum"), f"{what}: use either 'enum: [...]' or "
                                           "'type: enum' with 'values: [...]'")
        kind, vnode = "enum", enode
    flags: dict[str, Any] = {}
    for flag in ("required", "secret"):
        if (fnode := node.get(flag)) is not None:
            if not isinstance(fnode.value, bool):
                ctx.add(fnode, f"{what}: {flag} must be true or false, not {fnode.value!r}")
            flags[flag] = fnode.value is True
    for link in ("first_of", "base_of"):
        if (lnode := node.get(link)) is not None:
            flags[link] = ctx.text_of(lnode, f"{what}: {link}")
    ok, values = _values(ctx, kind, vnode, node, knode, what)
    ok_items, items = _items(ctx, name, node, kind, what)
    if not (ok and ok_items):
        return None
    desc = node.get("description")
    spec = InputSpec(name=name, type=kind, values=values, loc=knode.loc, items=items,
                     description=(ctx.text_of(desc, f"{what}: description") or "") if desc else "",
                     **flags)
    dnode = node.get("default")
    if dnode is None or dnode.value is None:  # `default: ~` means no default
        return spec
    _check_default(ctx, spec, dnode, what)
    ctx.templated.append((dnode, f"{what}: default", "inputs"))
    return InputSpec(name=name, type=kind, required=spec.required, default=dnode.value,
                     has_default=True, values=values, secret=spec.secret, items=items,
                     description=spec.description, loc=knode.loc, first_of=spec.first_of,
                     base_of=spec.base_of)


def _check_default(ctx: Ctx, spec: InputSpec, dnode: YNode, what: str) -> None:
    """A default that is no template must be a valid value (a list's, item by item, each
    problem pointing at its item)."""
    if references(dnode.value):
        return  # rendered and checked at run time
    if spec.items is not None and dnode.is_seq:
        bad = False
        for number, inode in enumerate(dnode.items, start=1):
            try:
                coerce_value(spec.items, inode.value)
            except ValueError as exc:
                ctx.add(inode, f"{what}: default item {number} ({inode.value!r}) is not "
                               f"a valid {spec.items.type}: {exc}")
                bad = True
        if bad:
            return
    try:
        coerce_value(spec, dnode.value)
    except ValueError as exc:
        ctx.add(dnode, f"{what}: default {dnode.value!r} is not a valid {spec.type_name}: {exc}")


def _shortcut_ok(ctx: Ctx, spec: InputSpec, node: YNode, inputs: dict[str, InputSpec]) -> bool:
    """Whether ``first_of``/``base_of`` name a fitting input; reports each problem."""
    ok = True
    what = f"input {spec.name!r}"
    for link, target_name in (("first_of", spec.first_of), ("base_of", spec.base_of)):
        if target_name is None:
            continue
        where = node.get(link) or node
        target = inputs.get(target_name)
        if target is None:
            ctx.add(where, f"{what}: {link} names no input {target_name!r}",
                    did_you_mean(target_name, [n for n in inputs if n != spec.name]))
            ok = False
        elif link == "first_of" and target.items is None:
            ctx.add(where, f"{what}: first_of: {target_name!r} is no list")
            ok = False
        elif link == "first_of" and target.items is not None and \
                target.items.type != spec.type:
            ctx.add(where, f"{what}: first_of: {target_name!r} holds {target.items.type} "
                           f"items, not {spec.type}")
            ok = False
        if node.get("default") is not None:
            ctx.add(node.key_node("default"), f"{what}: takes its value from {target_name!r} "
                                              f"({link}), so it has no default")
            ok = False
        if spec.required:
            ctx.add(node.key_node("required"), f"{what}: cannot be required: it is taken "
                                               f"from {target_name!r} ({link})")
            ok = False
    if spec.first_of and spec.base_of:
        ctx.add(node, f"{what}: use first_of or base_of, not both")
        ok = False
    return ok
