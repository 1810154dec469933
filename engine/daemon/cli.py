"""``certwright daemon``: argparse wiring for the service (see :mod:`engine.daemon`).

Exit codes: 0 after a graceful stop (SIGTERM/SIGINT), 2 for a bad option or config file,
4 when another daemon already serves the store (its pid is named).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

# cheap to import (the parser of every command imports it): the config's reader, the
# errors and the daemon are imported by the handler
from certwright.engine.model.configkeys import DAEMON_KEYS

if TYPE_CHECKING:
    from certwright.engine.daemon.config import DaemonConfig

EXIT_OK, EXIT_USAGE, EXIT_LOCKED = 0, 2, 4


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``daemon`` to the main CLI's subparsers; its handler is :func:`handler`."""
    d = subparsers.add_parser(
        "daemon", help="serve every run of the store: mail, files, deadlines, renewals",
        description="Serve the runs of a store until SIGTERM: react to mail (Maildir via "
                    "inotify, IMAP IDLE), files dropped in an inbox, deadlines, and renew "
                    "installed certificates. SIGHUP reloads pipelines and the config file.",
        epilog="The configuration file's `daemon:` section takes the options above as "
               "keys, and more; contrib/config.yaml documents each. Its keys: "
               + ", ".join(DAEMON_KEYS) + ".")
    d.add_argument("--maildir", action="append", type=Path, default=[], metavar="DIR",
                   help="a Maildir to watch for mail to waiting runs (repeatable)")
    d.add_argument("--imap", action="append", default=[], metavar="URL",
                   help="an IMAP account, imaps://USER@HOST[:PORT]/MAILBOX?password_file=F "
                        "(repeatable)")
    d.add_argument("--maildir-poll", type=_poll, metavar="SECONDS",
                   help="also list each Maildir's new/ every SECONDS, for a Maildir on a "
                        "shared filesystem (NFS) whose other hosts' writes inotify does not "
                        "see (config key maildir_poll; default 0: inotify only)")
    d.add_argument("--pipelines", type=Path, metavar="DIR",
                   help="a folder of pipeline files, reloaded when they change")
    d.add_argument("--inbox", type=Path, metavar="DIR",
                   help="a folder where dropped request files and CSRs start runs")
    d.add_argument("--config", type=Path, metavar="FILE", default=argparse.SUPPRESS,
                   help="the configuration file (its `daemon:` section holds these keys; "
                        "an old daemon.yaml with them at the top is still read)")
    d.add_argument("--embedded", action="store_true",
                   help="also serve the embedded CA and mail server (for ca=embedded runs)")
    d.add_argument("--metrics-listen", type=_hostport, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (config key "
                        "metrics_listen; bind it to loopback or a monitoring network)")
    d.add_argument("--lease", type=_seconds, metavar="SECONDS",
                   help="how long a run's lease lasts when several daemons share a "
                        "PostgreSQL store (config key lease; default 15)")
    d.add_argument("--host", type=_host, metavar="NAME",
                   help="this daemon's host: it runs the host-bound steps (keys, install, "
                        "reload, TLS check) of the runs of that host (config key host; "
                        "default: env CERTWRIGHT_HOST, else the machine's host name)")
    d.add_argument("--workers", type=int, default=8, help="step worker threads (default 8)")
    d.set_defaults(func=handler)
    parser: argparse.ArgumentParser = d
    return parser


def _hostport(text: str) -> tuple[str, int]:
    from certwright.metrics_http import parse_hostport
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host(text: str) -> str:
    from certwright.engine.run.hosts import check_host
    from certwright.errors import InputError
    try:
        return check_host(text, "--host")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a lease must last 1 second or more")
    return value


def _poll(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: a poll interval is 0 (none) to 86400 s")
    return value


def build_config(args: argparse.Namespace) -> DaemonConfig:
    """The config file (if any) with the command line's values over it."""
    from certwright.engine.daemon.config import load_daemon_config, merge_args
    explicit = getattr(args, "config", None)
    cfg = load_daemon_config(Path(explicit) if explicit else None)
    return merge_args(cfg, **overrides(args))


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"maildirs": list(args.maildir), "imap": list(args.imap),
            "pipelines": args.pipelines, "inbox": args.inbox, "embedded": args.embedded,
            "metrics_listen": args.metrics_listen, "lease": getattr(args, "lease", None),
            "host": getattr(args, "host", None),
            "maildir_poll": getattr(args, "maildir_poll", None)}


def handler(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until stopped; returns the exit code."""
    from certwright.engine.cli.storeargs import store_key_of, store_url_of
    from certwright.engine.daemon.service import Daemon
    from certwright.errors import InputError, RunLocked
    try:
        cfg = build_config(args)
        store, sealer = store_url_of(args), store_key_of(args)
    except InputError as exc:
        print(f"certwright daemon: {exc}", file=sys.stderr)
        return EXIT_USAGE
    daemon = Daemon(Path(args.state_dir), cfg, workers=max(1, args.workers),
                    cli_overrides=overrides(args), store=store, sealer=sealer,
                    settle_heap=True)
    daemon.install_signals()
    try:
        return daemon.run()
    except RunLocked as exc:
        print(f"certwright daemon: another daemon serves this store: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except InputError as exc:  # found at start: e.g. a Maildir that is not there
        print(f"certwright daemon: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # --metrics-listen where it cannot listen
        from certwright.ca.listening import bind_failure
        listen = cfg.metrics_listen or ("", 0)
        why = bind_failure(exc, *listen) if cfg.metrics_listen else None
        if why is None:
            raise
        print(f"certwright daemon: metrics: {why.replace('--listen', '--metrics-listen')}",
              file=sys.stderr)
        return EXIT_USAGE
