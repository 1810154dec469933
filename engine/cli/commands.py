"""The CLI's commands: each takes parsed arguments and returns an exit code."""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certwright.clock import clock_from_env, parse_instant
from certwright.engine.model import graph
from certwright.engine.run.foreground import Outcome, describe_wait, drive, summary
from certwright.engine.run.interceptor import Interceptor
from certwright.engine.run.naming import check_run_id, new_run_id
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.engine.run.services import start_services
from certwright.engine.run.watch import WaitWatcher
from certwright.errors import CertwrightError, InputError, SpecError
from certwright.state.location import open_store
from certwright.state.locks import daemon_lock, run_lock
from certwright.state.opening import Connect
from certwright.state.records import FINISHED, RUNNING, SUCCEEDED, RunRecord
from certwright.state.sqlite import SQLiteStore
from certwright.steps.inventory import InventoryHook, policy_from

if TYPE_CHECKING:
    from certwright.engine.model.spec import PipelineSpec

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARKED, EXIT_LOCKED = 0, 1, 2, 3, 4


def _open(args: argparse.Namespace, *, readonly: bool = False) -> SQLiteStore:
    """The store of ``--state-dir``; ``readonly`` for commands that only read (they then
    work on a read-only or full file system). StoreFault when it cannot be opened."""
    connect: Connect = sqlite3.connect
    flag = os.environ.get("CERTWRIGHT_IO_ERROR_WHILE")  # fault-injection hook (tests)
    if flag:
        from certwright.engine.testing import FailingIO
        connect = FailingIO(Path(flag)).connect
    return open_store(args.state_dir, readonly=readonly, connect=connect)


def _load(name: str) -> Any:
    from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
    from certwright.engine.model.speccache import default_cache_dir
    return load_pipeline(resolve_pipeline_path(name), cache_dir=default_cache_dir())


