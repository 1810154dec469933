"""Mail addresses, parsed strictly: an ambiguous address list is refused, never guessed.

Python 3.11.7's ``email.utils.getaddresses``/``parseaddr`` lack the CVE-2023-27043 fix
(``alice@example.org)<bob@example.com>`` parses to the wrong address), so recipients go
through :func:`parse_address_list` instead: RFC 5322 mailboxes with no quoted local parts,
no source routes, no comments in odd places.
"""
from __future__ import annotations

import re

from certwright.errors import CertwrightError

__all__ = ["HostileMail", "parse_address_list"]

class HostileMail(CertwrightError):
    """A message was refused; ``reason`` says why (one line, safe to log)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)



_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   "!#$%&'*+-/=?^_`{|}~")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_Token = tuple[str, str, bool]  # kind (atom, quoted, or the special char), text, spaced


def _ambiguous(why: str) -> HostileMail:
    return HostileMail(f"ambiguous address: {why}")


def _tokenize(value: str) -> list[_Token]:
    """RFC 5322 tokens; comments are dropped, anything unbalanced or stray is refused."""
    tokens: list[_Token] = []
    i, n, spaced = 0, len(value), False
    while i < n:
        c = value[i]
        if c in " \t\r\n":
            i, spaced = i + 1, True
        elif c in '"(':
            j, depth, buf = i + 1, 1, []
            while depth:
                if j >= n:
                    raise _ambiguous("unterminated quoted string or comment")
                d = value[j]
                if d == "\\":
                    if j + 1 >= n:
                        raise _ambiguous("trailing backslash")
                    buf.append(value[j + 1])
                    j += 2
                    continue
                if c == "(":
                    depth += (d == "(") - (d == ")")
                elif d == '"':
                    depth = 0
                else:
                    buf.append(d)
                j += 1
            if c == '"':
                tokens.append(("quoted", "".join(buf), spaced))
            spaced, i = c == "(", j
        elif c in "<>@,;:.":
            tokens.append((c, c, spaced))
            i, spaced = i + 1, False
        elif c in _ATEXT or ord(c) > 127:
            j = i
            while j < n and (value[j] in _ATEXT or ord(value[j]) > 127):
                j += 1
            tokens.append(("atom", value[i:j], spaced))
            i, spaced = j, False
        else:
            raise _ambiguous(f"unexpected {c!r}")
    return tokens


def _addr_spec(tokens: list[_Token]) -> str:
    """``local@domain`` from dot-atoms only (no quoted local part, no inner spaces)."""
    kinds = [k for k, _, _ in tokens]
    if kinds.count("@") != 1:
        raise _ambiguous(f"{kinds.count('@')} '@' signs in one address")
    if any(sp for _, _, sp in tokens[1:]):
        raise _ambiguous("space or comment inside an address")
    if "quoted" in kinds:
        raise _ambiguous("quoted local part")
    at = kinds.index("@")
    local, domain = tokens[:at], tokens[at + 1:]
    for part in (local, domain):
        if not part or [k for k, _, _ in part] != ["atom", "."] * (len(part) // 2) + ["atom"]:
            raise _ambiguous("not a dot-atom")
    local_text = "".join(t for _, t, _ in local)
    labels = [t for k, t, _ in domain if k == "atom"]
    if not local_text.isascii() or not all(_LABEL.fullmatch(lb) for lb in labels):
        raise HostileMail(f"invalid address: {local_text[:64]!r}@{'.'.join(labels)[:255]!r}")
    return f"{local_text}@{'.'.join(labels).lower()}"


def _mailbox(tokens: list[_Token]) -> str:
    kinds = [k for k, _, _ in tokens]
    if kinds.count("<") > 1 or kinds.count(">") > 1 or kinds.count("<") != kinds.count(">"):
        raise _ambiguous("unbalanced or repeated angle brackets")
    if "<" not in kinds:
        return _addr_spec(tokens)
    start = kinds.index("<")
    if kinds[-1] != ">" or any(k not in ("atom", "quoted", ".") for k in kinds[:start]):
        raise _ambiguous("text after '>' or specials in the display name")
    return _addr_spec(tokens[start + 1:-1])


def parse_address_list(value: str) -> list[str]:
    """Parse an RFC 5322 address list strictly into ``local@domain`` strings.

    Unlike Python 3.11.7's ``email.utils.getaddresses`` (no CVE-2023-27043 fix), refuses
    anything ambiguous with :class:`HostileMail` ("ambiguous address: ..."): unbalanced
    quotes, parentheses or brackets, stray specials, several ``@``, quoted local parts,
    domain literals. Groups (``name: a@b, c@d;``) are flattened; empty entries skipped.
    Domains are lower-cased; local parts kept as written.
    """
    result: list[str] = []
    current: list[_Token] = []
    in_angle = in_group = False
    for token in _tokenize(value):
        kind = token[0]
        if kind == "<":
            in_angle = True
        elif kind == ">":
            in_angle = False
        if in_angle or kind not in (",", ":", ";"):
            current.append(token)
            continue
        if kind == ":":
            if in_group or any(k not in ("atom", "quoted") for k, _, _ in current):
                raise _ambiguous("misplaced ':'")
            in_group, current = True, []
            continue
        if kind == ";" and not in_group:
            raise _ambiguous("';' outside a group")
        if current:
            result.append(_mailbox(current))
        current = []
        in_group = in_group and kind != ";"
    if in_group or in_angle:
        raise _ambiguous("unterminated group or angle address")
    if current:
        result.append(_mailbox(current))
    return result
