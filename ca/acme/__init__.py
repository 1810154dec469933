"""The built-in CA's ACME server (RFC 8555): routes, JWS checks, nonces, problem
documents, challenge validation, and its tables in the CA's store. The CA's app mounts
:func:`create_acme_app` at ``/acme``; issuance goes through the CA's own issuing core.

The names below are loaded on first use (PEP 562), so importing this package stays cheap.
"""
from __future__ import annotations

from certwright._lazy import lazy_exports

# Not typing.TYPE_CHECKING: importing typing costs more than this package's own import.
# Type checkers treat a constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from certwright.ca.acme.app import create_acme_app
    from certwright.ca.acme.nonces import NonceBook
    from certwright.ca.acme.problems import AcmeProblem
    from certwright.ca.acme.service import AcmeService
    from certwright.ca.acme.store import AcmeStore

__all__ = [
    "AcmeProblem",
    "AcmeService",
    "AcmeStore",
    "NonceBook",
    "create_acme_app",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "AcmeProblem": "certwright.ca.acme.problems",
    "AcmeService": "certwright.ca.acme.service",
    "AcmeStore": "certwright.ca.acme.store",
    "NonceBook": "certwright.ca.acme.nonces",
    "create_acme_app": "certwright.ca.acme.app",
})
