"""The pipeline model: frozen dataclasses that a loaded YAML file becomes.

A spec records and checks; it never runs anything. ``engine.loader`` builds these from YAML
(with positions for every node) and validates them; ``engine.machine`` turns one into a
``transitions.Machine``. Times are seconds (float) here; the YAML says ``90s``, ``5m``, ``2d``.
"""
from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from certwright.errors import Location

INPUT_TYPES = ("string", "int", "bool", "duration", "hostname", "wildcard", "email", "path",
               "enum", "list")
#: What a ``list`` input's ``items`` may be: every type but a list.
ITEM_TYPES = tuple(t for t in INPUT_TYPES if t != "list")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: object) -> float:
    """Parse ``90``, ``"90s"``, ``"5m"``, ``"2d"``, ``"1h30m"`` into seconds.

    A bare number is seconds. Raises ``ValueError`` with the reason on anything else,
    including negative values.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r}")
    m = _DURATION.match(value)
    if m:
        return float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"]
    compact = value.replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if parts and "".join(n + u for n, u in parts) == compact:
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    raise ValueError(
        f"not a duration: {value!r} (use a number of seconds or e.g. 90s, 5m, 2h, 2d, 1h30m)"
    )


def format_duration(seconds: float) -> str:
    """Render seconds compactly: ``2d``, ``1h30m``, ``45s``."""
    s = round(seconds)
    if s <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out.append(f"{s // size}{unit}")
            s %= size
    return "".join(out[:2])


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a failing step is tried again.

    Attempt n (1-based) that fails with a retryable error is followed by attempt n+1 after
    ``min(max_delay, initial_delay * multiplier**(n-1))`` seconds, scaled by a random factor
    in ``[1 - jitter, 1 + jitter]`` so that many runs failing together do not retry in step.
    Defaults: 3 attempts, 1 s, doubling, capped at 5 min, 20 % jitter.
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    max_delay: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        factor = 1.0 + rng.uniform(-self.jitter, self.jitter) if self.jitter else 1.0
        return max(0.0, min(self.max_delay, base * factor))


NO_RETRY = RetryPolicy(max_attempts=1)
# What a step gets without a `retry:`: three attempts, 1 s then 2 s apart (20 % jitter), for
# retryable errors only (a refused request, a failed check stop at once: PermanentError).
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Condition:
    """A guard: ``op`` applied to ``args``, evaluated without ``eval``.

    Ops: ``equals``/``not_equals`` (two values), ``truthy``/``falsy`` (one value),
    ``matches`` (value, regex), ``in`` (value, list), ``all``/``any`` (conditions),
    ``not`` (one condition). Values are templates such as ``"${steps.check.code}"``.
    """

    op: str
    args: tuple[Any, ...]
    loc: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a pipeline.

    ``items`` is the item type of a ``list`` input (an InputSpec of its own, never a list).
    ``first_of`` names a list input this one is the first item of: giving it alone stands
    for a list of one, not giving it takes the list's first item. ``base_of`` names an
    input whose value, without a leading ``*.``, is this one's. Either replaces a default.
    """

    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    has_default: bool = False
    values: tuple[str, ...] | None = None  # for type enum
    secret: bool = False
    description: str = ""
    loc: Location | None = field(default=None, compare=False)
    items: InputSpec | None = None  # for type list
    first_of: str | None = None
    base_of: str | None = None

    @property
    def type_name(self) -> str:
        """The type as people read it: ``hostname``, ``list of wildcard``."""
        return f"list of {self.items.type}" if self.items is not None else self.type


@dataclass(frozen=True)
class StepSpec:
    """One step invocation inside a state: which step, its id and its parameters."""

    name: str  # registry name, e.g. "shell", "ca.sign"
    id: str  # output namespace: ${steps.<id>.<key>}; defaults to name with '.' -> '_'
    params: Mapping[str, Any] = field(default_factory=dict)  # raw, still templated
    retry: RetryPolicy = DEFAULT_RETRY
    timeout: float | None = None
    when: Condition | None = None  # run only when this holds; else recorded as skipped
    loc: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TransitionSpec:
    """An edge taken when a state's steps all succeeded and ``when`` holds (or is None)."""

    to: str
    when: Condition | None = None
    loc: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TimeoutSpec:
    """Leave the state for ``to`` if still in it ``after`` seconds after entering it, or at
    the instant ``at`` (a template resolved on entry, e.g. an order's expiry), whichever
    comes first. ``at`` resolving to an empty value leaves ``after`` alone."""

    after: float | None
    to: str
    loc: Location | None = field(default=None, compare=False)
    at: str | None = None


@dataclass(frozen=True)
class LoopSpec:
    """A bounded loop: entering this state goes on to ``to`` at most ``max`` times, then
    ``else_``."""

    max: int
    to: str
    else_: str
    loc: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class StateSpec:
    """One state: steps run in order on entry, then the first matching ``next`` edge."""

    name: str
    description: str = ""
    steps: tuple[StepSpec, ...] = ()
    next: tuple[TransitionSpec, ...] = ()
    on_error: str | None = None
    timeout: TimeoutSpec | None = None
    loop: LoopSpec | None = None
    final: Literal["success", "failure"] | None = None
    loc: Location | None = field(default=None, compare=False)

    def targets(self) -> list[str]:
        """Every state this one can lead to."""
        out = [t.to for t in self.next]
        if self.on_error:
            out.append(self.on_error)
        if self.timeout:
            out.append(self.timeout.to)
        if self.loop:
            out += [self.loop.to, self.loop.else_]
        return out


@dataclass(frozen=True)
class RenewSpec:
    """When the daemon renews what a run installed: ``fraction`` of the lifetime left."""

    fraction: float = 1 / 3
    jitter: float = 0.05
    loc: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PipelineSpec:
    """A whole pipeline file, validated."""

    name: str
    version: int
    initial: str
    states: Mapping[str, StateSpec]
    inputs: Mapping[str, InputSpec] = field(default_factory=dict)
    description: str = ""
    renew: RenewSpec | None = None
    source: str = "<string>"  # path of the file it came from
    text: str = ""  # the exact source text; its hash pins running runs
    hash: str = ""  # sha256 hex of text
    loc: Location | None = field(default=None, compare=False)

    def state(self, name: str) -> StateSpec:
        return self.states[name]
