"""``certwright daemon``: one process serving many runs, reacting to mail, files and
deadlines; its configuration, inbox, mail router, renewals and run locks.

The names below are loaded on first use (PEP 562), so importing this package (which every
import of one of its modules does) stays cheap.
"""
from __future__ import annotations

from certwright._lazy import lazy_exports

# Not typing.TYPE_CHECKING: importing typing costs more than this package's own import.
# Type checkers treat a constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from certwright.engine.daemon.config import DaemonConfig, load_config_file
    from certwright.engine.daemon.inbox import Inbox, PipelineCatalog
    from certwright.engine.daemon.locking import RunLocks
    from certwright.engine.daemon.mailroute import MailRouter
    from certwright.engine.daemon.renew import Renewer
    from certwright.engine.daemon.service import Daemon

__all__ = [
    "Daemon",
    "DaemonConfig",
    "Inbox",
    "MailRouter",
    "PipelineCatalog",
    "Renewer",
    "RunLocks",
    "load_config_file",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Daemon": "certwright.engine.daemon.service",
    "DaemonConfig": "certwright.engine.daemon.config",
    "Inbox": "certwright.engine.daemon.inbox",
    "MailRouter": "certwright.engine.daemon.mailroute",
    "PipelineCatalog": "certwright.engine.daemon.inbox",
    "Renewer": "certwright.engine.daemon.renew",
    "RunLocks": "certwright.engine.daemon.locking",
    "load_config_file": "certwright.engine.daemon.config",
})
