"""The run core: the :class:`Engine` (one core loop, journal first, group commit), its
options and :class:`Interceptor` hooks, the journal's fold, and driving a run in the
foreground. Start reading at ``runner`` then ``dispatch``.

The names below are loaded on first use (PEP 562), so importing this package (which every
import of one of its modules does) stays cheap.
"""
from __future__ import annotations

from certwright._lazy import lazy_exports

# Not typing.TYPE_CHECKING: importing typing costs more than this package's own import.
# Type checkers treat a constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from certwright.engine.run.foreground import drive
    from certwright.engine.run.interceptor import Interceptor
    from certwright.engine.run.journal import apply, fold
    from certwright.engine.run.machine import PipelineMachine
    from certwright.engine.run.naming import new_run_id, run_dir_for
    from certwright.engine.run.options import EngineOptions
    from certwright.engine.run.runner import Engine
    from certwright.engine.run.services import start_services, start_services_for
    from certwright.engine.run.watch import WaitWatcher

__all__ = [
    "Engine",
    "EngineOptions",
    "Interceptor",
    "PipelineMachine",
    "WaitWatcher",
    "apply",
    "drive",
    "fold",
    "new_run_id",
    "run_dir_for",
    "start_services",
    "start_services_for",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Engine": "certwright.engine.run.runner",
    "EngineOptions": "certwright.engine.run.options",
    "Interceptor": "certwright.engine.run.interceptor",
    "PipelineMachine": "certwright.engine.run.machine",
    "WaitWatcher": "certwright.engine.run.watch",
    "apply": "certwright.engine.run.journal",
    "drive": "certwright.engine.run.foreground",
    "fold": "certwright.engine.run.journal",
    "new_run_id": "certwright.engine.run.naming",
    "run_dir_for": "certwright.engine.run.naming",
    "start_services": "certwright.engine.run.services",
    "start_services_for": "certwright.engine.run.services",
})
