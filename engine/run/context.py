"""What a step is given: the namespace its templates see, its rendered params, its context.

:class:`Contexts` turns a run and one of its steps into a :class:`Job` (to execute or
re-check the step) or into the tasks of a :class:`CleanupJob` (to undo what the steps of
a state did). The namespace a step's ``${...}`` templates and ``when`` guards see:
``inputs`` (secret ones resolved), ``steps`` (earlier outputs, secret ones resolved),
``env``, and ``run`` (id, dir, state_dir, pipeline, state).

Raises :class:`UnresolvedReference` or :class:`CertwrightError` when a template or the
params do not resolve (the engine fails the step for good). Hazard: the namespace holds
secrets in clear; it must never reach the journal or a log, only the step.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

import structlog

from certwright.clock import Clock
from certwright.engine.model.conditions import evaluate
from certwright.engine.model.params import check_params
from certwright.engine.model.spec import PipelineSpec, StepSpec
from certwright.engine.model.template import render
from certwright.engine.plugins.registry import Registry
from certwright.engine.plugins.step import RendersParams, StepContext
from certwright.engine.run import secrets as secret_store
from certwright.engine.run.book import RunBook
from certwright.engine.run.jobs import Job, JobKind
from certwright.engine.run.naming import run_dir_for
from certwright.events import Event
from certwright.state.artefacts import SHARED, Artefact
from certwright.state.base import Store
from certwright.state.records import RunRecord

__all__ = ["Contexts", "share_artefact"]


class Contexts:
    """Builds the jobs of one engine (its store, state folder, clock and services)."""

    def __init__(self, store: Store, state_dir: Path, registry: Registry, clock: Clock,
                 services: Mapping[str, Any], book: RunBook) -> None:
        self._store = store
        self._state_dir = state_dir
        self._runs_root = str(run_dir_for(state_dir, "x").parent)
        self._registry = registry
        self._clock = clock
        self.services = services
        self._book = book
        self._renders: dict[int, tuple[object, bool]] = {}  # id(step) -> (step, renders?)

    def secrets_of(self, rid: str) -> dict[str, Any]:
        """The run's secrets ({"inputs": ..., "outputs": ...}), cached while it is active."""
        return self._book.secrets(rid, self._load_secrets)

    def _load_secrets(self, rid: str) -> dict[str, Any]:
        return secret_store.load(self._store, self._state_dir, rid)

    def namespace(self, run: RunRecord, spec: PipelineSpec) -> dict[str, Any]:
        secrets = self.secrets_of(run.id)
        inputs = {**run.inputs, **secrets["inputs"]} if secrets["inputs"] else run.inputs
        steps: dict[str, Any] = run.vars
        if secrets["outputs"]:
            steps = {k: dict(v) for k, v in run.vars.items()}
            for sid, outs in secrets["outputs"].items():
                steps.setdefault(sid, {}).update(outs)
        return {"inputs": inputs, "steps": steps, "env": os.environ,
                "run": {"id": run.id, "dir": f"{self._runs_root}/{run.id}",
                        "state_dir": str(self._state_dir), "pipeline": spec.name,
                        "state": run.state}}

    def holds(self, run: RunRecord, spec: PipelineSpec, step_spec: StepSpec) -> bool:
        """Whether a step's ``when`` guard holds (raises when it cannot be evaluated)."""
        if step_spec.when is None:
            return True
        return evaluate(step_spec.when, self.namespace(run, spec))

    def job(self, run: RunRecord, spec: PipelineSpec, step_spec: StepSpec, kind: JobKind,
            event: Event | None) -> Job:
        """The run's current step, to execute (``step``) or re-check (``check``)."""
        ctx = self.context(run, spec, step_spec, run.step_index, event)
        return Job(run.id, run.entry, run.step_index, ctx.idempotency_key, kind, step_spec,
                   ctx, self.secret_values(run.id))

    def context(self, run: RunRecord, spec: PipelineSpec, step_spec: StepSpec, index: int,
                event: Event | None = None) -> StepContext:
        """The context of step ``index`` of the run's current state and entry."""
        ns = self.namespace(run, spec)
        step = self._registry.get(step_spec.name)
        raw = dict(step_spec.params)
        params = step.render_params(raw, ns) if self._renders_params(step) \
            else render(raw, ns)
        check_params(step_spec.name, step.params_schema, params)
        current = index == run.step_index
        return StepContext(
            run_id=run.id, pipeline=spec.name, state=run.state, step_id=step_spec.id,
            idempotency_key=f"{run.id}:{run.entry}:{index}",
            attempt=run.attempt if current else 0,
            params=params, run_dir=run_dir_for(self._state_dir, run.id),
            state_dir=self._state_dir, clock=self._clock,
            log=structlog.get_logger("certwright.step").bind(
                run_id=run.id, state=run.state, step=step_spec.id),
            memo=dict(run.memo) if current else {}, event=event, timeout=step_spec.timeout,
            services=self.services, inputs=ns["inputs"], vars=ns["steps"],
            processed=self._store.is_processed, artefact=self._artefact_of(run.id),
            sealing=self._store.sealer is not None, share=self._share)

    def _renders_params(self, step: object) -> TypeGuard[RendersParams]:
        """``isinstance(step, RendersParams)``, asked once per step object: a Protocol's
        isinstance costs more than the rest of a step's context."""
        known = self._renders.get(id(step))
        if known is None or known[0] is not step:  # the step held, so its id is not reused
            known = self._renders[id(step)] = (step, isinstance(step, RendersParams))
        return known[1]

    def _artefact_of(self, rid: str) -> Callable[[str], Artefact | None]:
        """What the store keeps of run ``rid`` under a name (read when a step asks); a CA
        account's credentials (``account/...``) belong to no run."""
        def artefact(name: str) -> Artefact | None:
            found = self._store.artefacts(SHARED if name.startswith("account/") else rid,
                                          name)
            return found[0] if found else None
        return artefact

    def _share(self, art: Artefact) -> Artefact:
        return share_artefact(self._store, art)

    def secret_values(self, rid: str) -> tuple[str, ...]:
        """The run's secret strings, to mask in logs."""
        return tuple(secret_store.values(self.secrets_of(rid)))


def share_artefact(store: Store, art: Artefact) -> Artefact:
    """Keep ``art`` (a shared one, of no run) in a transaction of its own, unless one is
    kept under its name already: then that one, unchanged. The first host's copy wins, so
    hosts racing to make an account all end up using one set of credentials."""
    if art.run_id != SHARED:
        raise ValueError(f"only shared artefacts are kept before a step's result, not "
                         f"{art.name} of run {art.run_id}")
    with store.transaction() as tx:  # the write lock: nobody keeps one in between
        found = store.artefacts(SHARED, art.name)
        if found:
            return found[0]
        tx.put_artefact(art)
    return art
