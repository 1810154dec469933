"""``certwright certificates [NAME] [--json]``: every certificate the store knows.

One row per certificate name: its inventory record (or, for a succeeded run the inventory
lacks, that run's outputs), else the newest run that works on it. The state is:

* ``revoked`` (the inventory says so), ``expired`` (past not after), ``expiring`` (past its
  renewal instant), ``valid``;
* for a name without an installed certificate: ``waiting for <what>`` (a run waits),
  ``running``, or ``failed`` (its newest run failed or was cancelled).

The installed files are read, not only the records: a certificate file that is gone, or
holds another certificate than the one recorded, is reported (``files``, ``problems``).
A certificate installed on another host (its run's ``host``) is not looked for here: its
files read ``on <host>``, and the store's copy of it (``state.artefacts``) is checked
against the record instead (``kept``: true when the store holds the same certificate).
The next renewal comes from the one renewal schedule (``engine.daemon.renew``: the
inventory's instant, an ARI window, the back-off after failures). Reads
only, so it works on a read-only store.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The parser of every command imports this module for `register`: what the command needs is
# imported when it runs (bench/cli_start.py measures the start-up).
if TYPE_CHECKING:
    from datetime import datetime

    from certwright.state.base import Store
    from certwright.state.records import CertificateRecord, RunRecord

DAY = 86400.0


def _check_files(rec: CertificateRecord) -> tuple[dict[str, str], list[str]]:
    """Each installed file's condition (ok | changed | removed) and what is wrong."""
    # imported here, not at the top: the parser of every command imports this module
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    files: dict[str, str] = {}
    problems: list[str] = []
    for role, path in sorted(rec.paths.items()):
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            files[role] = "removed"
            problems.append(f"{path} was removed")
            continue
        except OSError as exc:
            files[role] = "unreadable"
            problems.append(f"{path} cannot be read: {exc.strerror}")
            continue
        files[role] = "ok"
        if role != "cert":
            continue
        try:
            leaf = x509.load_pem_x509_certificates(data)[0]
        except (ValueError, IndexError):
            files[role] = "changed"
            problems.append(f"{path} was changed: it holds no PEM certificate now")
            continue
        import hashlib
        fp = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
        if rec.fingerprint_sha256 and fp != rec.fingerprint_sha256:
            files[role] = "changed"
            problems.append(f"{path} was changed: it holds serial "
                            f"{leaf.serial_number:x}, not {rec.serial} as installed")
    return files, problems


def _state(rec: CertificateRecord, now: datetime) -> str:
    from certwright.clock import parse_instant
    from certwright.state.records import REVOKED
    if rec.status == REVOKED:
        return "revoked"
    if rec.not_after and now >= parse_instant(rec.not_after):
        return "expired"
    if rec.renew_at and now >= parse_instant(rec.renew_at):
        return "expiring"
    return "valid"


def _name_of(run: RunRecord) -> str:
    name = run.inputs.get("cert_name") or run.inputs.get("domain") or ""
    return str(name).removeprefix("*.")


def _run_state(run: RunRecord) -> str:
    from certwright.state.records import FINISHED
    if run.status in FINISHED:
        return "failed"
    if run.waiting:
        return f"waiting for {run.waiting}"
    return "running"


def _kept(store: Store, rec: CertificateRecord) -> tuple[bool, list[str]]:
    """Whether the store keeps the recorded certificate (the run's ``cert`` artefact with
    the recorded fingerprint), and what is wrong with its copy."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from certwright.errors import StoreError
    try:
        kept = [a for a in store.artefacts(rec.run_id) if a.kind == "cert"]
    except StoreError as exc:
        return False, [f"the store's copy cannot be read: {exc}"]
    for art in kept:
        try:
            leaf = x509.load_pem_x509_certificates(art.data)[0]
        except (ValueError, IndexError):
            continue
        der = leaf.public_bytes(serialization.Encoding.DER)
        if hashlib.sha256(der).hexdigest() == rec.fingerprint_sha256:
            return True, []
    return False, []


def _row(rec: CertificateRecord, now: datetime, schedule: dict[str, str],
         elsewhere: tuple[str, Store] | None = None) -> dict[str, Any]:
    """The row of a record; ``elsewhere``: (host, store) when it was installed on another
    host than this one (its files are not looked for here)."""
    from certwright.clock import parse_instant
    kept = None
    if elsewhere is None:
        files, problems = _check_files(rec)
    else:
        files = dict.fromkeys(rec.paths, f"on {elsewhere[0]}")
        kept, problems = _kept(elsewhere[1], rec)
    days = None
    if rec.not_after:
        days = round((parse_instant(rec.not_after) - now).total_seconds() / DAY, 1)
    from certwright.state.records import REVOKED
    from certwright.steps.inventory import as_dict
    row = as_dict(rec)
    renewal = None if rec.status == REVOKED else (  # a revoked one is never renewed
        schedule.get(rec.name) or rec.renew_at)
    row.update(state=_state(rec, now), days_left=days, files=files, problems=problems,
               next_renewal=renewal, run=rec.run_id, pending_run=None,
               host=elsewhere[0] if elsewhere else None, kept=kept)
    return row


def _run_row(run: RunRecord) -> dict[str, Any]:
    from certwright.state.records import FAILED
    return {"name": _name_of(run), "state": _run_state(run), "names": [], "issuer": "",
            "serial": "", "not_before": "", "not_after": "", "days_left": None,
            "dir": str(run.inputs.get("cert_dir") or ""), "paths": {}, "files": {},
            "problems": [run.error] if run.status == FAILED and run.error else [],
            "run": run.id, "pipeline": run.pipeline, "next_renewal": None,
            "pending_run": None, "host": run.host or None, "kept": None}


def certificate_rows(store: Store, state_dir: Path, now: datetime,
                     here: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``certificates``, by name (see the module); ``here``: this host's name
    (None: every certificate's files are looked for here)."""
    from certwright.engine.daemon.renew import schedule as renewal_schedule
    from certwright.state.records import FINISHED
    from certwright.steps.inventory import pending_records
    planned = [] if getattr(store, "outdated", False) else renewal_schedule(store)
    schedule = {str(r["name"]): str(r["next_at"]) for r in planned if r["next_at"]}
    records = {c.name: c for c in store.list_certificates()}
    records.update({c.name: c for c in pending_records(store)})
    hosts = {run.id: run.host for run in store.list_runs()} if here else {}
    rows = {name: _row(rec, now, schedule, (hosts[rec.run_id], store) if hosts.get(
        rec.run_id) not in (None, "", here) else None) for name, rec in records.items()}
    made = {rec.run_id for rec in records.values()}
    for run in store.list_runs():  # oldest first: the newest run of a name wins
        name = _name_of(run)
        if not name or run.id in made or run.status == "succeeded":
            continue
        if name in rows and rows[name]["serial"]:
            if run.status not in FINISHED:
                rows[name]["pending_run"] = f"{run.id}: {_run_state(run)}"
            continue
        rows[name] = _run_row(run)
    return [rows[n] for n in sorted(rows)]


