"""Store URLs: which back-end and where, read from ``--store``, ``CERTWRIGHT_STORE`` or the
configuration's ``store:`` key, each checked before anything is opened.

* ``sqlite:///ABSOLUTE/PATH`` (or ``sqlite:RELATIVE/PATH``): the SQLite file at that path;
* ``postgresql://...`` or ``postgres://...``: a libpq URL (user, password, host or a
  socket folder as ``?host=``, port, database, ``options=-csearch_path=SCHEMA``).

No URL at all: the SQLite file in the state folder, the embedded default. A bad URL is an
:class:`certwright.errors.InputError` (exit 2) saying what was wrong and where it came from.
Nothing here imports a database driver.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from certwright.errors import InputError

SQLITE, POSTGRESQL = "sqlite", "postgresql"
_SCHEMES = {"sqlite": SQLITE, "postgresql": POSTGRESQL, "postgres": POSTGRESQL}


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL: ``kind`` (sqlite, postgresql) and ``target`` (the SQLite file,
    or the libpq URL as given)."""

    kind: str
    target: str

    @property
    def path(self) -> Path:
        """The SQLite file (only for ``kind == "sqlite"``)."""
        return Path(self.target)

    def __str__(self) -> str:
        return f"sqlite://{self.target}" if self.kind == SQLITE else display_url(self.target)


def parse_store_url(text: str, origin: str = "--store") -> StoreURL:
    """The :class:`StoreURL` of ``text``; InputError naming ``origin`` when it is no store
    URL we know (no scheme, another scheme, no SQLite path, a malformed PostgreSQL URL)."""
    value = text.strip()
    scheme, sep, rest = value.partition(":")
    kind = _SCHEMES.get(scheme.lower()) if sep else None
    if kind is None:
        raise InputError(
            f"{origin} {text!r}: not a store URL; expected postgresql://[USER@]HOST[:PORT]/"
            f"DATABASE or sqlite:///PATH/TO/certwright.sqlite")
    if kind == SQLITE:
        path = unquote(rest.removeprefix("//"))
        if not path or path.endswith("/"):
            raise InputError(f"{origin} {text!r}: no SQLite file named; expected "
                             f"sqlite:///PATH/TO/certwright.sqlite")
        return StoreURL(SQLITE, str(Path(path).expanduser().absolute()))
    return StoreURL(POSTGRESQL, _check_pg(value, origin))


def _check_pg(value: str, origin: str) -> str:
    """The libpq URL, checked the way libpq will read it (port, query keys)."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError as exc:
        raise InputError(f"{origin} {display_url(value)!r}: bad port ({exc})") from exc
    if port == 0:
        raise InputError(f"{origin} {display_url(value)!r}: bad port 0")
    database = unquote(parts.path.lstrip("/"))
    if "/" in database:
        raise InputError(f"{origin} {display_url(value)!r}: the path must be one database "
                         f"name, not {database!r}")
    if parts.fragment:
        raise InputError(f"{origin} {display_url(value)!r}: a fragment (#...) means nothing "
                         f"in a PostgreSQL URL")
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return value  # checked again when opened, by the driver itself
    try:
        conninfo_to_dict(value)
    except Exception as exc:
        words = " ".join(str(exc).split())
        raise InputError(f"{origin} {display_url(value)!r}: {words}") from exc
    return value


def display_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = urlencode([(k, "***" if k == "password" else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="/-=*")
    # not urlunsplit: it drops an empty host ("postgresql:///db" would lose its "//")
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
