"""The provider interface: services a run needs in-process, started before it (the built-in
CA and mail server are one), and how providers are found.

A provider is a class registered under the entry-point group ``certwright.providers``
(``name = "module:Class"``), built-in or from another distribution, as steps are. The engine
knows nothing of what a provider starts or which inputs it reads: it asks every provider in
turn (:func:`certwright.engine.run.services.start_services_for`) and merges what they give.

Hazards:

* A provider is asked before every foreground run (``run``, ``resume``, the Python API), so
  the module its entry point names is imported every time: keep that module small, decide
  from the spec and the inputs (at most a look at a file) whether it applies, and import
  the heavy parts inside :meth:`Provider.provide` only when it does.
* What a provider starts lives as long as the command (the ``stack``); a run parked with
  ``--no-wait`` finds it again only when a later command (or the daemon) starts it again.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from certwright.engine.model.spec import PipelineSpec
from certwright.engine.plugins._entrypoints import discover
from certwright.errors import CertwrightError

ENTRY_POINT_GROUP = "certwright.providers"


@dataclass(frozen=True)
class Provision:
    """What a provider started for the runs it was asked about.

    ``services`` are merged into every step's ``ctx.services`` (a name two providers both
    offer is an error); ``inputs`` are the runs' given inputs, one mapping per run in the
    order asked, with the provider's substitutions (the services' addresses); ``maildirs``
    are the folders the started services deliver mail into, which a daemon watches.
    """

    services: Mapping[str, Any]
    inputs: list[dict[str, Any]]
    maildirs: tuple[Path, ...] = field(default=())


class Provider(Protocol):
    """Starts what runs of a pipeline need in-process, and points their inputs at it.

    Contract:

    * **When it is asked.** Once per command that drives runs in the foreground, before the
      engine opens, with the pipeline's spec and every run's given inputs (a new run: what
      the user set, defaults not yet applied; a resumed run: its pinned inputs). The daemon
      does not ask providers for the runs it is handed.
    * **Cheap when it does not apply**, which is the usual case: answer None from the spec
      and the inputs without importing the services' modules.
    * **What it may start**: servers and threads, each registered on ``stack`` so that it
      stops when the command ends; nothing that outlives the command.
    * **What it returns**: None when it does not apply (the inputs are used as given), or a
      :class:`Provision`. It must not change ``givens`` in place.
    * **Errors**: a :class:`CertwrightError` that says what to do (a port taken, say); a
      provider whose optional parts are not installed returns None.
    """

    name: str

    def provide(self, spec: PipelineSpec, givens: Sequence[Mapping[str, Any]],
                state_dir: Path, stack: ExitStack) -> Provision | None:
        """Start the services the runs need, or return None when they need none."""
        ...


def load_providers() -> list[Provider]:
    """One instance of every registered provider: the built-in ones first, then those of
    other distributions, each group by name. Raises CertwrightError when a plugin takes a
    built-in provider's name or its class cannot be loaded (named, with the reason)."""
    out: list[Provider] = []
    taken: set[str] = set()
    for found in discover(ENTRY_POINT_GROUP):
        if found.name in taken:
            raise CertwrightError(
                f"provider plugin {found.value!r} (distribution {found.dist}) wants the name "
                f"{found.name!r}, which is taken")
        taken.add(found.name)
        try:
            cls = found.entry_point.load()
        except Exception as exc:
            raise CertwrightError(
                f"provider {found.name!r} ({found.value}, distribution {found.dist}) cannot "
                f"be loaded: {type(exc).__name__}: {exc}") from exc
        provider: Provider = cls()
        out.append(provider)
    return out
