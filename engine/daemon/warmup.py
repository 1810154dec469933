"""The end of a daemon's start-up: what it does so that the first events, and every
event after, wait for nothing start-up could have done.

:func:`load_steps` loads the unfinished runs' pipelines and imports every step now (a
broken plugin is reported at start): the first mail pays for neither (tens of ms).

:func:`settle` keeps the start-up's heap out of the cycle collector's full passes. A
daemon's start-up leaves tens of thousands of objects (57,000 on an empty SQLite store)
that live as long as it does: the modules it imported (the store's driver, the crypto
bindings, the CA and ACME clients), the pipelines and their compiled schemas, the steps.
CPython's full collection visits every one of them each time it runs, about once a
second in a daemon driving thousands of runs, and the loop stands still meanwhile: 23-53
ms a pass, longer than a mail's whole path. :func:`settle` collects what start-up left as
garbage, then freezes the rest (``gc.freeze``): later full passes visit only what the
daemon made since (3-13 ms a pass in the same daemon).

Frozen objects are freed by their reference counts as before, never by the collector.
Start-up holds few that die: parked runs stay in the store, and what a run in flight at
start had loaded is released when it parks or ends; any of it left in a reference cycle
then stays until the process exits, bounded by what start-up held and never growing.
Only the ``certwright daemon`` command settles (``Daemon(settle_heap=True)``): a daemon
in another program's process (a test, an embedding) leaves that program's heap alone.
"""
from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from certwright.engine.run.runner import Engine

log = structlog.get_logger("certwright.daemon")


def load_steps(engine: Engine) -> None:
    """Load unfinished runs' pipelines and import every step (see the module)."""
    engine.load_specs()
    for name in engine.registry.names():
        try:
            engine.registry.get(name)
        except Exception as exc:  # noqa: BLE001 - one bad plugin must not stop the rest
            log.error("step_unavailable", step=name, error=f"{type(exc).__name__}: {exc}")


def settle() -> int:
    """Collect, then freeze what is left (see the module); the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
