"""``certwright doctor [PIPELINE...]``: check the environment and say what to fix.

One line per check, ``ok``, ``warn`` or ``fail``, what was found and (unless ok) the fix:

* the state folder exists (or can be made) and is writable;
* the store opens and passes ``PRAGMA quick_check`` (PostgreSQL: the server answers,
  with a schema this certwright reads);
* whether a daemon serves the store (a warning when runs wait and none does);
* the configuration file reads;
* for each pipeline (those named, else those the configuration file sets inputs for,
  else ``cacert``), with its inputs as a new run would get them (``--set`` over the
  files over the pipeline's defaults): the CA (``ca``, ``directory``) answers when it is a
  URL; the Maildir (``maildir``) exists and is writable; the web server's config test
  (``reload_test``) passes;
* the daemon's Maildirs and IMAP accounts (the configuration's ``daemon:`` section).

Exit 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for bad usage.
Nothing is changed (see :mod:`.doctor_checks`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1
_URL_INPUTS = ("ca", "directory")  # inputs that name a CA by URL (cacert, acme)


def _pipeline_names(args: argparse.Namespace, config: Any) -> list[str]:
    if args.pipelines:
        return list(args.pipelines)
    named = sorted({key.split(".")[1] for key in config.settings()
                    if key.startswith("pipelines.") and key.count(".") >= 2})
    return named or ["cacert"]


def _pipeline_checks(name: str, config: Any, sets: dict[str, str], timeout: float
                     ) -> Iterator[Any]:
    from certwright.engine.cli import doctor_checks as checks
    from certwright.engine.cli.commands import _load
    from certwright.engine.cli.config_cmd import run_inputs
    from certwright.errors import CertwrightError
    try:
        spec = _load(name)
        given = run_inputs(config, spec, sets)
    except CertwrightError as exc:
        yield checks.Finding(f"pipeline {name}", "fail", str(exc).splitlines()[0],
                             "name a bundled pipeline (cacert, acme) or a pipeline file")
        return
    values = {k: i.default for k, i in spec.inputs.items() if i.has_default}
    values.update({k: v for k, v in given.items() if v is not None})
    for key in _URL_INPUTS:
        value = str(values.get(key) or "")
        if value == "embedded":
            yield checks.Finding(f"CA ({spec.name}: {key})", "ok",
                                 "the built-in CA, started on loopback by each run")
        elif value.startswith(("http://", "https://")):
            yield checks.ca_reachable(spec.name, key, value, timeout=timeout,
                                      cafile=str(values.get("ca_bundle") or "") or None)
    if "maildir" in spec.inputs:
        where = str(values.get("maildir") or "")
        if where in ("", "embedded") and str(values.get("ca") or "embedded") != "embedded":
            yield checks.Finding(
                f"mail ({spec.name})", "fail",
                "the built-in mail server runs only with the built-in CA, but `ca` names "
                "another: the probe mail goes to the domain's mail server",
                "set the input maildir to the Maildir that mail server delivers into")
        elif where in ("", "embedded"):
            yield checks.Finding(f"mail ({spec.name})", "ok",
                                 "the built-in mail server delivers into the state folder")
        else:
            yield checks.maildir_ready(f"{spec.name}: maildir", Path(where).expanduser())
    if "reload_test" in spec.inputs or "reload" in spec.inputs:
        yield checks.config_test(spec.name, values, timeout=timeout)


def findings(args: argparse.Namespace) -> Iterator[Any]:
    """Every check's finding, in the order of the module docstring."""
    from certwright.engine.cli import doctor_checks as checks
    from certwright.engine.cli.commands import parse_sets
    from certwright.engine.cli.config_cmd import load_config
    from certwright.errors import CertwrightError
    state_dir = Path(args.state_dir)
    yield checks.state_dir_writable(state_dir)
    from certwright.engine.cli.storeargs import store_url_of
    url = store_url_of(args)
    if url is not None and url.kind == "postgresql":
        from certwright.engine.cli.doctor_postgres import postgres_checks
        yield from postgres_checks(url)
    else:
        yield checks.store_integrity(state_dir)
        yield checks.daemon_serving(state_dir)
    yield checks.store_key(args)
    sets = parse_sets(args.set)
    try:
        config = load_config(args)
    except CertwrightError as exc:
        yield checks.Finding("configuration", "fail", str(exc).splitlines()[0],
                             "correct the file at the place named (`certwright config show` "
                             "shows every problem)")
        return
    shown = ", ".join(str(f.path) for f in config.files) or "none found (defaults apply)"
    yield checks.Finding("configuration", "ok", f"files read: {shown}")
    for name in _pipeline_names(args, config):
        yield from _pipeline_checks(name, config, sets, args.timeout)
    yield from _daemon_mail(args, config)


def _daemon_mail(args: argparse.Namespace, config: Any) -> Iterator[Any]:
    from certwright.engine.cli import doctor_checks as checks
    from certwright.engine.daemon.config import from_config
    from certwright.errors import CertwrightError
    try:
        daemon = from_config(config)
    except CertwrightError as exc:
        yield checks.Finding("daemon settings", "fail", str(exc).splitlines()[0],
                             "correct the configuration's daemon: section")
        return
    for maildir in daemon.maildirs:
        yield checks.maildir_ready("daemon: maildirs", Path(maildir))
    cafile = str(daemon.imap_cafile) if daemon.imap_cafile else None
    for url in daemon.imap:
        yield checks.imap_login(url, cafile=cafile, timeout=args.timeout)


def cmd_doctor(args: argparse.Namespace) -> int:
    results = []
    for finding in findings(args):
        results.append(finding)
        if not args.json:
            fix = f" (fix: {finding.fix})" if finding.fix else ""
            print(f"{finding.status:<4}  {finding.check}: {finding.detail}{fix}", flush=True)
    failed = sum(1 for f in results if f.status == "fail")
    warned = sum(1 for f in results if f.status == "warn")
    if args.json:
        json.dump({"ok": not failed, "checks": [f.as_dict() for f in results]}, sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{len(results) - failed - warned} ok, {warned} warning(s), {failed} "
              f"failed", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def register(sub: Any) -> None:
    """Add ``doctor`` to the CLI's subcommands."""
    d = sub.add_parser(
        "doctor", help="check the environment and say what to fix",
        description="Check the state folder, the store's integrity, the daemon, the "
                    "configuration, and for each pipeline its CA, where its mail arrives "
                    "and the web server's config test. One line per check (ok, warn, "
                    "fail) with the fix; exit 1 if any check failed. Changes nothing.")
    d.add_argument("pipelines", nargs="*", metavar="PIPELINE",
                   help="pipelines to check (default: those the configuration file sets "
                        "inputs for, else cacert)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an input value, as for `run` (repeatable)")
    d.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for a CA, an IMAP server or a config test "
                        "(default 5)")
    d.add_argument("--json", action="store_true", help="one JSON document")
    d.set_defaults(func=cmd_doctor)
