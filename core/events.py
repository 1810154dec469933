"""Events that move runs: a step's result, a mail, a file change, a timer, a cancel.

Correlation keys route an outside event to the runs waiting for it without scanning every
run: a waiting step declares keys such as ``mail:postmaster@example.test`` or
``file:/srv/inbox/req.csr``; the store indexes them; an arriving event carries the same key.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def mail_key(address: str) -> str:
    """Correlation key for mail to ``address`` (lower-cased: local parts here are too)."""
    return f"mail:{address.strip().lower()}"


def file_key(path: str) -> str:
    """Correlation key for changes to the file or folder at absolute ``path``."""
    return f"file:{path}"


def token_key(token: str) -> str:
    """Correlation key for a link token (a CA's verification token)."""
    return f"token:{token}"


@dataclass(frozen=True)
class Event:
    """Something that happened outside a step: ``kind`` is mail, file, wake or cancel.

    ``key`` is the correlation key it was routed by (None when sent to one run by id);
    ``payload`` carries what a waiting step needs to check it (a Maildir file name, a path).
    """

    kind: str
    key: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None
