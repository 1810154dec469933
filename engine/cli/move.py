"""``certwright move RUN --host H``: give a run another host, e.g. when its host is gone.

A run's host-bound steps (key files, the CSR from that key, install, reload, the TLS
check) run only on a daemon of the run's host (:mod:`engine.run.hosts`); a run whose host
died waits for it. ``move`` sets the run's host in the store (a ``moved`` journal entry,
with who moved it): a run waiting for the old host now waits for the new one, whose
daemons take it at their next look for free runs.

How it holds the run while it writes: on SQLite the run's lock (a daemon driving the run
right now holds it: exit 4, try again when the run parks); on PostgreSQL the run's lease,
taken and released by this command (refused, exit 4, while a live daemon holds it).

Refused: an unknown run (exit 1), a finished one, a bad host name (exit 2).

What the run made comes along through the store (``steps._kept``): its CSR and
certificate always, its private key when the store has a store key (``state.sealing``);
a step on the new host that needs one gets it back from there. Said in the help and the
message too: without a store key the key stays on the old host (a step needing it on the
new one fails saying so), and files already installed on the old host are not moved.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from contextlib import ExitStack
from typing import Any

EXIT_OK = 0

NOT_MOVED = ("What the run made (its CSR and certificate; its private key when the store "
             "has a store key) comes along through the store; files installed on the old "
             "host are not moved.")
NO_KEY = ("This store has no store key: the run's private key stayed on its old host, and "
          "a step needing it on the new host fails (certwright store keygen FILE, then "
          "store_key: FILE on every host).")


def register(sub: Any) -> None:
    m = sub.add_parser(
        "move", help="give a run another host (its key, install, reload and TLS-check "
                     "steps then run on a daemon of that host)",
        description="Set the host of RUN to HOST: a daemon of HOST then takes the run's "
                    "host-bound steps (a run waiting for a dead host goes on). " + NOT_MOVED)
    m.add_argument("run_id", help="the run's id (as `status` lists it)")
    m.add_argument("--host", required=True, metavar="HOST",
                   help="the run's new host (as its daemons' --host, or their machine name)")
    m.set_defaults(func=cmd_move)


def _mover() -> str:
    import socket
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _hold(stack: ExitStack, store: Any, args: argparse.Namespace, run_id: str) -> None:
    """Hold the run while this command writes (see the module); RunLocked if refused."""
    from certwright.errors import RunLocked
    if not hasattr(store, "fence"):  # SQLite: the run's lock
        from certwright.state.locks import run_lock
        stack.enter_context(run_lock(args.state_dir, run_id))
        return
    from certwright.state.leases_pg import PgLeases
    leases = PgLeases(store, f"move:{_mover()}:{os.getpid()}", lease_s=30.0)
    if leases.take(run_id) is None:
        raise RunLocked(f"run {run_id} (a daemon drives it now; try again when it parks)",
                        None)
    store.fence = leases
    stack.callback(leases.release)


def cmd_move(args: argparse.Namespace) -> int:
    from certwright.clock import clock_from_env
    from certwright.engine.cli.storeargs import open_store_of
    from certwright.engine.run.hosts import check_host
    from certwright.engine.run.runner import Engine, EngineOptions
    from certwright.errors import InputError
    from certwright.state.records import FINISHED
    host = check_host(args.host, "--host")
    store = open_store_of(args)
    with ExitStack() as stack:
        stack.callback(store.close)
        run = store.load_run(args.run_id)
        if run.status in FINISHED:
            raise InputError(f"run {run.id} is {run.status}: a finished run is not moved")
        _hold(stack, store, args, run.id)
        run = store.load_run(run.id)  # re-read under the hold: it may have moved on
        if run.status in FINISHED:
            raise InputError(f"run {run.id} is {run.status}: a finished run is not moved")
        if run.host == host:
            print(f"run {run.id} already has host {host}", file=sys.stderr)
            return EXIT_OK
        engine = Engine(store, args.state_dir, clock=clock_from_env(),
                        options=EngineOptions(scope=[run.id], inline=True))
        engine.move(run.id, host, _mover())
        engine.pump()
        engine.close()
    was = run.host or "any host"
    print(f"run {run.id} moved to host {host} (was {was}); a daemon of {host} takes it. "
          f"{NOT_MOVED}" + ("" if store.sealer is not None else f" {NO_KEY}"),
          file=sys.stderr)
    return EXIT_OK
