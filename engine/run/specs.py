"""The pipeline versions the engine's runs follow: loaded from the store by hash, kept.

A run is pinned to the spec it started with (its hash); its machine is built once per
version. Hazard: the default loader validates against the registry, which imports the
modules of the pipeline's steps.
"""
from __future__ import annotations

from typing import Callable

from certwright.engine.model.spec import PipelineSpec
from certwright.engine.plugins.registry import Registry
from certwright.engine.run.machine import PipelineMachine
from certwright.state.base import Store
from certwright.state.records import RunRecord

__all__ = ["SpecLoader", "Specs"]

SpecLoader = Callable[[str, str], PipelineSpec]  # (text, source) -> spec


class Specs:
    """Specs and machines by hash; the default loader validates against ``registry``."""

    def __init__(self, store: Store, registry: Registry,
                 loader: SpecLoader | None = None) -> None:
        self._store = store
        self._registry = registry
        self._loader = loader
        self._by_hash: dict[str, tuple[PipelineSpec, PipelineMachine]] = {}

    def add(self, spec: PipelineSpec) -> None:
        """Know ``spec`` (a run of it is being started)."""
        if spec.hash not in self._by_hash:
            self._by_hash[spec.hash] = (spec, PipelineMachine(spec))

    def of(self, run: RunRecord) -> tuple[PipelineSpec, PipelineMachine]:
        """The run's pinned spec and machine; raises StoreError if the store lacks it."""
        found = self._by_hash.get(run.spec_hash)
        if found is None:
            name, source, text = self._store.load_spec(run.spec_hash)
            loader = self._loader
            if loader is None:
                from certwright.engine.model.loader import load_pipeline_text

                def loader(t: str, s: str) -> PipelineSpec:
                    return load_pipeline_text(t, s, self._registry)
            spec = loader(text, source)
            found = self._by_hash[run.spec_hash] = (spec, PipelineMachine(spec))
        return found
