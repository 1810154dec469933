"""Typed run inputs: turn ``--set key=value`` strings into values, apply defaults, redact.

Types (``engine.spec.INPUT_TYPES``) and what a value becomes:

* ``string``: the text (numbers from YAML defaults become their text).
* ``int``: an integer (``"42"``, ``"-3"``); booleans are refused.
* ``bool``: ``true/false/yes/no/on/off/1/0`` (any case).
* ``duration``: float seconds (``90``, ``"90s"``, ``"2d"``, ``"1h30m"``).
* ``hostname``: lower-cased ASCII (IDNA A-labels for non-ASCII names); LDH labels of 1-63
  characters, at most 253 in all, no trailing dot, at least two labels unless ``localhost``.
* ``wildcard``: a host name, or ``*.`` and a host name of at least two labels that is no
  public suffix (``*.co.uk`` is refused by :func:`certwright.domains.find_public_suffix`,
  the check the CA makes too).
* ``list``: items of the type ``items`` declares, from a list or from comma-separated text
  (``a.example, www.a.example``: spaces around items trimmed, an empty item refused); each
  item converted as its type says, an item repeated after conversion kept once, in first
  place. A required list needs at least one item.
* ``email``: ``local@hostname`` exactly: no display name, no spaces, one ``@``; the local
  part is a dot-atom of at most 64 characters; the domain follows the hostname rules.
* ``path``: ``~`` expanded and made absolute (not resolved: symlinks are kept).
* ``enum``: one of the declared ``values``.

Defaults may refer to other inputs (``"webmaster@${domain}"``); they are rendered in
dependency order, then converted like a given value. An input with ``first_of: LIST`` is
the list's first item: given alone it stands for a list of one, given with the list it must
be its first item, otherwise it takes that item. One with ``base_of: NAME`` is that input's
value without a leading ``*.`` (a mail address or a TLS server name needs a host).

Hazard: given values are never rendered, so a user cannot smuggle a ``${env.SECRET}`` into
a run through ``--set``.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from typing import Any

from certwright.domains import find_public_suffix
from certwright.engine.model.spec import InputSpec, PipelineSpec, parse_duration
from certwright.engine.model.template import UnresolvedReference, references, render
from certwright.errors import InputError

SECRET = "<secret>"  # noqa: S105 - what a secret value is shown as, not a password
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*$")
_INT = re.compile(r"^[+-]?[0-9]+$")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {type(value).__name__}")
    return value


def check_hostname(value: Any) -> str:
    """A lower-cased ASCII host name; raises ValueError with the rule broken."""
    name = _text(value, "a host name").lower()
    if not name:
        raise ValueError("a host name cannot be empty")
    if name.endswith("."):
        raise ValueError("a host name must not end with a dot")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a valid international host name ({exc})") from None
    if len(ascii_name) > 253:
        raise ValueError(f"a host name has at most 253 characters, this has {len(ascii_name)}")
    labels = ascii_name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(f"label {label!r} must be 1-63 letters, digits or hyphens, "
                             "not starting or ending with a hyphen")
    if len(labels) < 2 and ascii_name != "localhost":
        raise ValueError("a host name needs at least two labels (e.g. example.org)")
    return ascii_name


def check_email(value: Any) -> str:
    """``local@hostname`` with the domain normalised; raises ValueError with the rule."""
    text = _text(value, "an email address")
    if any(c.isspace() for c in text):
        raise ValueError("an email address cannot contain spaces")
    if text.count("@") != 1:
        raise ValueError("an email address has exactly one '@' (local@domain)")
    local, _, domain = text.partition("@")
    if not local or len(local) > 64 or not _LOCAL.match(local):
        raise ValueError(f"the part before '@' ({local!r}) must be 1-64 letters, digits or "
                         "!#$%&'*+/=?^_`{|}~- separated by single dots (no display names)")
    try:
        host = check_hostname(domain)
    except ValueError as exc:
        raise ValueError(f"the domain after '@': {exc}") from None
    return f"{local}@{host}"


def check_wildcard(value: Any) -> str:
    """A host name, or ``*.`` and a host name that is no public suffix; raises ValueError."""
    name = _text(value, "a domain name").strip().lower()
    if "*" not in name:
        return check_hostname(name)
    base = name[2:]
    if not name.startswith("*.") or "*" in base:
        raise ValueError("a wildcard is allowed only as the whole leftmost label "
                         "('*.example.org')")
    if "." not in base:
        raise ValueError("a wildcard needs at least two labels after '*.' ('*.example.org')")
    base = check_hostname(base)
    suffix = find_public_suffix(base)
    if suffix is not None:
        raise ValueError(f"*.{base} is a wildcard directly on the public suffix {suffix}: "
                         "nobody owns every name under it")
    return f"*.{base}"


def _list(spec: InputSpec, value: Any) -> list[Any]:
    """The items of a list input, each converted; raises ValueError naming the item."""
    if isinstance(value, str):
        raw: list[Any] = [p.strip() for p in value.split(",")] if value.strip() else []
    elif isinstance(value, (list, tuple)):
        raw = list(value)
    else:
        raise ValueError(f"expected a list or comma-separated text, not {type(value).__name__}")
    item = spec.items or InputSpec(name=spec.name)
    out: list[Any] = []
    for number, part in enumerate(raw, start=1):
        if part is None or (isinstance(part, str) and not part.strip()):
            raise ValueError(f"item {number} is empty")
        if isinstance(part, (list, tuple, dict)):
            raise ValueError(f"item {number} is a {type(part).__name__}, not a {item.type}")
        try:
            converted = coerce_value(item, part)
        except ValueError as exc:
            raise ValueError(f"item {number} ({part!r}): {exc}") from None
        if converted not in out:
            out.append(converted)
    if spec.required and not out:
        raise ValueError("a list of at least one item is needed")
    return out


def coerce_value(spec: InputSpec, value: Any) -> Any:
    """Convert one value to ``spec.type``; raises ValueError with the reason."""
    kind = spec.type
    if value is None:
        raise ValueError("a value is needed")
    if kind == "list":
        return _list(spec, value)
    if kind == "string":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"expected text, not {type(value).__name__}")
        return str(value)
    if kind == "int":
        if isinstance(value, (bool, float)):
            raise ValueError("expected a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT.match(value.strip()):
            return int(value.strip())
        raise ValueError("expected a whole number such as 42")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        word = str(value).strip().lower() if isinstance(value, str) else None
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError("expected true/false, yes/no, on/off or 1/0")
    if kind == "duration":
        return parse_duration(value)
    if kind == "hostname":
        return check_hostname(value)
    if kind == "wildcard":
        return check_wildcard(value)
    if kind == "email":
        return check_email(value)
    if kind == "path":
        text = _text(value, "a path")
        if not text or "\0" in text:
            raise ValueError("a path cannot be empty or contain NUL")
        return os.path.abspath(os.path.expanduser(text))
    if kind == "enum":
        options = spec.values or ()
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) \
                and str(value) in options:
            return str(value)
        raise ValueError(f"expected one of {', '.join(options)}")
    raise ValueError(f"unknown input type {kind!r}")


def input_dependencies(spec: InputSpec, names: Mapping[str, Any]) -> list[str]:
    """Names of other inputs that ``spec``'s default refers to (``NAME`` or ``inputs.NAME``)."""
    out: list[str] = []
    derived = [n for n in (spec.first_of, spec.base_of) if n]
    for ref in [*derived, *(references(spec.default) if spec.has_default else [])]:
        name = ref.removeprefix("inputs.")
        if name in names and name not in out:
            out.append(name)
    return out


