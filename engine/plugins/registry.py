"""The step registry: built-in steps plus third-party ones from entry points.

Third-party packages register steps under the entry-point group ``certwright.steps``;
each entry point names a step class. A name clash with a built-in step is an error, so a
plugin can never silently replace ``ca.sign``.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Iterable, Mapping

from certwright.errors import CertwrightError
from certwright.engine.plugins.step import Step

ENTRY_POINT_GROUP = "certwright.steps"

# name -> "module:Class". Imported lazily so that `validate` does not load the CA client.
BUILTIN: dict[str, str] = {
    "shell": "certwright.steps.generic:Shell",
    "set": "certwright.steps.generic:Set",
    "assert": "certwright.steps.generic:Assert",
    "noop": "certwright.steps.generic:Noop",
    "wait.file": "certwright.steps.waits:WaitFile",
    "wait.mail": "certwright.steps.mail:WaitMail",
    "wait.until": "certwright.steps.waits:WaitUntil",
    "notify.check": "certwright.steps.mail:NotifyCheck",
    "key.generate": "certwright.steps.keys:KeyGenerate",
    "csr.generate": "certwright.steps.keys:CsrGenerate",
    "ca.join": "certwright.steps.ca:Join",
    "ca.activate": "certwright.steps.ca:Activate",
    "ca.add_domain": "certwright.steps.ca:AddDomain",
    "ca.probe": "certwright.steps.ca:Probe",
    "ca.verify": "certwright.steps.ca:Verify",
    "ca.sign": "certwright.steps.ca:Sign",
    "install.files": "certwright.steps.install:InstallFiles",
    "install.reload": "certwright.steps.install:InstallReload",
    "install.check": "certwright.steps.install:InstallCheck",
    "acme.account": "certwright.steps.acme:Account",
    "acme.order": "certwright.steps.acme:Order",
    "acme.challenge": "certwright.steps.acme:Challenge",
    "acme.finalize": "certwright.steps.acme:Finalize",
    "acme.download": "certwright.steps.acme:Download",
}


class Registry:
    """Maps step names to step instances."""

    def __init__(self, classes: Mapping[str, str | type] | None = None, *,
                 plugins: bool = True) -> None:
        self._specs: dict[str, str | type] = dict(BUILTIN if classes is None else classes)
        self._loaded: dict[str, Step] = {}
        if plugins:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in self._specs:
                    raise CertwrightError(
                        f"step plugin {ep.value!r} wants the name {ep.name!r}, which is taken")
                self._specs[ep.name] = ep.value

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def register(self, cls: type, name: str | None = None) -> None:
        """Add a step class (tests and embedders)."""
        key = name or getattr(cls, "name")
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