def parse_sets(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; raises InputError on ``a``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _engine(args: argparse.Namespace, run_id: str, services: dict[str, Any],
            watcher: WaitWatcher) -> Engine:
    hooks: list[Interceptor] = [watcher]
    crash = os.environ.get("CERTWRIGHT_CRASH_AFTER_COMMITS")  # fault-injection hook (tests)
    if crash:
        from certwright.engine.testing import CrashAfterCommits
        hooks.append(CrashAfterCommits(int(crash)))
    store = _open(args)
    hooks.append(InventoryHook(store, policy_from(_load)))
    return Engine(store, args.state_dir, clock=clock_from_env(), services=services,
                  options=EngineOptions(scope=[run_id]), interceptors=hooks)


def _finish(outcome: Outcome) -> int:
    run = outcome.run
    if outcome.parked:
        print(f"parked: run {run.id} is {describe_wait(run, clock_from_env().now()) or run.status}"
              f"\nresume with: certwright resume {run.id}", file=sys.stderr)
        return EXIT_PARKED
    if run.status == SUCCEEDED:
        for outputs in run.vars.values():
            if isinstance(outputs, dict) and outputs.get("report"):
                print(str(outputs["report"]).rstrip())
        print(f"run {run.id} succeeded: state {run.state!r}", file=sys.stderr)
        return EXIT_OK
    print(f"run {run.id} {run.status} in state {run.state!r}: {run.error}\n"
          f"see: certwright history {run.id}", file=sys.stderr)
    return EXIT_FAILED


def _refuse_if_daemon(state_dir: Path) -> None:
    pid = daemon_lock(state_dir).holder()
    if pid:
        raise CertwrightError(
            f"a daemon (pid {pid}) serves the store in {state_dir}; use `certwright run "
            f"--no-wait` to hand it a run, or stop the daemon first")


def _refuse_foreign_folder(inputs: dict[str, Any]) -> None:
    """InputError, before the run exists, when ``cert_dir`` belongs to a certificate of
    another name than ``cert_name`` (install.files would refuse it after issuing)."""
    from certwright.errors import PermanentError
    from certwright.steps._install_lineage import check_owner, folder_name
    if not (inputs.get("cert_dir") and inputs.get("cert_name")):
        return
    try:
        check_owner(Path(str(inputs["cert_dir"])), folder_name(str(inputs["cert_name"])))
    except PermanentError as exc:
        raise InputError(str(exc).removeprefix("install.files: ")) from None


def with_domains(spec: PipelineSpec, given: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``given`` with the names of ``-d NAME`` (in order) as the input ``domains``.

    Raises InputError when the pipeline takes no ``domains`` or ``--set domains=`` is given
    too (one of the two would be ignored)."""
    if not names:
        return given
    if "domains" not in spec.inputs:
        raise InputError(f"-d: pipeline {spec.name!r} takes no 'domains' input "
                         f"(it takes: {', '.join(spec.inputs) or 'none'}); use --set")
    if given.get("domains") is not None:
        raise InputError("give the names either with -d NAME or with --set domains=..., "
                         "not both")
    return {**given, "domains": list(names)}


def cmd_run(args: argparse.Namespace) -> int:
    from certwright.engine.cli.config_cmd import load_config, run_inputs
    from certwright.engine.model.inputs import coerce_inputs
    spec = _load(args.pipeline)
    given: dict[str, Any] = with_domains(
        spec, run_inputs(load_config(args), spec, parse_sets(args.set)),
        getattr(args, "domains", []))
    if getattr(args, "name", None):
        given["cert_name"] = args.name
    run_id = check_run_id(args.run_id) if args.run_id else new_run_id(spec.name)
    if not args.no_wait:
        _refuse_if_daemon(args.state_dir)
    with ExitStack() as stack:
        stack.enter_context(run_lock(args.state_dir, run_id))
        services, given = start_services(spec, given, args.state_dir, stack)
        inputs = coerce_inputs(spec, given)
        _refuse_foreign_folder(inputs)
        watcher = WaitWatcher()
        engine = _engine(args, run_id, services, watcher)
        stack.callback(engine.close)
        engine.open()
        secret = [n for n, i in spec.inputs.items() if i.secret]
        engine.start_run(spec, inputs, run_id, secret_inputs=secret)
        print(f"run {run_id} started (pipeline {spec.name}, {spec.source})", file=sys.stderr)
        return _finish(drive(engine, run_id, watcher, no_wait=args.no_wait))


def cmd_resume(args: argparse.Namespace) -> int:
    store = _open(args)
    run = store.load_run(args.run_id)
    if run.status in FINISHED:
        print(f"run {run.id} already {run.status} (state {run.state!r})", file=sys.stderr)
        return EXIT_OK if run.status == SUCCEEDED else EXIT_FAILED
    if not args.no_wait:
        _refuse_if_daemon(args.state_dir)
    with ExitStack() as stack:
        stack.enter_context(run_lock(args.state_dir, run.id))
        _, source, text = store.load_spec(run.spec_hash)
        from certwright.engine.model.loader import load_pipeline_text
        spec = load_pipeline_text(text, source)
        services, _ = start_services(spec, dict(run.inputs), args.state_dir, stack)
        watcher = WaitWatcher()
        engine = _engine(args, run.id, services, watcher)
        stack.callback(engine.close)
        engine.open()
        engine.wake(run.id)  # re-check a wait at once: the mail may have come meanwhile
        print(f"resuming run {run.id} in state {run.state!r}", file=sys.stderr)
        return _finish(drive(engine, run.id, watcher, no_wait=args.no_wait))


def cmd_cancel(args: argparse.Namespace) -> int:
    store = _open(args)
    run = store.load_run(args.run_id)
    if run.status in FINISHED:
        print(f"run {run.id} already {run.status}", file=sys.stderr)
        return EXIT_OK
    with run_lock(args.state_dir, run.id):
        engine = Engine(store, args.state_dir, clock=clock_from_env(),
                        options=EngineOptions(scope=[run.id], inline=True))
        engine.cancel(run.id, args.reason)
        engine.pump()
        engine.close()
    print(f"run {run.id} cancelled", file=sys.stderr)
    return EXIT_OK


def _interrupted(state_dir: Path, run: RunRecord, daemon: int | None) -> bool:
    """A run stored as running that nothing drives: its process died (killed, or a store
    error ended it) and no daemon serves the store to pick it up."""
    return run.status == RUNNING and not daemon and run_lock(state_dir, run.id).holder() is None


def cmd_status(args: argparse.Namespace) -> int:
    store = _open(args, readonly=True)
    if args.run_id:
        runs = [store.load_run(args.run_id)]
    else:
        runs = [r for r in store.list_runs() if args.all or r.status not in FINISHED]
    daemon = daemon_lock(args.state_dir).holder()
    stopped = {r.id for r in runs if _interrupted(args.state_dir, r, daemon)}
    from certwright.engine.daemon.renew import renewals_status
    renewals = renewals_status(args.state_dir)
    if args.json:
        print(json.dumps({"daemon_pid": daemon, "renewals": renewals,
                          "runs": [{**summary(r), "interrupted": r.id in stopped}
                                   for r in runs]}, indent=2))
        return EXIT_OK
    now = clock_from_env().now()
    print(f"daemon: {f'serving (pid {daemon})' if daemon else 'not running'}")
    rows = [("RUN", "PIPELINE", "STATE", "STATUS", "WAITING FOR", "DEADLINE")]
    for r in runs:
        deadline = ""
        if r.deadline:
            left = (parse_instant(r.deadline) - now).total_seconds()
            from certwright.engine.model.spec import format_duration
            deadline = f"{r.deadline[:16]}Z ({format_duration(left)} left)" if left > 0 \
                else f"{r.deadline[:16]}Z (passed)"
        waiting = (r.waiting or (f"retry: {r.error}" if r.status == "backoff" else ""))[:60]
        if r.alarms:
            waiting = f"ALARM: {r.alarms[-1]}"[:60]
        status = r.status
        if r.id in stopped:
            status, waiting = "interrupted", f"resume with: certwright resume {r.id}"
        rows.append((r.id, r.pipeline, r.state, status, waiting, deadline))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if args.run_id and runs[0].error:
        print(f"error: {runs[0].error}")
    if renewals and not args.run_id:
        print("renewals:")
        for item in renewals:
            line = f"  {item['name']}: {item['status']}, next {str(item['next_at'])[:16]}Z"
            if item.get("attempts"):
                line += (f" (failed {item['attempts']}x: "
                         f"{str(item.get('last_error') or '')[:60]})")
            print(line)
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    store = _open(args, readonly=True)
    store.load_run(args.run_id)
    entries = store.journal(args.run_id)
    if args.json:
        print(json.dumps([{"seq": e.seq, "at": e.at, "kind": e.kind, "data": e.data}
                          for e in entries], indent=2))
        return EXIT_OK
    for e in entries:
        print(f"{e.seq:>6}  {e.at[:23]}Z  {e.kind:<13} {_describe(e.kind, e.data)}")
    return EXIT_OK


def _describe(kind: str, d: dict[str, Any]) -> str:
    if kind == "created":
        return f"pipeline {d['pipeline']} ({d['spec_hash'][:12]})"
    if kind == "entered":
        extra = f" [{d['final']}]" if d.get("final") else ""
        dl = f" deadline {d['deadline'][:19]}Z" if d.get("deadline") else ""
        return f"{d.get('from') or '-'} -> {d['to']} on {d['trigger']}{extra}{dl}"
    if kind == "step_started":
        rec = " (recovering)" if d.get("recovering") else ""
        return f"{d['step']} attempt {d['attempt']} key {d['key']}{rec}"
    if kind == "step_done":
        return f"{d['step']} done " + json.dumps(d["outputs"], default=str)[:120]
    if kind == "step_waiting":
        return f"{d['step']} waiting for {d['waiting']}"
    if kind == "step_failed":
        retry = f"; retry at {d['retry_at'][:19]}Z" if d.get("retry_at") else ""
        return f"{d['step']} attempt {d['attempt']} failed: {d['error']}{retry}"
    return json.dumps(d, default=str)[:160]


def cmd_validate(args: argparse.Namespace) -> int:
    from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
    bad = 0
    for name in args.pipelines:
        try:
            spec = load_pipeline(resolve_pipeline_path(name))
        except SpecError as exc:
            bad += 1
            print(str(exc), file=sys.stderr)
            continue
        except CertwrightError as exc:
            bad += 1
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        print(f"{spec.source}: ok (pipeline {spec.name} v{spec.version}, "
              f"{len(spec.states)} states)")
    return EXIT_USAGE if bad else EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    spec = _load(args.pipeline)
    sys.stdout.write(graph.mermaid(spec) if args.format == "mermaid" else graph.dot(spec))
    return EXIT_OK
