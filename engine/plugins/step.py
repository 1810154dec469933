"""The step interface: what a step is given, what it returns, how it fails.

A step is a class with a registry ``name``, a JSON Schema for its ``with:`` parameters, and
``run(ctx)``. It returns :class:`Done` with outputs (``${steps.<id>.<key>}`` for later steps)
or :class:`Wait` to park the run until an event, a file change or an instant. To fail it
raises :class:`engine.errors.StepError` (retryable by default) or
:class:`engine.errors.PermanentError`.

Contract every step keeps:

* **Idempotent under its key.** ``ctx.idempotency_key`` is the same on every attempt of the
  same step in the same state entry, and after a crash. A step with side effects passes it
  on (to the CA, into file names) or checks first whether its work is already done.
  ``ctx.recovering`` is True when the runner found this step in flight after a crash: the
  step may ask the remote side what happened before acting again.
* **Secrets stay out of the journal.** Outputs go to the journal, except those named in
  ``secret_outputs``: the runner keeps those in the run's 0600 secrets file and journals
  ``"<secret>"``. Long-lived secrets (keys, passphrases) go to 0600 files; output the path.
* **Cleanup undoes, idempotently.** A step with ``cleanup`` (:class:`Cleanup`) has it
  called when its state is left or its run cancelled; it may be called twice.
* **Taking an outside message is the engine's commit.** A step that takes a message (a
  mail) returns its marks (``Done.marks``: ``(source, ident)`` pairs) and what to do once
  they are durable (``after``: the move to ``cur/``). The engine writes the marks with the
  step's outcome in one transaction (``Tx.mark_processed``), then calls ``after``. When a
  mark is taken already (another process took that message first), nothing of the result
  is recorded and the step is called again at once, same key, and now sees it taken.
  ``ctx.processed`` reads the store's marks (``Store.is_processed``).
* **A waiting step re-checks cheaply.** A step that returned :class:`Wait` is called again
  (same key) when a correlated event arrives, a watched path changes, ``until`` passes or
  ``poll`` seconds go by; ``ctx.event`` holds the event and ``ctx.memo`` what the step
  stored in its last ``Wait``. Checking must not have side effects.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import structlog

from certwright.clock import Clock
from certwright.events import Event

if TYPE_CHECKING:
    from certwright.state.artefacts import Artefact

#: ``(source, ident)`` of an outside message a step takes (see ``Tx.mark_processed``).
Mark = tuple[str, str]


@dataclass(frozen=True)
class Done:
    """The step finished; ``outputs`` become ``${steps.<id>.<key>}``.

    ``marks``: the messages it took, written with its ``step_done`` (see the module);
    ``after``: called in the engine's loop once that commit is durable (quick, never
    raising: a failure is logged), never when the result was refused or the commit failed.
    ``kept``: the files it made that the store keeps (``state.artefacts``: key, CSR,
    certificate, chain), written with its ``step_done``, so a later step on another host
    gets them back (``steps._kept``).
    """

    outputs: Mapping[str, Any] = field(default_factory=dict)
    marks: tuple[Mark, ...] = ()
    after: Callable[[], object] | None = None
    kept: tuple[Artefact, ...] = ()


@dataclass(frozen=True)
class Wait:
    """Park the run until something happens; the step is then called again.

    * ``description``: what is awaited, for ``status`` and the foreground display
      (e.g. "mail to postmaster@example.test").
    * ``correlations``: keys (see ``engine.events``) under which outside events reach it.
    * ``watch``: paths (files or folders) whose changes should wake it.
    * ``until``: wake at this instant (``wait.until``).
    * ``poll``: also wake every this many seconds (a fallback; None for never).
    * ``memo``: small JSON-able state handed back as ``ctx.memo`` on the next call.
    * ``marks``, ``after``: messages taken while still waiting for others, as
      :class:`Done` has them (``wait.mails``).
    """

    description: str
    correlations: tuple[str, ...] = ()
    watch: tuple[str, ...] = ()
    until: datetime | None = None
    poll: float | None = None
    memo: Mapping[str, Any] = field(default_factory=dict)
    marks: tuple[Mark, ...] = ()
    after: Callable[[], object] | None = None


StepResult = Done | Wait


@dataclass
class StepContext:
    """Everything a step gets from the runner for one call."""

    run_id: str
    pipeline: str
    state: str
    step_id: str
    idempotency_key: str
    attempt: int
    params: Mapping[str, Any]
    run_dir: Path
    state_dir: Path
    clock: Clock
    log: Any = field(default_factory=structlog.get_logger)
    memo: Mapping[str, Any] = field(default_factory=dict)
    event: Event | None = None
    recovering: bool = False
    timeout: float | None = None
    services: Mapping[str, Any] = field(default_factory=dict)  # shared clients (CA, mail)
    inputs: Mapping[str, Any] = field(default_factory=dict)  # the run's inputs, resolved
    vars: Mapping[str, Any] = field(default_factory=dict)  # outputs of earlier steps by id
    processed: Callable[[str, str], bool] | None = None  # the store's marks; None: no engine
    # what the store keeps of this run by name (None: no engine); StoreError when sealed
    # with a key this process lacks
    artefact: Callable[[str], Artefact | None] | None = None
    sealing: bool = False  # the store has a key: private keys are kept in it too
    # keep a shared artefact (no run's: a CA account) at once, before the step's result,
    # unless one is kept under its name already; returns the kept one (None: no engine)
    share: Callable[[Artefact], Artefact] | None = None


@runtime_checkable
class Step(Protocol):
    """A unit of work in a state. Instances are stateless and shared across runs."""

    name: ClassVar[str]
    description: ClassVar[str]
    params_schema: ClassVar[Mapping[str, Any]]
    idempotent: ClassVar[bool]
    secret_outputs: ClassVar[frozenset[str]]

    def run(self, ctx: StepContext) -> StepResult:
        """Do the work (or check the awaited thing) and return Done or Wait."""
        ...


@runtime_checkable
class Cleanup(Protocol):
    """Optional capability: undo what ``run`` did, even after ``run`` failed.

    The engine calls ``cleanup`` when the run leaves the step's state (unless the state
    entered runs a step of the same name, which carries the work on) and when the run is
    cancelled, for each step of that state that ran in this entry. It runs in a worker,
    after the transition is committed and before the next state's steps start, with the
    context the step had (same key, params, run folder; ``attempt`` 0 except for the
    step that was current). It must be idempotent: after a crash it may run again, and it
    may run while a timed-out ``run`` still executes. An exception it raises is logged
    (``step_cleanup_failed``) and never fails the run.
    """

    def cleanup(self, ctx: StepContext) -> None: ...


@runtime_checkable
class RendersParams(Protocol):
    """Optional capability: render its own ``with:`` templates, for a step whose
    parameters are a language of their own (a shell command), where a value substituted
    as text could change what the parameter means.

    Called with the parameters as written and the namespace the engine would render them
    in (secrets in clear: never log it); returns the rendered parameters, which are then
    checked against ``params_schema``. Raises like :func:`engine.model.template.render`
    (UnresolvedReference) or with a CertwrightError saying what is wrong.
    """

    def render_params(self, params: Mapping[str, Any],
                      namespace: Mapping[str, Any]) -> dict[str, Any]: ...


class BaseStep:
    """Convenience base: a no-parameter, non-idempotent step named by subclasses."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "additionalProperties": False}
    idempotent: ClassVar[bool] = False
    secret_outputs: ClassVar[frozenset[str]] = frozenset()
    # touches the machine it runs on (key files, install, reload, TLS check): runs only on
    # a daemon of its run's host (engine.run.hosts); a class without it runs anywhere
    host_bound: ClassVar[bool] = False

    def run(self, ctx: StepContext) -> StepResult:  # pragma: no cover - abstract
        raise NotImplementedError
