"""``certwright manpage``: the manual page, roff made from the parser (argparse-manpage).

Every subcommand and option comes from the same argparse parser the command line uses, so
the page never falls behind; the sections a parser cannot know (exit status, environment,
files) are added here. ``make man`` writes ``build/man/certwright.1``; a packager installs
it as ``/usr/share/man/man1/certwright.1``. The page's date is ``SOURCE_DATE_EPOCH`` when
set (reproducible builds), else today.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_STATUS = r"""
.TP
.B 0
success: the run reached a final success state, or the command did its job
.TP
.B 1
the run failed or was cancelled; for \fBdoctor\fR, a check failed
.TP
.B 2
usage error: bad arguments, an invalid pipeline file, a bad input value (checked before
any service starts), an address to listen on that is in use
.TP
.B 3
parked: the run waits; \fBcertwright resume\fR \fIRUN\fR goes on
.TP
.B 4
locked: another process drives this run, or a daemon serves this store (its pid is named)
.TP
.B 5
store error: the state folder could not be read or written (disk full, read-only, an I/O
error, a damaged database); nothing committed is lost
.TP
.B 141
stdout was closed before all was written (\fBcertwright history \-\-json | head\fR)
"""

ENVIRONMENT = r"""
.TP
.B CERTWRIGHT_STATE_DIR
the state folder when \fB\-\-state\-dir\fR is not given
.TP
.B CERTWRIGHT_CONFIG
the configuration file when \fB\-\-config\fR is not given
.TP
.B CERTWRIGHT_LOG_LEVEL
the default of \fB\-\-log\-level\fR
.TP
.B CERTWRIGHT_LIVE_DIR
where certificates are installed (one folder per certificate name)
.TP
.B XDG_STATE_HOME, XDG_CONFIG_HOME, XDG_DATA_HOME
the bases of the default state folder, configuration file and certificate folders
"""

FILES = r"""
.TP
.I $XDG_STATE_HOME/certwright/
the store (runs, journal, certificate inventory) and the run folders
.TP
.I $XDG_CONFIG_HOME/certwright/config.yaml, /etc/certwright/config.yaml
the configuration files, the user's over the system's
.TP
.I /etc/certwright/live/NAME/ \fR(as root)\fP, $XDG_DATA_HOME/certwright/live/NAME/
the installed certificates, one folder per name, earlier versions kept
"""

SEE_ALSO = r"""
\fBcertbot\fR(1), \fBlego\fR(1), \fBopenssl\fR(1); \fBcertwright completion \-\-help\fR
"""


def page() -> str:
    """The manual page, in roff (man(7) macros)."""
    from argparse_manpage.manpage import Manpage

    from certwright.engine.cli.main import build_parser, installed_version
    man = Manpage(build_parser())
    # argparse-manpage's documented way: set its attributes, not its private data
    man.source = f"certwright {installed_version()}"
    man.manual = "certwright manual"
    man.description = "durable pipelines that take a domain to an installed TLS certificate"
    for heading, text in (("exit status", EXIT_STATUS), ("environment", ENVIRONMENT),
                          ("files", FILES), ("see also", SEE_ALSO)):
        man.add_section(heading, "=", text.strip("\n"))
    return str(man)


def cmd_manpage(args: argparse.Namespace) -> int:
    sys.stdout.write(page())
    return 0


def register(sub: Any) -> None:
    """Add ``manpage`` to the CLI's subcommands."""
    m = sub.add_parser("manpage", help="print the manual page (roff, for man -l or man1/)",
                       description="Print certwright(1), generated from this command "
                                   "line's parser: `certwright manpage | man -l -`.")
    m.set_defaults(func=cmd_manpage, logs=False)
