"""``certwright renew [NAME...] [--force] [--dry-run]``: the subcommand's arguments.

The command itself is :mod:`certwright.engine.cli.renewing` (see there), imported only when
it runs: building the parser must import nothing heavy (``--help`` starts at once).
"""
from __future__ import annotations

import argparse
from typing import Any


def cmd_renew(args: argparse.Namespace) -> int:
    """Renew (see :mod:`certwright.engine.cli.renewing`)."""
    from certwright.engine.cli.renewing import cmd_renew as run
    return run(args)


def register(sub: Any) -> None:
    """Add the ``renew`` subcommand."""
    r = sub.add_parser("renew", help="renew the certificates that are due (or those named)",
                       description="Renew what is due, by the pipeline that made each "
                                   "certificate, into its own folder; a running daemon is "
                                   "handed the runs.")
    r.add_argument("names", nargs="*", metavar="NAME",
                   help="certificates to renew (default: every one that is due)")
    r.add_argument("--force", action="store_true",
                   help="renew now, whatever the schedule says (certbot's --force-renewal)")
    r.add_argument("--dry-run", action="store_true",
                   help="pass each renewal against a throwaway CA (ACME: its staging "
                        "directory) in a scratch folder; nothing real is changed")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --dry-run: an input for the trial, e.g. directory=URL of an "
                        "ACME CA's staging directory")
    r.set_defaults(func=cmd_renew)
