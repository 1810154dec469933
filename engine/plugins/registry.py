"""The step registry: every step comes from the entry-point group ``certwright.steps``.

The built-in steps are entry points of the ``certwright`` distribution itself (listed in
``pyproject.toml``); third-party packages add theirs to the same group. Each entry point
names a step class as ``module:Class``. A plugin cannot take a name that is already taken
(a built-in's or another plugin's), so it can never silently replace ``ca.sign``.

Hazards: a step's module is imported the first time the step is asked for (``get``), not at
discovery, so that ``validate`` does not load the CA client; a broken plugin therefore shows
only when its step is used (the daemon asks for every step at start to say so early).
Discovery itself is cached per process (see :mod:`._entrypoints`). Without the package's
metadata (not installed) there are no built-in steps: :class:`Registry` says so.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from certwright.engine.plugins._entrypoints import discover
from certwright.engine.plugins.step import Step
from certwright.errors import CertwrightError

ENTRY_POINT_GROUP = "certwright.steps"


def builtin_steps() -> dict[str, str]:
    """The built-in steps, name -> ``module:Class``; raises CertwrightError when the package's
    metadata (its entry points) cannot be found."""
    found = {f.name: f.value for f in discover(ENTRY_POINT_GROUP) if f.builtin}
    if not found:
        raise CertwrightError(
            f"no built-in steps: the entry points of group {ENTRY_POINT_GROUP!r} of the "
            f"certwright distribution are missing; install the package (pip install -e .) "
            f"rather than putting its folders on PYTHONPATH")
    return found


class Registry:
    """Maps step names to step instances.

    ``Registry()`` holds the built-in steps and the plugins; ``plugins=False`` leaves the
    plugins out. ``classes`` (name -> class or ``module:Class``) replaces the built-ins, for
    tests and embedders that bring their own steps.
    """

    def __init__(self, classes: Mapping[str, str | type] | None = None, *,
                 plugins: bool = True) -> None:
        self._specs: dict[str, str | type] = (
            dict(builtin_steps()) if classes is None else dict(classes))
        self._loaded: dict[str, Step] = {}
        if plugins:
            for found in discover(ENTRY_POINT_GROUP):
                if found.builtin:
                    continue
                if found.name in self._specs:
                    raise CertwrightError(
                        f"step plugin {found.value!r} (distribution {found.dist}) wants the "
                        f"name {found.name!r}, which is taken")
                self._specs[found.name] = found.value

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def register(self, cls: type[Step], name: str | None = None) -> None:
        """Add a step class (tests and embedders)."""
        key = name or cls.name
        self._specs[key] = cls
        self._loaded.pop(key, None)

    def get(self, name: str) -> Step:
        """The step instance for ``name``; raises KeyError when unknown."""
        if name not in self._loaded:
            spec = self._specs[name]
            if isinstance(spec, str):
                module, _, attr = spec.partition(":")
                cls = getattr(importlib.import_module(module), attr)
            else:
                cls = spec
            self._loaded[name] = cls()
        return self._loaded[name]

    def schema(self, name: str) -> Mapping[str, Any]:
        """The JSON Schema of the step's ``with:`` parameters."""
        return self.get(name).params_schema

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        for name, target in items:
            self._specs[name] = target
