"""Load a pipeline file: safe YAML -> validated :class:`engine.spec.PipelineSpec`.

``load_pipeline(path)`` and ``load_pipeline_text(text, filename)`` parse with
:mod:`engine.yamlsafe` (positions, limits, no tags), build the frozen spec, and check
everything the JSON Schema cannot: targets, reachability, a way to a final state, step
names and parameters (the step's own JSON Schema), ``${...}`` references, durations, input
defaults. Every problem is gathered and raised once as :class:`SpecError`, each with its
``file:line:col``, the offending line and, where one is close, a "did you mean".

Loading never runs a step and never imports more than the step classes whose schemas it
checks; a step whose module cannot be imported here counts as known but unchecked.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from importlib import resources
from pathlib import Path

from certwright.engine.model import speccache
from certwright.engine.model.context import Ctx, did_you_mean
from certwright.engine.model.inputspecs import parse_inputs
from certwright.engine.model.spec import InputSpec, PipelineSpec, RenewSpec, StateSpec
from certwright.engine.model.states import parse_state
from certwright.engine.model.template import REF, RUN_FIELDS
from certwright.engine.model.yamlsafe import MAX_BYTES, LoadStats, YNode, load_yaml, problem
from certwright.engine.plugins.registry import Registry
from certwright.errors import CertwrightError, Location, Problem, SpecError

TOP_KEYS = ("pipeline", "version", "description", "renew", "inputs", "initial", "states")
PIPELINE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
STATE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

__all__ = ["bundled_pipelines", "load_pipeline", "load_pipeline_text", "resolve_pipeline_path"]


def bundled_pipelines() -> dict[str, Path]:
    """Pipelines shipped with certwright by name: ``pipelines/*.yaml``, then examples.

    Found as package data of ``certwright.pipelines`` (``importlib.resources``), which is
    where an installed wheel puts them. Raises CertwrightError if the package is not on the
    file system (certwright is never installed zipped; pipelines are read as files).
    """
    folder = _bundled_folder()
    try:  # listed again only when a file was added or removed (a daemon asks per request)
        stamp = (os.stat(folder).st_mtime_ns, os.stat(folder / "examples").st_mtime_ns)
    except OSError:
        stamp = None
    known = _LISTED.get(folder)
    if stamp is not None and known is not None and known[0] == stamp:
        return dict(known[1])
    out: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("examples/*.yaml")):
        out.setdefault(path.stem, path)
    if stamp is not None:
        _LISTED[folder] = (stamp, out)
    return dict(out)


_LISTED: dict[Path, tuple[tuple[int, int], dict[str, Path]]] = {}


@functools.cache
def _bundled_folder() -> Path:
    folder = resources.files("certwright.pipelines")
    if not isinstance(folder, Path):
        raise CertwrightError(f"the bundled pipelines are not files on disk ({folder!r})")
    return folder


def resolve_pipeline_path(name_or_path: str) -> Path:
    """An existing file as given, else the bundled pipeline of that name.

    Raises CertwrightError listing the bundled names when neither exists.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    bundled = bundled_pipelines()
    stem = name_or_path.removesuffix(".yaml")
    if stem in bundled:
        return bundled[stem]
    raise CertwrightError(f"no pipeline file {name_or_path!r} and no bundled pipeline of that "
                          f"name (bundled: {', '.join(bundled) or 'none'})")


def load_pipeline(path: str | Path, registry: Registry | None = None,
                  stats: LoadStats | None = None, *,
                  cache_dir: Path | None = None) -> PipelineSpec:
    """Read and validate a pipeline file; raises SpecError (located) or CertwrightError.

    ``stats``, if given, counts the work done (bytes read, then as :func:`load_yaml`).
    ``cache_dir``, if given, keeps the valid spec there keyed by the file's text
    (:mod:`engine.model.speccache`) and takes it from there while the text is unchanged;
    the file is read either way. A count asked for with ``stats`` always parses.
    """
    p = Path(path)
    where = Location(str(p), 1, 1)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise SpecError([Problem(where, f"file too large: {size} bytes "
                                            f"(the limit is {MAX_BYTES})")])
        raw = p.read_bytes()
        if stats is not None:
            stats.bytes_read += len(raw)
    except OSError as exc:
        raise CertwrightError(
            f"cannot read pipeline file {str(p)!r}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(where, f"not UTF-8 text (byte {exc.start}: {exc.reason})")]) \
            from exc
    if cache_dir is None or stats is not None:
        return load_pipeline_text(text, str(p), registry, stats)
    registry = registry if registry is not None else Registry()
    key = speccache.cache_key(text, str(p), registry.names())
    spec = speccache.find_spec(cache_dir, key)
    if spec is None:
        spec = load_pipeline_text(text, str(p), registry)
        speccache.keep_spec(cache_dir, key, spec)
    return spec


def load_pipeline_text(text: str, filename: str = "<string>",
                       registry: Registry | None = None,
                       stats: LoadStats | None = None) -> PipelineSpec:
    """Validate ``text`` as a pipeline; ``filename`` is used in messages and as ``source``.

    Raises SpecError carrying every problem found. Pure: the same text gives an equal spec.
    ``stats``, if given, is filled by :func:`load_yaml`.
    """
    root = load_yaml(text, filename, stats)
    ctx = Ctx(text, filename, registry if registry is not None else Registry())
    if not root.is_map:
        ctx.add(root, "a pipeline file is a mapping with pipeline, version, initial and states"
                if root.value is not None else "the pipeline file is empty")
        raise SpecError(ctx.problems)
    ctx.keys(root, TOP_KEYS, "pipeline file")
    for key in ("pipeline", "version", "initial", "states"):
        if root.get(key) is None:
            ctx.add(root, f"missing required key {key!r}")
    name = _name(ctx, root.get("pipeline"))
    version = _version(ctx, root.get("version"))
    description = ""
    if (dnode := root.get("description")) is not None:
        description = ctx.text_of(dnode, "description") or ""
    renew = _renew(ctx, root.get("renew"))
    inputs = parse_inputs(ctx, root.get("inputs"))
    states = _states(ctx, root.get("states"))
    initial = None
    if (inode := root.get("initial")) is not None:
        initial = ctx.text_of(inode, "initial")
        if initial is not None and initial not in states and states:
            ctx.add(inode, f"initial state {initial!r} is not defined",
                    did_you_mean(initial, list(states)))
            initial = None
    if states:
        _graph(ctx, root, states, initial)
    _references(ctx, inputs)
    if ctx.problems:
        raise SpecError(sorted(ctx.problems,
                               key=lambda p: (p.loc.line, p.loc.col) if p.loc else (0, 0)))
    return PipelineSpec(name=name or "", version=version or 1, initial=initial or "",
                        states=states, inputs=inputs, description=description, renew=renew,
                        source=filename, text=text,
                        hash=hashlib.sha256(text.encode("utf-8")).hexdigest(), loc=root.loc)


def _name(ctx: Ctx, node: YNode | None) -> str | None:
    if node is None:
        return None
    name = ctx.text_of(node, "pipeline")
    if name is not None and not PIPELINE_NAME.match(name):
        ctx.add(node, f"pipeline name {name!r} must match {PIPELINE_NAME.pattern}")
    return name


def _version(ctx: Ctx, node: YNode | None) -> int | None:
    return ctx.integer(node, "version", 1) if node is not None else None


def _renew(ctx: Ctx, node: YNode | None) -> RenewSpec | None:
    if node is None or not ctx.mapping(node, "renew"):
        return None
    ctx.keys(node, ("fraction", "jitter"), "renew")
    base = RenewSpec()
    fraction, jitter = base.fraction, base.jitter
    if (f := node.get("fraction")) is not None:
        fraction = ctx.number(f, "renew.fraction", lambda x: 0 < x < 1,
                              "between 0 and 1") or fraction
    if (j := node.get("jitter")) is not None:
        got = ctx.number(j, "renew.jitter", lambda x: 0 <= x <= 0.5, "from 0 to 0.5")
        jitter = got if got is not None else jitter
    return RenewSpec(fraction, jitter, node.loc)


def _states(ctx: Ctx, node: YNode | None) -> dict[str, StateSpec]:
    out: dict[str, StateSpec] = {}
    if node is None or not ctx.mapping(node, "states"):
        return out
    if not node.pairs:
        ctx.add(node, "states must define at least one state")
    for name, knode, vnode in node.entries():
        if not isinstance(name, str) or not STATE_NAME.match(name):
            ctx.add(knode, f"state name {name!r} must match {STATE_NAME.pattern}")
            continue
        state = parse_state(ctx, name, knode, vnode)
        if state is not None:
            out[name] = state
    return out


def _graph(ctx: Ctx, root: YNode, states: dict[str, StateSpec], initial: str | None) -> None:
    """Targets defined; every state reachable; a final state reachable from each."""
    for source, what, target, node in ctx.targets:
        if target not in states:
            ctx.add(node, f"state {source!r}: {what} leads to undefined state {target!r}",
                    did_you_mean(target, list(states)))
            ctx.edges_broken = True
    edges = {n: [t for t in s.targets() if t in states] for n, s in states.items()}
    finals = {n for n, s in states.items() if s.final}
    where = root.key_node("states") or root
    if not finals:
        ctx.add(where, "no final state: mark at least one state 'final: true'")
    if initial is None or ctx.edges_broken:
        return  # reachability over a graph with missing edges would only mislead
    reachable = _closure({initial}, edges)
    for name, state in states.items():
        # An unused final state (say 'failed' before any on_error points at it) does no
        # harm; an unreachable state with steps or edges is forgotten wiring.
        if name not in reachable and not state.final:
            ctx.add(state.loc, f"state {name!r} is unreachable from initial state {initial!r}")
    if not finals:
        return
    back: dict[str, list[str]] = {n: [] for n in states}
    for n, targets in edges.items():
        for t in targets:
            back[t].append(n)
    ending = _closure(finals, back)
    for name, state in states.items():
        if name in reachable and name not in ending:
            ctx.add(state.loc, f"state {name!r}: no way to a final state",
                    "every run must be able to end; add an edge towards a final state")


def _closure(start: set[str], edges: dict[str, list[str]]) -> set[str]:
    seen, todo = set(start), list(start)
    while todo:
        for t in edges.get(todo.pop(), []):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def _scalars(node: YNode, out: list[YNode], budget: list[int]) -> None:
    """Every string scalar under ``node`` (depth is bounded by yamlsafe.MAX_DEPTH)."""
    budget[0] -= 1
    if budget[0] < 0:
        return
    if node.is_scalar:
        if isinstance(node.value, str) and "${" in node.value:
            out.append(node)
    else:
        for child in node.items + [v for _, v in node.pairs]:
            _scalars(child, out, budget)


def _references(ctx: Ctx, inputs: dict[str, InputSpec]) -> None:
    """Every ``${name}`` names a declared input, a step id's output, run.X or env.X."""
    for holder, what, allowed in ctx.templated:
        found: list[YNode] = []
        _scalars(holder, found, [50_000])
        for scalar in found:
            for m in REF.finditer(str(scalar.value)):
                message = _bad_reference(ctx, m.group(1), inputs, allowed)
                if message:
                    ref = m.group(1)
                    ctx.add(_ref_loc(ctx, scalar, m.group(0)), f"{what}: {message}",
                            did_you_mean(ref, _ref_candidates(ctx, ref, inputs, allowed)))


def _bad_reference(ctx: Ctx, ref: str, inputs: dict[str, InputSpec], allowed: str) -> str | None:
    parts = ref.split(".")
    head = parts[0]
    if (len(parts) == 1 and head in inputs) or (
            head == "inputs" and len(parts) == 2 and parts[1] in inputs) or (
            head == "env" and len(parts) == 2):
        return None
    if allowed == "inputs":
        if head in ("steps", "run"):
            return f"${{{ref}}}: an input default can refer only to other inputs and env.X"
        return f"unknown reference ${{{ref}}}"
    if head == "run" and len(parts) == 2 and parts[1] in RUN_FIELDS:
        return None
    if head == "steps" and len(parts) >= 3 and parts[1] in ctx.step_ids:
        return None
    if head == "steps" and len(parts) == 2 and parts[1] in ctx.step_ids:
        return f"${{{ref}}} names a step but no output: use ${{steps.{parts[1]}.KEY}}"
    return f"unknown reference ${{{ref}}}"


def _ref_candidates(ctx: Ctx, ref: str, inputs: dict[str, InputSpec], allowed: str) -> list[str]:
    out = list(inputs) + [f"inputs.{n}" for n in inputs]
    if allowed == "all":
        out += [f"run.{f}" for f in RUN_FIELDS]
        rest = ref.split(".")[2:] if ref.startswith("steps.") else []
        key = ".".join(rest) or "KEY"
        out += [f"steps.{i}.{key}" for i in sorted(ctx.step_ids)]
    return out


def _ref_loc(ctx: Ctx, scalar: YNode, token: str) -> Location:
    """Point at the reference itself when it is on the scalar's first line."""
    line = problem(ctx.text, scalar.loc, "").source_line or ""
    col = line.find(token, scalar.loc.col - 1)
    return Location(scalar.loc.file, scalar.loc.line, col + 1) if col >= 0 else scalar.loc
