"""Messages parsed once per process: a bounded cache of parsed Maildir messages.

A message in a Maildir never changes under its file name (delivery writes a new, unique
name; readers only move it), so ``(folder, name)`` identifies its content. The daemon's
mail router parses each message as it lands and leaves it here; the ``wait.mail`` and
``notify.check`` steps of every run scanning the same folder then judge it without reading
or parsing it again. Only messages that parsed cleanly are kept (hostile ones are moved
aside by whoever meets them first), and only small ones (a probe or an issuance mail is a
few kB).

Thread-safe: the router thread and the step workers use it at once.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from certwright.mail.parse import ParsedMail

MAX_ENTRIES = 4096
MAX_MESSAGE_BYTES = 256 * 1024

_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str], tuple[ParsedMail, str]] = OrderedDict()


def get(folder: Path, name: str) -> tuple[ParsedMail, str] | None:
    """``(mail, message_id)`` of message ``name`` in ``folder`` (a ``new/``), if parsed."""
    with _lock:
        return _cache.get((str(folder), name))


def put(folder: Path, name: str, mail: ParsedMail, message_id: str, size: int) -> None:
    """Remember a cleanly parsed message (``message_id``: its Message-ID or content hash)."""
    if size > MAX_MESSAGE_BYTES:
        return
    with _lock:
        _cache[(str(folder), name)] = (mail, message_id)
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)


def forget(folder: Path, name: str) -> None:
    with _lock:
        _cache.pop((str(folder), name), None)


def clear() -> None:
    with _lock:
        _cache.clear()
