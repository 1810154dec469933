"""The pipeline versions the engine's runs follow: loaded from the store by hash, kept.

A run is pinned to the spec it started with (its hash); its machine is built once per
version. This cache also knows which steps of a state can undo their work (a step object
with ``cleanup``), so a transition out of a state without any such step costs nothing.

Hazard: finding out whether a step has ``cleanup`` imports the step's module (the registry
loads steps lazily); it is asked only when a run leaves a state or is cancelled.
"""
from __future__ import annotations

from collections.abc import Callable

from certwright.engine.model.spec import PipelineSpec
from certwright.engine.plugins.registry import Registry
from certwright.engine.plugins.step import Cleanup
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
        self._cleaners: dict[tuple[str, str], tuple[int, ...]] = {}

    def add(self, spec: PipelineSpec) -> None:
        """Know ``spec`` (a run of it is being started)."""
        if spec.hash not in self._by_hash:
            self._by_hash[spec.hash] = (spec, PipelineMachine(spec))

    def of(self, run: RunRecord) -> tuple[PipelineSpec, PipelineMachine]:
        """The run's pinned spec and machine; raises StoreError if the store lacks it."""
        return self.by_hash(run.spec_hash)

    def by_hash(self, spec_hash: str) -> tuple[PipelineSpec, PipelineMachine]:
        """The spec and machine of version ``spec_hash``, loaded from the store the first
        time (parsed and checked: tens of ms); StoreError if the store lacks it."""
        found = self._by_hash.get(spec_hash)
        if found is None:
            _name, source, text = self._store.load_spec(spec_hash)
            loader = self._loader
            if loader is None:
                from certwright.engine.model.loader import load_pipeline_text

                def loader(t: str, s: str) -> PipelineSpec:
                    return load_pipeline_text(t, s, self._registry)
            spec = loader(text, source)
            found = self._by_hash[spec_hash] = (spec, PipelineMachine(spec))
        return found

    def cleaners(self, spec: PipelineSpec, state: str) -> tuple[int, ...]:
        """Indices of the steps of ``state`` whose step object has ``cleanup``."""
        key = (spec.hash, state)
        found = self._cleaners.get(key)
        if found is None:
            st = spec.states.get(state)
            steps = st.steps if st is not None else ()
            found = self._cleaners[key] = tuple(
                i for i, s in enumerate(steps) if self._can_clean(s.name))
        return found

    def any_cleaners(self, spec: PipelineSpec) -> bool:
        """Whether any state of ``spec`` has a step with ``cleanup``."""
        return any(self.cleaners(spec, state) for state in spec.states)

    def _can_clean(self, name: str) -> bool:
        try:
            return isinstance(self._registry.get(name), Cleanup)
        except Exception:  # noqa: BLE001 - a step that cannot load has nothing to undo here
            return False
