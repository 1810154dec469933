"""``certwright revoke NAME [--reason REASON] [--yes]``: have the issuer revoke a certificate.

The certificate is found by name in the inventory (as ``certificates`` shows it), then:

* **the built-in CA** (the run's input ``ca``): through its API, logged in with the account
  the run used (``<state_dir>/accounts/``, kept by ``ca.join``). A certificate of the
  **embedded** CA is told from the record, not by its URL (a loopback address that nothing
  serves once the run ended): the installed certificate verifies against the embedded CA's
  intermediate. That CA is started on its own state for the revocation (as ``resume``
  does), or used where it is served already (``daemon --embedded``);
* **ACME** (the run's input ``directory``): RFC 8555 revokeCert, signed by the run's
  account or the certificate's key (:mod:`certwright.steps.acme.revoke`).

Afterwards the inventory record says revoked (when, why) and has no next renewal, the
daemon never renews it (the schedule reads the inventory), and after
keyCompromise the key is recorded as compromised (never used again, a note beside each
file). The certificate's files are kept where they are; the output says where.

Exit codes: 0 revoked, or revoked already (said so, with when and why); 2 an unknown name
or reason; 1 the issuer unreachable or refusing, or no account to ask with. Nothing is
marked revoked unless the issuer said it is.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from certwright.clock import clock_from_env, format_instant
from certwright.errors import CertwrightError, InputError, StepError
from certwright.state.base import Store
from certwright.state.records import REVOKED, CertificateRecord

#: RFC 5280 reasons a subscriber may give for a final revocation, with their codes.
#: (certificateHold is not final; removeFromCRL, cACompromise, aACompromise are the CA's.)
REASONS: dict[str, int] = {"unspecified": 0, "keyCompromise": 1, "affiliationChanged": 3,
                           "superseded": 4, "cessationOfOperation": 5,
                           "privilegeWithdrawn": 9}
_BY_KEY = {name.lower(): name for name in REASONS}


def parse_reason(text: str) -> str:
    """The RFC 5280 spelling of ``text`` (any case; ``-``, ``_`` and spaces ignored, so
    certbot's ``keycompromise`` and ``key-compromise`` work); ArgumentTypeError otherwise."""
    key = text.replace("-", "").replace("_", "").replace(" ", "").lower()
    if key not in _BY_KEY:
        raise argparse.ArgumentTypeError(
            f"unknown revocation reason {text!r}; choose one of {', '.join(REASONS)} "
            "(any case, as certbot's keycompromise)")
    return _BY_KEY[key]


def find_record(store: Store, name: str, state_dir: Path) -> CertificateRecord:
    """The inventory's certificate ``name`` (or a succeeded run's the inventory lacks);
    InputError naming the known ones."""
    from certwright.steps.inventory import pending_records
    records = {c.name: c for c in store.list_certificates()}
    records.update({c.name: c for c in pending_records(store)})
    if name in records:
        return records[name]
    known = ", ".join(sorted(records)) or "none yet"
    raise InputError(f"no certificate named {name!r} in {state_dir} (known: {known}); "
                     "`certwright certificates` lists them")


def _log() -> Any:
    import structlog
    return structlog.get_logger("revoke")


def _confirm(rec: CertificateRecord, reason: str, issuer: str) -> bool:
    """Ask on a terminal (never when stdin is not one)."""
    if not sys.stdin.isatty():
        return True
    try:
        answer = input(f"Revoke certificate {rec.name} (serial {rec.serial}, "
                       f"{', '.join(rec.names)}) at {issuer} for {reason}? It cannot be "
                       "undone. [y/N] ")
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C: no
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


def _revoke_at_issuer(args: argparse.Namespace, store: Store, rec: CertificateRecord,
                      reason: str, now: str) -> tuple[str, str | None, bool]:
    """Ask the issuer; returns (revoked_at, reason, already). What a certificate made on
    another host needs comes from the store: the certificate, and the account's
    credentials (with a store key)."""
    from certwright.engine.cli import _revoked
    cert = _revoked.installed_cert(rec) or _revoked.kept_cert(store, rec)
    if rec.inputs.get("directory"):
        from certwright.steps.acme.kept import restore_account_files
        from certwright.steps.acme.revoke import AlreadyRevoked, params_of, revoke_at_acme
        restore_account_files(args.state_dir, params_of(rec.inputs),
                              lambda name: _revoked.shared_artefact(store, name), _log())
        if cert is None:
            raise CertwrightError(
                f"{rec.paths.get('cert')} no longer holds certificate {rec.name} (serial "
                f"{rec.serial}): an ACME CA needs the certificate itself to revoke it; put "
                "it back and try again")
        key = Path(rec.paths["key"]) if rec.paths.get("key") else None
        try:
            by = revoke_at_acme(args.state_dir, rec.inputs, cert, REASONS[reason], key)
        except AlreadyRevoked:
            return now, None, True
        except StepError as exc:
            raise CertwrightError(f"{exc}; nothing was revoked") from exc
        print(f"the ACME CA {rec.inputs['directory']} revoked it (signed with {by})")
        return now, reason, False
    with ExitStack() as stack:
        answer = _revoked.revoke_builtin(args.state_dir, rec, cert, reason, stack, store)
    return str(answer["revoked_at"]), answer.get("reason"), bool(answer.get("already"))


def cmd_revoke(args: argparse.Namespace) -> int:
    """The command (see the module)."""
    from certwright.engine.cli.storeargs import open_store_of as _open
    store = _open(args)
    try:
        rec = find_record(store, args.name, args.state_dir)
        if rec.status == REVOKED:
            print(f"{rec.name} (serial {rec.serial}) was already revoked on "
                  f"{rec.revoked_at or 'an unknown date'} ({rec.revoke_reason or 'no reason'})")
            if "keyCompromise" in (args.reason, rec.revoke_reason):
                _report_compromised(args.state_dir, store, rec)
            return 0
        issuer = str(rec.inputs.get("directory") or rec.inputs.get("ca") or rec.issuer)
        if not args.yes and not _confirm(rec, args.reason, issuer):
            print("nothing revoked")
            return 0
        now = format_instant(clock_from_env().now())
        when, why, already = _revoke_at_issuer(args, store, rec, args.reason, now)
        marked = dataclasses.replace(rec, status=REVOKED, revoked_at=when, revoke_reason=why,
                                     renew_at=None, updated=now)
        with store.transaction() as tx:
            tx.put_certificate(marked)
        if already and why is None:
            print(f"{rec.name} (serial {rec.serial}) was revoked already: {issuer} does not "
                  "say when or why; the inventory says revoked now")
        elif already:
            print(f"{rec.name} (serial {rec.serial}) was already revoked on {when} ({why}); "
                  "the inventory says so now")
        else:
            print(f"revoked {rec.name} (serial {rec.serial}) at {issuer}: {why}, on {when}")
        if "keyCompromise" in (why, args.reason):
            _report_compromised(args.state_dir, store, marked)
    finally:
        store.close()
    print(f"its files stay in {rec.dir or rec.paths.get('cert')}; `certwright run "
          f"{rec.pipeline or 'PIPELINE'} --name {rec.name} ...` makes a new certificate")
    return 0


def _report_compromised(state_dir: Path, store: Store, rec: CertificateRecord) -> None:
    from certwright.engine.cli import _revoked
    notes = _revoked.mark_key_compromised(state_dir, store, rec)
    where = f" (a note beside it: {', '.join(str(n) for n in notes)})" if notes else ""
    print(f"its key is marked compromised{where}: certwright will never use it again; the "
          f"next run for {rec.name} makes a new key")


def register(sub: Any) -> None:
    """Add ``revoke`` to the CLI's subcommands."""
    r = sub.add_parser("revoke", help="have the issuer revoke a certificate, by name",
                       description="Revoke a certificate of the inventory at its issuer "
                       "(the built-in CA, the embedded one, or an ACME CA). Its files are "
                       "kept; after keyCompromise its key is never used again.")
    r.add_argument("name", help="the certificate's name (see `certwright certificates`)")
    r.add_argument("--reason", type=parse_reason, default="unspecified",
                   help=f"the RFC 5280 reason: {', '.join(REASONS)} (any case; default "
                        "unspecified)")
    r.add_argument("-y", "--yes", action="store_true",
                   help="do not ask on a terminal (never asked otherwise)")
    r.set_defaults(func=cmd_revoke)