def _when(instant: str | None) -> str:
    return instant[:10] if instant else "-"


def _renewal_cell(row: dict[str, Any]) -> str:
    """The next renewal, with the CA's ARI window (RFC 9773) when it suggested one."""
    window = (row.get("ari") or {}).get("suggestedWindow")
    if not (isinstance(window, dict) and row["next_renewal"] and row["state"] != "revoked"):
        return _when(row["next_renewal"])
    return (f"{_when(row['next_renewal'])} (ARI window {_when(window.get('start'))}"
            f"\u2013{_when(window.get('end'))})")


def _ari_lines(row: dict[str, Any]) -> list[str]:
    ari = row.get("ari") or {}
    lines = []
    if ari.get("explanationURL"):
        lines.append(f"the CA explains its renewal window at {ari['explanationURL']}")
    replaced = ari.get("replaces") or {}
    if replaced.get("serial"):
        lines.append(f"replaced serial {replaced['serial']}" + (
            "" if replaced.get("accepted") else " (the CA refused replaces: ordered without)"))
    if ari.get("error"):
        lines.append(f"reading the CA's renewal window failed ({ari['error']}); "
                     f"next try {ari.get('next_check') or 'later'}")
    return lines


def print_table(rows: list[dict[str, Any]]) -> None:
    """A plain table (no terminal library), then one line per problem of a row."""
    head = ("NAME", "STATE", "NAMES", "NOT AFTER", "DAYS", "SERIAL", "NEXT RENEWAL", "FOLDER")
    table = [head] + [(
        r["name"], r["state"], ",".join(r["names"]) or "-", _when(r["not_after"]),
        "-" if r["days_left"] is None else f"{r['days_left']:g}", r["serial"][:16] or "-",
        _renewal_cell(r), r["dir"] or "-") for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for r in rows:
        if r["state"] == "revoked":
            print(f"{r['name']}: revoked on {r.get('revoked_at') or 'an unknown date'} "
                  f"({r.get('revoke_reason') or 'no reason given'}), never renewed")
        if r.get("kept") is not None:
            kept = ("its certificate is kept in the store" if r.get("kept") else
                    "the store keeps no copy of it")
            print(f"{r['name']}: installed on host {r['host']} (its files are not checked "
                  f"here); {kept}")
        for problem in r["problems"]:
            print(f"{r['name']}: {problem}")
        for line in _ari_lines(r):
            print(f"{r['name']}: {line}")
        if r["pending_run"]:
            print(f"{r['name']}: run {r['pending_run']}")


def cmd_certificates(args: argparse.Namespace) -> int:
    import json

    from certwright.clock import clock_from_env, format_instant
    from certwright.engine.cli.config_cmd import this_host
    from certwright.engine.cli.storeargs import open_store_of
    from certwright.errors import InputError
    store = open_store_of(args, readonly=True)
    try:
        now = clock_from_env().now()
        rows = certificate_rows(store, args.state_dir, now, this_host(args))
    finally:
        store.close()
    if args.name:
        rows = [r for r in rows if r["name"] == args.name]
        if not rows:
            raise InputError(f"no certificate named {args.name!r} in {args.state_dir}; "
                             "`certwright certificates` lists them all")
    if args.json:
        json.dump({"now": format_instant(now), "certificates": rows}, sys.stdout, indent=2,
                  default=str)
        sys.stdout.write("\n")
    elif rows:
        print_table(rows)
    else:
        print(f"no certificates in {args.state_dir} yet")
    return 0


def register(sub: Any) -> None:
    """Add ``certificates`` to the CLI's subcommands."""
    c = sub.add_parser("certificates", help="list the certificates: names, expiry, state, files")
    c.add_argument("name", nargs="?", help="only the certificate of this name")
    c.add_argument("--json", action="store_true", help="one JSON document")
    c.set_defaults(func=cmd_certificates)
