"""The ``certwright`` command line. ``main(argv)`` parses and calls one function.

Exit codes:

* 0 — success: the run reached a final success state, or the command did its job
* 1 — the run failed (final failure state, a step failed with nowhere to go) or was cancelled
* 2 — usage error: bad arguments, an invalid pipeline file, a bad input value
* 3 — parked: the run waits (``--no-wait``, or Ctrl-C); ``certwright resume RUN`` goes on
* 4 — locked: another process drives this run or serves this store (its pid is named)
* 5 — store error: the state folder could not be read or written (disk full, read-only,
  an I/O error, a damaged database); the message says which and what to do. Nothing
  committed is lost: once it is fixed, ``certwright resume RUN`` goes on
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from certwright.engine.cli import commands
from certwright.errors import CertwrightError, InputError, RunLocked, SpecError
from certwright.logs import configure
from certwright.state import names as N
from certwright.state.faults import StoreFault, store_fault
from certwright.state.location import default_state_dir

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARKED, EXIT_LOCKED, EXIT_STORE = 0, 1, 2, 3, 4, 5


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="certwright",
        description="Durable pipelines that take a domain to an installed TLS certificate.",
        epilog="exit codes: 0 success, 1 run failed or cancelled, 2 usage or pipeline error, "
               "3 parked (waiting; resume later), 4 locked by another process, "
               "5 store error (disk full, read-only, I/O error, damaged)")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where runs are stored (env CERTWRIGHT_STATE_DIR; default "
                        "$XDG_STATE_HOME/certwright)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="the configuration file (env CERTWRIGHT_CONFIG; default "
                        "$XDG_CONFIG_HOME/certwright/config.yaml over "
                        "/etc/certwright/config.yaml)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                   help="the log's level (env CERTWRIGHT_LOG_LEVEL; default info); given, "
                        "`run` and `resume` show the log on stderr too")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("-v", "--verbose", action="store_true",
                       help="`run`, `resume`: show the log and every step's own output too")
    shown.add_argument("-q", "--quiet", action="store_true",
                       help="`run`, `resume`: print only the result or the error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="start a run of a pipeline and drive it as far as it goes")
    r.add_argument("pipeline", help="a pipeline file, or the name of a bundled one (cacert, acme)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an input value (repeatable)")
    r.add_argument("-d", "--domain", action="append", default=[], dest="domains",
                   metavar="NAME", help="a name the certificate is for (repeatable, as with "
                   "certbot; the first names it): the same as --set domains=NAME,NAME")
    r.add_argument("--run-id", help="the new run's id (default: <pipeline>-<date>-<random>)")
    r.add_argument("--name", help="the certificate's name (input cert_name; default: its "
                                  "first domain): its folder and its key in `certificates`")
    r.add_argument("--no-wait", action="store_true",
                   help="park the run when it waits, for `resume` or the daemon")
    r.add_argument("--dry-run", action="store_true", help="pass every state against a throwaway CA (ACME: its staging directory) in a scratch folder, reload_test but no reload; nothing real is changed")  # noqa: E501
    r.set_defaults(func=commands.cmd_run)

    s = sub.add_parser("resume", help="drive a parked or interrupted run on")
    s.add_argument("run_id")
    s.add_argument("--no-wait", action="store_true")
    s.set_defaults(func=commands.cmd_resume)

    st = sub.add_parser("status", help="show runs (all, or one)")
    st.add_argument("run_id", nargs="?")
    st.add_argument("--json", action="store_true")
    st.add_argument("--all", action="store_true", help="include finished runs")
    st.set_defaults(func=commands.cmd_status)

    h = sub.add_parser("history", help="show a run's journal")
    h.add_argument("run_id")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=commands.cmd_history)

    v = sub.add_parser("validate", help="check pipeline files; exit 2 on any error")
    v.add_argument("pipelines", nargs="+")
    v.set_defaults(func=commands.cmd_validate)

    g = sub.add_parser("graph", help="print a pipeline's state machine")
    g.add_argument("pipeline")
    g.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    g.set_defaults(func=commands.cmd_graph)

    c = sub.add_parser("cancel", help="cancel a run")
    c.add_argument("run_id")
    c.add_argument("--reason", default="cancelled by user")
    c.set_defaults(func=commands.cmd_cancel)

    from certwright.engine.cli import config_cmd
    config_cmd.register(sub)
    for module in ("certwright.ca.cli", "certwright.ca.mail_cli", "certwright.engine.daemon.cli",
                   "certwright.engine.cli.certificates", "certwright.engine.cli.renew",
                   "certwright.engine.cli.revoke"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        mod.register(sub)
    _config_after_subcommand(sub)
    return p


def _config_after_subcommand(sub: Any) -> None:
    """``--config FILE`` is global, and accepted after the subcommand too (without
    overwriting one given before it)."""
    for parser in sub.choices.values():
        try:
            parser.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                                metavar="FILE",
                                help="the configuration file (as before the subcommand)")
        except argparse.ArgumentError:
            continue  # the subcommand has one of its own (the daemon's), as global


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    if getattr(args, "state_dir", None) is None:
        args.state_dir = default_state_dir()
    # absolute, so that paths recorded in runs stay right whatever the working directory
    args.state_dir = Path(os.path.abspath(os.path.expanduser(args.state_dir)))
    args.log_level_given = args.log_level is not None
    args.log_level = args.log_level or os.environ.get("CERTWRIGHT_LOG_LEVEL") or "info"
    args.log_router = configure(json_lines=args.log_json, level=args.log_level, cache=True)
    try:
        return int(args.func(args))
    except SpecError as exc:
        print(f"certwright: invalid pipeline:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except InputError as exc:
        print(f"certwright: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunLocked as exc:
        print(f"certwright: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except StoreFault as exc:
        print(f"certwright: {exc}", file=sys.stderr)
        return EXIT_STORE
    except CertwrightError as exc:
        print(f"certwright: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, sqlite3.Error) as exc:
        # the state folder failing outside the store's own edges (a run folder, a reader
        # of its own): a store error all the same; any other file, a plain failure
        where = str(getattr(exc, "filename", None) or args.state_dir / N.DB_FILE)
        fault = store_fault(exc, where, "using") if where.startswith(str(args.state_dir)) \
            else None
        print(f"certwright: {fault or exc}", file=sys.stderr)
        return EXIT_STORE if fault else EXIT_FAILED


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
