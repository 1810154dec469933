"""Which links in a mail may be followed: only those to the expected origin and path."""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna

__all__ = ["link_problem", "safe_link"]


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
    """Why ``url`` may not be followed for ``base_url`` + ``path_prefix``; None if it may.

    The URL must have base_url's scheme, host (case-insensitive, IDNA-normalized) and port
    (explicit or default); a path under base_url's path + path_prefix, matched at a segment
    boundary; no userinfo, backslash, control character, whitespace, ``.``/``..`` segment
    or percent-encoded ``/``, ``.`` or ``\\``.
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
