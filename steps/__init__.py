"""The built-in steps, registered under the ``certwright.steps`` entry-point group: generic
ones (shell, set, assert, noop), waits (file, instant, mail), keys and CSRs, the built-in
CA's calls, install with rollback, and ACME in ``steps.acme``.

The names below are loaded on first use (PEP 562), so importing this package (which every
import of one of its modules does) stays cheap.
"""
from __future__ import annotations

from certwright._lazy import lazy_exports

# Not typing.TYPE_CHECKING: importing typing costs more than this package's own import.
# Type checkers treat a constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from certwright.steps.ca import Activate, AddDomain, Join, Probe, Sign, Verify
    from certwright.steps.generic import Assert, Noop, Set, Shell
    from certwright.steps.install import InstallCheck, InstallFiles, InstallReload
    from certwright.steps.keys import CsrGenerate, KeyGenerate
    from certwright.steps.mail import NotifyCheck, WaitMail
    from certwright.steps.mails import WaitMails
    from certwright.steps.waits import WaitFile, WaitUntil

__all__ = [
    "Activate",
    "AddDomain",
    "Assert",
    "CsrGenerate",
    "InstallCheck",
    "InstallFiles",
    "InstallReload",
    "Join",
    "KeyGenerate",
    "Noop",
    "NotifyCheck",
    "Probe",
    "Set",
    "Shell",
    "Sign",
    "Verify",
    "WaitFile",
    "WaitMail",
    "WaitMails",
    "WaitUntil",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Activate": "certwright.steps.ca",
    "AddDomain": "certwright.steps.ca",
    "Assert": "certwright.steps.generic",
    "CsrGenerate": "certwright.steps.keys",
    "InstallCheck": "certwright.steps.install",
    "InstallFiles": "certwright.steps.install",
    "InstallReload": "certwright.steps.install",
    "Join": "certwright.steps.ca",
    "KeyGenerate": "certwright.steps.keys",
    "Noop": "certwright.steps.generic",
    "NotifyCheck": "certwright.steps.mail",
    "Probe": "certwright.steps.ca",
    "Set": "certwright.steps.generic",
    "Shell": "certwright.steps.generic",
    "Sign": "certwright.steps.ca",
    "Verify": "certwright.steps.ca",
    "WaitFile": "certwright.steps.waits",
    "WaitMail": "certwright.steps.mail",
    "WaitMails": "certwright.steps.mails",
    "WaitUntil": "certwright.steps.waits",
})
