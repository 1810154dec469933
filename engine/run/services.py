"""Services a run needs in-process, from the registered providers.

``start_services_for`` asks every provider (:mod:`certwright.engine.plugins.providers`) in
turn about a pipeline and its runs' inputs; each one that applies starts its services for as
long as the command runs and rewrites the inputs (a later provider sees the earlier ones'
substitutions). The engine knows no provider, input name or service: the built-in CA and
mail server of ``ca=embedded`` are a provider of the CA package.

Hazards: providers are asked before every foreground run, so this costs what their
entry-point modules cost to import (small by contract) when none applies. A service name
offered by two providers is an error rather than one silently replacing the other.
"""
from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from certwright.engine.model.spec import PipelineSpec
from certwright.engine.plugins.providers import Provider, load_providers
from certwright.errors import CertwrightError


def start_services(spec: PipelineSpec, given: dict[str, Any], state_dir: Path,
                   stack: ExitStack, *, providers: Iterable[Provider] | None = None,
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start what the run needs; returns (services for steps, inputs with addresses)."""
    services, [values] = start_services_for(spec, [given], state_dir, stack,
                                            providers=providers)
    return services, values


def start_services_for(spec: PipelineSpec, givens: list[dict[str, Any]], state_dir: Path,
                       stack: ExitStack, *, providers: Iterable[Provider] | None = None,
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """As :func:`start_services`, once for several runs of ``spec`` (all their inputs).

    ``providers`` defaults to the registered ones (:func:`load_providers`). Raises what a
    provider raises, and CertwrightError when two offer one service or a provider answers
    for a different number of runs than it was asked about.
    """
    services: dict[str, Any] = {}
    if not givens:
        return services, givens
    offered_by: dict[str, str] = {}
    for provider in load_providers() if providers is None else providers:
        provision = provider.provide(spec, givens, Path(state_dir), stack)
        if provision is None:
            continue
        if len(provision.inputs) != len(givens):
            raise CertwrightError(
                f"provider {provider.name!r} returned inputs for {len(provision.inputs)} "
                f"runs when asked about {len(givens)}")
        for key, value in provision.services.items():
            if key in services:
                raise CertwrightError(
                    f"providers {offered_by[key]!r} and {provider.name!r} both offer the "
                    f"service {key!r}")
            services[key] = value
            offered_by[key] = provider.name
        givens = [dict(values) for values in provision.inputs]
    return services, givens
