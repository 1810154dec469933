"""Links in a mail: finding them (in HTML and text, in linear time) and which may be followed.

Only links to the expected origin and path may be followed (:func:`link_problem`). The
finders never use ``html.parser`` or a backtracking-prone pattern on hostile text, and
:func:`scan_html` reports how many characters it examined, so that tests can check it is
linear in the document's length.
"""
from __future__ import annotations

import html
import ipaddress
import re
from typing import NamedTuple
from urllib.parse import urlsplit

import idna

__all__ = ["HtmlScan", "link_problem", "safe_link", "scan_html", "urls_in"]


_FORBIDDEN_IN_URL = re.compile(r"[\x00-\x20\x7f\\]|\s")
_ENCODED_PATH = re.compile(r"%(?:2f|2e|5c)", re.IGNORECASE)


def _norm_host(host: str) -> str:
    """Lower-case a host; IP literals are normalized, names go through IDNA (UTS 46)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return idna.encode(host, uts46=True).decode("ascii").lower()


def _origin(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme {scheme or '(none)'!r} is not http(s)")
    if "@" in parts.netloc:
        raise ValueError("userinfo in URL")
    if not parts.hostname:
        raise ValueError("no host")
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, _norm_host(parts.hostname), port, parts.path or "/"


def link_problem(url: str, base_url: str, path_prefix: str = "") -> str | None:
    r"""Why ``url`` may not be followed for ``base_url`` + ``path_prefix``; None if it may.

    The URL must have base_url's scheme, host (case-insensitive, IDNA-normalized) and port
    (explicit or default); a path under base_url's path + path_prefix, matched at a segment
    boundary; no userinfo, backslash, control character, whitespace, ``.``/``..`` segment
    or percent-encoded ``/``, ``.`` or ``\``.
    """
    if _FORBIDDEN_IN_URL.search(url):
        return "control character, whitespace or backslash in URL"
    try:
        scheme, host, port, path = _origin(url)
    except (ValueError, idna.IDNAError, UnicodeError) as exc:
        return f"bad URL: {exc}"
    try:
        b_scheme, b_host, b_port, b_path = _origin(base_url)
    except (ValueError, idna.IDNAError, UnicodeError) as exc:
        return f"bad base URL: {exc}"
    if (scheme, host, port) != (b_scheme, b_host, b_port):
        return f"origin {scheme}://{host}:{port} is not {b_scheme}://{b_host}:{b_port}"
    if _ENCODED_PATH.search(path) or any(s in (".", "..") for s in path.split("/")):
        return "encoded slash or dot, or dot segment, in path"
    prefix = b_path.rstrip("/") + ("/" + path_prefix.lstrip("/") if path_prefix else "")
    if prefix.endswith("/") or not prefix:
        ok = path.startswith(prefix or "/")
    else:
        ok = path == prefix or path.startswith(prefix + "/")
    return None if ok else f"path {path[:200]!r} is not under {prefix!r}"


def safe_link(url: str, base_url: str, path_prefix: str = "") -> bool:
    """True only if ``url`` may be followed (see :func:`link_problem` for the rules)."""
    return link_problem(url, base_url, path_prefix) is None


_TAG_NAME = re.compile(r"(/?)([A-Za-z][A-Za-z0-9]*)")
_HREF = re.compile(r"""\bhref[ \t\r\n]*=[ \t\r\n]*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""",
                   re.IGNORECASE)
_BREAKS = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "table"})
_URL_RE = re.compile(r"https?://[^\s<>\"'\x00-\x1f\x7f]+", re.IGNORECASE)


class HtmlScan(NamedTuple):
    """What :func:`scan_html` found in a document, and the work it took."""

    text: str  # the visible text, entities unescaped
    hrefs: list[str]  # ``<a href>`` / ``<area href>`` values in document order
    examined: int  # characters the searches went over (each find's span, each tag's regexes)
    tags: int  # tags looked at
    #: URLs of anchors whose visible text names another URL than their ``href`` (both the
    #: shown and the real target): a lure, never to be followed
    mismatched: tuple[str, ...] = ()


def _same_url(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def scan_html(doc: str) -> HtmlScan:
    """Visible text and ``<a href>`` values of an HTML document, in one linear pass.

    Deliberately not ``html.parser``: on inputs like ``"<a " * 600000`` it takes minutes.
    A ``>`` inside a quoted attribute ends the tag early here; that only loses text.
    """
    text: list[str] = []
    hrefs: list[str] = []
    mismatched: list[str] = []
    anchor: tuple[str, int] | None = None  # the open <a>'s href and where its text starts
    i, n, skip = 0, len(doc), ""
    # Work is counted in locals, in as few additions as the loop allows (it runs once per
    # tag): the searches for "<" and ">" span doc[i:gt + 1], the tag-name match the tag.
    examined, tags = 0, 0
    while i < n:
        lt = doc.find("<", i)
        if lt < 0:
            examined += n - i
            if not skip:
                text.append(doc[i:])
            break
        if not skip:
            text.append(doc[i:lt])
        if doc.startswith("<!--", lt):
            end = doc.find("-->", lt + 4)
            after = n if end < 0 else end + 3
            examined += after - i
            i = after
            continue
        gt = doc.find(">", lt + 1)
        if gt < 0:
            examined += n - i
            break
        tag = doc[lt + 1:gt]
        examined += 2 * gt - lt - i  # (gt + 1 - i) searched, then len(tag) matched
        tags += 1
        i = gt + 1
        match = _TAG_NAME.match(tag)
        if not match:
            continue
        closing, name = bool(match.group(1)), match.group(2).lower()
        if skip:
            skip = "" if closing and name == skip else skip
        elif name in ("script", "style") and not closing:
            skip = name
        elif name in ("a", "area") and not closing:
            examined += len(tag)  # the href search
            href = _HREF.search(tag)
            if href:
                hrefs.append(html.unescape(next(g for g in href.groups() if g is not None)))
                anchor = (hrefs[-1].strip(), len(text)) if name == "a" else None
        elif name == "a" and anchor is not None:
            shown = urls_in(html.unescape("".join(text[anchor[1]:])))
            examined += sum(len(u) for u in shown)
            wrong = [u for u in shown if not _same_url(u, anchor[0])]
            if wrong:
                mismatched.extend([anchor[0], *wrong])
            anchor = None
        elif name in _BREAKS:
            text.append("\n")
    return HtmlScan(html.unescape("".join(text)), [h.strip() for h in hrefs], examined, tags,
                    tuple(dict.fromkeys(mismatched)))


def urls_in(text: str) -> list[str]:
    """The http(s) URLs in plain ``text``, trailing punctuation dropped, in order."""
    return [m.group(0).rstrip(".,;:!?)]}") for m in _URL_RE.finditer(text)]
