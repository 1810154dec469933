"""``${...}`` references: find them (for validation) and resolve them (at run time).

No ``eval``: a reference is a dotted name looked up in a namespace of plain dicts.
``$${`` escapes a literal ``${``. A value that is exactly one reference keeps the referenced
value's type (``"${count}"`` with count=3 gives 3); otherwise the result is a string.

Names: ``NAME`` or ``inputs.NAME`` (a run input), ``steps.ID.KEY`` (an output of an earlier
step), ``run.id``, ``run.dir``, ``run.state_dir``, ``run.pipeline``, ``run.state``,
``env.NAME`` (the process environment).

Commands are rendered differently (hazard: values are hostile, a ``--set`` or a mail's
content): :func:`render_words` splits a command template into words first and renders each
word, so a value is always one argument; :func:`render_shell` never puts a value into a
shell script at all, only a reference to an environment variable that holds it.
"""
from __future__ import annotations

import re
import shlex
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


def render_words(template: str, namespace: Mapping[str, Any],
                 get: Callable[[Mapping[str, Any], str], Any] = lookup) -> list[str]:
    """A command run without a shell: ``template`` split into words as a shell would
    (:func:`shlex.split`), then each word rendered, so a value stays inside the word it
    was written in: one argument whatever spaces or quotes it holds (``None`` gives "").

    Raises ValueError when the template's quotes do not balance, UnresolvedReference.
    """
    out: list[str] = []
    for word in shlex.split(template):
        value = render(word, namespace, get)
        out.append("" if value is None else str(value))
    return out


SHELL_VALUE_PREFIX = "CERTWRIGHT_REF_"  # environment variables holding a script's values

# How a value's variable is written in each quoting context so that the shell expands it
# as exactly one word: outside quotes double-quoted, inside the author's double quotes bare,
# inside single quotes by closing them around a double-quoted expansion.
_PLAIN, _SUB, _BACKTICK, _COMMENT, _SQ, _DQ = "plain", "(", "`", "#", "'", '"'
_ARITH, _ARITH_PAREN = "((", "a("  # inside $(( )), and a parenthesis within it
_PLACED = {_DQ: "${%s}", _SQ: "'\"${%s}\"'", _ARITH: "${%s}", _ARITH_PAREN: "${%s}"}
# In arithmetic a shell evaluates what a variable holds as an expression (and bash runs
# the $(...) of an array subscript there), so a value used in it must be a whole number.
_WHOLE = re.compile(r"[+-]?[0-9]+")


def render_shell(template: str, namespace: Mapping[str, Any],
                 get: Callable[[Mapping[str, Any], str], Any] = lookup
                 ) -> tuple[str, dict[str, str]]:
    """A ``shell: true`` command: the script to run and the environment it needs.

    Each reference becomes an expansion of an environment variable (``CERTWRIGHT_REF_1``,
    one per name) whose value is the rendered value; the value itself never enters the
    script, so nothing in it is ever parsed as shell text (``x; touch F``, quotes,
    ``$(...)``, backticks), whatever quoting surrounds the reference: the way GitHub's
    hardening guide passes untrusted values to a ``run:`` script. A short scan of the
    template's quotes, ``$(...)``, backticks and comments picks the form that keeps the
    value one word (see ``_PLACED``); a construct it misreads (a here-document, a ``case``
    pattern) can cost word splitting or a literal ``${...}``, never an injection.
    ``$${`` gives the shell a literal ``${``.

    Raises UnresolvedReference for a name without a value, and ValueError for a value
    used in ``$((...))`` that is not a whole number.
    """
    out: list[str] = []
    env: dict[str, str] = {}
    names: dict[str, str] = {}
    stack = [_PLAIN]
    i, n = 0, len(template)
    while i < n:
        if template.startswith(_ESCAPE, i):
            out.append("${")
            i += len(_ESCAPE)
            continue
        m = REF.match(template, i)
        if m:
            var = names.get(m.group(1))
            if var is None:
                found = get(namespace, m.group(1))
                var = names[m.group(1)] = f"{SHELL_VALUE_PREFIX}{len(names) + 1}"
                env[var] = "" if found is None else str(found)
            if stack[-1] in (_ARITH, _ARITH_PAREN) and not _WHOLE.fullmatch(env[var]):
                raise ValueError(f"${{{m.group(1)}}} is used in shell arithmetic, $((...)), "
                                 f"but its value {env[var][:40]!r} is not a whole number")
            out.append(_PLACED.get(stack[-1], '"${%s}"') % var)
            i = m.end()
            continue
        width = _scan(template, i, stack)
        out.append(template[i:i + width])
        i += width
    return "".join(out), env


def _scan(text: str, i: int, stack: list[str]) -> int:
    """Update the quoting ``stack`` for the character at ``i``; how many characters to
    copy (2 for a backslash and what it escapes, or for ``$(``)."""
    c, top = text[i], stack[-1]
    if top == _SQ:
        if c == "'":
            stack.pop()
        return 1
    if top == _COMMENT:
        if c == "\n":
            stack.pop()
        return 1
    if c == "\\":
        return 2
    if top in (_ARITH, _ARITH_PAREN):
        return _scan_arithmetic(text, i, stack)
    if text.startswith("$((", i):
        stack.append(_ARITH)
        return 3
    if text.startswith("$(", i):
        stack.append(_SUB)
        return 2
    if c == "`":
        if top == _BACKTICK:
            stack.pop()
        else:
            stack.append(_BACKTICK)
        return 1
    if top == _DQ:
        if c == '"':
            stack.pop()
        return 1
    if c == "'":
        stack.append(_SQ)
    elif c == '"':
        stack.append(_DQ)
    elif c == "(" and top == _SUB:
        stack.append(_SUB)
    elif c == ")" and top == _SUB:
        stack.pop()
    elif c == "#" and (i == 0 or text[i - 1] in " \t\n;&|()"):
        stack.append(_COMMENT)
    return 1


def _scan_arithmetic(text: str, i: int, stack: list[str]) -> int:
    """Inside ``$((...))``: parentheses nest until the closing ``))``."""
    c = text[i]
    if c == "(":
        stack.append(_ARITH_PAREN)
    elif c == ")" and stack[-1] == _ARITH_PAREN:
        stack.pop()
    elif text.startswith("))", i):
        stack.pop()
        return 2
    return 1
