"""The programmatic way in: run pipelines from Python, as the CLI does, without a shell.

``run_pipeline`` drives one run to its end; ``run_pipelines`` drives many at once in one
engine (one store, one worker pool, group commits), as the daemon does.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from certwright.clock import Clock, clock_from_env
from certwright.engine.model.inputs import coerce_inputs
from certwright.engine.model.loader import load_pipeline, resolve_pipeline_path
from certwright.engine.model.spec import PipelineSpec
from certwright.engine.run.runner import Engine, EngineOptions
from certwright.engine.run.services import start_services_for
from certwright.engine.run.summary import summary
from certwright.engine.run.watch import WaitWatcher
from certwright.state.location import open_store
from certwright.state.records import FINISHED


def run_pipelines(pipeline: str | Path | PipelineSpec, inputs: Iterable[Mapping[str, Any]],
                  state_dir: Path, *, clock: Clock | None = None, workers: int = 8,
                  timeout: float = 3600.0) -> list[dict[str, Any]]:
    """Start one run per input mapping and drive them all until each is finished (or
    ``timeout`` seconds pass: then some may still be waiting); returns their summaries,
    with ``vars`` (the step outputs)."""
    spec = pipeline if isinstance(pipeline, PipelineSpec) else load_pipeline(
        resolve_pipeline_path(str(pipeline)))
    state_dir = Path(state_dir)
    with ExitStack() as stack:
        store = open_store(state_dir, background_checkpoint=True)
        stack.callback(store.close)
        services, givens = start_services_for(spec, [dict(g) for g in inputs], state_dir,
                                              stack)
        prepared = [coerce_inputs(spec, values) for values in givens]
        watcher = WaitWatcher()  # watches what the runs wait on, and wakes them
        engine = Engine(store, state_dir, clock=clock or clock_from_env(), services=services,
                        options=EngineOptions(workers=workers), interceptors=[watcher])
        stack.callback(engine.close)
        stack.callback(watcher.stop)
        engine.open()
        secret = [n for n, i in spec.inputs.items() if i.secret]
        ids = engine.start_runs(spec, prepared, secret_inputs=secret)
        deadline = time.monotonic() + timeout
        while True:
            engine.pump(timeout=0.2)
            if not engine.idle():
                continue
            runs = [store.load_run(rid) for rid in ids]
            if all(r.status in FINISHED for r in runs) or time.monotonic() > deadline:
                break
        return [{**summary(r), "vars": r.vars} for r in runs]


def run_pipeline(pipeline: str | Path | PipelineSpec, inputs: Mapping[str, Any],
                 state_dir: Path, **kw: Any) -> dict[str, Any]:
    """Start one run and drive it until it finishes (or ``timeout`` passes)."""
    return run_pipelines(pipeline, [inputs], state_dir, **kw)[0]
