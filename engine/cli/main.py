"""The ``certwright`` command line. ``main(argv)`` parses and calls one function.

Exit codes:

* 0 — success: the run reached a final success state, or the command did its job
* 1 — the run failed (final failure state, a step failed with nowhere to go) or was cancelled
* 2 — usage error: bad arguments, an invalid pipeline file, a bad input value (checked
  before any service starts), an address to listen on that is in use or not ours
* 3 — parked: the run waits (``--no-wait``, or Ctrl-C); ``certwright resume RUN`` goes on
* 4 — locked: another process drives this run or serves this store (its pid is named)
* 5 — store error: the state folder could not be read or written (disk full, read-only,
  an I/O error, a damaged database); the message says which and what to do. Nothing
  committed is lost: once it is fixed, ``certwright resume RUN`` goes on
* 141 — stdout was closed before all was written (``certwright history --json | head``):
  the command ends quietly, as coreutils do (128 + SIGPIPE); a run's journal is unharmed

Global options may come before or after the subcommand (:mod:`.globalopts`).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from certwright.engine.cli.globalopts import (
    accept_after_subcommands,
    global_actions,
    merge_after,
)

# Hazard: `--help`, `--version` and `status` must start at once (bench/cli_start.py), so this
# module and every `register` it calls import nothing heavy at the top: a command's
# implementation is imported when it runs (`_lazy`), and so are the log library, the
# runner and the store's error mapping.

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARKED, EXIT_LOCKED, EXIT_STORE = 0, 1, 2, 3, 4, 5
EXIT_PIPE = 141  # stdout closed early (`| head`): 128 + SIGPIPE, as coreutils report it
Handler = Callable[[argparse.Namespace], int]


def _lazy(module: str, name: str) -> Handler:
    """A handler that imports ``module`` (and what it needs) only when the command runs."""
    def handler(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), name)(args))
    handler.__qualname__ = f"{module}.{name}"
    return handler


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **_: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        sys.stdout.write(f"certwright {installed_version()}\n")
        parser.exit()


def installed_version() -> str:
    """The installed distribution's version (its metadata), else the package's own."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("certwright")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from certwright import __version__
        return __version__


