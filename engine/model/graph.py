"""Render a pipeline's state machine as Mermaid or Graphviz DOT text."""
from __future__ import annotations

from certwright.engine.model.spec import PipelineSpec


def _edges(spec: PipelineSpec) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for st in spec.states.values():
        out.extend((st.name, e.to, "next" + (f" if {e.when.op}" if e.when else ""))
                   for e in st.next)
        if st.on_error:
            out.append((st.name, st.on_error, "error"))
        if st.timeout:
            from certwright.engine.model.spec import format_duration
            t = st.timeout
            label = " or ".join(x for x in (
                f"timeout {format_duration(t.after)}" if t.after is not None else "",
                f"at {t.at}" if t.at else "") if x)
            out.append((st.name, t.to, label))
        if st.loop:
            out.append((st.name, st.loop.to, f"retry (max {st.loop.max})"))
            out.append((st.name, st.loop.else_, "retries exhausted"))
    return out


def mermaid(spec: PipelineSpec) -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {spec.initial}"]
    for a, b, label in _edges(spec):
        lines.append(f"    {a} --> {b}: {label}")
    for st in spec.states.values():
        if st.final:
            lines.append(f"    {st.name} --> [*]")
        if st.steps:
            steps = ", ".join(s.name for s in st.steps)
            lines.append(f"    note right of {st.name}: {steps}")
    return "\n".join(lines) + "\n"


def dot(spec: PipelineSpec) -> str:
    lines = [f'digraph "{spec.name}" {{', "    rankdir=LR;", "    node [shape=box, style=rounded];",
             '    "__start" [shape=point];', f'    "__start" -> "{spec.initial}";']
    for st in spec.states.values():
        shape = "doublecircle" if st.final else "box"
        steps = "\\n".join(s.name for s in st.steps)
        label = st.name + (f"\\n({steps})" if steps else "")
        colour = ', color="red"' if st.final == "failure" else ""
        lines.append(f'    "{st.name}" [shape={shape}, label="{label}"{colour}];')
    for a, b, label in _edges(spec):
        lines.append(f'    "{a}" -> "{b}" [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