def default_order(inputs: Mapping[str, InputSpec]) -> list[str]:
    """Input names so that each comes after the inputs its default refers to.

    Raises ValueError naming the inputs of a cycle.
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for start in inputs:
        if start in state:
            continue
        stack: list[tuple[str, list[str]]] = [(start, input_dependencies(inputs[start], inputs))]
        state[start] = 1
        while stack:
            name, deps = stack[-1]
            if deps:
                dep = deps.pop(0)
                if state.get(dep) == 1:
                    cycle = [n for n, _ in stack]
                    cycle = [*cycle[cycle.index(dep):], dep]
                    raise ValueError("input defaults refer to each other in a cycle: "
                                     + " -> ".join(cycle))
                if dep not in state:
                    state[dep] = 1
                    stack.append((dep, input_dependencies(inputs[dep], inputs)))
                continue
            stack.pop()
            state[name] = 2
            order.append(name)
    return order


def coerce_inputs(spec: PipelineSpec, given: Mapping[str, str | Any]) -> dict[str, Any]:
    """Typed values for every declared input, in declaration order.

    ``given`` holds values from ``--set`` (strings) or already-typed values. Inputs with no
    value, no default and not required come out as None. Raises :class:`InputError`
    naming every unknown key, missing required input, and value breaking its type's rule.
    """
    errors: list[str] = []
    for key in given:
        if key not in spec.inputs:
            close = difflib.get_close_matches(key, list(spec.inputs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(spec.inputs) or "none"
            errors.append(f"unknown input {key!r}{hint}; this pipeline takes: {known}")
    supplied = {name for name, value in given.items() if value is not None}
    values: dict[str, Any] = {}
    for name, inp in spec.inputs.items():
        if name in supplied:
            try:
                values[name] = coerce_value(inp, given[name])
            except ValueError as exc:
                errors.append(f"input {name!r} ({inp.type_name}): {given[name]!r} is not "
                              f"valid: {exc}")
    _first_items(spec, supplied, values, errors)
    for name, inp in spec.inputs.items():
        if inp.required and name not in supplied and name not in values and not any(
                s.first_of == name and s.name in supplied for s in spec.inputs.values()):
            errors.append(_missing(spec, inp))
    try:
        order = default_order(spec.inputs)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    namespace = {"inputs": values, "env": dict(os.environ)}
    for name in order:
        inp = spec.inputs[name]
        if name in values or name in given or inp.required:
            continue
        if inp.first_of or inp.base_of:
            _derive(inp, values, errors)
            continue
        if not inp.has_default:
            continue
        try:
            rendered = render(inp.default, namespace)
        except UnresolvedReference as exc:
            errors.append(f"input {name!r}: its default {inp.default!r} refers to "
                          f"${{{exc.name}}}, which has no value")
            continue
        try:
            values[name] = coerce_value(inp, rendered)
        except ValueError as exc:
            errors.append(f"input {name!r} ({inp.type_name}): default {rendered!r} is not "
                          f"valid: {exc}")
    if errors:
        raise InputError("; ".join(errors))
    return {name: values.get(name) for name in spec.inputs}


def _missing(spec: PipelineSpec, inp: InputSpec) -> str:
    """The message for a required input nobody gave: how to give it (or its shortcut)."""
    how = f"--set {inp.name}=VALUE" if inp.type != "list" else f"--set {inp.name}=VALUE,VALUE"
    shortcuts = [s.name for s in spec.inputs.values() if s.first_of == inp.name]
    also = "".join(f" (or --set {s}=VALUE for one)" for s in shortcuts)
    return f"missing required input {inp.name!r} ({inp.type_name}): give it with {how}{also}"


def _first_items(spec: PipelineSpec, supplied: set[str], values: dict[str, Any],
                 errors: list[str]) -> None:
    """A given ``first_of`` input: a list of one when its list is not given, else checked."""
    for name, inp in spec.inputs.items():
        target = spec.inputs.get(inp.first_of or "")
        if target is None or name not in values:
            continue
        if target.name not in supplied:
            try:
                values[target.name] = coerce_value(target, [values[name]])
            except ValueError as exc:
                errors.append(f"input {name!r} ({inp.type_name}), the first of "
                              f"{target.name!r}: {exc}")
        elif target.name in values and values[target.name][:1] != [values[name]]:
            first = values[target.name][0] if values[target.name] else None
            errors.append(f"input {name!r} is the first of {target.name!r}, but {name}="
                          f"{values[name]!r} and {target.name} starts with {first!r}: give "
                          f"one of them (or the same name first)")


def _derive(inp: InputSpec, values: dict[str, Any], errors: list[str]) -> None:
    """Fill a ``first_of`` or ``base_of`` input from its source, when that has a value."""
    source = values.get(inp.first_of or inp.base_of or "")
    if inp.first_of:
        if isinstance(source, list) and source:
            values[inp.name] = source[0]
        return
    if source is None:
        return
    try:
        values[inp.name] = coerce_value(inp, str(source).removeprefix("*."))
    except ValueError as exc:
        errors.append(f"input {inp.name!r} ({inp.type_name}), from {inp.base_of!r}: {exc}")


def redact_inputs(spec: PipelineSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with every ``secret: true`` input's value shown as ``<secret>``."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        inp = spec.inputs.get(name)
        out[name] = SECRET if inp is not None and inp.secret and value is not None else value
    return out
