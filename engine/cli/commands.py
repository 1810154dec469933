"""The CLI's commands: each takes parsed arguments and returns an exit code."""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certwright.clock import clock_from_env
from certwright.engine.cli.config_cmd import this_host
from certwright.engine.cli.leased import foreground_lease
from certwright.engine.cli.run_output import RunOutput
from certwright.engine.cli.storeargs import open_store_of as _open
from certwright.engine.cli.storeargs import refuse_if_served_elsewhere
from certwright.engine.model import graph
from certwright.engine.run.foreground import drive
from certwright.engine.run.interceptor import Interceptor
from certwright.engine.run.naming import check_run_id, new_run_id
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.engine.run.services import start_services
from certwright.engine.run.watch import WaitWatcher
from certwright.errors import CertwrightError, InputError, RunLocked, SpecError
from certwright.state.locks import daemon_lock, run_lock
from certwright.state.records import FINISHED, SUCCEEDED
from certwright.steps.inventory import InventoryHook, policy_from

if TYPE_CHECKING:
    from certwright.engine.model.spec import PipelineSpec

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARKED, EXIT_LOCKED = 0, 1, 2, 3, 4


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
            watcher: WaitWatcher, shown: RunOutput | None = None) -> Engine:
    hooks: list[Interceptor] = [watcher, *(shown.hooks if shown else [])]
    crash = os.environ.get("CERTWRIGHT_CRASH_AFTER_COMMITS")  # fault-injection hook (tests)
    if crash:
        from certwright.engine.testing import CrashAfterCommits
        hooks.append(CrashAfterCommits(int(crash)))
    store = _open(args)
    if hasattr(store, "announce"):  # PostgreSQL: this process drives the run, so wake no
        store.announce = False      # daemon to take it (state.notify_pg)
    hooks.append(InventoryHook(store, policy_from(_load)))
    return Engine(store, args.state_dir, clock=clock_from_env(), services=services,
                  options=EngineOptions(scope=[run_id], host=this_host(args)), interceptors=hooks)


class DaemonServes(RunLocked):
    """A daemon serves the store, so this process may not drive runs in it (exit 4)."""

    def __init__(self, state_dir: Path, pid: int) -> None:
        CertwrightError.__init__(
            self, f"a daemon (pid {pid}) serves the store in {state_dir}; use `certwright "
                  f"run --no-wait` to hand it a run, or stop the daemon first")
        self.pid = pid


def _refuse_if_daemon(state_dir: Path) -> None:
    pid = daemon_lock(state_dir).holder()
    if pid:
        raise DaemonServes(state_dir, pid)


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
    host = None  # --set host=NAME for a pipeline without a `host` input: the run's host
    if "host" in given and "host" not in spec.inputs:
        from certwright.engine.run.hosts import check_host
        host = check_host(given.pop("host"), "--set host")
    if getattr(args, "dry_run", False):  # a scratch state of its own: nothing here is touched
        from certwright.engine.cli.dryrun import trial
        names = given.get("domains") or given.get("domain") or spec.name
        return trial(spec, given, ", ".join(names) if isinstance(names, list) else str(names),
                     explicit=parse_sets(args.set))
    run_id = check_run_id(args.run_id) if args.run_id else new_run_id(spec.name)
    if not args.no_wait:
        _refuse_if_daemon(args.state_dir)
    refuse_if_served_elsewhere(args)
    # every input checked before any service starts (the embedded CA takes a second)
    _refuse_foreign_folder(coerce_inputs(spec, given))
    with ExitStack() as stack:
        stack.enter_context(run_lock(args.state_dir, run_id))
        shown = stack.enter_context(RunOutput(args, run_id))
        services, given = start_services(spec, given, args.state_dir, stack)
        inputs = coerce_inputs(spec, given)
        watcher = WaitWatcher()
        engine = _engine(args, run_id, services, watcher, shown)
        stack.callback(engine.store.close)  # last: after the engine's workers have stopped
        # PostgreSQL: the run's lease, held from before the run exists until the engine
        # has stopped (its steps too), so no daemon takes the run meanwhile
        stack.enter_context(foreground_lease(engine.store, run_id, this_host(args)))
        stack.callback(engine.close)
        engine.open()
        secret = [n for n, i in spec.inputs.items() if i.secret]
        engine.start_run(spec, inputs, run_id, secret_inputs=secret, host=host)
        shown.attach(args.state_dir)
        where = "" if not Path(args.pipeline).expanduser().is_file() else f", {spec.source}"
        shown.line(f"run {run_id} started (pipeline {spec.name}{where})")
        return shown.finish(drive(engine, run_id, watcher, no_wait=args.no_wait,
                                  view=shown.progress))


def cmd_resume(args: argparse.Namespace) -> int:
    store = _open(args)
    run = store.load_run(args.run_id)
    if run.status in FINISHED:
        print(f"run {run.id} already {run.status} (state {run.state!r})", file=sys.stderr)
        return EXIT_OK if run.status == SUCCEEDED else EXIT_FAILED
    if not args.no_wait:
        _refuse_if_daemon(args.state_dir)
    refuse_if_served_elsewhere(args)
    with ExitStack() as stack:
        stack.callback(store.close)
        stack.enter_context(run_lock(args.state_dir, run.id))
        _, source, text = store.load_spec(run.spec_hash)
        from certwright.engine.model.loader import load_pipeline_text
        spec = load_pipeline_text(text, source)
        shown = stack.enter_context(RunOutput(args, run.id))
        shown.attach(args.state_dir)
        services, _ = start_services(spec, dict(run.inputs), args.state_dir, stack)
        watcher = WaitWatcher()
        engine = _engine(args, run.id, services, watcher, shown)
        stack.callback(engine.store.close)
        stack.enter_context(foreground_lease(engine.store, run.id, this_host(args)))
        stack.callback(engine.close)
        engine.open()
        engine.wake(run.id)  # re-check a wait at once: the mail may have come meanwhile
        shown.line(f"resuming run {run.id} in state {run.state!r}")
        return shown.finish(drive(engine, run.id, watcher, no_wait=args.no_wait,
                                  view=shown.progress))


def cmd_cancel(args: argparse.Namespace) -> int:
    store = _open(args)
    run = store.load_run(args.run_id)
    if run.status in FINISHED:
        print(f"run {run.id} already {run.status}", file=sys.stderr)
        return EXIT_OK
    refuse_if_served_elsewhere(args)
    with run_lock(args.state_dir, run.id):
        engine = Engine(store, args.state_dir, clock=clock_from_env(),
                        options=EngineOptions(scope=[run.id], inline=True))
        engine.cancel(run.id, args.reason)
        engine.pump()
        engine.close()
    print(f"run {run.id} cancelled", file=sys.stderr)
    return EXIT_OK


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
