"""How an engine runs: :class:`EngineOptions`, one object, each default documented."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["EngineOptions"]


@dataclass(frozen=True)
class EngineOptions:
    """Options of :class:`certwright.engine.run.runner.Engine`.

    * ``workers``: threads executing steps (8: steps mostly wait on the network).
    * ``inline``: execute each step at once in the core loop's thread instead (tests and
      benchmarks of the core: deterministic, no threads).
    * ``max_batch``: at most this many inbox items, and as many ready runs, per pump (one
      transaction): 2000 keeps a commit's latency in the milliseconds under load.
    * ``scope``: drive only these run ids (``run``/``resume``/``cancel`` of one run beside
      others); None drives every run of the store. Runs the engine starts join the scope.
    * ``host``: this engine's host (``engine.run.hosts``): runs it makes get it, and a
      host-bound step of a run of another host is not started here (the run parks waiting
      for its host). None: no host rule (every step of every run starts here).
    """

    workers: int = 8
    inline: bool = False
    max_batch: int = 2000
    scope: Iterable[str] | None = None
    host: str | None = None
