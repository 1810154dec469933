"""Driving an in-process :class:`Engine` in the tests until a run reaches a condition."""
from __future__ import annotations

import time
from collections.abc import Callable

from certwright.engine.run.runner import Engine
from certwright.state.records import RunRecord


def pump_until(engine: Engine, run_id: str, what: Callable[[RunRecord], bool],
               timeout: float = 60.0) -> RunRecord:
    """Pump ``engine`` until it is idle (no step running, nothing ready) and ``what`` holds
    for the run ``run_id`` as the store has it; return that record.

    The engine's clock is not touched: a test that waits for a deadline advances its fake
    clock first. ``timeout`` is real seconds and only bounds a stuck run (a broken build),
    which raises AssertionError naming the state, the status and the error it stopped at.
    Steps run in the engine's workers, so the CA and mail servers they call must be up.
    """
    deadline = time.monotonic() + timeout
    while True:
        engine.pump(timeout=0.05)
        run = engine.store.load_run(run_id)
        if engine.idle() and what(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run stuck in {run.state}/{run.status}: {run.error}")
