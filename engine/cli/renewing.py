"""``certwright renew [NAME...] [--force] [--dry-run] [--set K=V]``: renew certificates.

Without names, every certificate of the inventory that is due (its renewal instant,
:func:`certwright.steps.inventory.renewal_instant`, has passed by the process's clock);
with names, those (an unknown name is a usage error naming the known ones), when due;
``--force`` renews them now whatever the schedule says (all of them without names, as
certbot's ``--force-renewal``). Each renewal starts the current pipeline of the name that
made the certificate (else, when it is gone, the version the old run pinned) with that
run's inputs and the same certificate name (:func:`engine.daemon.renew.plan_renewal`,
shared with the daemon), so install puts the new version into the same folder and keeps
the old one.

It says first what it will do (one line per certificate: name, why, pipeline), then
drives the runs in the foreground one after the other and says what each did. Exit 0
when all were renewed (or nothing was due), 1 when one failed, else 3 when one parked.
When a daemon serves the store the runs are handed to it instead (created, not driven:
the daemon adopts new runs every ``sync_interval``, 2 s by default) and renew exits 0.

A renewal is claimed in the renewal schedule before its run starts, so the daemon never
starts a second one of the same name; its outcome is settled there (success clears the
back-off, failure counts an attempt). ``--dry-run`` passes each renewal (due or not, as
certbot's does) against a throwaway CA (:mod:`engine.cli.dryrun`) and writes nothing of
the real state.
"""
from __future__ import annotations

import argparse
from contextlib import ExitStack
from datetime import datetime
from typing import TYPE_CHECKING

from certwright.clock import clock_from_env, format_instant
from certwright.engine.daemon.renew import Renewal, claim, plan_renewal, settle
from certwright.errors import CertwrightError, InputError
from certwright.state.locks import daemon_lock, run_lock
from certwright.state.records import SUCCEEDED, CertificateRecord
from certwright.steps.inventory import pending_records, policy_from, record, renewal_instant

if TYPE_CHECKING:
    from certwright.engine.model.spec import PipelineSpec
    from certwright.state.base import Store

EXIT_OK, EXIT_FAILED, EXIT_PARKED = 0, 1, 3


def _when(instant: datetime) -> str:
    return format_instant(instant)[:16].replace("T", " ") + "Z"


def _spec(store: Store, rec: CertificateRecord) -> PipelineSpec:
    """The current pipeline of the certificate's name, else the version its run pinned."""
    from certwright.engine.cli.commands import _load
    try:
        return _load(rec.pipeline)  # type: ignore[no-any-return]
    except CertwrightError:
        run = store.find_run(rec.run_id)
        if run is None:
            raise
        from certwright.engine.model.loader import load_pipeline_text
        _, source, text = store.load_spec(run.spec_hash)
        return load_pipeline_text(text, source)


def _select(args: argparse.Namespace, store: Store, certs: dict[str, CertificateRecord],
            now: datetime) -> list[tuple[CertificateRecord, str]]:
    """(record, why) for each certificate to renew; prints why others are skipped."""
    unknown = [n for n in args.names if n not in certs]
    if unknown:
        raise InputError(f"unknown certificate {unknown[0]!r} (known: "
                         f"{', '.join(sorted(certs)) or 'none'})")
    chosen = []
    for name in args.names or sorted(certs):
        rec = certs[name]
        if not args.dry_run:
            settle(store, name, now)
            held = store.find_renewal(name)
            if held is not None and held.run_id:
                print(f"{name}: a renewal is in flight already (run {held.run_id}); "
                      f"see: certwright status {held.run_id}")
                continue
        due = renewal_instant(rec)
        if args.force:
            chosen.append((rec, "forced"))
        elif due is not None and due <= now:
            chosen.append((rec, f"due since {_when(due)}"))
        elif args.dry_run:  # as certbot's: a dry run tries every certificate
            chosen.append((rec, f"not due until {_when(due) if due else 'never'}"))
        elif args.names:
            print(f"{name}: not due until {_when(due) if due else 'never'} "
                  f"(--force renews it now)")
    return chosen


def _nothing_due(certs: dict[str, CertificateRecord]) -> None:
    upcoming = sorted((when, name) for name, rec in certs.items()
                      if (when := renewal_instant(rec)) is not None)
    if upcoming:
        when, name = upcoming[0]
        print(f"no certificate is due for renewal; the next is {name} on {_when(when)}")
    else:
        print("no certificate is due for renewal")


