"""Mail from outside, which is hostile: strict addresses, bounded parsing, links checked
against the expected origin, a Maildir safe to share with an MTA, IMAP IDLE, inotify, and
the one intake through which the daemon's router and the mail steps take messages in.

The names below are loaded on first use (PEP 562), so importing this package (which every
import of one of its modules does) stays cheap.
"""
from __future__ import annotations

from certwright._lazy import lazy_exports

# Not typing.TYPE_CHECKING: importing typing costs more than this package's own import.
# Type checkers treat a constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from certwright.mail.addresses import HostileMail, parse_address_list
    from certwright.mail.books import ProcessedLog
    from certwright.mail.imap import ImapAccount, ImapSource
    from certwright.mail.inotify import NewFileWatcher
    from certwright.mail.intake import Intake
    from certwright.mail.ledger import Ledger
    from certwright.mail.links import link_problem, safe_link
    from certwright.mail.maildir import Maildir, MessageTooLarge
    from certwright.mail.parse import MailLimits, ParsedMail, parse_message

__all__ = [
    "HostileMail",
    "ImapAccount",
    "ImapSource",
    "Intake",
    "Ledger",
    "MailLimits",
    "Maildir",
    "MessageTooLarge",
    "NewFileWatcher",
    "ParsedMail",
    "ProcessedLog",
    "link_problem",
    "parse_address_list",
    "parse_message",
    "safe_link",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "HostileMail": "certwright.mail.addresses",
    "ImapAccount": "certwright.mail.imap",
    "ImapSource": "certwright.mail.imap",
    "Intake": "certwright.mail.intake",
    "Ledger": "certwright.mail.ledger",
    "MailLimits": "certwright.mail.parse",
    "Maildir": "certwright.mail.maildir",
    "MessageTooLarge": "certwright.mail.maildir",
    "NewFileWatcher": "certwright.mail.inotify",
    "ParsedMail": "certwright.mail.parse",
    "ProcessedLog": "certwright.mail.books",
    "link_problem": "certwright.mail.links",
    "parse_address_list": "certwright.mail.addresses",
    "parse_message": "certwright.mail.parse",
    "safe_link": "certwright.mail.links",
})
