"""``certwright ca renewal-window SERIAL --start T --end T --dir DIR``: the operator's
renewal window for one certificate, which the CA's renewalInfo (RFC 9773) then suggests
(earlier than the default to move renewals ahead of a planned change, say).

Exit codes: 0 set; 2 a bad instant, an end not after the start, no such certificate or
no CA in ``--dir``; 5 the store cannot be written. The CA may be serving meanwhile (the
store is SQLite in WAL mode; the next renewalInfo answer has the window).

Hazard: the parser of every command imports this module: the store is imported by the
handler, not at the top.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import datetime
from pathlib import Path
from typing import Any


def _instant(text: str) -> datetime:
    from certwright.clock import parse_instant

    try:
        return parse_instant(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 instant (such as "
                                          "2027-01-31T12:00:00Z)") from None


def cmd_renewal_window(args: argparse.Namespace) -> int:
    """Record the window; see the module docstring for the exit codes."""
    from certwright.ca.acme.renewal import check_window
    from certwright.ca.acme.store import AcmeStore
    from certwright.ca.setup import CAPaths
    from certwright.ca.store import CAStore
    from certwright.clock import format_instant

    why = check_window(args.start, args.end)
    if why is not None:
        print(f"certwright ca renewal-window: {why}", file=sys.stderr)
        return 2
    paths = CAPaths(Path(args.dir))
    if not paths.db.exists():
        print(f"certwright ca renewal-window: no CA in {args.dir} (no {paths.db.name}); "
              "run 'certwright ca init' first", file=sys.stderr)
        return 2
    serial = args.serial.lower().replace(":", "")
    try:
        store = CAStore(paths.db)
        try:
            if store.find_certificate(serial=serial) is None:
                print(f"certwright ca renewal-window: the CA in {args.dir} issued no "
                      f"certificate with serial {args.serial}", file=sys.stderr)
                return 2
            AcmeStore(store).set_window(serial, format_instant(args.start),
                                        format_instant(args.end))
        finally:
            store.close()
    except sqlite3.Error as exc:
        print(f"certwright ca renewal-window: the CA's store {paths.db}: {exc}",
              file=sys.stderr)
        return 5
    print(f"renewal window of {serial}: {format_instant(args.start)} to "
          f"{format_instant(args.end)}")
    return 0


def add_renewal_window(sub: Any) -> None:
    """Add ``renewal-window`` to the ``ca`` command's subparsers."""
    cmd = sub.add_parser("renewal-window", help="set the renewal window (ARI) the CA "
                         "suggests for one certificate")
    cmd.add_argument("serial", help="the certificate's serial (hex)")
    cmd.add_argument("--dir", required=True, help="the CA directory")
    cmd.add_argument("--start", type=_instant, required=True, metavar="T",
                     help="the window's start (ISO 8601; UTC when no offset is given)")
    cmd.add_argument("--end", type=_instant, required=True, metavar="T",
                     help="the window's end, after --start")
    cmd.set_defaults(func=cmd_renewal_window)
