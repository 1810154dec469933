"""The exception hierarchy: one base, one subclass per kind of failure.

Every error certwright raises on purpose derives from :class:`CertwrightError`, so the CLI
can print it plainly (no traceback) and pick an exit code from its kind.
"""
from __future__ import annotations

from dataclasses import dataclass


class CertwrightError(Exception):
    """Base of every deliberate certwright error."""


@dataclass(frozen=True)
class Location:
    """A position in a source file: 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline file, where it is, and how to fix it."""

    loc: Location | None
    message: str
    hint: str | None = None
    source_line: str | None = None

    def render(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        out = f"{where}{self.message}"
        if self.hint:
            out += f" ({self.hint})"
        if self.loc and self.source_line is not None:
            gutter = f"{self.loc.line:>5} | "
            caret = f"{' ' * (len(gutter) - 2)}| {' ' * (self.loc.col - 1)}^"
            out += f"\n{gutter}{self.source_line}\n{caret}"
        return out


class SpecError(CertwrightError):
    """A pipeline file is malformed or inconsistent; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


class InputError(CertwrightError):
    """A run input (``--set key=value``) is missing, unknown or of the wrong type."""


class StepError(CertwrightError):
    """A step failed; the runner may retry it (see ``retryable``).

    ``retry_after``: the other side asked us to wait this many seconds before trying again
    (an HTTP ``Retry-After``); the runner's next attempt comes no sooner, even past the
    step's ``max_delay`` (it still counts against ``max_attempts``).
    """

    retryable: bool = True
    retry_after: float | None = None

    def __init__(self, message: str, *, retryable: bool | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        if retry_after is not None:
            self.retry_after = max(0.0, float(retry_after))


class PermanentError(StepError):
    """A step failed in a way that retrying cannot fix (bad input, refusal by the CA)."""

    retryable = False


class StoreError(CertwrightError):
    """The durable store failed or holds something unexpected."""


class RunNotFound(StoreError):
    """No run with that id exists in the store."""


class RunLocked(CertwrightError):
    """Another process drives this run (or serves this store); names its pid."""

    def __init__(self, what: str, pid: int | None, since: str | None = None) -> None:
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        extra = f" since {since}" if since else ""
        super().__init__(f"{what} is locked by {holder}{extra}")
