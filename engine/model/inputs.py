"""Typed run inputs: turn ``--set key=value`` strings into values, apply defaults, redact.

Types (``engine.spec.INPUT_TYPES``) and what a value becomes:

* ``string``: the text (numbers from YAML defaults become their text).
* ``int``: an integer (``"42"``, ``"-3"``); booleans are refused.
* ``bool``: ``true/false/yes/no/on/off/1/0`` (any case).
* ``duration``: float seconds (``90``, ``"90s"``, ``"2d"``, ``"1h30m"``).
* ``hostname``: lower-cased ASCII (IDNA A-labels for non-ASCII names); LDH labels of 1-63
  characters, at most 253 in all, no trailing dot, at least two labels unless ``localhost``.
* ``email``: ``local@hostname`` exactly: no display name, no spaces, one ``@``; the local
  part is a dot-atom of at most 64 characters; the domain follows the hostname rules.
* ``path``: ``~`` expanded and made absolute (not resolved: symlinks are kept).
* ``enum``: one of the declared ``values``.

Defaults may refer to other inputs (``"webmaster@${domain}"``); they are rendered in
dependency order, then converted like a given value. Hazard: given values are never rendered,
so a user cannot smuggle a ``${env.SECRET}`` into a run through ``--set``.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from typing import Any

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


def coerce_value(spec: InputSpec, value: Any) -> Any:
    """Convert one value to ``spec.type``; raises ValueError with the reason."""
    kind = spec.type
    if value is None:
        raise ValueError("a value is needed")
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
    for ref in references(spec.default) if spec.has_default else []:
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
    values: dict[str, Any] = {}
    for name, inp in spec.inputs.items():
        if name in given and given[name] is not None:
            try:
                values[name] = coerce_value(inp, given[name])
            except ValueError as exc:
                errors.append(f"input {name!r} ({inp.type}): {given[name]!r} is not valid: {exc}")
        elif inp.required:
            errors.append(f"missing required input {name!r} ({inp.type}): "
                          f"give it with --set {name}=VALUE")
    try:
        order = default_order(spec.inputs)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    namespace = {"inputs": values, "env": dict(os.environ)}
    for name in order:
        inp = spec.inputs[name]
        if name in values or name in given or not inp.has_default or inp.required:
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
            errors.append(f"input {name!r} ({inp.type}): default {rendered!r} is not valid: {exc}")
    if errors:
        raise InputError("; ".join(errors))
    return {name: values.get(name) for name in spec.inputs}


def redact_inputs(spec: PipelineSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with every ``secret: true`` input's value shown as ``<secret>``."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        inp = spec.inputs.get(name)
        out[name] = SECRET if inp is not None and inp.secret and value is not None else value
    return out