_COMMANDS = "certwright.engine.cli.commands"
_STATUS = "certwright.engine.cli.status"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line's parser (cheap: no command's implementation is imported)."""
    p = argparse.ArgumentParser(
        prog="certwright",
        description="Durable pipelines that take a domain to an installed TLS certificate.",
        epilog="exit codes: 0 success, 1 run failed or cancelled, 2 usage or pipeline error, "
               "3 parked (waiting; resume later), 4 locked by another process, "
               "5 store error (disk full, read-only, I/O error, damaged), "
               "141 output cut short (stdout closed, e.g. by head)")
    p.add_argument("--version", action=_Version)
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where runs are stored (env CERTWRIGHT_STATE_DIR; default "
                        "$XDG_STATE_HOME/certwright)")
    p.add_argument("--store", default=None, metavar="URL",
                   help="the store: postgresql://[USER@]HOST[:PORT]/DATABASE or "
                        "sqlite:///PATH (env CERTWRIGHT_STORE, or the configuration's "
                        "store:; default: SQLite in the state dir)")
    p.add_argument("--store-key", default=None, metavar="FILE",
                   help="the store key, sealing secrets and kept keys in the store (env "
                        "CERTWRIGHT_STORE_KEY, or the configuration's store_key:; make one "
                        "with: certwright store keygen FILE)")
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
    r.set_defaults(func=_lazy(_COMMANDS, "cmd_run"))

    s = sub.add_parser("resume", help="drive a parked or interrupted run on")
    s.add_argument("run_id", help="the run's id (as `status` lists it)")
    s.add_argument("--no-wait", action="store_true",
                   help="park the run again when it waits, for the daemon")
    s.set_defaults(func=_lazy(_COMMANDS, "cmd_resume"))

    st = sub.add_parser("status", help="show runs (all, or one)")
    st.add_argument("run_id", nargs="?", help="only this run (with its error)")
    st.add_argument("--json", action="store_true", help="one JSON document")
    st.add_argument("--all", action="store_true", help="include finished runs")
    st.set_defaults(func=_lazy(_STATUS, "cmd_status"), logs=False)

    h = sub.add_parser("history", help="show a run's journal")
    h.add_argument("run_id", help="the run's id")
    h.add_argument("--json", action="store_true", help="the entries as a JSON list")
    h.set_defaults(func=_lazy(_STATUS, "cmd_history"), logs=False)

    v = sub.add_parser("validate", help="check pipeline files; exit 2 on any error")
    v.add_argument("pipelines", nargs="+", metavar="PIPELINE",
                   help="a pipeline file, or the name of a bundled one")
    v.set_defaults(func=_lazy(_COMMANDS, "cmd_validate"))

    g = sub.add_parser("graph", help="print a pipeline's state machine")
    g.add_argument("pipeline", help="a pipeline file, or the name of a bundled one")
    g.add_argument("--format", choices=["mermaid", "dot"], default="mermaid",
                   help="Mermaid (default) or Graphviz dot")
    g.set_defaults(func=_lazy(_COMMANDS, "cmd_graph"))

    c = sub.add_parser("cancel", help="cancel a run")
    c.add_argument("run_id", help="the run's id")
    c.add_argument("--reason", default="cancelled by user",
                   help="recorded in the journal (default: cancelled by user)")
    c.set_defaults(func=_lazy(_COMMANDS, "cmd_cancel"))

    for module in ("certwright.engine.cli.config_cmd", "certwright.ca.cli",
                   "certwright.ca.mail_cli", "certwright.engine.daemon.cli",
                   "certwright.engine.cli.certificates", "certwright.engine.cli.renew",
                   "certwright.engine.cli.revoke", "certwright.engine.cli.doctor",
                   "certwright.engine.cli.completion", "certwright.engine.cli.manpage",
                   "certwright.engine.cli.store_cmd", "certwright.engine.cli.steps_cmd",
                   "certwright.engine.cli.move"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        mod.register(sub)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line, global options merged (before the subcommand wins) and the
    state folder made absolute. SystemExit as argparse raises it (usage, --help)."""
    parser = build_parser()
    actions = global_actions(parser)
    defaults = accept_after_subcommands(parser)
    args = merge_after(parser.parse_args(argv), defaults, actions)
    if getattr(args, "state_dir", None) is None:
        from certwright.state.location import default_state_dir
        args.state_dir = default_state_dir()
    # absolute, so that paths recorded in runs stay right whatever the working directory
    args.state_dir = Path(os.path.abspath(os.path.expanduser(args.state_dir)))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    args.log_level_given = args.log_level is not None
    args.log_level = args.log_level or os.environ.get("CERTWRIGHT_LOG_LEVEL") or "info"
    args.log_router = None
    if getattr(args, "logs", True):
        from certwright.logs import configure
        args.log_router = configure(json_lines=args.log_json, level=args.log_level, cache=True)
    try:
        if args.store or os.environ.get("CERTWRIGHT_STORE"):
            from certwright.engine.cli.storeargs import store_url_of
            store_url_of(args)  # a bad store URL: exit 2 before anything starts
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit as "Exception ignored"
    except BrokenPipeError:
        return _stdout_gone()
    except Exception as exc:  # noqa: BLE001 - exit_code_for raises again what is no expected
        # failure; its imports (errors, store faults) are paid only when a command fails
        from certwright.engine.cli.failures import exit_code_for
        return exit_code_for(exc, args.state_dir, json_lines=bool(getattr(args, "log_json", False)))
    return code


def _stdout_gone() -> int:
    """stdout's reader went away (``| head``): point stdout at /dev/null so that the
    interpreter's last flush at exit cannot fail again, and end quietly, as coreutils do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is no file descriptor (a test's StringIO): nothing will flush it
    finally:
        os.close(devnull)
    return EXIT_PIPE


def print_json(value: Any) -> None:
    import json
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
