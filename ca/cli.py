"""``certwright ca init|serve|renewal-window``: argparse wiring for the built-in CA
(``renewal-window`` lives in ``ca.acme.cli``).

The main CLI calls :func:`register` with its subparsers object; each handler returns an
exit code. ``serve`` blocks until interrupted (Ctrl-C exits with 0); it exits with 2 when
it cannot listen where it is told to (a port in use, a privileged port, an address that is
not this machine's) or the weak-key blocklist cannot be read.

Hazard: the parser of every command imports this module, so the CA itself (about 0.3 s
of imports) is imported by the handlers, not at the top.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _rate(text: str) -> tuple[str, str]:
    """``NAME=RATE`` (or ``off``, every limit off) for ``--rate-limit``."""
    from certwright.ca.ratelimit import DEFAULT_RATES, parse_rate

    if text.strip().lower() == "off":
        return ("*", "off")
    name, sep, rate = text.partition("=")
    name = name.strip()
    if not sep or name not in DEFAULT_RATES:
        raise argparse.ArgumentTypeError(
            f"expected NAME=RATE with NAME one of {', '.join(sorted(DEFAULT_RATES))}, "
            f"or off; got {text!r}")
    try:
        parse_rate(rate, name=name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return (name, rate.strip())


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The server's settings from ``ca serve``'s options (over the folder's config)."""
    settings: dict[str, Any] = {}
    given = dict(args.rate_limit or [])
    if given.pop("*", None) == "off":
        settings["rate_limits"] = "off"
    elif given:
        from certwright.ca.setup import load_config

        try:
            base = load_config(Path(args.dir)).get("rate_limits") or {}
        except FileNotFoundError:
            base = {}
        settings["rate_limits"] = {**(base if isinstance(base, dict) else {}), **given}
    return settings


def cmd_init(args: argparse.Namespace) -> int:
    """Create the CA in ``--dir`` (idempotent); ``--weak-key-blocklist`` is checked
    (loaded once) and then recorded in its settings."""
    from certwright.ca.setup import CAPaths, init_ca, set_setting
    from certwright.ca.weakkeys import Blocklist, BlocklistError, find_blocklist
    from certwright.clock import clock_from_env
    init_ca(Path(args.dir), clock=clock_from_env(), name=args.name)
    paths = CAPaths(Path(args.dir))
    if args.weak_key_blocklist:
        try:
            found = find_blocklist(paths.root, args.weak_key_blocklist)
            with Blocklist.load(found or Path(args.weak_key_blocklist)) as blocklist:
                entries = len(blocklist)
        except BlocklistError as exc:
            print(f"certwright ca init: {exc}", file=sys.stderr)
            return 2
        set_setting(paths.root, "weak_key_blocklist", args.weak_key_blocklist)
        print(f"weak-key blocklist: {args.weak_key_blocklist} ({entries} keys)")
    print(f"CA ready in {paths.root}; trust anchor: {paths.root_cert}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the CA until interrupted."""
    from certwright.ca.listening import bind_failure
    from certwright.ca.server import CAServer
    from certwright.ca.setup import load_config
    from certwright.ca.weakkeys import MISSING_BLOCKLIST, BlocklistError, find_blocklist
    from certwright.clock import clock_from_env

    host, port = args.listen
    server = CAServer(Path(args.dir), host=host, port=port, public_url=args.public_url,
                      smarthost=args.smarthost, policy=args.policy, clock=clock_from_env(),
                      mail_from=args.mail_from, settings=_settings(args),
                      weak_key_blocklist=args.weak_key_blocklist)
    try:
        server.start()
    except BlocklistError as exc:
        server.stop()
        print(f"certwright ca serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        why = bind_failure(exc, host, port)
        server.stop()
        if why is None:
            raise
        print(f"certwright ca serve: {why}", file=sys.stderr)
        return 2
    metrics = None
    if args.metrics_listen is not None:
        from certwright.ca.metrics import serve_ca_metrics
        try:
            metrics = serve_ca_metrics(server, *args.metrics_listen)
        except OSError as exc:
            why = bind_failure(exc, *args.metrics_listen)
            server.stop()
            if why is None:
                raise
            print(f"certwright ca serve: metrics: {why.replace('--listen', '--metrics-listen')}",
                  file=sys.stderr)
            return 2
        print(f"metrics on {metrics.url}", flush=True)
    configured = args.weak_key_blocklist or load_config(server.ca_dir)["weak_key_blocklist"]
    if find_blocklist(server.ca_dir, configured) is None:
        print(f"warning: {MISSING_BLOCKLIST}", file=sys.stderr, flush=True)
    print(f"CA listening on {server.url} (public URL {server.public_url}); Ctrl-C stops it",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if metrics is not None:
            metrics.stop()
        server.stop()
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ca init`` and ``ca serve`` to an argparse subparsers object."""
    ca: argparse.ArgumentParser = subparsers.add_parser("ca", help="the built-in CA")
    sub = ca.add_subparsers(dest="ca_command", required=True)
    init = sub.add_parser("init", help="create a CA directory (idempotent)")
    init.add_argument("--dir", required=True, help="the CA directory")
    init.add_argument("--name", default="certwright local CA", help="CA name in certificates")
    init.add_argument("--weak-key-blocklist", metavar="PATH",
                      help="record this blocklist of compromised keys in the CA's settings "
                           "(badkeys' cache folder or blocklist.dat, or a text file of "
                           "SHA-256 hashes; relative to --dir)")
    init.set_defaults(func=cmd_init)
    serve = sub.add_parser("serve", help="serve the CA's API and pages")
    serve.add_argument("--dir", required=True, help="the CA directory (created if missing)")
    serve.add_argument("--listen", type=_hostport, default=("127.0.0.1", 8440),
                       metavar="HOST:PORT", help="where to listen (default 127.0.0.1:8440)")
    serve.add_argument("--public-url", help="base URL put into mails, AIA and CRL URLs")
    serve.add_argument("--smarthost", type=_hostport, metavar="HOST:PORT",
                       help="send all mail here instead of the recipients' MX hosts")
    serve.add_argument("--policy", choices=["cacert", "cabf"], default="cacert",
                       help="which probe addresses are allowed")
    serve.add_argument("--mail-from", default="ca@certwright.invalid",
                       help="sender address of the CA's mail")
    serve.add_argument("--rate-limit", type=_rate, action="append", metavar="NAME=RATE",
                       help="override one rate limit (e.g. login.client=100/minute; "
                       "RATE 'off' lifts it), or 'off' for none; repeatable; defaults "
                       "and config key rate_limits: docs/ca-limits.md")
    serve.add_argument("--weak-key-blocklist", metavar="PATH",
                       help="refuse the compromised keys listed here (default: the CA's "
                            "weak_key_blocklist setting, else badkeys' own cache folder)")
    serve.add_argument("--metrics-listen", type=_hostport, metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics, apart "
                            "from the CA's public address (bind it to loopback or a "
                            "monitoring network)")
    serve.set_defaults(func=cmd_serve)
    from certwright.ca.acme.cli import add_renewal_window
    add_renewal_window(sub)
    return ca