def cmd_renew(args: argparse.Namespace) -> int:
    from certwright.engine.cli.commands import _load, parse_sets
    from certwright.engine.cli.storeargs import open_store_of as _open
    sets = parse_sets(args.set)
    if sets and not args.dry_run:
        raise InputError("renew --set is for --dry-run only: a renewal runs with the "
                         "inputs of the run that made the certificate")
    store = _open(args)
    now = clock_from_env().now()
    pending = pending_records(store, policy_from(_load))
    if not args.dry_run:
        record(store, pending)  # a run whose hook died: the inventory learns it now
    certs = {c.name: c for c in store.list_certificates()}
    certs.update({c.name: c for c in pending})
    if not certs:
        print("no certificate in the inventory yet (`certwright run` makes one)")
        return EXIT_OK
    chosen = _select(args, store, certs, now)
    if not chosen:
        if not args.names:
            _nothing_due(certs)
        return EXIT_OK
    plans = []
    for rec, why in chosen:
        plan = plan_renewal(store, args.state_dir, rec, _spec(store, rec))
        plans.append(plan)
        print(f"{'dry run: ' if args.dry_run else ''}renewing {rec.name}: {why} "
              f"(pipeline {plan.spec.name}, renews run {rec.run_id})", flush=True)
    if args.dry_run:
        from certwright.engine.cli.dryrun import trial
        codes = [trial(p.spec, {**p.inputs, **sets}, p.name, explicit=sets) for p in plans]
        return _worst(codes)
    from certwright.engine.cli.storeargs import refuse_if_served_elsewhere
    refuse_if_served_elsewhere(args)  # its daemon's run locks are not this folder's
    pid = daemon_lock(args.state_dir).holder()
    if pid:
        for plan in plans:
            _hand_off(args, store, plan, pid)
        return EXIT_OK
    return _worst([_renew_here(args, store, plan) for plan in plans])


def _worst(codes: list[int]) -> int:
    if EXIT_FAILED in codes or any(c not in (EXIT_OK, EXIT_PARKED) for c in codes):
        return EXIT_FAILED
    return EXIT_PARKED if EXIT_PARKED in codes else EXIT_OK


def _hand_off(args: argparse.Namespace, store: Store, plan: Renewal, pid: int) -> None:
    """Create the renewal run for the daemon (pid ``pid``) to drive; drive nothing."""
    from certwright.engine.model.inputs import coerce_inputs
    from certwright.engine.run.naming import new_run_id
    from certwright.engine.run.runner import Engine, EngineOptions
    inputs = coerce_inputs(plan.spec, plan.inputs)  # the daemon serves what they name
    run_id = new_run_id(plan.spec.name)
    clock = clock_from_env()
    with run_lock(args.state_dir, run_id):
        if not claim(store, plan.name, run_id, plan.renews, clock.now()):
            print(f"{plan.name}: the daemon started a renewal meanwhile")
            return
        engine = Engine(store, args.state_dir, clock=clock,
                        options=EngineOptions(scope=[run_id]))
        try:
            engine.start_run(plan.spec, inputs, run_id, secret_inputs=plan.secret,
                             host=plan.host)
        finally:
            engine.close()
    print(f"{plan.name}: handed to the daemon (pid {pid}): run {run_id}; follow it with "
          f"certwright status {run_id}")


def _renew_here(args: argparse.Namespace, store: Store, plan: Renewal) -> int:
    """Drive the renewal ``plan`` in the foreground; says what it did."""
    from certwright.engine.cli.commands import _engine
    from certwright.engine.model.inputs import coerce_inputs
    from certwright.engine.run.foreground import describe_wait, drive
    from certwright.engine.run.naming import new_run_id
    from certwright.engine.run.services import start_services
    from certwright.engine.run.watch import WaitWatcher
    clock = clock_from_env()
    run_id = new_run_id(plan.spec.name)
    try:
        with ExitStack() as stack:
            stack.enter_context(run_lock(args.state_dir, run_id))
            services, given = start_services(plan.spec, plan.inputs, args.state_dir, stack)
            inputs = coerce_inputs(plan.spec, given)
            watcher = WaitWatcher()
            engine = _engine(args, run_id, services, watcher)
            stack.callback(engine.store.close)
            stack.callback(engine.close)
            engine.open()
            if not claim(store, plan.name, run_id, plan.renews, clock.now()):
                print(f"{plan.name}: a renewal started elsewhere meanwhile")
                return EXIT_OK
            engine.start_run(plan.spec, inputs, run_id, secret_inputs=plan.secret,
                             host=plan.host)
            outcome = drive(engine, run_id, watcher)
    except CertwrightError as exc:
        print(f"{plan.name}: not renewed: {exc}")
        return EXIT_FAILED
    settle(store, plan.name, clock.now())
    run = outcome.run
    if outcome.parked:
        print(f"{plan.name}: parked: run {run.id} is {describe_wait(run, clock.now())}; "
              f"resume with: certwright resume {run.id}")
        return EXIT_PARKED
    cert = store.find_certificate(plan.name)
    if run.status == SUCCEEDED and cert is not None and cert.run_id == run.id:
        print(f"{plan.name}: renewed, serial {cert.serial}, not after {cert.not_after[:10]} "
              f"(run {run.id}, {cert.dir or 'installed'})")
        return EXIT_OK
    print(f"{plan.name}: renewal failed in state {run.state!r}: {run.error or run.status}; "
          f"see: certwright history {run.id}")
    return EXIT_FAILED
