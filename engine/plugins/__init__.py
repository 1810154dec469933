"""What the engine plugs in: the :class:`Step` interface (``run``, optional
``cleanup``) and its registry, and :class:`Provider` (services a run needs, such as the
embedded CA), both found through the package's entry points.

The names below are loaded on first use (PEP 562), so importing this package (which every
import of one of its modules does) stays cheap.
"""
from __future__ import annotations

from certwright._lazy import lazy_exports

# Not typing.TYPE_CHECKING: importing typing costs more than this package's own import.
# Type checkers treat a constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from certwright.engine.plugins.providers import Provider, Provision, load_providers
    from certwright.engine.plugins.registry import Registry, builtin_steps
    from certwright.engine.plugins.step import BaseStep, Cleanup, Done, Step, StepContext, Wait

__all__ = [
    "BaseStep",
    "Cleanup",
    "Done",
    "Provider",
    "Provision",
    "Registry",
    "Step",
    "StepContext",
    "Wait",
    "builtin_steps",
    "load_providers",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "BaseStep": "certwright.engine.plugins.step",
    "Cleanup": "certwright.engine.plugins.step",
    "Done": "certwright.engine.plugins.step",
    "Provider": "certwright.engine.plugins.providers",
    "Provision": "certwright.engine.plugins.providers",
    "Registry": "certwright.engine.plugins.registry",
    "Step": "certwright.engine.plugins.step",
    "StepContext": "certwright.engine.plugins.step",
    "Wait": "certwright.engine.plugins.step",
    "builtin_steps": "certwright.engine.plugins.registry",
    "load_providers": "certwright.engine.plugins.providers",
})
