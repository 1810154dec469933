"""The CA's refusals: :class:`ApiError`, raised by accounts and issuing, rendered by the app.

A module of its own (it imports nothing of the CA) so the objects that raise it and the
app that turns it into a response depend on it, never on one another.

Hazard: ``message`` and ``details`` reach the client verbatim (JSON under /api, an HTML
page elsewhere): never put a passphrase, token or answer in them.
"""
from __future__ import annotations

from typing import Any

from certwright.errors import InputError


class ApiError(Exception):
    """A refusal with an HTTP status, a stable code and a human message."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON answer: ``{"error": code, "message": text, ...details}``."""
        return {"error": self.code, "message": self.message, **self.details}


class SettingError(InputError, ValueError):
    """A CA setting (``config.json`` or the server's options) that cannot be used; the
    message names the setting and the value. The CLI answers it with its usage code."""
