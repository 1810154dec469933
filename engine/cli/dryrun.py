"""Dry runs: a pipeline passed end to end against a throwaway CA, touching nothing real.

``run --dry-run`` and ``renew --dry-run`` drive the run in a scratch folder of its own
(``certwright-dry-run-*`` in the system's temporary folder) with a store of its own, so
the real store's runs, the inventory, the renewal schedule and the accounts (the client's
and the CA's) are never written. The inputs are changed for the trial
(:func:`trial_inputs`):

* ``ca`` (the built-in CA's process): ``embedded``, a fresh embedded CA and mail server on
  the scratch state, never the configured CA; ``maildir`` follows it;
* ``directory`` (ACME): Let's Encrypt's production directory becomes its staging
  directory; any other must be given on the command line (``--set directory=URL``, the
  CA's staging or test directory), else the dry run is refused before anything starts;
* ``cert_dir``: a folder in the scratch, so install writes no certificate folder; a
  given ``csr`` is copied there and the certificate goes beside the copy;
* ``reload``: empty, so ``reload_test`` (the server's config test) runs and the reload
  never does; ``check``: empty (the server still serves the real certificate).

Steps of a custom pipeline that write elsewhere (a ``shell`` step) are not redirected:
a dry run of such a pipeline does what those steps do.

The scratch is removed when the trial succeeds, and kept (its path printed, with the
``--state-dir`` to inspect or resume it) when it fails or parks.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Collection
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certwright.clock import clock_from_env
from certwright.engine.run.foreground import describe_wait, drive
from certwright.engine.run.naming import new_run_id
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.engine.run.services import start_services
from certwright.engine.run.watch import WaitWatcher
from certwright.errors import InputError
from certwright.state.location import open_store
from certwright.state.records import SUCCEEDED

if TYPE_CHECKING:
    from certwright.engine.model.spec import PipelineSpec

EXIT_OK, EXIT_FAILED, EXIT_PARKED = 0, 1, 3
EMBEDDED = "embedded"
# Production directories whose CA runs a staging twin (same rules, untrusted roots).
STAGING = {
    "https://acme-v02.api.letsencrypt.org/directory":
        "https://acme-staging-v02.api.letsencrypt.org/directory",
}


def trial_inputs(spec: PipelineSpec, given: dict[str, Any], scratch: Path,
                 explicit: Collection[str] = ()) -> dict[str, Any]:
    """``given`` changed for a dry run in ``scratch`` (see the module); ``explicit``: the
    inputs given on this command line. Raises InputError for an ACME directory that has
    no known staging twin and was not given explicitly."""
    out = dict(given)
    if "ca" in spec.inputs:
        out["ca"] = EMBEDDED
        if "maildir" in spec.inputs:
            out["maildir"] = EMBEDDED
    if "directory" in spec.inputs:
        directory = str(out.get("directory") or spec.inputs["directory"].default or "")
        if directory in STAGING:
            out["directory"] = STAGING[directory]
        elif directory not in STAGING.values() and "directory" not in explicit:
            raise InputError(
                f"dry run: no staging directory is known for the ACME directory "
                f"{directory!r}; give the CA's staging (or test) directory with "
                f"--set directory=URL")
    if "cert_dir" in spec.inputs:
        (scratch / "live").mkdir(mode=0o755, exist_ok=True)
        out["cert_dir"] = str(scratch / "live" / "certificate")
    if out.get("csr"):
        source = Path(str(out["csr"]))
        copy = scratch / "csr" / source.name
        copy.parent.mkdir(mode=0o700)
        shutil.copyfile(source, copy)
        out["csr"] = str(copy)
    for key in ("reload", "check"):
        if key in spec.inputs:
            out[key] = ""
    return out


def trial(spec: PipelineSpec, given: dict[str, Any], label: str, *,
          explicit: Collection[str] = ()) -> int:
    """Drive a dry run of ``spec`` with ``given`` (see the module); says at start and end
    that it is one and where the scratch is. Returns 0 (passed), 1 (failed), 3 (parked).
    Raises InputError (see :func:`trial_inputs`) before anything starts."""
    scratch = Path(tempfile.mkdtemp(prefix="certwright-dry-run-"))
    keep = True
    try:
        values = trial_inputs(spec, given, scratch, explicit)
        state = scratch / "state"
        print(f"dry run: {label}: pipeline {spec.name} against a throwaway CA, in {scratch} "
              f"(no certificate folder, inventory, account or run of yours is touched; "
              f"reload is not run)")
        run_id = new_run_id(spec.name)
        with ExitStack() as stack:
            services, values = start_services(spec, values, state, stack)
            from certwright.engine.model.inputs import coerce_inputs
            inputs = coerce_inputs(spec, values)
            store = open_store(state)
            stack.callback(store.close)
            watcher = WaitWatcher()
            engine = Engine(store, state, clock=clock_from_env(), services=services,
                            options=EngineOptions(scope=[run_id]), interceptors=[watcher])
            stack.callback(engine.close)
            engine.open()
            engine.start_run(spec, inputs, run_id,
                             secret_inputs=[n for n, i in spec.inputs.items() if i.secret])
            outcome = drive(engine, run_id, watcher)
        run = outcome.run
        if outcome.parked:
            print(f"dry run: {label}: parked: {describe_wait(run, clock_from_env().now())}; "
                  f"the scratch is kept: certwright --state-dir {state} resume {run.id}")
            return EXIT_PARKED
        if run.status != SUCCEEDED:
            print(f"dry run: {label}: FAILED in state {run.state!r}: {run.error}\n"
                  f"  the scratch is kept: certwright --state-dir {state} history {run.id}")
            return EXIT_FAILED
        keep = False
        print(f"dry run: {label}: passed every state{_issued(run.vars)}; the scratch "
              f"{scratch} is removed")
        return EXIT_OK
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        elif not any(scratch.iterdir()):
            scratch.rmdir()  # refused before anything started: nothing to look at


def _issued(outputs: dict[str, Any]) -> str:
    for value in outputs.values():
        if isinstance(value, dict) and value.get("serial") and value.get("not_after"):
            return (f" (the throwaway CA issued serial {value['serial']}, not after "
                    f"{str(value['not_after'])[:10]})")
    return ""

