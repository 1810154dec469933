"""What an ACME account keeps between processes: the CA's directory document.

A one-shot ``certwright run acme`` (a cron job, a person) is a new process each time; it
need not ask the CA for its directory on every run, as a daemon would not. The document is
kept in the account's folder as ``directory.json`` (``{"url", "fetched_at", "document"}``)
and used for :data:`DIRECTORY_TTL`; the account's URL is kept beside it in
``account.json`` (:mod:`.client`), so a known account is found without a newAccount POST.

Hazards: the document can go stale when the CA moves an endpoint; :class:`.client.AcmeSession`
fetches it again when an endpoint taken from a kept document answers 404, and a kept
document that cannot be read (corrupt, another URL, too old, from the future) is ignored
and replaced, never an error. Writes are atomic (0600, like the rest of the folder).
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from certwright.atomic import write_atomic
from certwright.clock import format_instant, parse_instant

#: How long a kept directory document is used without asking the CA again. A day: CAs
#: change their directory rarely and announce it (Let's Encrypt's has been stable for
#: years), a stale one is refetched on the first 404 anyway, and a daily cron run still
#: sees a fresh document about once a day.
DIRECTORY_TTL = dt.timedelta(hours=24)
DIRECTORY_FILE = "directory.json"


def find_directory(folder: Path, url: str, now: dt.datetime) -> dict[str, Any] | None:
    """The kept directory document of ``url`` if it is younger than DIRECTORY_TTL; None
    when there is none, or it is unreadable, for another URL, too old or from the future."""
    try:
        data = json.loads((folder / DIRECTORY_FILE).read_text())
        fetched = parse_instant(str(data["fetched_at"]))
        document = data["document"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if data.get("url") != url or not isinstance(document, dict):
        return None
    if not dt.timedelta(0) <= now - fetched <= DIRECTORY_TTL:
        return None
    return document


def save_directory(folder: Path, url: str, document: Mapping[str, Any],
                   now: dt.datetime) -> None:
    """Keep ``document`` as the directory of ``url``, fetched at ``now``; a write that fails
    (a full disk) is dropped: the cache only saves requests, it holds nothing unique."""
    data = {"url": url, "fetched_at": format_instant(now), "document": dict(document)}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / DIRECTORY_FILE, json.dumps(data, sort_keys=True).encode(), 0o600)
    except OSError:
        return
