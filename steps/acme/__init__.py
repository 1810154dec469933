"""ACME (RFC 8555) steps: account, order, challenge, finalize, download."""
from __future__ import annotations

from certwright.steps.acme.authorize import Challenge
from certwright.steps.acme.issue import Download, Finalize, open_session
from certwright.steps.acme.steps import Account, Order, list_orders

__all__ = ["Account", "Challenge", "Download", "Finalize", "Order", "list_orders", "open_session"]
