"""The pipeline model: safe YAML with positions, the loader that gathers every problem,
the frozen spec it builds, typed inputs, ``${...}`` templates, guards and graphs. It
records and checks; it never runs anything.

The names below are loaded on first use (PEP 562), so importing this package (which every
import of one of its modules does) stays cheap.
"""
from __future__ import annotations

from certwright._lazy import lazy_exports

# Not typing.TYPE_CHECKING: importing typing costs more than this package's own import.
# Type checkers treat a constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from certwright.engine.model.conditions import evaluate
    from certwright.engine.model.graph import dot, mermaid
    from certwright.engine.model.inputs import coerce_inputs
    from certwright.engine.model.loader import (
        bundled_pipelines,
        load_pipeline,
        load_pipeline_text,
        resolve_pipeline_path,
    )
    from certwright.engine.model.spec import (
        InputSpec,
        PipelineSpec,
        RetryPolicy,
        StateSpec,
        StepSpec,
        TimeoutSpec,
        parse_duration,
    )
    from certwright.engine.model.template import UnresolvedReference, render
    from certwright.engine.model.yamlsafe import LoadStats, load_yaml

__all__ = [
    "InputSpec",
    "LoadStats",
    "PipelineSpec",
    "RetryPolicy",
    "StateSpec",
    "StepSpec",
    "TimeoutSpec",
    "UnresolvedReference",
    "bundled_pipelines",
    "coerce_inputs",
    "dot",
    "evaluate",
    "load_pipeline",
    "load_pipeline_text",
    "load_yaml",
    "mermaid",
    "parse_duration",
    "render",
    "resolve_pipeline_path",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "InputSpec": "certwright.engine.model.spec",
    "LoadStats": "certwright.engine.model.yamlsafe",
    "PipelineSpec": "certwright.engine.model.spec",
    "RetryPolicy": "certwright.engine.model.spec",
    "StateSpec": "certwright.engine.model.spec",
    "StepSpec": "certwright.engine.model.spec",
    "TimeoutSpec": "certwright.engine.model.spec",
    "UnresolvedReference": "certwright.engine.model.template",
    "bundled_pipelines": "certwright.engine.model.loader",
    "coerce_inputs": "certwright.engine.model.inputs",
    "dot": "certwright.engine.model.graph",
    "evaluate": "certwright.engine.model.conditions",
    "load_pipeline": "certwright.engine.model.loader",
    "load_pipeline_text": "certwright.engine.model.loader",
    "load_yaml": "certwright.engine.model.yamlsafe",
    "mermaid": "certwright.engine.model.graph",
    "parse_duration": "certwright.engine.model.spec",
    "render": "certwright.engine.model.template",
    "resolve_pipeline_path": "certwright.engine.model.loader",
})
