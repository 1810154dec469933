"""The built-in CA: accounts, issuing, its HTTP app and server, its store, its mail.

The CA's work is split by concern: :class:`Accounts` (join, links, sessions, recovery) and
:class:`Issuing` (domains, probes, certificates, the CRL) share a :class:`CAStore`, a
:class:`Signer` and a :class:`Mailer`; :class:`CAService` builds and holds them,
:func:`create_app` serves them over HTTP and :class:`CAServer` runs that app on uvicorn.
:class:`CAClient` is the client the steps use; :class:`MailServer` the SMTP receiver.

Hazard: importing this package must stay cheap (the CLI imports it for every command), so
the names below are loaded on first use (PEP 562): ``certwright.ca.CAServer`` imports
FastAPI and uvicorn then, not before.
"""
from __future__ import annotations

import sys

# Not typing.TYPE_CHECKING: importing typing takes about 10 ms, many times this package's
# own import. Type checkers treat a constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from certwright.ca.accounts import Accounts
    from certwright.ca.app import create_app
    from certwright.ca.client import CAClient, CAError
    from certwright.ca.errors import ApiError
    from certwright.ca.issuing import Issuing, ProbePolicy
    from certwright.ca.mailserver import MailServer
    from certwright.ca.message import MessageBuilder
    from certwright.ca.outmail import Mailer, MailError
    from certwright.ca.passphrase import check_passphrase, generate_passphrase
    from certwright.ca.server import CAServer
    from certwright.ca.service import CAService
    from certwright.ca.setup import CAPaths, init_ca, load_config
    from certwright.ca.signer import Signer
    from certwright.ca.store import CAStore

__all__ = [
    "Accounts",
    "ApiError",
    "CAClient",
    "CAError",
    "CAPaths",
    "CAServer",
    "CAService",
    "CAStore",
    "Issuing",
    "MailError",
    "MailServer",
    "Mailer",
    "MessageBuilder",
    "ProbePolicy",
    "Signer",
    "check_passphrase",
    "create_app",
    "generate_passphrase",
    "init_ca",
    "load_config",
]

# Which module defines each public name (read-only).
_MODULES = {
    "Accounts": "accounts",
    "ApiError": "errors",
    "CAClient": "client",
    "CAError": "client",
    "CAPaths": "setup",
    "CAServer": "server",
    "CAService": "service",
    "CAStore": "store",
    "Issuing": "issuing",
    "MailError": "outmail",
    "MailServer": "mailserver",
    "Mailer": "outmail",
    "MessageBuilder": "message",
    "ProbePolicy": "issuing",
    "Signer": "signer",
    "check_passphrase": "passphrase",
    "create_app": "app",
    "generate_passphrase": "passphrase",
    "init_ca": "setup",
    "load_config": "setup",
}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    qualified = f"{__name__}.{module}"
    __import__(qualified)  # not importlib.import_module: importing importlib costs more
    return getattr(sys.modules[qualified], name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
