"""``certwright store migrate [--from sqlite:///PATH] --to postgresql://...``: move a store;
``certwright store keygen FILE``: make its key.

``--from`` defaults to the SQLite store of ``--state-dir``. Copies every run, its
journal, timers, correlations and secrets, the pinned pipelines, the processed marks,
the certificate inventory and the renewal schedule from a SQLite store into an empty
PostgreSQL one (:mod:`certwright.state.postgres_copy`), then checks each table's row
count and checksum on both sides and prints them. Refused (exit 4) while a daemon serves
either store or a process drives a run of the source; for the copy's length it holds
both stores itself, so no daemon can start on them meanwhile. A bad URL, a missing file
or another direction is a usage error (exit 2); a non-empty target or a failed check
exits 1, a store fault 5, each with nothing committed. The source is never written (it
is only brought to today's schema first, as any opening would).

``certwright store keygen FILE`` writes a new store key (``state.sealing``): 32 random
bytes, base64, in a 0600 file, never over an existing one; it prints the key's id, never
the key. Name the file in the configuration (``store_key:``), ``--store-key`` or
``CERTWRIGHT_STORE_KEY``, on every host and for every command on the store.

Building the parser imports nothing heavy; the copy's modules load when it runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def cmd_store_migrate(args: argparse.Namespace) -> int:
    """Copy ``--from`` into ``--to`` (see the module); the exit code."""
    from certwright.errors import InputError
    from certwright.state import names as N
    from certwright.state.urls import POSTGRESQL, SQLITE, parse_store_url
    given = args.source or f"sqlite://{Path(args.state_dir) / N.DB_FILE}"
    source = parse_store_url(given, "--from")
    target = parse_store_url(args.target, "--to")
    if source.kind != SQLITE or target.kind != POSTGRESQL:
        raise InputError("store migrate copies a SQLite store into a PostgreSQL one: "
                         "--from sqlite:///PATH --to postgresql://...")
    if not source.path.is_file():
        raise InputError(f"--from {given!r}: there is no SQLite store at {source.path}")
    from certwright.state.locks import daemon_lock
    from certwright.state.postgres import PostgresStore
    from certwright.state.postgres_copy import copy_sqlite_to_postgres
    state_dir = source.path.parent
    _refuse_driven_runs(state_dir)
    with daemon_lock(state_dir):  # RunLocked naming the daemon: exit 4
        store = PostgresStore(target.target)
        try:
            store.hold_daemon(alone=True)
            say = (lambda _: None) if args.json else _progress
            say(f"copying {source} into {store.path}")
            tables = copy_sqlite_to_postgres(source.path, store, say)
        finally:
            store.close()
    _report(args, str(source), store.path, tables)
    return 0


def cmd_store_keygen(args: argparse.Namespace) -> int:
    """Write a new store key to ``args.file`` (see the module); the exit code."""
    from certwright.state.sealing import generate_key_file
    sealer = generate_key_file(Path(args.file))
    print(f"wrote store key {sealer.key_id} to {args.file} (mode 0600). Keep a copy apart "
          f"from the store and its backups; every host and command on the store needs it: "
          f"store_key: {args.file} in the configuration")
    return 0


def _refuse_driven_runs(state_dir: Path) -> None:
    """RunLocked when a process (``run``, ``resume``) drives a run of the source now."""
    from certwright.errors import RunLocked
    from certwright.state.locks import FileLock
    for path in sorted((state_dir / "locks").glob("run-*.lock")):
        run_id = path.stem.removeprefix("run-")
        pid = FileLock(path, f"run {run_id}").holder()
        if pid:
            raise RunLocked(f"run {run_id} of the store in {state_dir} (let it park or "
                            f"finish first)", pid)


def _progress(line: str) -> None:
    print(line, file=sys.stderr)


def _report(args: argparse.Namespace, source: str, target: str, tables: list[Any]) -> None:
    if args.json:
        json.dump({"from": source, "to": target, "tables": [
            {"table": t.table, "rows": t.target_rows, "sha256": t.target_sum,
             "source_rows": t.source_rows, "source_sha256": t.source_sum, "ok": t.ok}
            for t in tables]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    width = max(len(t.table) for t in tables)
    print(f"{'TABLE':<{width}}  {'ROWS':>7}  SHA-256 (source = target)")
    for t in tables:
        print(f"{t.table:<{width}}  {t.target_rows:>7}  {t.target_sum[:16]} = "
              f"{t.source_sum[:16]}")
    runs = next(t.target_rows for t in tables if t.table == "runs")
    print(f"copied {runs} runs into {target}; every count and checksum matches.\n"
          f"Use it with --store URL (or CERTWRIGHT_STORE, or store: in the configuration "
          f"file). The SQLite store is left as it was: drive no runs in it any more.")


def register(sub: Any) -> None:
    """Add the ``store`` subcommand and its ``migrate``."""
    s = sub.add_parser("store", help="manage the store itself (copy it to PostgreSQL, "
                                     "make its key)")
    actions = s.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    m = actions.add_parser(
        "migrate", help="copy a SQLite store into an empty PostgreSQL store",
        description="Copy runs, journals, timers, correlations, secrets, the certificate "
                    "inventory and the renewal schedule, then check every table's row "
                    "count and checksum on both sides. Refused while a daemon serves "
                    "either store.")
    m.add_argument("--from", dest="source", default=None, metavar="URL",
                   help="the SQLite store: sqlite:///PATH/TO/certwright.sqlite (default: "
                        "the one in --state-dir)")
    m.add_argument("--to", dest="target", required=True, metavar="URL",
                   help="the empty PostgreSQL store: postgresql://[USER@]HOST[:PORT]/DATABASE")
    m.add_argument("--json", action="store_true", help="the tables' counts and checksums "
                                                       "as one JSON document")
    m.set_defaults(func=cmd_store_migrate)
    k = actions.add_parser(
        "keygen", help="write a new store key, sealing secrets and keys kept in the store",
        description="Write 32 random bytes (base64) to FILE, mode 0600, never over an "
                    "existing file. With a store key (store_key: in the configuration, "
                    "--store-key or CERTWRIGHT_STORE_KEY) the store seals the runs' "
                    "secrets and keeps their private keys, CSRs and certificates sealed "
                    "(AES-256-GCM), so a run can move between hosts without its files.")
    k.add_argument("file", metavar="FILE", help="where to write the key")
    k.set_defaults(func=cmd_store_keygen)
